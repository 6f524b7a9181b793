/*
 * Loopback TCP and UDP workloads for scripts/bench/bench.py (every benchmark it runs). Both ends run
 * in this process, on 127.0.0.1 (except serve, whose clients are elsewhere).
 *
 *   conn-workload short N RATE BYTES   N connections opened at RATE per second; each: connect, send
 *                                      BYTES, read BYTES back, close. The server reads the BYTES,
 *                                      writes them back and closes (so its side ends in TIME_WAIT).
 *   conn-workload bulk TOTAL_BYTES [CONNS]
 *                                      CONNS connections (default 1) at once, together carrying
 *                                      TOTAL_BYTES client -> server in 64 KiB writes.
 *   conn-workload hold N ROUNDS BYTES  N connections held open at once (to several listener ports,
 *                                      20,000 per port, and raising RLIMIT_NOFILE), then ROUNDS
 *                                      rounds of BYTES each way on every connection; "ready" on
 *                                      stderr; then waits for end of file on stdin and closes them.
 *   conn-workload udp N RATE BYTES     N UDP request/reply exchanges at RATE per second, BYTES each
 *                                      way; a client socket (connected) per 50 exchanges, the server
 *                                      socket unconnected (recvfrom/sendto).
 *   conn-workload serve ADDR REQ REPLY a TCP server on ADDR (an IPv4 address, any port): prints
 *                                      "port N" on stdout, then per connection reads up to REQ bytes
 *                                      (until REQ or end of file), writes REPLY bytes and closes;
 *                                      until end of file on stdin.
 *
 * Ground truth: with CONN_WORKLOAD_TRUTH=FILE, one TSV line per connection (UDP: per client socket) is
 * written there at the end: proto, client ip, client port, server ip, server port, payload bytes
 * client -> server, payload bytes server -> client (what the sockets actually carried: counted from
 * the return values of send/recv).
 *
 * Data moves with send(2)/recv(2) (the sendto/recvfrom system calls), as most network programs do;
 * the server accepts with accept4(2).
 *
 * Prints one line of JSON on stdout: what was done, the server's port, wall seconds and this process's own CPU seconds
 * (getrusage(RUSAGE_SELF), user + system, both ends together). Any failure: a message on stderr and
 * exit status 1; a run that exceeds its time bound: exit status 2.
 *
 * Build: gcc -O2 -pthread -o conn-workload conn-workload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { CLIENT_THREADS = 4, SERVER_THREADS = 4, BULK_CHUNK = 64 * 1024, IO_TIMEOUT_S = 10 };

static atomic_int failed;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

/* Records the first failure (later ones are consequences) and makes every thread stop. */
static void fail(const char *fmt, ...) {
    pthread_mutex_lock(&fail_lock);
    if (!atomic_exchange(&failed, 1)) {
        va_list ap;
        va_start(ap, fmt);
        fputs("conn-workload: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    pthread_mutex_unlock(&fail_lock);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "conn-workload: time bound exceeded, giving up\n";
    ssize_t unused = write(2, msg, sizeof msg - 1);
    (void)unused;
    _exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

static unsigned long long parse_number(const char *what, const char *text, unsigned long long min,
                                       unsigned long long max) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < min || v > max) {
        fprintf(stderr, "conn-workload: %s must be a whole number in [%llu, %llu], got '%s'\n", what, min,
                max, text);
        exit(1);
    }
    return v;
}

static void set_timeouts(int fd) {
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* 0 on success; -1 with errno set, or errno 0 when the peer closed early. */
static int read_full(int fd, char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) {
            errno = 0;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static const char *why(void) { return errno ? strerror(errno) : "peer closed the connection early"; }

/* ---- ground truth: one row per connection, written at the end ---- */

struct truth_row {
    char proto[4];
    uint32_t cip, sip; /* network order */
    uint16_t cport, sport;
    uint64_t c2s, s2c;
};
static struct truth_row *truth;
static size_t truth_len, truth_cap;
static pthread_mutex_t truth_lock = PTHREAD_MUTEX_INITIALIZER;

static void truth_add(const char *proto, const struct sockaddr_in *client, const struct sockaddr_in *server,
                      uint64_t c2s, uint64_t s2c) {
    if (!getenv("CONN_WORKLOAD_TRUTH")) return;
    pthread_mutex_lock(&truth_lock);
    if (truth_len == truth_cap) {
        size_t cap = truth_cap ? truth_cap * 2 : 1024;
        struct truth_row *t = realloc(truth, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&truth_lock);
            fail("out of memory");
            return;
        }
        truth = t;
        truth_cap = cap;
    }
    struct truth_row *r = &truth[truth_len++];
    snprintf(r->proto, sizeof r->proto, "%s", proto);
    r->cip = client->sin_addr.s_addr;
    r->cport = ntohs(client->sin_port);
    r->sip = server->sin_addr.s_addr;
    r->sport = ntohs(server->sin_port);
    r->c2s = c2s;
    r->s2c = s2c;
    pthread_mutex_unlock(&truth_lock);
}

static int truth_write(void) {
    const char *path = getenv("CONN_WORKLOAD_TRUTH");
    if (!path) return 0;
    FILE *f = fopen(path, "w");
    if (!f) {
        fail("%s: %s", path, strerror(errno));
        return 1;
    }
    for (size_t i = 0; i < truth_len; i++) {
        char c[INET_ADDRSTRLEN], sv[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &truth[i].cip, c, sizeof c);
        inet_ntop(AF_INET, &truth[i].sip, sv, sizeof sv);
        fprintf(f, "%s\t%s\t%u\t%s\t%u\t%llu\t%llu\n", truth[i].proto, c, truth[i].cport, sv, truth[i].sport,
                (unsigned long long)truth[i].c2s, (unsigned long long)truth[i].s2c);
    }
    if (fclose(f) != 0) {
        fail("%s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

static void local_addr(int fd, struct sockaddr_in *a) {
    socklen_t len = sizeof *a;
    memset(a, 0, sizeof *a);
    getsockname(fd, (struct sockaddr *)a, &len);
}

static int listen_on(struct sockaddr_in *addr, uint32_t ip_net_order) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        exit(1);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = ip_net_order;
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        fail("listening: %s", strerror(errno));
        exit(1);
    }
    return fd;
}

static int listen_loopback(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        exit(1);
    }
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        fail("listening on 127.0.0.1: %s", strerror(errno));
        exit(1);
    }
    return fd;
}

static int connect_to(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    set_timeouts(fd);
    while (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* ---- short ---- */

static struct {
    struct sockaddr_in addr;
    int listen_fd;
    uint64_t n, rate, bytes;
    uint64_t start_ns;
    atomic_uint_fast64_t next;        /* next connection index to start */
    atomic_uint_fast64_t done;        /* client side completed */
    atomic_uint_fast64_t served;      /* server side completed */
    atomic_uint_fast64_t max_late_ns; /* worst delay of a start behind its schedule */
    atomic_int stopping;
} S;

static void *short_server(void *arg) {
    (void)arg;
    char *buf = malloc(S.bytes);
    if (!buf) {
        fail("out of memory");
        return NULL;
    }
    while (!atomic_load(&failed)) {
        int fd = accept4(S.listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&S.stopping)) break;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fail("accept: %s", strerror(errno));
            break;
        }
        set_timeouts(fd);
        if (read_full(fd, buf, S.bytes) < 0) {
            fail("server read: %s", why());
        } else if (write_full(fd, buf, S.bytes) < 0) {
            fail("server write: %s", strerror(errno));
        } else {
            atomic_fetch_add(&S.served, 1);
        }
        close(fd);
    }
    free(buf);
    return NULL;
}

static void *short_client(void *arg) {
    (void)arg;
    char *out = malloc(S.bytes), *in = malloc(S.bytes);
    if (!out || !in) {
        fail("out of memory");
        return NULL;
    }
    memset(out, 'x', S.bytes);
    while (!atomic_load(&failed)) {
        uint64_t i = atomic_fetch_add(&S.next, 1);
        if (i >= S.n) break;
        uint64_t due = S.start_ns + (uint64_t)((double)i * 1e9 / (double)S.rate);
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u), .tv_nsec = (long)(due % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        uint64_t late = now_ns() - due, seen = atomic_load(&S.max_late_ns);
        while (late > seen && !atomic_compare_exchange_weak(&S.max_late_ns, &seen, late)) {}

        int fd = connect_to(&S.addr);
        if (fd < 0) {
            fail("connection %llu: connect: %s", (unsigned long long)i, strerror(errno));
            break;
        }
        int bad = 0;
        if (write_full(fd, out, S.bytes) < 0) {
            fail("connection %llu: client write: %s", (unsigned long long)i, strerror(errno));
            bad = 1;
        } else if (read_full(fd, in, S.bytes) < 0) {
            fail("connection %llu: client read: %s", (unsigned long long)i, why());
            bad = 1;
        }
        if (!bad) {
            struct sockaddr_in me;
            local_addr(fd, &me);
            truth_add("tcp", &me, &S.addr, S.bytes, S.bytes);
        }
        close(fd);
        if (bad) break;
        atomic_fetch_add(&S.done, 1);
    }
    free(out);
    free(in);
    return NULL;
}

static int run_short(uint64_t n, uint64_t rate, uint64_t bytes) {
    S.n = n;
    S.rate = rate;
    S.bytes = bytes;
    S.listen_fd = listen_loopback(&S.addr);
    /* Time bound: the paced duration plus a minute. */
    alarm((unsigned)(n / rate) + 60);

    pthread_t servers[SERVER_THREADS], clients[CLIENT_THREADS];
    for (int i = 0; i < SERVER_THREADS; i++)
        if (pthread_create(&servers[i], NULL, short_server, NULL)) {
            fail("pthread_create failed");
            return 1;
        }
    S.start_ns = now_ns();
    for (int i = 0; i < CLIENT_THREADS; i++)
        if (pthread_create(&clients[i], NULL, short_client, NULL)) {
            fail("pthread_create failed");
            return 1;
        }
    for (int i = 0; i < CLIENT_THREADS; i++) pthread_join(clients[i], NULL);
    uint64_t end_ns = now_ns();
    /* Every client got its reply, so every server thread is back in accept(); wake them. */
    atomic_store(&S.stopping, 1);
    shutdown(S.listen_fd, SHUT_RDWR);
    for (int i = 0; i < SERVER_THREADS; i++) pthread_join(servers[i], NULL);
    close(S.listen_fd);
    if (atomic_load(&failed)) return 1;
    uint64_t done = atomic_load(&S.done);
    if (done != n || atomic_load(&S.served) != n) {
        fail("only %llu of %llu connections completed (%llu served)", (unsigned long long)done,
             (unsigned long long)n, (unsigned long long)atomic_load(&S.served));
        return 1;
    }
    double user, sys, cpu = cpu_seconds(&user, &sys), wall = (double)(end_ns - S.start_ns) / 1e9;
    printf("{\"workload\":\"short\",\"port\":%u,\"connections\":%llu,\"bytes_each_way\":%llu,\"target_rate\":%llu,"
           "\"rate\":%.1f,\"max_start_delay_ms\":%.3f,\"wall_s\":%.6f,\"cpu_s\":%.6f,\"cpu_user_s\":%.6f,"
           "\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(S.addr.sin_port), (unsigned long long)done, (unsigned long long)bytes, (unsigned long long)rate, (double)done / wall,
           (double)atomic_load(&S.max_late_ns) / 1e6, wall, cpu, user, sys);
    return truth_write();
}

/* ---- bulk ---- */

static struct {
    int listen_fd;
    struct sockaddr_in addr;
    uint64_t per_conn;
    atomic_uint_fast64_t received;
} B;

static void *bulk_server(void *arg) {
    (void)arg;
    char *buf = malloc(BULK_CHUNK);
    int fd = accept4(B.listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (!buf || fd < 0) {
        fail(buf ? "accept: %s" : "out of memory", strerror(errno));
        free(buf);
        return NULL;
    }
    set_timeouts(fd);
    for (;;) {
        ssize_t n = recv(fd, buf, BULK_CHUNK, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fail("server read: %s", strerror(errno));
            break;
        }
        if (n == 0) break;
        atomic_fetch_add(&B.received, (uint64_t)n);
    }
    close(fd);
    free(buf);
    return NULL;
}

static void *bulk_client(void *arg) {
    uint64_t total = (uint64_t)(uintptr_t)arg;
    char *buf = malloc(BULK_CHUNK);
    if (!buf) {
        fail("out of memory");
        return NULL;
    }
    memset(buf, 'x', BULK_CHUNK);
    int fd = connect_to(&B.addr);
    if (fd < 0) {
        fail("connect: %s", strerror(errno));
        free(buf);
        return NULL;
    }
    uint64_t sent = 0;
    for (uint64_t left = total; left > 0 && !atomic_load(&failed);) {
        size_t n = left < BULK_CHUNK ? (size_t)left : BULK_CHUNK;
        if (write_full(fd, buf, n) < 0) {
            fail("client write: %s", strerror(errno));
            break;
        }
        left -= n;
        sent += n;
    }
    struct sockaddr_in me;
    local_addr(fd, &me);
    truth_add("tcp", &me, &B.addr, sent, 0);
    close(fd); /* the server reads to EOF: the end is when it has everything */
    free(buf);
    return NULL;
}

static int run_bulk(uint64_t total, unsigned conns) {
    B.listen_fd = listen_loopback(&B.addr);
    /* Time bound: 10 MB/s at the least, plus a minute. */
    alarm((unsigned)(total / 10000000u) + 60);
    pthread_t servers[64], clients[64];
    uint64_t start = now_ns();
    for (unsigned i = 0; i < conns; i++) {
        uint64_t share = total / conns + (i < total % conns ? 1 : 0);
        if (pthread_create(&servers[i], NULL, bulk_server, NULL) ||
            pthread_create(&clients[i], NULL, bulk_client, (void *)(uintptr_t)share)) {
            fail("pthread_create failed");
            return 1;
        }
    }
    for (unsigned i = 0; i < conns; i++) pthread_join(clients[i], NULL);
    for (unsigned i = 0; i < conns; i++) pthread_join(servers[i], NULL);
    uint64_t end = now_ns();
    close(B.listen_fd);
    if (atomic_load(&failed)) return 1;
    if (atomic_load(&B.received) != total) {
        fail("server received %llu of %llu bytes", (unsigned long long)atomic_load(&B.received),
             (unsigned long long)total);
        return 1;
    }
    double user, sys, cpu = cpu_seconds(&user, &sys), wall = (double)(end - start) / 1e9;
    printf("{\"workload\":\"bulk\",\"port\":%u,\"bytes\":%llu,\"connections\":%u,\"write_size\":%d,\"wall_s\":%.6f,"
           "\"gbit_s\":%.2f,\"cpu_s\":%.6f,\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(B.addr.sin_port), (unsigned long long)total, conns, BULK_CHUNK, wall,
           (double)total * 8 / wall / 1e9, cpu, user, sys);
    return truth_write();
}

/* ---- hold: many concurrent connections, light traffic ---- */

enum { PER_LISTENER = 20000 };

static void wait_stdin_eof(void) {
    char b[256];
    for (;;) {
        ssize_t n = read(0, b, sizeof b);
        if (n == 0 || (n < 0 && errno != EINTR)) return;
    }
}

static int run_hold(uint64_t n, uint64_t rounds, uint64_t bytes) {
    struct rlimit rl = {.rlim_cur = n * 2 + 1024, .rlim_max = n * 2 + 1024};
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    if (old.rlim_cur < rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fail("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)rl.rlim_cur, strerror(errno));
        return 1;
    }
    unsigned nl = (unsigned)((n + PER_LISTENER - 1) / PER_LISTENER);
    int *lfd = calloc(nl, sizeof *lfd), *cfd = calloc(n, sizeof *cfd), *sfd = calloc(n, sizeof *sfd);
    struct sockaddr_in *laddr = calloc(nl, sizeof *laddr), *caddr = calloc(n, sizeof *caddr);
    char *buf = malloc(bytes), *in = malloc(bytes);
    if (!lfd || !cfd || !sfd || !laddr || !caddr || !buf || !in) {
        fail("out of memory");
        return 1;
    }
    memset(buf, 'h', bytes);
    for (unsigned l = 0; l < nl; l++) lfd[l] = listen_loopback(&laddr[l]);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        unsigned l = (unsigned)(i % nl);
        cfd[i] = connect_to(&laddr[l]);
        if (cfd[i] < 0) {
            fail("connection %llu: connect: %s", (unsigned long long)i, strerror(errno));
            return 1;
        }
        sfd[i] = accept4(lfd[l], NULL, NULL, SOCK_CLOEXEC);
        if (sfd[i] < 0) {
            fail("connection %llu: accept: %s", (unsigned long long)i, strerror(errno));
            return 1;
        }
        set_timeouts(sfd[i]);
        local_addr(cfd[i], &caddr[i]);
    }
    uint64_t opened = now_ns();
    fprintf(stderr, "open %llu\n", (unsigned long long)n);
    for (uint64_t r = 0; r < rounds; r++)
        for (uint64_t i = 0; i < n; i++)
            if (write_full(cfd[i], buf, bytes) < 0 || read_full(sfd[i], in, bytes) < 0 ||
                write_full(sfd[i], buf, bytes) < 0 || read_full(cfd[i], in, bytes) < 0) {
                fail("connection %llu: round %llu: %s", (unsigned long long)i, (unsigned long long)r, why());
                return 1;
            }
    uint64_t end = now_ns();
    fprintf(stderr, "ready\n");
    wait_stdin_eof();
    for (uint64_t i = 0; i < n; i++) {
        truth_add("tcp", &caddr[i], &laddr[i % nl], rounds * bytes, rounds * bytes);
        close(cfd[i]);
        close(sfd[i]);
    }
    for (unsigned l = 0; l < nl; l++) close(lfd[l]);
    double user, sys, cpu = cpu_seconds(&user, &sys);
    printf("{\"workload\":\"hold\",\"port\":%u,\"connections\":%llu,\"listeners\":%u,\"rounds\":%llu,\"bytes\":%llu,"
           "\"open_s\":%.6f,\"wall_s\":%.6f,\"rate\":%.1f,\"cpu_s\":%.6f,\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(laddr[0].sin_port), (unsigned long long)n, nl, (unsigned long long)rounds,
           (unsigned long long)bytes, (double)(opened - start) / 1e9, (double)(end - start) / 1e9,
           (double)n / ((double)(opened - start) / 1e9), cpu, user, sys);
    return truth_write();
}

/* ---- udp: request/reply datagrams ---- */

enum { UDP_PER_SOCKET = 50, UDP_CLIENTS = 2 };

static struct {
    int server_fd;
    struct sockaddr_in addr;
    uint64_t n, rate, bytes, start_ns;
    atomic_uint_fast64_t next, answered, lost;
    atomic_int stopping;
} U;

static void *udp_server(void *arg) {
    (void)arg;
    char *buf = malloc(U.bytes + 1);
    while (buf && !atomic_load(&U.stopping)) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t r = recvfrom(U.server_fd, buf, U.bytes + 1, 0, (struct sockaddr *)&peer, &len);
        if (r < 0) continue; /* timeout: look at stopping */
        if (r == 1 && buf[0] == 'Q') break;
        sendto(U.server_fd, buf, (size_t)r, 0, (struct sockaddr *)&peer, len);
    }
    free(buf);
    return NULL;
}

static void *udp_client(void *arg) {
    (void)arg;
    char *out = malloc(U.bytes), *in = malloc(U.bytes + 1);
    if (!out || !in) {
        fail("out of memory");
        return NULL;
    }
    memset(out, 'u', U.bytes);
    for (;;) {
        uint64_t first = atomic_fetch_add(&U.next, UDP_PER_SOCKET);
        if (first >= U.n || atomic_load(&failed)) break;
        uint64_t last = first + UDP_PER_SOCKET < U.n ? first + UDP_PER_SOCKET : U.n;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct timeval tv = {.tv_sec = 1};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (fd < 0 || connect(fd, (struct sockaddr *)&U.addr, sizeof U.addr) < 0) {
            fail("udp socket: %s", strerror(errno));
            break;
        }
        uint64_t sent = 0, got = 0;
        for (uint64_t i = first; i < last; i++) {
            uint64_t due = U.start_ns + (uint64_t)((double)i * 1e9 / (double)U.rate);
            struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u), .tv_nsec = (long)(due % 1000000000u)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
            if (send(fd, out, U.bytes, 0) != (ssize_t)U.bytes) {
                fail("udp send: %s", strerror(errno));
                break;
            }
            sent += U.bytes;
            ssize_t r = recv(fd, in, U.bytes + 1, 0);
            if (r > 0) {
                got += (uint64_t)r;
                atomic_fetch_add(&U.answered, 1);
            } else {
                atomic_fetch_add(&U.lost, 1);
            }
        }
        struct sockaddr_in me;
        local_addr(fd, &me);
        truth_add("udp", &me, &U.addr, sent, got);
        close(fd);
    }
    free(out);
    free(in);
    return NULL;
}

