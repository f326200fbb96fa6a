/* 8 threads x 200 allocations from one registry handle and one shared request, all
 * leases held at once: 0 duplicate ports. Also: the last error is per thread.
 *
 * Usage: test_threads REGISTRY_DIR   (ports come from 26000-27999) */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"

#define THREADS 8
#define PER_THREAD 200
#define START 26000
#define END 27999

static portmgr_registry *reg;
static portmgr_request *req;
static portmgr_lease *leases[THREADS][PER_THREAD];
static int thread_failures[THREADS];

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        portmgr_status st = portmgr_allocate(reg, req, &leases[t][i]);
        if (st != PORTMGR_OK) {
            fprintf(stderr, "thread %d allocation %d: %s: %s\n", t, i, portmgr_status_str(st), last_err());
            leases[t][i] = NULL;
            thread_failures[t]++;
        }
    }
    /* This thread's failure is this thread's message, whatever the others do. */
    int forged = 0;
    if (portmgr_lease_release((portmgr_lease *)&forged) != PORTMGR_INVALID_ARGUMENT ||
        strstr(last_err(), "not a live portmgr_lease") == NULL) {
        thread_failures[t]++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REGISTRY_DIR\n", argv[0]);
        return 2;
    }
    REQUIRE_OK(portmgr_registry_open(argv[1], &reg));
    REQUIRE_OK(portmgr_request_new(&req));
    REQUIRE_OK(portmgr_request_set_range(req, START, END));
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        CHECK(thread_failures[t] == 0);
    }
    /* The main thread made no failing call. */
    CHECK(portmgr_last_error_message(NULL, 0) == 0);
    static unsigned char seen[65536];
    int held = 0, dups = 0, outside = 0;
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < PER_THREAD; i++) {
            uint16_t p = portmgr_lease_port(leases[t][i]);
            if (p == 0) continue;
            held++;
            if (p < START || p > END) outside++;
            if (seen[p]++) dups++;
        }
    }
    printf("test_threads: %d leases held at once, %d duplicates, %d outside the range\n", held, dups, outside);
    CHECK(held == THREADS * PER_THREAD);
    CHECK(dups == 0);
    CHECK(outside == 0);
    char json[256];
    size_t n = 0;
    CHECK_OK(portmgr_registry_stats_json(reg, json, sizeof json, &n));
    char want[32];
    snprintf(want, sizeof want, "\"held\":%d", THREADS * PER_THREAD);
    CHECK(strstr(json, want) != NULL);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < PER_THREAD; i++) {
            if (leases[t][i]) CHECK_OK(portmgr_lease_release(leases[t][i]));
        }
    }
    CHECK_OK(portmgr_registry_stats_json(reg, json, sizeof json, &n));
    CHECK(strstr(json, "\"held\":0") != NULL);
    portmgr_request_free(req);
    portmgr_registry_close(reg);
    return check_done("test_threads");
}
