/* Bench-only driver for bench/run.py: the kernel's bind(0) and portmgr through its C ABI
 * (include/portmgr.h). Same line protocol as bench/peers/src/main.rs:
 *
 *   latency PEER:N ...        N timed "give me a port" calls per peer, interleaved in
 *                             rounds; prints {"peer": {"median_us", "p99_us", "n"}}
 *   collide PEER tcp|udp N    READY, wait for a line, take N ports, only then bind them
 *                             all on 127.0.0.1 and hold them; print a JSON line; wait; exit
 *   burst PEER M              take 1 port (warm-up), READY, wait, take M ports (held),
 *                             print DONE <start> <end> (CLOCK_MONOTONIC s), wait, exit
 *
 * PEER is bind0 or portmgr (registry: $PORTMGR_DIR). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "portmgr.h"

#define ROUNDS 20

static portmgr_registry *reg;
static portmgr_request *udp_req;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what) {
    char msg[512];
    portmgr_last_error_message(msg, sizeof msg);
    fprintf(stderr, "peers_c: %s failed: %s\n", what, msg);
    exit(1);
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int bind0(int udp) {
    int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        perror("bind0");
        exit(1);
    }
    close(s);
    return ntohs(a.sin_port);
}

/* One "give me a port"; a portmgr lease is returned through *lease (held). */
static int take(int portmgr, int udp, portmgr_lease **lease) {
    *lease = NULL;
    if (!portmgr) return bind0(udp);
    if (portmgr_allocate(reg, udp ? udp_req : NULL, lease) != PORTMGR_OK) return -1;
    return portmgr_lease_port(*lease);
}

static void open_registry(void) {
    if (portmgr_registry_open(NULL, &reg) != PORTMGR_OK) die("portmgr_registry_open");
    if (portmgr_request_new(&udp_req) != PORTMGR_OK) die("portmgr_request_new");
    if (portmgr_request_set_protocols(udp_req, PORTMGR_PROTO_UDP) != PORTMGR_OK) die("set_protocols");
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void wait_line(void) {
    char buf[64];
    if (!fgets(buf, sizeof buf, stdin)) return;
}

static int latency(int argc, char **argv) {
    int np = argc;
    int *pm = calloc(np, sizeof *pm), *n = calloc(np, sizeof *n), *k = calloc(np, sizeof *k);
    double **s = calloc(np, sizeof *s);
    char **name = calloc(np, sizeof *name);
    for (int i = 0; i < np; i++) {
        name[i] = strdup(argv[i]);
        char *c = strchr(name[i], ':');
        if (!c) return 2;
        *c = 0;
        n[i] = atoi(c + 1);
        pm[i] = strcmp(name[i], "portmgr") == 0;
        if (pm[i] && !reg) open_registry();
        s[i] = calloc(n[i] + ROUNDS, sizeof(double));
    }
    portmgr_lease *lease;
    for (int i = 0; i < np; i++)
        for (int j = 0; j < n[i] / 10 + 5; j++) {
            take(pm[i], 0, &lease);
            if (lease) portmgr_lease_release(lease);
        }
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < np; i++)
            for (int j = 0; j < (n[i] / ROUNDS > 0 ? n[i] / ROUNDS : 1); j++) {
                double t = now_us();
                int port = take(pm[i], 0, &lease);
                double dt = now_us() - t;
                if (port <= 0) die("allocate");
                if (lease) portmgr_lease_release(lease); /* untimed, as in the Rust driver */
                s[i][k[i]++] = dt;
            }
    printf("{");
    for (int i = 0; i < np; i++) {
        qsort(s[i], k[i], sizeof(double), cmp);
        printf("%s\"%s\": {\"median_us\": %.3f, \"p99_us\": %.3f, \"n\": %d}", i ? ", " : "", name[i],
               s[i][(int)((k[i] - 1) * 0.5 + 0.5)], s[i][(int)((k[i] - 1) * 0.99 + 0.5)], k[i]);
    }
    printf("}\n");
    return 0;
}

static const char *errname(int e) {
    static char buf[32];
    switch (e) {
    case EADDRINUSE: return "EADDRINUSE";
    case EACCES: return "EACCES";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    default: snprintf(buf, sizeof buf, "errno %d", e); return buf;
    }
}

static int collide(const char *peer, const char *proto, int n) {
    int pm = strcmp(peer, "portmgr") == 0, udp = strcmp(proto, "udp") == 0;
    if (pm) open_registry();
    int *ports = calloc(n, sizeof *ports), *fds = calloc(n, sizeof *fds);
    portmgr_lease **leases = calloc(n, sizeof *leases);
    int got = 0, pick_errors = 0, inuse = 0, other = 0, other_errno = 0;
    printf("READY\n");
    fflush(stdout);
    wait_line();
    double t = now_us();
    for (int i = 0; i < n; i++) {
        int p = take(pm, udp, &leases[got]);
        if (p > 0) ports[got++] = p;
        else pick_errors++;
    }
    double pick_s = (now_us() - t) / 1e6;
    for (int i = 0; i < got; i++) {
        int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = loopback(ports[i]);
        if (!udp) setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || (!udp && listen(s, 128) != 0)) {
            if (errno == EADDRINUSE) inuse++;
            else { other++; other_errno = errno; }
            close(s);
            s = -1;
        }
        fds[i] = s;
    }
    printf("{\"ports\": [");
    for (int i = 0; i < got; i++) printf("%s%d", i ? "," : "", ports[i]);
    printf("], \"pick_errors\": %d, \"pick_s\": %.6f, \"bind_errors\": {", pick_errors, pick_s);
    int c = 0;
    if (inuse) printf("\"EADDRINUSE\": %d", inuse), c++;
    if (other) printf("%s\"%s\": %d", c ? ", " : "", errname(other_errno), other);
    printf("}}\n");
    fflush(stdout);
    wait_line();
    return 0;
}

static int burst(const char *peer, int m) {
    int pm = strcmp(peer, "portmgr") == 0;
    if (pm) open_registry();
    portmgr_lease **leases = calloc(m + 1, sizeof *leases);
    if (take(pm, 0, &leases[m]) <= 0) die("allocate"); /* warm-up: claims the owner slot */
    printf("READY\n");
    fflush(stdout);
    wait_line();
    double t = now_us();
    for (int i = 0; i < m; i++)
        if (take(pm, 0, &leases[i]) <= 0) die("allocate");
    printf("DONE %.6f %.6f\n", t / 1e6, now_us() / 1e6);
    fflush(stdout);
    wait_line();
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "latency") == 0) return latency(argc - 2, argv + 2);
    if (argc == 5 && strcmp(argv[1], "collide") == 0) return collide(argv[2], argv[3], atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "burst") == 0) return burst(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: see the comment at the top of bench/peers_c.c\n");
    return 2;
}
