/* Helpers every concern uses: reading a socket's addresses, owner and counters, and finding or
 * making its entry in the flow table. */
#ifndef CNM_FLOWS_H
#define CNM_FLOWS_H

#include "maps.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define CNM_TELEMETRY_ADD(field)                                                                   \
    do {                                                                                           \
        __u32 zero_ = 0;                                                                           \
        struct cnm_telemetry *t_ = bpf_map_lookup_elem(&cnm_telemetry, &zero_);                    \
        if (t_) t_->field += 1;                                                                    \
    } while (0)

static __always_inline __u16 cnm_sk_protocol(struct sock *sk) { return BPF_CORE_READ(sk, sk_protocol); }

static __always_inline int cnm_is_inet(struct sock *sk) {
    unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
    return family == AF_INET || family == AF_INET6;
}

/* Addresses, ports, family, protocol, state and namespace, as the socket has them now. */
static __always_inline void cnm_read_tuple(struct sock *sk, struct cnm_flow *flow) {
    struct cnm_tuple *t = &flow->tuple;
    /* A UDP flow keyed by its peer keeps the peer it was keyed by. */
    int read_peer = t->protocol != IPPROTO_UDP || t->dport == 0;
    unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
    if (family == AF_INET6) {
        t->family = 6;
        BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr);
        if (read_peer) BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr);
    } else {
        t->family = 4;
        BPF_CORE_READ_INTO((__u32 *)t->saddr, sk, __sk_common.skc_rcv_saddr);
        if (read_peer) BPF_CORE_READ_INTO((__u32 *)t->daddr, sk, __sk_common.skc_daddr);
    }
    /* A closing socket gives its port back before the CLOSE state is traced: keep the one seen. */
    __u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
    if (sport) t->sport = sport;
    if (read_peer) t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
    t->state = BPF_CORE_READ(sk, __sk_common.skc_state);
    flow->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    struct socket *sock = BPF_CORE_READ(sk, sk_socket);
    if (sock) flow->inode = BPF_CORE_READ(sock, file, f_inode, i_ino);
}

/* The cgroup the current task's memory controller (or the default hierarchy) puts it in. Its name
 * is remembered by id, since the container id is in the name and the cgroup may be gone by the
 * time the agent looks. */
static __always_inline __u64 cnm_current_cgroup(void) {
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct css_set *cgroups = BPF_CORE_READ(task, cgroups);
    struct cgroup *cgroup = 0;
    if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
        __u32 index = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
        struct cgroup_subsys_state *css = 0;
        void *slot = (void *)cgroups + bpf_core_field_offset(struct css_set, subsys) + index * sizeof(void *);
        bpf_probe_read_kernel(&css, sizeof(css), slot);
        if (css) cgroup = BPF_CORE_READ(css, cgroup);
    }
    if (!cgroup) cgroup = BPF_CORE_READ(cgroups, dfl_cgrp);
    if (!cgroup) return 0;
    struct kernfs_node *kn = BPF_CORE_READ(cgroup, kn);
    __u64 id = BPF_CORE_READ(kn, id);
    if (id && !bpf_map_lookup_elem(&cnm_cgroup_names, &id)) {
        char name[CNM_CGROUP_NAME_LEN] = {};
        bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(kn, name));
        bpf_map_update_elem(&cnm_cgroup_names, &id, name, BPF_NOEXIST);
    }
    return id;
}

/* The current task as the flow's owner. Only called in process context (syscalls, and the state
 * change a connect() makes), never from softirq where "current" is whoever was interrupted. */
static __always_inline void cnm_set_owner(struct cnm_flow *flow) {
    flow->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&flow->comm, sizeof(flow->comm));
    flow->cgroup_id = cnm_current_cgroup();
}

