/* Tiny assertion helpers shared by the C consumer tests: a failed check prints where,
 * what, and the thread's last portmgr error, and the program exits non-zero at the end. */
#ifndef PORTMGR_TEST_CHECK_H
#define PORTMGR_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "portmgr.h"

static int check_failures;

static const char *last_err(void) {
    static _Thread_local char buf[512];
    portmgr_last_error_message(buf, sizeof buf);
    return buf;
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,        \
                    __LINE__, #cond, last_err());                                          \
            check_failures++;                                                              \
        }                                                                                  \
    } while (0)

/* The call must return `want` (a portmgr_status). */
#define CHECK_ST(call, want)                                                               \
    do {                                                                                   \
        portmgr_status st_ = (call);                                                       \
        if (st_ != (portmgr_status)(want)) {                                               \
            fprintf(stderr, "%s:%d: %s returned %u (%s), wanted %u (%s); last error: %s\n", \
                    __FILE__, __LINE__, #call, (unsigned)st_, portmgr_status_str(st_),     \
                    (unsigned)(want), portmgr_status_str(want), last_err());               \
            check_failures++;                                                              \
        }                                                                                  \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, PORTMGR_OK)

/* Stop now: later checks would only repeat the failure. */
#define REQUIRE_OK(call)                                                                   \
    do {                                                                                   \
        int before_ = check_failures;                                                      \
        CHECK_OK(call);                                                                    \
        if (check_failures != before_) {                                                   \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int check_done(const char *name) {
    if (check_failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", name, check_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