static int run_udp(uint64_t n, uint64_t rate, uint64_t bytes) {
    U.n = n;
    U.rate = rate;
    U.bytes = bytes;
    alarm((unsigned)(n / rate) + 60);
    U.server_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&U.addr, 0, sizeof U.addr);
    U.addr.sin_family = AF_INET;
    U.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof U.addr;
    if (U.server_fd < 0 || bind(U.server_fd, (struct sockaddr *)&U.addr, sizeof U.addr) < 0 ||
        getsockname(U.server_fd, (struct sockaddr *)&U.addr, &len) < 0) {
        fail("udp server: %s", strerror(errno));
        return 1;
    }
    struct timeval tv = {.tv_usec = 200000};
    setsockopt(U.server_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_t server, clients[UDP_CLIENTS];
    pthread_create(&server, NULL, udp_server, NULL);
    U.start_ns = now_ns();
    for (int i = 0; i < UDP_CLIENTS; i++) pthread_create(&clients[i], NULL, udp_client, NULL);
    for (int i = 0; i < UDP_CLIENTS; i++) pthread_join(clients[i], NULL);
    uint64_t end = now_ns();
    atomic_store(&U.stopping, 1);
    pthread_join(server, NULL);
    close(U.server_fd);
    if (atomic_load(&failed)) return 1;
    double user, sys, cpu = cpu_seconds(&user, &sys), wall = (double)(end - U.start_ns) / 1e9;
    printf("{\"workload\":\"udp\",\"port\":%u,\"exchanges\":%llu,\"answered\":%llu,\"lost\":%llu,\"bytes_each_way\":%llu,"
           "\"target_rate\":%llu,\"rate\":%.1f,\"wall_s\":%.6f,\"cpu_s\":%.6f,\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(U.addr.sin_port), (unsigned long long)n, (unsigned long long)atomic_load(&U.answered),
           (unsigned long long)atomic_load(&U.lost), (unsigned long long)bytes, (unsigned long long)rate,
           (double)n / wall, wall, cpu, user, sys);
    return truth_write();
}

