/* Structures shared by the eBPF programs and the agent. Fixed-width types and explicit padding only:
 * both sides read the same bytes, and the sizes are checked at compile time on both sides. */
#ifndef CNM_BPF_H
#define CNM_BPF_H

#ifdef __bpf__
typedef unsigned char cnm_u8;
typedef unsigned short cnm_u16;
typedef unsigned int cnm_u32;
typedef int cnm_s32;
typedef unsigned long long cnm_u64;
#else
#include <stdint.h>
typedef uint8_t cnm_u8;
typedef uint16_t cnm_u16;
typedef uint32_t cnm_u32;
typedef int32_t cnm_s32;
typedef uint64_t cnm_u64;
#endif

#define CNM_COMM_LEN 16
#define CNM_CGROUP_NAME_LEN 128

enum cnm_direction {
    CNM_DIRECTION_UNKNOWN = 0,
    CNM_DIRECTION_OUTGOING = 1,
    CNM_DIRECTION_INCOMING = 2,
};

enum cnm_flow_flag {
    /* The handshake completed while the programs were attached. */
    CNM_FLOW_ESTABLISHED = 1 << 0,
    /* The socket closed; this is its final record. */
    CNM_FLOW_CLOSED = 1 << 1,
    /* Tracked from the socket's first state change: the hook byte counters cover its whole life. */
    CNM_FLOW_BORN_WATCHED = 1 << 2,
    /* The peer's FIN arrived, which the kernel's bytes_received counts as one byte. */
    CNM_FLOW_FIN_RECEIVED = 1 << 3,
    /* The record has an entry in the flow table (otherwise it was read from the socket alone). */
    CNM_FLOW_TRACKED = 1 << 4,
    /* ECN (RFC 3168) was negotiated in the handshake. */
    CNM_FLOW_ECN_NEGOTIATED = 1 << 5,
    /* Not a flow: a listening socket the iterator passed, its local address and port only. */
    CNM_FLOW_LISTENING = 1 << 6,
};

/* The table key: a TCP socket is one flow; an unconnected UDP socket is one flow per peer. */
struct cnm_flow_key {
    cnm_u64 sk;             /* kernel address of the socket: unique while it lives */
    cnm_u8 raddr[16];       /* UDP only: the peer; zero for TCP */
    cnm_u16 rport;          /* UDP only, host byte order */
    cnm_u16 pad0;
    cnm_u32 closed_tag;     /* only in cnm_deferred: tells two closed lives of one address apart */
};

struct cnm_tuple {
    cnm_u8 saddr[16];       /* IPv4 in the first 4 bytes */
    cnm_u8 daddr[16];
    cnm_u16 sport;          /* host byte order */
    cnm_u16 dport;
    cnm_u8 family;          /* 4 or 6 */
    cnm_u8 protocol;        /* 6 TCP, 17 UDP */
    cnm_u8 direction;       /* enum cnm_direction */
    cnm_u8 state;           /* TCP state at the last read */
};

struct cnm_flow {
    struct cnm_tuple tuple;
    cnm_u64 netns;          /* network namespace inode */
    cnm_u64 cgroup_id;      /* kernfs id of the owner's cgroup; name in the cgroup_names map */
    cnm_u64 inode;          /* socket inode at the last read, 0 when orphaned */
    cnm_u64 first_ns;       /* bpf_ktime_get_ns() when the entry was made */
    /* Counted by the per-call hooks (sock_length or syscall strategies). */
    cnm_u64 bytes_sent;
    cnm_u64 bytes_received;
    cnm_u64 packets_sent;
    cnm_u64 packets_received;
    /* The kernel's own tcp_sock counters at the last read. */
    cnm_u64 tcp_bytes_sent; /* bytes_sent - bytes_retrans: payload, each byte once */
    cnm_u64 tcp_bytes_received; /* includes the peer's FIN (see CNM_FLOW_FIN_RECEIVED) */
    cnm_u32 segs_out;
    cnm_u32 segs_in;
    cnm_u32 total_retrans;
    cnm_u32 srtt_us;        /* already shifted: microseconds */
    cnm_u32 mdev_us;        /* already shifted: microseconds */
    /* TCP quality, as tcp_info reports it: retransmission timeouts (0 before Linux 6.7), reordering
     * events seen, segments received out of order, segments delivered with a congestion mark. */
    cnm_u32 total_rto;
    cnm_u32 reord_seen;
    cnm_u32 rcv_ooopack;
    cnm_u32 delivered_ce;
    cnm_s32 error;          /* sk_err when the socket closed: 111 refused, 104 reset, 110 timed out */
    cnm_u32 pid;            /* tgid of the owning process, 0 while unknown */
    cnm_u32 flags;          /* enum cnm_flow_flag */
    char comm[CNM_COMM_LEN];
};

/* One record on the ring buffer (a closed flow) or from an iterator (a live one). */
struct cnm_flow_record {
    struct cnm_flow_key key;
    struct cnm_flow flow;
};

/* What the programs could not do, per CPU; the agent sums and reports it. */
struct cnm_telemetry {
    cnm_u64 table_full;         /* a new flow found the flow table full */
    cnm_u64 ringbuf_deferred;   /* a closed flow did not fit the ring buffer: left in the table for the agent */
    cnm_u64 closed_lost;        /* ... and could not be left there either */
    cnm_u64 udp_peer_unknown;   /* unconnected UDP whose peer address could not be read */
    cnm_u64 syscall_table_full; /* more syscalls in flight than the argument table holds */
};

#define CNM_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
CNM_STATIC_ASSERT(sizeof(struct cnm_flow_key) == 32, "cnm_flow_key layout");
CNM_STATIC_ASSERT(sizeof(struct cnm_tuple) == 40, "cnm_tuple layout");
CNM_STATIC_ASSERT(sizeof(struct cnm_flow) == 184, "cnm_flow layout");
CNM_STATIC_ASSERT(sizeof(struct cnm_flow_record) == 216, "cnm_flow_record layout");
CNM_STATIC_ASSERT(sizeof(struct cnm_telemetry) == 40, "cnm_telemetry layout");

#endif
