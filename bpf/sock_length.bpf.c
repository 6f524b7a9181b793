/* Bytes as the processes themselves moved them: sock:sock_send_length and sock:sock_recv_length
 * (Linux 6.x) fire in the caller's context with the socket and the byte count of every send and
 * receive, so each flow's bytes and its owner are exact. */
#include "flows.h"
#include <bpf/bpf_tracing.h>

static __always_inline void cnm_count(struct sock *sk, int ret, int flags, int is_send) {
    if (ret <= 0 || (!is_send && (flags & MSG_PEEK)) || !cnm_is_inet(sk)) return;
    __u16 protocol = cnm_sk_protocol(sk);
    struct cnm_flow_key key;
    if (protocol == IPPROTO_TCP) {
        cnm_tcp_key(sk, &key);
        struct cnm_flow *flow = cnm_tcp_flow_for_call(sk, &key, CNM_DIRECTION_UNKNOWN, 1);
        if (!flow) return;
        __sync_fetch_and_add(is_send ? &flow->bytes_sent : &flow->bytes_received, ret);
        /* An accepted connection's first send or receive names its owner if accept() did not. */
        if (flow->pid == 0) cnm_set_owner(flow);
        return;
    }
    if (protocol != IPPROTO_UDP) return;
    /* Only an unconnected socket needs the syscall's arguments for its peer. */
    struct cnm_syscall *call = 0;
    if (!BPF_CORE_READ(sk, __sk_common.skc_dport)) {
        __u64 id = bpf_get_current_pid_tgid();
        call = bpf_map_lookup_elem(&cnm_syscalls, &id);
        if (!is_send && call) {
            /* The sender's address reaches user memory only when the syscall returns: count it there. */
            call->sk = (__u64)sk;
            call->bytes = ret;
            return;
        }
    }
    cnm_udp_key(sk, call, &key);
    cnm_account_udp(sk, &key, ret, is_send);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(cnm_send_length, struct sock *sk, int ret, int flags) {
    cnm_count(sk, ret, flags, 1);
    return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(cnm_recv_length, struct sock *sk, int ret, int flags) {
    cnm_count(sk, ret, flags, 0);
    return 0;
}