/* ---- serve: a server for clients elsewhere (containers) ---- */

static struct {
    int listen_fd;
    struct sockaddr_in addr;
    uint64_t req, reply;
    atomic_uint_fast64_t served;
    atomic_int stopping;
} V;

static void *serve_thread(void *arg) {
    (void)arg;
    char *buf = malloc(V.req > V.reply ? V.req : V.reply);
    if (!buf) return NULL;
    memset(buf, 'r', V.req > V.reply ? V.req : V.reply);
    while (!atomic_load(&V.stopping)) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(V.listen_fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&V.stopping)) break;
            continue;
        }
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        struct sockaddr_in me;
        local_addr(fd, &me);
        uint64_t got = 0, sent = 0;
        while (got < V.req) {
            ssize_t n = recv(fd, buf, V.req - got, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (uint64_t)n;
        }
        while (sent < V.reply) {
            ssize_t n = send(fd, buf, V.reply - sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            sent += (uint64_t)n;
        }
        truth_add("tcp", &peer, &me, got, sent);
        atomic_fetch_add(&V.served, 1);
        close(fd);
    }
    free(buf);
    return NULL;
}

static int run_serve(const char *ip, uint64_t req, uint64_t reply) {
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1) {
        fprintf(stderr, "conn-workload: not an IPv4 address: %s\n", ip);
        return 1;
    }
    V.req = req;
    V.reply = reply;
    V.listen_fd = listen_on(&V.addr, a.s_addr);
    printf("port %u\n", (unsigned)ntohs(V.addr.sin_port));
    fflush(stdout);
    pthread_t t[SERVER_THREADS];
    uint64_t start = now_ns();
    for (int i = 0; i < SERVER_THREADS; i++) pthread_create(&t[i], NULL, serve_thread, NULL);
    wait_stdin_eof();
    atomic_store(&V.stopping, 1);
    shutdown(V.listen_fd, SHUT_RDWR);
    for (int i = 0; i < SERVER_THREADS; i++) pthread_join(t[i], NULL);
    close(V.listen_fd);
    double user, sys, cpu = cpu_seconds(&user, &sys), wall = (double)(now_ns() - start) / 1e9;
    printf("{\"workload\":\"serve\",\"port\":%u,\"connections\":%llu,\"wall_s\":%.6f,\"rate\":%.2f,\"cpu_s\":%.6f,"
           "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(V.addr.sin_port), (unsigned long long)atomic_load(&V.served), wall,
           (double)atomic_load(&V.served) / wall, cpu, user, sys);
    return truth_write();
}

