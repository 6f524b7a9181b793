// setns() is declared only under _GNU_SOURCE.
#define _GNU_SOURCE

#include "CLinux.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <malloc.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

// Every constant in CLinux.h equals the kernel's.
_Static_assert(cnm_linux_netlink_sock_diag == NETLINK_SOCK_DIAG, "NETLINK_SOCK_DIAG");
_Static_assert(cnm_linux_nlmsg_noop == NLMSG_NOOP, "NLMSG_NOOP");
_Static_assert(cnm_linux_nlmsg_error == NLMSG_ERROR, "NLMSG_ERROR");
_Static_assert(cnm_linux_nlmsg_done == NLMSG_DONE, "NLMSG_DONE");
_Static_assert(cnm_linux_nlm_f_request == NLM_F_REQUEST, "NLM_F_REQUEST");
_Static_assert(cnm_linux_nlm_f_dump == NLM_F_DUMP, "NLM_F_DUMP");
_Static_assert(cnm_linux_nlmsg_alignto == NLMSG_ALIGNTO, "NLMSG_ALIGNTO");
_Static_assert(cnm_linux_nla_type_mask == (uint16_t)NLA_TYPE_MASK, "NLA_TYPE_MASK");
_Static_assert(cnm_linux_sock_diag_by_family == SOCK_DIAG_BY_FAMILY, "SOCK_DIAG_BY_FAMILY");
_Static_assert(cnm_linux_inet_diag_info == INET_DIAG_INFO, "INET_DIAG_INFO");
_Static_assert(cnm_linux_inet_diag_protocol == INET_DIAG_PROTOCOL, "INET_DIAG_PROTOCOL");
_Static_assert(cnm_linux_sknlgrp_inet_tcp_destroy == SKNLGRP_INET_TCP_DESTROY, "SKNLGRP_INET_TCP_DESTROY");
_Static_assert(cnm_linux_sknlgrp_inet_udp_destroy == SKNLGRP_INET_UDP_DESTROY, "SKNLGRP_INET_UDP_DESTROY");
_Static_assert(cnm_linux_sknlgrp_inet6_tcp_destroy == SKNLGRP_INET6_TCP_DESTROY, "SKNLGRP_INET6_TCP_DESTROY");
_Static_assert(cnm_linux_sknlgrp_inet6_udp_destroy == SKNLGRP_INET6_UDP_DESTROY, "SKNLGRP_INET6_UDP_DESTROY");

// Every mirror field sits where the kernel's does and has its size.
#define CNM_SAME_FIELD(mirror, kernel, field)                                                                 \
    _Static_assert(offsetof(struct mirror, field) == offsetof(struct kernel, field) &&                        \
                       sizeof(((struct mirror *)0)->field) == sizeof(((struct kernel *)0)->field),            \
                   #kernel "." #field)
#define CNM_SAME_SIZE(mirror, kernel) _Static_assert(sizeof(struct mirror) == sizeof(struct kernel), #kernel)

CNM_SAME_SIZE(cnm_linux_nlmsghdr, nlmsghdr);
CNM_SAME_FIELD(cnm_linux_nlmsghdr, nlmsghdr, nlmsg_len);
CNM_SAME_FIELD(cnm_linux_nlmsghdr, nlmsghdr, nlmsg_type);
CNM_SAME_FIELD(cnm_linux_nlmsghdr, nlmsghdr, nlmsg_flags);
CNM_SAME_FIELD(cnm_linux_nlmsghdr, nlmsghdr, nlmsg_seq);
CNM_SAME_FIELD(cnm_linux_nlmsghdr, nlmsghdr, nlmsg_pid);

CNM_SAME_FIELD(cnm_linux_nlmsgerr, nlmsgerr, error);

CNM_SAME_SIZE(cnm_linux_rtattr, nlattr);
_Static_assert(offsetof(struct cnm_linux_rtattr, rta_len) == offsetof(struct nlattr, nla_len), "nlattr.nla_len");
_Static_assert(offsetof(struct cnm_linux_rtattr, rta_type) == offsetof(struct nlattr, nla_type), "nlattr.nla_type");

CNM_SAME_SIZE(cnm_linux_inet_diag_sockid, inet_diag_sockid);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_sport);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_dport);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_src);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_dst);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_if);
CNM_SAME_FIELD(cnm_linux_inet_diag_sockid, inet_diag_sockid, idiag_cookie);

