/* One side of the cross-language test (the other is examples/c_abi_peer.rs): wait for the
 * go file, allocate COUNT ports from START-END one at a time and hold them all, write them
 * to OUT (one per line, then a line "done"), wait for the finish file, release, exit.
 *
 * Usage: xlang_peer REGISTRY_DIR START END COUNT OUT GO_FILE FINISH_FILE */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static int wait_for(const char *path) {
    for (int i = 0; i < 60000; i++) { /* 60 s */
        if (access(path, F_OK) == 0) return 1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "xlang_peer: %s never appeared\n", path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s DIR START END COUNT OUT GO FINISH\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[4]);
    portmgr_registry *reg = NULL;
    portmgr_request *req = NULL;
    REQUIRE_OK(portmgr_registry_open(argv[1], &reg));
    REQUIRE_OK(portmgr_request_new(&req));
    REQUIRE_OK(portmgr_request_set_range(req, (uint16_t)atoi(argv[2]), (uint16_t)atoi(argv[3])));
    portmgr_lease **leases = calloc((size_t)count, sizeof *leases);
    FILE *out = fopen(argv[5], "w");
    if (!leases || !out || !wait_for(argv[6])) return 1;
    for (int i = 0; i < count; i++) {
        CHECK_OK(portmgr_allocate(reg, req, &leases[i]));
        fprintf(out, "%u\n", (unsigned)portmgr_lease_port(leases[i]));
    }
    fprintf(out, "done\n");
    fclose(out);
    int ok = wait_for(argv[7]);
    for (int i = 0; i < count; i++) {
        if (leases[i]) CHECK_OK(portmgr_lease_release(leases[i]));
    }
    free(leases);
    portmgr_request_free(req);
    portmgr_registry_close(reg);
    return ok ? check_done("xlang_peer (C)") : 1;
}
