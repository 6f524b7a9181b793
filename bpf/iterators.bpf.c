/* Open sockets read where they are, once per interval, at no per-packet cost: iter/tcp gives each
 * TCP connection's kernel counters merged with its table entry; iter/udp lists the UDP sockets that
 * still exist, so the agent can tell which UDP flows have closed. Both walk the network namespace
 * the reading thread is in. */
#include "flows.h"

/* The iterator's socket is a pointer the verifier knows (BTF), so its fields are loaded directly
 * instead of through bpf_probe_read_kernel, which the helpers in flows.h need for the syscall
 * tracepoints' untyped pointers: a pass over 20,000 sockets spent a third of its time in that helper.
 * What is read, and why, is the same as cnm_read_tuple and cnm_read_tcp_counters. */
static __always_inline void cnm_iter_read_tuple(struct tcp_sock *tp, struct cnm_flow *flow) {
    struct sock *sk = (struct sock *)tp;
    struct sock_common *skc = &sk->__sk_common;
    struct cnm_tuple *t = &flow->tuple;
    if (skc->skc_family == AF_INET6) {
        t->family = 6;
        for (int i = 0; i < 4; i++) {
            ((__u32 *)t->saddr)[i] = ((const __u32 *)skc->skc_v6_rcv_saddr.s6_addr)[i];
            ((__u32 *)t->daddr)[i] = ((const __u32 *)skc->skc_v6_daddr.s6_addr)[i];
        }
    } else {
        t->family = 4;
        ((__u32 *)t->saddr)[0] = skc->skc_rcv_saddr;
        ((__u32 *)t->daddr)[0] = skc->skc_daddr;
    }
    __u16 sport = skc->skc_num;
    if (sport) t->sport = sport;
    t->dport = bpf_ntohs(skc->skc_dport);
    t->state = skc->skc_state;
    struct net *net = skc->skc_net.net;
    if (net) flow->netns = net->ns.inum;
    struct socket *sock = sk->sk_socket;
    if (sock) {
        struct file *file = sock->file;
        if (file) {
            struct inode *inode = file->f_inode;
            if (inode) flow->inode = inode->i_ino;
        }
    }
}

static __always_inline void cnm_iter_read_tcp_counters(struct tcp_sock *tp, struct cnm_flow *flow) {
    __u64 sent = tp->bytes_sent;
    __u64 retrans = tp->bytes_retrans;
    flow->tcp_bytes_sent = sent > retrans ? sent - retrans : 0;
    flow->tcp_bytes_received = tp->bytes_received;
    flow->segs_out = tp->segs_out;
    flow->segs_in = tp->segs_in;
    flow->total_retrans = tp->total_retrans;
    flow->srtt_us = tp->srtt_us >> 3;
    flow->mdev_us = tp->mdev_us >> 2;
    flow->reord_seen = tp->reord_seen;
    flow->rcv_ooopack = tp->rcv_ooopack;
    flow->delivered_ce = tp->delivered_ce;
    if (bpf_core_field_exists(tp->total_rto)) flow->total_rto = tp->total_rto;
    if (tp->ecn_flags & 1) flow->flags |= CNM_FLOW_ECN_NEGOTIATED;
    struct sock *sk = (struct sock *)tp;
    unsigned long sk_flags;
    if (bpf_core_field_exists(struct sock_common, skc_flags))
        sk_flags = sk->__sk_common.skc_flags;
    else
        sk_flags = sk->sk_flags;
    if (sk_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) flow->flags |= CNM_FLOW_FIN_RECEIVED;
}

SEC("iter/tcp")
int cnm_iter_tcp(struct bpf_iter__tcp *ctx) {
    struct sock_common *skc = ctx->sk_common;
    if (!skc) return 0;
    unsigned char state = skc->skc_state;
    /* A socket in CLOSE is on its way out: its final record has left (or is leaving) through the
     * ring buffer, and reading it again here would count it twice. */
    if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || state == TCP_SYN_RECV || state == TCP_CLOSE) return 0;
    /* Full sockets only from here (the states above are the mini sockets'). */
    struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
    if (!tp) return 0;
    struct sock *sk = (struct sock *)tp;
    struct cnm_flow_record record = {};
    /* Listeners come first in the walk: they tell the agent which local ends are servers', for
     * the flows the programs did not see start (both ports may be in the ephemeral range). */
    if (state == TCP_LISTEN) {
        cnm_tcp_key(sk, &record.key);
        record.flow.tuple.protocol = IPPROTO_TCP;
        record.flow.flags = CNM_FLOW_LISTENING;
        cnm_iter_read_tuple(tp, &record.flow);
        bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
        return 0;
    }
    cnm_tcp_key(sk, &record.key);
    struct cnm_flow *flow = bpf_map_lookup_elem(&cnm_flows, &record.key);
    if (flow) {
        record.flow = *flow;
        record.flow.flags |= CNM_FLOW_TRACKED;
    } else {
        record.flow.tuple.protocol = IPPROTO_TCP;
        if (state != TCP_SYN_SENT) record.flow.flags |= CNM_FLOW_ESTABLISHED;
    }
    cnm_iter_read_tuple(tp, &record.flow);
    cnm_iter_read_tcp_counters(tp, &record.flow);
    bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
    return 0;
}

SEC("iter/udp")
int cnm_iter_udp(struct bpf_iter__udp *ctx) {
    struct udp_sock *udp = ctx->udp_sk;
    if (!udp) return 0;
    __u64 sk = (__u64)udp;
    bpf_seq_write(ctx->meta->seq, &sk, sizeof(sk));
    return 0;
}
