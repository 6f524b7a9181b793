#ifndef CNM_CLINUX_H
#define CNM_CLINUX_H

// The part of the kernel's netlink / sock_diag UAPI that Swift uses, under the cnm_linux_ prefix.
// The kernel headers are included only by CLinux.c, which checks with _Static_assert that every
// constant and struct below matches them; so Swift sees these names and no raw kernel macros.

#include <stdint.h>

// Packet capture's part, in a header of its own.
#include "cnm_packet_ring.h"

// MARK: - Constants

/// NETLINK_SOCK_DIAG: the netlink family of sock_diag (linux/netlink.h, not in Swift's Glibc module).
static const int32_t cnm_linux_netlink_sock_diag = 4;

/// NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE: control message types (linux/netlink.h stays out of Swift's view).
static const uint16_t cnm_linux_nlmsg_noop = 1;
static const uint16_t cnm_linux_nlmsg_error = 2;
static const uint16_t cnm_linux_nlmsg_done = 3;

/// NLM_F_REQUEST and NLM_F_DUMP; NLM_F_DUMP is an expression macro (ROOT|MATCH) Swift cannot import.
static const uint16_t cnm_linux_nlm_f_request = 0x1;
static const uint16_t cnm_linux_nlm_f_dump = 0x300;

/// NLMSG_ALIGNTO: messages and attributes start on this boundary (the NLMSG_ALIGN macro is a function-like macro).
static const uint32_t cnm_linux_nlmsg_alignto = 4;

/// NLA_TYPE_MASK: attribute type without the nested / byte-order flags (a `~(...)` macro Swift cannot import).
static const uint16_t cnm_linux_nla_type_mask = 0x3FFF;

/// SOCK_DIAG_BY_FAMILY: the message type of sock_diag requests, replies and destroy notifications.
static const uint16_t cnm_linux_sock_diag_by_family = 20;

/// INET_DIAG_INFO (struct tcp_info) and INET_DIAG_PROTOCOL (u8 IPPROTO_*): reply attribute types.
static const uint16_t cnm_linux_inet_diag_info = 2;
static const uint16_t cnm_linux_inet_diag_protocol = 10;

/// SKNLGRP_*: sock_diag multicast groups of destroyed sockets (an enum in linux/sock_diag.h).
static const uint32_t cnm_linux_sknlgrp_inet_tcp_destroy = 1;
static const uint32_t cnm_linux_sknlgrp_inet_udp_destroy = 2;
static const uint32_t cnm_linux_sknlgrp_inet6_tcp_destroy = 3;
static const uint32_t cnm_linux_sknlgrp_inet6_udp_destroy = 4;

// MARK: - Structs (same layout as the kernel's, checked in CLinux.c)

/// struct nlmsghdr.
struct cnm_linux_nlmsghdr {
    uint32_t nlmsg_len;
    uint16_t nlmsg_type;
    uint16_t nlmsg_flags;
    uint32_t nlmsg_seq;
    uint32_t nlmsg_pid;
};

/// struct nlmsgerr without the echoed request header: what an NLMSG_ERROR payload starts with.
struct cnm_linux_nlmsgerr {
    int32_t error;
};

/// struct rtattr (the kernel writes struct nlattr, which has the same layout).
struct cnm_linux_rtattr {
    uint16_t rta_len;
    uint16_t rta_type;
};

/// struct inet_diag_sockid. Ports and addresses are in network byte order; IPv4 uses the first word.
struct cnm_linux_inet_diag_sockid {
    uint16_t idiag_sport;
    uint16_t idiag_dport;
    uint32_t idiag_src[4];
    uint32_t idiag_dst[4];
    uint32_t idiag_if;
    uint32_t idiag_cookie[2];
};

/// struct inet_diag_req_v2.
struct cnm_linux_inet_diag_req_v2 {
    uint8_t sdiag_family;
    uint8_t sdiag_protocol;
    uint8_t idiag_ext;
    uint8_t pad;
    uint32_t idiag_states;
    struct cnm_linux_inet_diag_sockid id;
};

/// struct inet_diag_msg: the fixed part of every SOCK_DIAG_BY_FAMILY reply, before its attributes.
struct cnm_linux_inet_diag_msg {
    uint8_t idiag_family;
    uint8_t idiag_state;
    uint8_t idiag_timer;
    uint8_t idiag_retrans;
    struct cnm_linux_inet_diag_sockid id;
    uint32_t idiag_expires;
    uint32_t idiag_rqueue;
    uint32_t idiag_wqueue;
    uint32_t idiag_uid;
    uint32_t idiag_inode;
};