/* The kernel's own TCP counters, read the way tcp_info reports them. */
static __always_inline void cnm_read_tcp_counters(struct sock *sk, struct cnm_flow *flow) {
    struct tcp_sock *tp = (struct tcp_sock *)sk;
    __u64 sent = BPF_CORE_READ(tp, bytes_sent);
    __u64 retrans = BPF_CORE_READ(tp, bytes_retrans);
    flow->tcp_bytes_sent = sent > retrans ? sent - retrans : 0;
    flow->tcp_bytes_received = BPF_CORE_READ(tp, bytes_received);
    flow->segs_out = BPF_CORE_READ(tp, segs_out);
    flow->segs_in = BPF_CORE_READ(tp, segs_in);
    flow->total_retrans = BPF_CORE_READ(tp, total_retrans);
    flow->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
    flow->mdev_us = BPF_CORE_READ(tp, mdev_us) >> 2;
    flow->reord_seen = BPF_CORE_READ(tp, reord_seen);
    flow->rcv_ooopack = BPF_CORE_READ(tp, rcv_ooopack);
    flow->delivered_ce = BPF_CORE_READ(tp, delivered_ce);
    if (bpf_core_field_exists(tp->total_rto)) flow->total_rto = BPF_CORE_READ(tp, total_rto);
    /* Bit 0 of ecn_flags is RFC 3168 ECN in use (TCP_ECN_OK, TCP_ECN_MODE_RFC3168 since 6.18), what
     * tcp_info reports as TCPI_OPT_ECN; Accurate ECN (6.18, off by default) is not reported. */
    if (BPF_CORE_READ(tp, ecn_flags) & 1) flow->flags |= CNM_FLOW_ECN_NEGOTIATED;
    /* SOCK_DONE is set by the peer's FIN only (tcp_fin); RCV_SHUTDOWN would also be set by close(). */
    unsigned long sk_flags;
    if (bpf_core_field_exists(struct sock_common, skc_flags))
        sk_flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
    else
        sk_flags = BPF_CORE_READ(sk, sk_flags);
    if (sk_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) flow->flags |= CNM_FLOW_FIN_RECEIVED;
}

static __always_inline void cnm_tcp_key(struct sock *sk, struct cnm_flow_key *key) {
    __builtin_memset(key, 0, sizeof(*key));
    key->sk = (__u64)sk;
}

/* The agent drains the ring buffer every sample on its own; it is woken early only once a quarter
 * of the ring is waiting, so a burst of closes costs one wake-up per few thousand records, not one each. */
#define CNM_RING_WAKE_BYTES (512 * 1024)

/* Sends a closed flow to the agent. When the ring buffer is full the record stays in the table
 * in a table the agent sweeps, so a burst costs latency, not data. */
static __always_inline void cnm_emit_closed(struct cnm_flow_record *record) {
    __u64 wake = bpf_ringbuf_query(&cnm_closed, BPF_RB_AVAIL_DATA) >= CNM_RING_WAKE_BYTES ? BPF_RB_FORCE_WAKEUP
                                                                                           : BPF_RB_NO_WAKEUP;
    if (!bpf_ringbuf_output(&cnm_closed, record, sizeof(*record), wake)) return;
    CNM_TELEMETRY_ADD(ringbuf_deferred);
    record->key.closed_tag = (__u32)bpf_ktime_get_ns() | 1;
    if (bpf_map_update_elem(&cnm_deferred, &record->key, &record->flow, BPF_NOEXIST)) CNM_TELEMETRY_ADD(closed_lost);
}

/* The flow's entry, made from the socket when there is none yet. NULL when the table is full
 * (counted): the socket is then still read by the iterator and at close, only without an owner. */
static __always_inline struct cnm_flow *cnm_flow_entry(struct sock *sk, struct cnm_flow_key *key, __u8 protocol,
                                                      __u8 direction, __u32 flags, int with_owner) {
    void *table = protocol == IPPROTO_UDP ? (void *)&cnm_udp_flows : (void *)&cnm_flows;
    struct cnm_flow *flow = bpf_map_lookup_elem(table, key);
    if (flow) return flow;
    struct cnm_flow fresh = {};
    fresh.tuple.protocol = protocol;
    fresh.tuple.direction = direction;
    if (protocol == IPPROTO_UDP && key->rport) {
        __builtin_memcpy(fresh.tuple.daddr, key->raddr, 16);
        fresh.tuple.dport = key->rport;
    }
    cnm_read_tuple(sk, &fresh);
    fresh.first_ns = bpf_ktime_get_ns();
    fresh.flags = flags;
    if (with_owner) cnm_set_owner(&fresh);
    long err = bpf_map_update_elem(table, key, &fresh, BPF_NOEXIST);
    if (err == -17 /* EEXIST: made concurrently on another CPU */ || !err) return bpf_map_lookup_elem(table, key);
    CNM_TELEMETRY_ADD(table_full);
    return 0;
}

/* A TCP socket's flow for a send, a receive or an accept. A socket already in TCP_CLOSE has sent its
 * final record and had its entry deleted: data read from it afterwards (left in its queue by a reset),
 * or its accept() returning after a reset, must not make a new entry, which nothing would delete and a
 * later socket at the same address would inherit. */
static __always_inline struct cnm_flow *cnm_tcp_flow_for_call(struct sock *sk, struct cnm_flow_key *key,
                                                              __u8 direction, int with_owner) {
    if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE) return bpf_map_lookup_elem(&cnm_flows, key);
    return cnm_flow_entry(sk, key, IPPROTO_TCP, direction, 0, with_owner);
}

