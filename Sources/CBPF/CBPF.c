#define _GNU_SOURCE
#include "CBPF.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* The skeleton `bpftool gen skeleton` makes of bpf/ (`make bpf`, run by `make build`): the object's
 * bytes, its maps, programs and read-only globals by name. A plain `swift build` without it gives an
 * agent that runs eBPF-less only. */
#if __has_include("cnm.skel.h")
#include "cnm.skel.h"
#define CNM_HAVE_PROGRAMS 1
#else
#define CNM_HAVE_PROGRAMS 0
struct cnm;
#endif

struct cnm_bpf {
    struct cnm *skel;
    struct ring_buffer *ring;
    int epoll_fd;
    int wake_fd;
    int table_fds[2];
    int telemetry_fd;
    int cgroup_names_fd;
    /* Set only while cnm_bpf_consume runs its callbacks. */
    cnm_bpf_record_fn fn;
    void *fn_context;
    int handed;
};

size_t cnm_bpf_object_size(void) {
#if CNM_HAVE_PROGRAMS
    size_t size = 0;
    cnm__elf_bytes(&size);
    return size;
#else
    return 0;
#endif
}

#if CNM_HAVE_PROGRAMS
/* libbpf's messages while opening and loading, kept so a failure can quote the verifier's log. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];
static size_t log_used;

static int capture_print(enum libbpf_print_level level, const char *format, va_list args) {
    if (level == LIBBPF_DEBUG) return 0;
    char line[1024];
    int n = vsnprintf(line, sizeof(line), format, args);
    if (n <= 0) return 0;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (len > sizeof(log_text) - 1) return 0;
    if (log_used + len > sizeof(log_text) - 1) {
        /* Keep the tail: that is where the verifier says why. */
        size_t drop = log_used + len - (sizeof(log_text) - 1);
        memmove(log_text, log_text + drop, log_used - drop);
        log_used -= drop;
    }
    memcpy(log_text + log_used, line, len);
    log_used += len;
    log_text[log_used] = 0;
    return 0;
}

/* The last `lines` lines of the captured log. */
static const char *log_tail(int lines) {
    if (log_used == 0) return "";
    const char *p = log_text + log_used;
    int seen = 0;
    while (p > log_text) {
        p--;
        if (*p == '\n' && ++seen > lines) return p + 1;
    }
    return log_text;
}

static void fail(char *error, size_t error_len, const char *step, int err, int with_log) {
    snprintf(error, error_len, "%s: %s%s%s", step, strerror(err < 0 ? -err : err), with_log && log_used ? "\n" : "",
             with_log ? log_tail(24) : "");
}

/* Classic tracepoints are found through tracefs; mount it where it is missing (it is on most hosts). */
static void ensure_tracefs(void) {
    struct stat st;
    if (stat("/sys/kernel/tracing/events", &st) == 0 || stat("/sys/kernel/debug/tracing/events", &st) == 0) return;
    mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
}

static int handle_record(void *context, void *data, size_t size) {
    struct cnm_bpf *bpf = context;
    if (size < sizeof(struct cnm_flow_record)) return 0;
    bpf->fn(bpf->fn_context, data);
    bpf->handed++;
    return 0;
}

/* Attaches each program that loads, one by one, so that a failure names the program. */
static int attach_programs(struct cnm *skel, char *error, size_t error_len) {
    const struct bpf_object_skeleton *s = skel->skeleton;
    for (int i = 0; i < s->prog_cnt; i++) {
        struct bpf_program *program = *s->progs[i].prog;
        if (!bpf_program__autoload(program)) continue;
        *s->progs[i].link = bpf_program__attach(program);
        if (!*s->progs[i].link) {
            char step[128];
            snprintf(step, sizeof(step), "attaching %s (%s)", s->progs[i].name, bpf_program__section_name(program));
            fail(error, error_len, step, errno, 1);
            return -1;
        }
    }
    return 0;
}

