/*
 * Loopback TCP workload for scripts/bench-modes.sh. Both ends run in this process, on 127.0.0.1.
 *
 *   conn-workload short N RATE BYTES   N connections opened at RATE per second; each: connect, send
 *                                      BYTES, read BYTES back, close. The server reads the BYTES,
 *                                      writes them back and closes (so its side ends in TIME_WAIT).
 *   conn-workload bulk TOTAL_BYTES     one connection carrying TOTAL_BYTES client -> server in
 *                                      64 KiB writes.
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
    return 0;
}

/* ---- bulk ---- */

static struct {
    int listen_fd;
    uint64_t received;
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
        B.received += (uint64_t)n;
    }
    close(fd);
    free(buf);
    return NULL;
}

static int run_bulk(uint64_t total) {
    struct sockaddr_in addr;
    B.listen_fd = listen_loopback(&addr);
    /* Time bound: 10 MB/s at the least, plus a minute. */
    alarm((unsigned)(total / 10000000u) + 60);
    pthread_t server;
    if (pthread_create(&server, NULL, bulk_server, NULL)) {
        fail("pthread_create failed");
        return 1;
    }
    char *buf = malloc(BULK_CHUNK);
    if (!buf) {
        fail("out of memory");
        return 1;
    }
    memset(buf, 'x', BULK_CHUNK);
    uint64_t start = now_ns();
    int fd = connect_to(&addr);
    if (fd < 0) {
        fail("connect: %s", strerror(errno));
        return 1;
    }
    for (uint64_t left = total; left > 0 && !atomic_load(&failed);) {
        size_t n = left < BULK_CHUNK ? (size_t)left : BULK_CHUNK;
        if (write_full(fd, buf, n) < 0) {
            fail("client write: %s", strerror(errno));
            break;
        }
        left -= n;
    }
    close(fd); /* the server reads to EOF: the end is when it has everything */
    pthread_join(server, NULL);
    uint64_t end = now_ns();
    free(buf);
    close(B.listen_fd);
    if (atomic_load(&failed)) return 1;
    if (B.received != total) {
        fail("server received %llu of %llu bytes", (unsigned long long)B.received, (unsigned long long)total);
        return 1;
    }
    double user, sys, cpu = cpu_seconds(&user, &sys), wall = (double)(end - start) / 1e9;
    printf("{\"workload\":\"bulk\",\"port\":%u,\"bytes\":%llu,\"write_size\":%d,\"wall_s\":%.6f,\"gbit_s\":%.2f,"
           "\"cpu_s\":%.6f,\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
           (unsigned)ntohs(addr.sin_port), (unsigned long long)total, BULK_CHUNK, wall, (double)total * 8 / wall / 1e9, cpu, user, sys);
    return 0;
}

static void usage(void) {
    fputs("usage: conn-workload short N RATE BYTES\n"
          "       conn-workload bulk TOTAL_BYTES\n",
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
    if (argc == 3 && strcmp(argv[1], "bulk") == 0)
        return run_bulk(parse_number("TOTAL_BYTES", argv[2], 1, 1ull << 40));
    usage();
}