CNM_SAME_SIZE(cnm_linux_inet_diag_req_v2, inet_diag_req_v2);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, sdiag_family);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, sdiag_protocol);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, idiag_ext);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, pad);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, idiag_states);
CNM_SAME_FIELD(cnm_linux_inet_diag_req_v2, inet_diag_req_v2, id);

CNM_SAME_SIZE(cnm_linux_inet_diag_msg, inet_diag_msg);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_family);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_state);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_timer);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_retrans);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, id);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_expires);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_rqueue);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_wqueue);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_uid);
CNM_SAME_FIELD(cnm_linux_inet_diag_msg, inet_diag_msg, idiag_inode);

// The system headers end at tcpi_snd_wnd (Debian 12); the mirror goes on with the fields newer kernels append.
_Static_assert(offsetof(struct cnm_linux_tcp_info, tcpi_rcv_wnd) ==
                   offsetof(struct tcp_info, tcpi_snd_wnd) + sizeof(uint32_t),
               "tcp_info up to tcpi_snd_wnd as in the system headers");
// The fields of Linux 6.2 (rcv_wnd), 6.5 (rehash) and 6.7 (total_rto*), past what the system headers know.
_Static_assert(offsetof(struct cnm_linux_tcp_info, tcpi_total_rto) == 240, "tcp_info total_rto");
_Static_assert(sizeof(struct cnm_linux_tcp_info) == 248, "tcp_info up to tcpi_total_rto_time");
// The two bit-field bytes: tcpi_rto follows them directly, so they are bytes 6 and 7.
_Static_assert(offsetof(struct cnm_linux_tcp_info, tcpi_wscale) == 6, "tcp_info wscale byte");
_Static_assert(offsetof(struct cnm_linux_tcp_info, tcpi_delivery_flags) == 7, "tcp_info delivery flags byte");
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_state);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_ca_state);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_retransmits);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_probes);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_backoff);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_options);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rto);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_ato);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_snd_mss);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rcv_mss);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_unacked);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_sacked);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_lost);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_retrans);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_fackets);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_last_data_sent);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_last_ack_sent);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_last_data_recv);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_last_ack_recv);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_pmtu);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rcv_ssthresh);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rtt);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rttvar);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_snd_ssthresh);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_snd_cwnd);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_advmss);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_reordering);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rcv_rtt);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rcv_space);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_total_retrans);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_pacing_rate);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_max_pacing_rate);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_bytes_acked);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_bytes_received);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_segs_out);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_segs_in);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_notsent_bytes);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_min_rtt);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_data_segs_in);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_data_segs_out);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_delivery_rate);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_busy_time);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rwnd_limited);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_sndbuf_limited);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_delivered);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_delivered_ce);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_bytes_sent);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_bytes_retrans);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_dsack_dups);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_reord_seen);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_rcv_ooopack);
CNM_SAME_FIELD(cnm_linux_tcp_info, tcp_info, tcpi_snd_wnd);

int cnm_linux_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int cnm_linux_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cnm_linux_netlink_bind(int fd, uint32_t groups) {
    struct sockaddr_nl address;
    memset(&address, 0, sizeof(address));
    address.nl_family = AF_NETLINK;
    address.nl_groups = groups;
    return bind(fd, (struct sockaddr *)&address, sizeof(address));
}

int cnm_linux_netlink_port_id(int fd, uint32_t *port_id) {
    struct sockaddr_nl address;
    socklen_t length = sizeof(address);
    memset(&address, 0, sizeof(address));
    if (getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
        return -1;
    }
    *port_id = address.nl_pid;
    return 0;
}

int cnm_linux_malloc_limit_arenas(int arenas) { return mallopt(M_ARENA_MAX, arenas); }

int cnm_linux_malloc_fix_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

int cnm_linux_malloc_trim(void) { return malloc_trim(0); }

void cnm_linux_heap_usage(uint64_t *in_use, uint64_t *free_kept) {
    struct mallinfo2 info = mallinfo2();
    *in_use = (uint64_t)info.uordblks + (uint64_t)info.hblkhd;
    *free_kept = (uint64_t)info.fordblks;
}