static cnm_bpf *open_locked(int strategy, uint32_t max_flows, char *error, size_t error_len) {
    struct cnm_bpf *bpf = calloc(1, sizeof(*bpf));
    if (!bpf) {
        snprintf(error, error_len, "out of memory");
        return NULL;
    }
    bpf->epoll_fd = bpf->wake_fd = -1;
    bpf->skel = cnm__open();
    if (!bpf->skel) {
        fail(error, error_len, "opening the eBPF object", errno, 1);
        goto out_free;
    }
    struct cnm *skel = bpf->skel;
    if (strategy == CNM_BPF_STRATEGY_KERNEL_COUNTERS) {
        bpf_program__set_autoload(skel->progs.cnm_send_length, false);
        bpf_program__set_autoload(skel->progs.cnm_recv_length, false);
    }
    skel->rodata->cnm_count_udp_at_exit = strategy == CNM_BPF_STRATEGY_KERNEL_COUNTERS;
    struct bpf_map *tables[] = {skel->maps.cnm_flows, skel->maps.cnm_udp_flows, skel->maps.cnm_deferred};
    for (size_t i = 0; i < sizeof(tables) / sizeof(*tables); i++) {
        int err = bpf_map__set_max_entries(tables[i], max_flows ? max_flows : 1);
        if (err) {
            fail(error, error_len, "sizing the flow tables", err, 0);
            goto out_free;
        }
    }
    int err = cnm__load(skel);
    if (err) {
        fail(error, error_len, "loading the eBPF programs", err, 1);
        goto out_free;
    }
    if (attach_programs(skel, error, error_len)) goto out_free;
    bpf->table_fds[CNM_BPF_TABLE_UDP] = bpf_map__fd(skel->maps.cnm_udp_flows);
    bpf->table_fds[CNM_BPF_TABLE_DEFERRED] = bpf_map__fd(skel->maps.cnm_deferred);
    bpf->telemetry_fd = bpf_map__fd(skel->maps.cnm_telemetry);
    bpf->cgroup_names_fd = bpf_map__fd(skel->maps.cnm_cgroup_names);
    bpf->ring = ring_buffer__new(bpf_map__fd(skel->maps.cnm_closed), handle_record, bpf, NULL);
    if (!bpf->ring) {
        fail(error, error_len, "opening the ring buffer", errno, 0);
        goto out_free;
    }
    /* The consumer waits on the ring and on an eventfd, so closing never waits for traffic. */
    bpf->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    bpf->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ring_event = {.events = EPOLLIN, .data.u32 = 0};
    struct epoll_event wake_event = {.events = EPOLLIN, .data.u32 = 1};
    if (bpf->wake_fd < 0 || bpf->epoll_fd < 0 ||
        epoll_ctl(bpf->epoll_fd, EPOLL_CTL_ADD, ring_buffer__epoll_fd(bpf->ring), &ring_event) ||
        epoll_ctl(bpf->epoll_fd, EPOLL_CTL_ADD, bpf->wake_fd, &wake_event)) {
        fail(error, error_len, "setting up the ring buffer wait", errno, 0);
        goto out_free;
    }
    return bpf;

out_free:
    cnm_bpf_close(bpf);
    return NULL;
}
#endif

cnm_bpf *cnm_bpf_open(int strategy, uint32_t max_flows, char *error, size_t error_len) {
#if CNM_HAVE_PROGRAMS
    pthread_mutex_lock(&log_lock);
    log_used = 0;
    log_text[0] = 0;
    libbpf_set_print(capture_print);
    ensure_tracefs();
    cnm_bpf *bpf = open_locked(strategy, max_flows, error, error_len);
    libbpf_set_print(NULL);
    pthread_mutex_unlock(&log_lock);
    return bpf;
#else
    (void)strategy;
    (void)max_flows;
    snprintf(error, error_len, "this binary was built without its eBPF programs (build with `make build`)");
    return NULL;
#endif
}