static void usage(void) {
    fputs("usage: conn-workload short N RATE BYTES\n"
          "       conn-workload bulk TOTAL_BYTES [CONNS]\n"
          "       conn-workload hold N ROUNDS BYTES\n"
          "       conn-workload udp N RATE BYTES\n"
          "       conn-workload serve ADDR REQ_BYTES REPLY_BYTES\n",
          stderr);
    exit(1);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    if (argc == 5 && strcmp(argv[1], "short") == 0) {
        uint64_t n = parse_number("N", argv[2], 1, 10000000);
        uint64_t rate = parse_number("RATE", argv[3], 1, 1000000);
        uint64_t bytes = parse_number("BYTES", argv[4], 1, 16u << 20);
        return run_short(n, rate, bytes);
    }
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "bulk") == 0)
        return run_bulk(parse_number("TOTAL_BYTES", argv[2], 1, 1ull << 40),
                        argc == 4 ? (unsigned)parse_number("CONNS", argv[3], 1, 64) : 1);
    if (argc == 5 && strcmp(argv[1], "hold") == 0)
        return run_hold(parse_number("N", argv[2], 1, 1000000), parse_number("ROUNDS", argv[3], 0, 1000),
                        parse_number("BYTES", argv[4], 1, 1 << 20));
    if (argc == 5 && strcmp(argv[1], "udp") == 0)
        return run_udp(parse_number("N", argv[2], 1, 10000000), parse_number("RATE", argv[3], 1, 1000000),
                       parse_number("BYTES", argv[4], 1, 65000));
    if (argc == 5 && strcmp(argv[1], "serve") == 0)
        return run_serve(argv[2], parse_number("REQ_BYTES", argv[3], 0, 1 << 20),
                         parse_number("REPLY_BYTES", argv[4], 0, 1 << 20));
    usage();
}
