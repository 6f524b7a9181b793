/* The socket syscalls that name a peer: sendto, sendmsg, recvfrom, recvmsg. Their arguments are kept
 * from entry to exit so an unconnected UDP datagram is counted against its real peer; where the
 * sock_length tracepoints are missing, the exits also count UDP bytes themselves. */
#include "flows.h"

/* Set by the agent before loading: 1 when UDP bytes are counted here rather than by sock_length. */
const volatile __u32 cnm_count_udp_at_exit = 0;

static __always_inline int cnm_enter(struct cnm_sys_enter_args *ctx, __u64 addr, __u64 msg, __u32 is_send) {
    __u64 id = bpf_get_current_pid_tgid();
    struct cnm_syscall call = {.addr = addr, .msg = msg, .fd = (__s32)ctx->args[0], .is_send = is_send};
    if (bpf_map_update_elem(&cnm_syscalls, &id, &call, BPF_ANY)) CNM_TELEMETRY_ADD(syscall_table_full);
    return 0;
}

static __always_inline int cnm_exit(struct cnm_sys_exit_args *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    struct cnm_syscall *call = bpf_map_lookup_elem(&cnm_syscalls, &id);
    if (!call) return 0;
    if (ctx->ret > 0) {
        struct sock *sk = 0;
        __s64 bytes = ctx->ret;
        if (call->sk) {
            sk = (struct sock *)call->sk;
            bytes = call->bytes;
        } else if (cnm_count_udp_at_exit) {
            sk = cnm_sock_from_fd(call->fd);
            if (sk && (cnm_sk_protocol(sk) != IPPROTO_UDP || !cnm_is_inet(sk))) sk = 0;
        }
        if (sk) {
            struct cnm_flow_key key;
            cnm_udp_key(sk, call, &key);
            cnm_account_udp(sk, &key, bytes, call->is_send);
        }
    }
    bpf_map_delete_elem(&cnm_syscalls, &id);
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int cnm_sendto_enter(struct cnm_sys_enter_args *ctx) { return cnm_enter(ctx, ctx->args[4], 0, 1); }

SEC("tracepoint/syscalls/sys_exit_sendto")
int cnm_sendto_exit(struct cnm_sys_exit_args *ctx) { return cnm_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int cnm_sendmsg_enter(struct cnm_sys_enter_args *ctx) { return cnm_enter(ctx, 0, ctx->args[1], 1); }

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int cnm_sendmsg_exit(struct cnm_sys_exit_args *ctx) { return cnm_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int cnm_recvfrom_enter(struct cnm_sys_enter_args *ctx) { return cnm_enter(ctx, ctx->args[4], 0, 0); }

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int cnm_recvfrom_exit(struct cnm_sys_exit_args *ctx) { return cnm_exit(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int cnm_recvmsg_enter(struct cnm_sys_enter_args *ctx) { return cnm_enter(ctx, 0, ctx->args[1], 0); }

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int cnm_recvmsg_exit(struct cnm_sys_exit_args *ctx) { return cnm_exit(ctx); }