void cnm_bpf_close(cnm_bpf *bpf) {
    if (!bpf) return;
    ring_buffer__free(bpf->ring);
    if (bpf->epoll_fd >= 0) close(bpf->epoll_fd);
    if (bpf->wake_fd >= 0) close(bpf->wake_fd);
#if CNM_HAVE_PROGRAMS
    /* Detaches every link, then frees the object. */
    cnm__destroy(bpf->skel);
#endif
    free(bpf);
}

int cnm_bpf_wait(cnm_bpf *bpf, int timeout_ms) {
    struct epoll_event events[2];
    int n = epoll_wait(bpf->epoll_fd, events, 2, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    int woken = 0;
    for (int i = 0; i < n; i++) {
        if (events[i].data.u32 == 1) {
            uint64_t count;
            if (read(bpf->wake_fd, &count, sizeof(count)) < 0) { /* already drained */ }
            woken = 1;
        }
    }
    return woken;
}

int cnm_bpf_consume(cnm_bpf *bpf, cnm_bpf_record_fn fn, void *context) {
    bpf->fn = fn;
    bpf->fn_context = context;
    bpf->handed = 0;
    int err = ring_buffer__consume(bpf->ring);
    bpf->fn = NULL;
    return err < 0 ? err : bpf->handed;
}

void cnm_bpf_wake(cnm_bpf *bpf) {
    uint64_t one = 1;
    if (write(bpf->wake_fd, &one, sizeof(one)) < 0) { /* counter saturated: a wake is pending anyway */ }
}

int cnm_bpf_iterator_open(cnm_bpf *bpf, int iterator) {
#if CNM_HAVE_PROGRAMS
    struct bpf_link *link = iterator == CNM_BPF_ITER_TCP ? bpf->skel->links.cnm_iter_tcp : bpf->skel->links.cnm_iter_udp;
#else
    struct bpf_link *link = NULL;
    (void)bpf;
    (void)iterator;
#endif
    if (!link) return -ENOENT;
    int fd = bpf_iter_create(bpf_link__fd(link));
    return fd < 0 ? -errno : fd;
}

int cnm_bpf_table_next(cnm_bpf *bpf, int table, const struct cnm_flow_key *key, struct cnm_flow_key *next_key,
                       struct cnm_flow *value) {
    int fd = bpf->table_fds[table];
    for (;;) {
        if (bpf_map_get_next_key(fd, key, next_key)) return -errno;
        if (bpf_map_lookup_elem(fd, next_key, value) == 0) return 0;
        /* Removed between the two calls: go on from it. */
        if (errno != ENOENT) return -errno;
        key = next_key;
    }
}

int cnm_bpf_table_delete(cnm_bpf *bpf, int table, const struct cnm_flow_key *key) {
    return bpf_map_delete_elem(bpf->table_fds[table], key) ? -errno : 0;
}

int cnm_bpf_telemetry(cnm_bpf *bpf, struct cnm_telemetry *out) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return cpus;
    struct cnm_telemetry *per_cpu = calloc((size_t)cpus, sizeof(*per_cpu));
    if (!per_cpu) return -ENOMEM;
    uint32_t zero = 0;
    int err = bpf_map_lookup_elem(bpf->telemetry_fd, &zero, per_cpu) ? -errno : 0;
    memset(out, 0, sizeof(*out));
    for (int i = 0; !err && i < cpus; i++) {
        out->table_full += per_cpu[i].table_full;
        out->ringbuf_deferred += per_cpu[i].ringbuf_deferred;
        out->closed_lost += per_cpu[i].closed_lost;
        out->udp_peer_unknown += per_cpu[i].udp_peer_unknown;
        out->syscall_table_full += per_cpu[i].syscall_table_full;
    }
    free(per_cpu);
    return err;
}

int cnm_bpf_cgroup_name(cnm_bpf *bpf, uint64_t id, char *name, size_t name_len) {
    char value[CNM_CGROUP_NAME_LEN];
    if (bpf_map_lookup_elem(bpf->cgroup_names_fd, &id, value)) return -errno;
    value[CNM_CGROUP_NAME_LEN - 1] = 0;
    snprintf(name, name_len, "%s", value);
    return 0;
}