/// struct tcp_info up to tcpi_total_rto_time (248 bytes, as in the Linux 6.7 UAPI headers; the system headers
/// stop at tcpi_snd_wnd, 232 bytes). Older kernels send a shorter struct, newer ones a longer one (280 bytes on
/// 6.18). The two bit-field bytes are kept whole, since
/// Swift cannot take the offset of a bit-field: byte 6 holds tcpi_snd_wscale in its low nibble and
/// tcpi_rcv_wscale in its high nibble; byte 7 holds tcpi_delivery_rate_app_limited in bit 0 and
/// tcpi_fastopen_client_fail in bits 1-2 (the GCC/Clang bit-field order on little-endian targets).
struct cnm_linux_tcp_info {
    uint8_t tcpi_state;
    uint8_t tcpi_ca_state;
    uint8_t tcpi_retransmits;
    uint8_t tcpi_probes;
    uint8_t tcpi_backoff;
    uint8_t tcpi_options;
    uint8_t tcpi_wscale;
    uint8_t tcpi_delivery_flags;

    uint32_t tcpi_rto;
    uint32_t tcpi_ato;
    uint32_t tcpi_snd_mss;
    uint32_t tcpi_rcv_mss;

    uint32_t tcpi_unacked;
    uint32_t tcpi_sacked;
    uint32_t tcpi_lost;
    uint32_t tcpi_retrans;
    uint32_t tcpi_fackets;

    uint32_t tcpi_last_data_sent;
    uint32_t tcpi_last_ack_sent;
    uint32_t tcpi_last_data_recv;
    uint32_t tcpi_last_ack_recv;

    uint32_t tcpi_pmtu;
    uint32_t tcpi_rcv_ssthresh;
    uint32_t tcpi_rtt;
    uint32_t tcpi_rttvar;
    uint32_t tcpi_snd_ssthresh;
    uint32_t tcpi_snd_cwnd;
    uint32_t tcpi_advmss;
    uint32_t tcpi_reordering;

    uint32_t tcpi_rcv_rtt;
    uint32_t tcpi_rcv_space;

    uint32_t tcpi_total_retrans;

    uint64_t tcpi_pacing_rate;
    uint64_t tcpi_max_pacing_rate;
    uint64_t tcpi_bytes_acked;
    uint64_t tcpi_bytes_received;
    uint32_t tcpi_segs_out;
    uint32_t tcpi_segs_in;

    uint32_t tcpi_notsent_bytes;
    uint32_t tcpi_min_rtt;
    uint32_t tcpi_data_segs_in;
    uint32_t tcpi_data_segs_out;

    uint64_t tcpi_delivery_rate;

    uint64_t tcpi_busy_time;
    uint64_t tcpi_rwnd_limited;
    uint64_t tcpi_sndbuf_limited;

    uint32_t tcpi_delivered;
    uint32_t tcpi_delivered_ce;

    uint64_t tcpi_bytes_sent;
    uint64_t tcpi_bytes_retrans;
    uint32_t tcpi_dsack_dups;
    uint32_t tcpi_reord_seen;

    uint32_t tcpi_rcv_ooopack;

    uint32_t tcpi_snd_wnd;
    uint32_t tcpi_rcv_wnd;
    uint32_t tcpi_rehash;
    uint16_t tcpi_total_rto;
    uint16_t tcpi_total_rto_recoveries;
    uint32_t tcpi_total_rto_time;
};

// MARK: - Functions (return -1 and set errno on failure, like the calls they wrap)

/// setns(fd, CLONE_NEWNET) for the calling thread: glibc declares setns only under _GNU_SOURCE, which Swift's
/// Glibc module does not define.
int cnm_linux_setns_net(int fd);

/// bind() of a netlink socket to the kernel-assigned port and the multicast groups in the `groups` bitmask,
/// so Swift never builds a struct sockaddr_nl.
int cnm_linux_netlink_bind(int fd, uint32_t groups);

/// The netlink port id (nl_pid) the kernel assigned to a bound socket, from getsockname().
int cnm_linux_netlink_port_id(int fd, uint32_t *port_id);

/// A non-blocking, close-on-exec eventfd (sys/eventfd.h is not in Swift's Glibc module): a reader
/// thread's wake-up.
int cnm_linux_eventfd(void);

/// Caps glibc's malloc arenas (M_ARENA_MAX): each thread that allocates would otherwise get its own,
/// and memory freed in one is not reused by another. Call before threads start. malloc.h is not in
/// Swift's Glibc module.
int cnm_linux_malloc_limit_arenas(int arenas);

/// Fixes glibc's mmap threshold (M_MMAP_THRESHOLD): allocations of `bytes` or more get pages of their
/// own, given back to the kernel when freed. Left to itself glibc raises the threshold to the largest
/// block freed (up to 32 MiB), after which a pass's large arrays stay in the heap as freed memory
/// the RSS keeps.
int cnm_linux_malloc_fix_mmap_threshold(int bytes);

/// Returns freed heap memory to the kernel (malloc_trim), after a collection's large temporary arrays.
int cnm_linux_malloc_trim(void);

/// The heap, from glibc's mallinfo2: bytes allocated (in the arenas and in mmapped chunks), and bytes
/// freed but still held by the arenas (part of the RSS until a trim returns them).
void cnm_linux_heap_usage(uint64_t *in_use, uint64_t *free_kept);

#endif
