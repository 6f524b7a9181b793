/* Open sockets read where they are, once per interval, at no per-packet cost: iter/tcp gives each
 * TCP connection's kernel counters merged with its table entry; iter/udp lists the UDP sockets that
 * still exist, so the agent can tell which UDP flows have closed. Both walk the network namespace
 * the reading thread is in. */
#include "flows.h"

SEC("iter/tcp")
int cnm_iter_tcp(struct bpf_iter__tcp *ctx) {
    struct sock_common *skc = ctx->sk_common;
    if (!skc) return 0;
    unsigned char state = BPF_CORE_READ(skc, skc_state);
    /* A socket in CLOSE is on its way out: its final record has left (or is leaving) through the
     * ring buffer, and reading it again here would count it twice. */
    if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || state == TCP_SYN_RECV || state == TCP_CLOSE) return 0;
    struct sock *sk = (struct sock *)skc;
    struct cnm_flow_record record = {};
    /* Listeners come first in the walk: they tell the agent which local ends are servers', for
     * the flows the programs did not see start (both ports may be in the ephemeral range). */
    if (state == TCP_LISTEN) {
        cnm_tcp_key(sk, &record.key);
        record.flow.tuple.protocol = IPPROTO_TCP;
        record.flow.flags = CNM_FLOW_LISTENING;
        cnm_read_tuple(sk, &record.flow);
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
    cnm_read_tuple(sk, &record.flow);
    cnm_read_tcp_counters(sk, &record.flow);
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
