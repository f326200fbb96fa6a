/* A C client for the reliability suite's mixed concurrency run (tests/reliability/
 * concurrency.rs): 4 threads allocate through the C ABI, bind each port the way a
 * consumer would (plain dual-stack TCP bind, no reuse options), hold it briefly, close,
 * release. Prints the same lines as the Rust worker:
 *   L port alloc_ns release_ns pid      one per held port
 *   BINDFAIL port errno                 a port it was handed that it could not bind
 *   ERR status message                  an unexpected error
 *   SUM allocated released exhausted errors
 * Usage: c_worker REGISTRY_DIR START LEN SECONDS SEED */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "portmgr.h"

static portmgr_registry *reg;
static unsigned start_port, len_ports;
static unsigned long long deadline_ns;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long total[4];

static unsigned long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static int bind_plain(uint16_t port) {
    int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    int off = 0;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0) {
        int e = errno;
        close(s);
        return -e;
    }
    return s;
}

static void *run(void *arg) {
    unsigned long long seed = (unsigned long long)(uintptr_t)arg * 2654435761ull + 1;
    portmgr_request *req = NULL;
    if (portmgr_request_new(&req) != PORTMGR_OK) return NULL;
    portmgr_request_set_range(req, (uint16_t)start_port, (uint16_t)(start_port + len_ports - 1));
    size_t cap = 4096, n = 0;
    char *log = malloc(cap);
    unsigned long long mine[4] = {0, 0, 0, 0};
    while (mono_ns() < deadline_ns) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        portmgr_request_set_count(req, (seed % 5 == 0) ? 2 : 1);
        portmgr_lease *lease = NULL;
        portmgr_status st = portmgr_allocate(reg, req, &lease);
        if (st == PORTMGR_EXHAUSTED) {
            mine[2]++;
            usleep(200);
            continue;
        }
        if (st != PORTMGR_OK) {
            char msg[256];
            portmgr_last_error_message(msg, sizeof msg);
            pthread_mutex_lock(&out_lock);
            printf("ERR %d %s\n", (int)st, msg);
            pthread_mutex_unlock(&out_lock);
            mine[3]++;
            continue;
        }
        unsigned long long a = mono_ns();
        uint16_t ports[2];
        size_t np = portmgr_lease_ports(lease, ports, 2);
        mine[0] += np;
        int fds[2] = {-1, -1};
        for (size_t i = 0; i < np; i++) {
            fds[i] = bind_plain(ports[i]);
            if (fds[i] < 0) {
                pthread_mutex_lock(&out_lock);
                printf("BINDFAIL %u errno %d (C client)\n", ports[i], -fds[i]);
                pthread_mutex_unlock(&out_lock);
            }
        }
        usleep((useconds_t)(seed % 1500));
        for (size_t i = 0; i < np; i++)
            if (fds[i] >= 0) close(fds[i]);
        unsigned long long r = mono_ns();
        for (size_t i = 0; i < np; i++) {
            if (n + 96 > cap) { cap *= 2; log = realloc(log, cap); }
            n += (size_t)snprintf(log + n, cap - n, "L %u %llu %llu %d\n", ports[i], a, r, (int)getpid());
        }
        if (portmgr_lease_release(lease) == PORTMGR_OK) mine[1] += np;
        else mine[3]++;
    }
    portmgr_request_free(req);
    pthread_mutex_lock(&out_lock);
    fwrite(log, 1, n, stdout);
    for (int i = 0; i < 4; i++) total[i] += mine[i];
    pthread_mutex_unlock(&out_lock);
    free(log);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s DIR START LEN SECONDS SEED\n", argv[0]);
        return 2;
    }
    start_port = (unsigned)atoi(argv[2]);
    len_ports = (unsigned)atoi(argv[3]);
    deadline_ns = mono_ns() + (unsigned long long)atoi(argv[4]) * 1000000000ull;
    unsigned seed = (unsigned)atoi(argv[5]);
    if (portmgr_registry_open(argv[1], &reg) != PORTMGR_OK) {
        char msg[256];
        portmgr_last_error_message(msg, sizeof msg);
        printf("ERR open %s\nSUM 0 0 0 1\n", msg);
        return 1;
    }
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, run, (void *)(i + 1 + seed * 8));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("SUM %llu %llu %llu %llu\n", total[0], total[1], total[2], total[3]);
    fflush(stdout);
    portmgr_registry_close(reg);
    return 0;
}
