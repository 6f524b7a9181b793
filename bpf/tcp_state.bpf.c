/* TCP connections' lives: made on connect() and on the handshake of an accepted connection, given
 * their owner when accept() returns, and sent to the agent with their final counters on close. */
#include "flows.h"
#include <bpf/bpf_tracing.h>

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(cnm_tcp_state, struct sock *sk, int oldstate, int newstate) {
    if (cnm_sk_protocol(sk) != IPPROTO_TCP) return 0;
    struct cnm_flow_key key;
    cnm_tcp_key(sk, &key);

    if (newstate == TCP_SYN_SENT) {
        /* connect(): the caller's own context, so the owner is the current task. A new life: any
         * entry at this socket's address belongs to a socket that was freed, and must not be inherited. */
        bpf_map_delete_elem(&cnm_flows, &key);
        cnm_flow_entry(sk, &key, IPPROTO_TCP, CNM_DIRECTION_OUTGOING, CNM_FLOW_BORN_WATCHED, 1);
        return 0;
    }
    if (newstate == TCP_ESTABLISHED) {
        struct cnm_flow *flow;
        if (oldstate == TCP_SYN_SENT) {
            flow = bpf_map_lookup_elem(&cnm_flows, &key);
        } else {
            /* An accepted connection completes its handshake in softirq: the owner comes at accept().
             * The socket is new, so an entry at its address is a freed socket's (see SYN_SENT). */
            bpf_map_delete_elem(&cnm_flows, &key);
            flow = cnm_flow_entry(sk, &key, IPPROTO_TCP, CNM_DIRECTION_INCOMING, CNM_FLOW_BORN_WATCHED, 0);
        }
        if (flow) {
            flow->flags |= CNM_FLOW_ESTABLISHED;
            cnm_read_tuple(sk, flow);
        }
        return 0;
    }
    if (newstate != TCP_CLOSE) return 0;
    /* Listeners and half-open children that never became connections are not flows. */
    if (oldstate == TCP_LISTEN || oldstate == TCP_SYN_RECV || oldstate == TCP_NEW_SYN_RECV) return 0;

    struct cnm_flow_record record = {};
    record.key = key;
    struct cnm_flow *flow = bpf_map_lookup_elem(&cnm_flows, &key);
    if (flow) {
        record.flow = *flow;
        record.flow.flags |= CNM_FLOW_TRACKED;
    } else {
        record.flow.tuple.protocol = IPPROTO_TCP;
        /* A connection that was open before the programs were attached. */
        if (oldstate != TCP_SYN_SENT) record.flow.flags |= CNM_FLOW_ESTABLISHED;
    }
    cnm_read_tuple(sk, &record.flow);
    cnm_read_tcp_counters(sk, &record.flow);
    record.flow.tuple.state = oldstate;
    record.flow.error = BPF_CORE_READ(sk, sk_err);
    record.flow.flags |= CNM_FLOW_CLOSED;
    if (flow) bpf_map_delete_elem(&cnm_flows, &key);
    cnm_emit_closed(&record);
    return 0;
}

/* accept() returned a connection's descriptor: its owner is the process that accepted it. */
static __always_inline int cnm_accepted(struct cnm_sys_exit_args *ctx) {
    if (ctx->ret < 0) return 0;
    struct sock *sk = cnm_sock_from_fd(ctx->ret);
    if (!sk || cnm_sk_protocol(sk) != IPPROTO_TCP || !cnm_is_inet(sk)) return 0;
    struct cnm_flow_key key;
    cnm_tcp_key(sk, &key);
    struct cnm_flow *flow = cnm_tcp_flow_for_call(sk, &key, CNM_DIRECTION_INCOMING, 1);
    if (flow && flow->pid == 0) {
        cnm_set_owner(flow);
        cnm_read_tuple(sk, flow);
    }
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int cnm_accept4_exit(struct cnm_sys_exit_args *ctx) { return cnm_accepted(ctx); }

SEC("tracepoint/syscalls/sys_exit_accept")
int cnm_accept_exit(struct cnm_sys_exit_args *ctx) { return cnm_accepted(ctx); }
