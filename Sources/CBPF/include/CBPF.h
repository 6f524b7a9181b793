/* The eBPF programs of bpf/, embedded in the agent, loaded and read through libbpf. Swift sees only
 * this opaque, prefixed API and the record layouts of cnm_bpf.h; no libbpf type crosses it. */
#ifndef CBPF_H
#define CBPF_H

#include <stddef.h>
#include <stdint.h>
#include "cnm_bpf.h"

typedef struct cnm_bpf cnm_bpf;

enum cnm_bpf_strategy {
    /* Bytes from sock:sock_send_length / sock_recv_length (Linux 6.x). */
    CNM_BPF_STRATEGY_SOCK_LENGTH = 0,
    /* TCP bytes from the kernel's tcp_sock counters (state changes and iter/tcp), UDP bytes from the
     * socket syscalls' exits: for kernels without the sock_length tracepoints. */
    CNM_BPF_STRATEGY_KERNEL_COUNTERS = 1,
};

enum cnm_bpf_iterator { CNM_BPF_ITER_TCP = 0, CNM_BPF_ITER_UDP = 1 };
enum cnm_bpf_table { CNM_BPF_TABLE_UDP = 0, CNM_BPF_TABLE_DEFERRED = 1 };

/* Size in bytes of the programs built into this binary; 0 when it was built without them. */
size_t cnm_bpf_object_size(void);

/* Opens, loads and attaches every program the strategy uses, with each flow table holding up to
 * `max_flows`. Returns NULL on failure with a message in `error`: the step that failed, and for a
 * program the verifier rejected, its name and the tail of the verifier log. */
cnm_bpf *cnm_bpf_open(int strategy, uint32_t max_flows, char *error, size_t error_len);

/* Detaches and frees everything. Any cnm_bpf_wait or cnm_bpf_consume call must have returned first. */
void cnm_bpf_close(cnm_bpf *bpf);

/* Blocks until the programs ask for the ring buffer to be read (they do once a quarter of it is
 * waiting), cnm_bpf_wake is called, or `timeout_ms` passes (-1: no limit). Returns 1 when woken by
 * cnm_bpf_wake, 0 otherwise, or a negative errno. */
int cnm_bpf_wait(cnm_bpf *bpf, int timeout_ms);

typedef void (*cnm_bpf_record_fn)(void *context, const struct cnm_flow_record *record);

/* Hands every closed-flow record waiting in the ring buffer to `fn`, without blocking. Returns the
 * number handed over or a negative errno. Run by one thread at a time. */
int cnm_bpf_consume(cnm_bpf *bpf, cnm_bpf_record_fn fn, void *context);

/* Makes a blocked (or the next) cnm_bpf_wait return 1 at once. Safe from any thread. */
void cnm_bpf_wake(cnm_bpf *bpf);

/* A new read descriptor for an iterator over the network namespace of the calling thread, or a
 * negative errno. iter/tcp yields struct cnm_flow_record, iter/udp one uint64_t socket address each. */
int cnm_bpf_iterator_open(cnm_bpf *bpf, int iterator);

/* The next entry of a table after `key` (the first when key is NULL): 0, -ENOENT at the end, or a
 * negative errno. */
int cnm_bpf_table_next(cnm_bpf *bpf, int table, const struct cnm_flow_key *key, struct cnm_flow_key *next_key,
                       struct cnm_flow *value);

/* Removes an entry; 0 or a negative errno (-ENOENT when already gone). */
int cnm_bpf_table_delete(cnm_bpf *bpf, int table, const struct cnm_flow_key *key);

/* The programs' loss counters, summed over CPUs. */
int cnm_bpf_telemetry(cnm_bpf *bpf, struct cnm_telemetry *out);

/* The name of a cgroup the programs met, by kernfs id: 0, or -ENOENT when unknown. */
int cnm_bpf_cgroup_name(cnm_bpf *bpf, uint64_t id, char *name, size_t name_len);

#endif