/* The socket behind a file descriptor of the current task, or NULL when it is not a socket. */
static __always_inline struct sock *cnm_sock_from_fd(int fd) {
    if (fd < 0) return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds)) return 0;
    struct file **fds = BPF_CORE_READ(fdt, fd);
    struct file *file = 0;
    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
    if (!file) return 0;
    if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK) return 0;
    struct socket *sock = BPF_CORE_READ(file, private_data);
    return sock ? BPF_CORE_READ(sock, sk) : 0;
}

/* A peer address a process gave or received in user memory (struct sockaddr_in or _in6). */
static __always_inline int cnm_read_user_peer(__u64 uaddr, struct cnm_flow_key *key) {
    if (!uaddr) return -1;
    __u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), (void *)uaddr)) return -1;
    __be16 port = 0;
    bpf_probe_read_user(&port, sizeof(port), (void *)(uaddr + 2));
    if (family == AF_INET) {
        if (bpf_probe_read_user(key->raddr, 4, (void *)(uaddr + 4))) return -1;
    } else if (family == AF_INET6) {
        if (bpf_probe_read_user(key->raddr, 16, (void *)(uaddr + 8))) return -1;
    } else {
        return -1;
    }
    key->rport = bpf_ntohs(port);
    return 0;
}

/* The peer of a datagram on `sk`: the connected peer, else the address the syscall carried. */
static __always_inline void cnm_udp_key(struct sock *sk, struct cnm_syscall *call, struct cnm_flow_key *key) {
    __builtin_memset(key, 0, sizeof(*key));
    key->sk = (__u64)sk;
    __be16 dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
    if (dport) {
        key->rport = bpf_ntohs(dport);
        if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6)
            BPF_CORE_READ_INTO(&key->raddr, sk, __sk_common.skc_v6_daddr);
        else
            BPF_CORE_READ_INTO((__u32 *)key->raddr, sk, __sk_common.skc_daddr);
        return;
    }
    __u64 uaddr = 0;
    if (call) {
        uaddr = call->addr;
        if (!uaddr && call->msg) bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)call->msg); /* msg_name */
    }
    if (cnm_read_user_peer(uaddr, key)) CNM_TELEMETRY_ADD(udp_peer_unknown);
}

/* The inode of the socket's file: tells two sockets apart that had the same kernel address. */
static __always_inline __u64 cnm_socket_inode(struct sock *sk) {
    struct socket *sock = BPF_CORE_READ(sk, sk_socket);
    return sock ? BPF_CORE_READ(sock, file, f_inode, i_ino) : 0;
}

/* A UDP socket's entry outlives it until the agent sees the socket gone from iter/udp; a new socket
 * given the freed one's address before then must not add to it. Such an entry is the old socket's final
 * record: it goes to the agent as closed and leaves the table. Returns 1 when it did. */
static __always_inline int cnm_retire_if_reused(struct sock *sk, struct cnm_flow_key *key, struct cnm_flow *flow) {
    __u64 inode = cnm_socket_inode(sk);
    if (!inode || !flow->inode || inode == flow->inode) return 0;
    struct cnm_flow_record record = {};
    record.key = *key;
    record.flow = *flow;
    record.flow.flags |= CNM_FLOW_CLOSED | CNM_FLOW_TRACKED;
    /* Retired concurrently on another CPU: that one sent the record. */
    if (!bpf_map_delete_elem(&cnm_udp_flows, key)) cnm_emit_closed(&record);
    return 1;
}

/* One datagram of `bytes` each way counted on its flow. Runs in the process's own syscall. */
static __always_inline void cnm_account_udp(struct sock *sk, struct cnm_flow_key *key, __s64 bytes, int is_send) {
    if (bytes < 0) return;
    __u8 direction = is_send ? CNM_DIRECTION_OUTGOING : CNM_DIRECTION_INCOMING;
    struct cnm_flow *flow = cnm_flow_entry(sk, key, IPPROTO_UDP, direction, CNM_FLOW_BORN_WATCHED, 1);
    if (flow && cnm_retire_if_reused(sk, key, flow))
        flow = cnm_flow_entry(sk, key, IPPROTO_UDP, direction, CNM_FLOW_BORN_WATCHED, 1);
    if (!flow) return;
    if (is_send) {
        __sync_fetch_and_add(&flow->bytes_sent, bytes);
        __sync_fetch_and_add(&flow->packets_sent, 1);
    } else {
        __sync_fetch_and_add(&flow->bytes_received, bytes);
        __sync_fetch_and_add(&flow->packets_received, 1);
    }
}

#endif
