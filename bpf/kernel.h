/* The kernel types the programs read, curated: only the members used, each relocated by name at load
 * time (CO-RE, preserve_access_index), so one object fits every BTF kernel whatever its layout. */
#ifndef CNM_KERNEL_H
#define CNM_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>

#define CNM_KERNEL_TYPE __attribute__((preserve_access_index))

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* include/net/tcp_states.h */
enum {
    TCP_ESTABLISHED = 1,
    TCP_SYN_SENT = 2,
    TCP_SYN_RECV = 3,
    TCP_FIN_WAIT1 = 4,
    TCP_FIN_WAIT2 = 5,
    TCP_TIME_WAIT = 6,
    TCP_CLOSE = 7,
    TCP_CLOSE_WAIT = 8,
    TCP_LAST_ACK = 9,
    TCP_LISTEN = 10,
    TCP_CLOSING = 11,
    TCP_NEW_SYN_RECV = 12,
};

/* Values differ between kernels and configurations: read with bpf_core_enum_value(). */
enum sock_flags { SOCK_DEAD, SOCK_DONE };
enum cgroup_subsys_id { cpuset_cgrp_id, cpu_cgrp_id, cpuacct_cgrp_id, io_cgrp_id, memory_cgrp_id };

struct in6_addr {
    __u8 s6_addr[16];
};

struct ns_common {
    unsigned int inum;
} CNM_KERNEL_TYPE;

struct net {
    struct ns_common ns;
} CNM_KERNEL_TYPE;

typedef struct {
    struct net *net;
} possible_net_t;

struct sock_common {
    __be32 skc_daddr;
    __be32 skc_rcv_saddr;
    __be16 skc_dport;
    __u16 skc_num;
    unsigned short skc_family;
    volatile unsigned char skc_state;
    possible_net_t skc_net;
    struct in6_addr skc_v6_daddr;
    struct in6_addr skc_v6_rcv_saddr;
    unsigned long skc_flags; /* Linux 6.x: sk_flags moved here */
} CNM_KERNEL_TYPE;

struct inode {
    unsigned short i_mode;
    unsigned long i_ino;
} CNM_KERNEL_TYPE;

struct file {
    struct inode *f_inode;
    void *private_data;
} CNM_KERNEL_TYPE;

struct sock;

struct socket {
    struct file *file;
    struct sock *sk;
} CNM_KERNEL_TYPE;

struct sock {
    struct sock_common __sk_common;
    int sk_err;
    unsigned long sk_flags;
    __u16 sk_protocol;
    struct socket *sk_socket;
} CNM_KERNEL_TYPE;

struct tcp_sock {
    __u32 segs_in;
    __u32 segs_out;
    __u64 bytes_received;
    __u64 bytes_sent;
    __u64 bytes_retrans;
    __u32 total_retrans;
    __u32 srtt_us;
    __u32 mdev_us;
    __u32 reord_seen;
    __u32 rcv_ooopack;
    __u32 delivered_ce;
    __u16 total_rto; /* Linux 6.7+ */
    __u8 ecn_flags;
} CNM_KERNEL_TYPE;

struct udp_sock;

struct fdtable {
    unsigned int max_fds;
    struct file **fd;
} CNM_KERNEL_TYPE;

struct files_struct {
    struct fdtable *fdt;
} CNM_KERNEL_TYPE;

struct kernfs_node {
    const char *name;
    __u64 id;
} CNM_KERNEL_TYPE;

struct cgroup {
    struct kernfs_node *kn;
} CNM_KERNEL_TYPE;

struct cgroup_subsys_state {
    struct cgroup *cgroup;
} CNM_KERNEL_TYPE;

struct css_set {
    struct cgroup_subsys_state *subsys[1];
    struct cgroup *dfl_cgrp;
} CNM_KERNEL_TYPE;

struct task_struct {
    struct files_struct *files;
    struct css_set *cgroups;
} CNM_KERNEL_TYPE;

struct seq_file;

struct bpf_iter_meta {
    struct seq_file *seq;
    __u64 session_id;
    __u64 seq_num;
} CNM_KERNEL_TYPE;

struct bpf_iter__tcp {
    struct bpf_iter_meta *meta;
    struct sock_common *sk_common;
    __u32 uid;
} CNM_KERNEL_TYPE;

struct bpf_iter__udp {
    struct bpf_iter_meta *meta;
    struct udp_sock *udp_sk;
    __u32 uid;
    int bucket;
} CNM_KERNEL_TYPE;

/* Classic syscall tracepoints (tracefs format: common fields, __syscall_nr, then the arguments). */
struct cnm_sys_enter_args {
    __u64 common;
    __s32 syscall_nr;
    __u32 pad;
    __u64 args[6];
};

struct cnm_sys_exit_args {
    __u64 common;
    __s32 syscall_nr;
    __u32 pad;
    __s64 ret;
};

#endif
