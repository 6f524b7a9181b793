/* The maps every program shares. Defined once in maps.bpf.c; the other files see them as extern
 * and the static linker (bpftool gen object) joins them into one object. */
#ifndef CNM_MAPS_H
#define CNM_MAPS_H

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include "cnm_bpf.h"

/* One in-flight socket syscall's arguments, kept from its entry to its exit. */
struct cnm_syscall {
    __u64 addr;  /* user sockaddr (sendto, recvfrom) */
    __u64 msg;   /* user msghdr (sendmsg, recvmsg) */
    __u64 sk;    /* an unconnected UDP receive seen by sock_recv_length, accounted at the exit */
    __s64 bytes;
    __s32 fd;
    __u32 is_send;
};

#ifndef CNM_MAP_STORAGE
#define CNM_MAP_STORAGE extern
#endif

/* Open TCP flows. Every flow table's max_entries is set by the agent from
 * DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS and its memory budget. The hash tables are not
 * preallocated: their memory is charged to the agent's cgroup, and a preallocated table costs its
 * full size (18 MiB at 65,536 flows) however few flows there are. */
CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 65536);
    __type(key, struct cnm_flow_key);
    __type(value, struct cnm_flow);
} cnm_flows SEC(".maps");

/* UDP flows, one per socket and peer. The agent reads this table each interval and removes the
 * flows of sockets that no longer exist. */
CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 65536);
    __type(key, struct cnm_flow_key);
    __type(value, struct cnm_flow);
} cnm_udp_flows SEC(".maps");

/* Closed TCP flows that found the ring buffer full, waiting for the agent to collect them. */
CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 65536);
    __type(key, struct cnm_flow_key);
    __type(value, struct cnm_flow);
} cnm_deferred SEC(".maps");

/* Closed flows on their way to the agent. */
CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 2 * 1024 * 1024); /* about 10,000 records; mapped into the agent, so part of its RSS */
} cnm_closed SEC(".maps");

CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct cnm_syscall);
} cnm_syscalls SEC(".maps");

/* cgroup kernfs id -> the cgroup's name (the last path component, where container ids live). */
CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, char[CNM_CGROUP_NAME_LEN]);
} cnm_cgroup_names SEC(".maps");

CNM_MAP_STORAGE struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct cnm_telemetry);
} cnm_telemetry SEC(".maps");

#endif
