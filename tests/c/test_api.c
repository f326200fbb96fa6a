/* The C API, single-threaded: allocation, release, double release, NULL and invalid
 * arguments, invalid UTF-8, forged and stale handles, multi-port leases, bound sockets,
 * JSON views, keep/renew, names.
 *
 * Usage: test_api REGISTRY_DIR   (a fresh directory; ports come from 26000-26399) */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/un.h>

#include "check.h"

static char dir[4096];
static portmgr_registry *reg;

static portmgr_request *request_in(uint16_t start, uint16_t end) {
    portmgr_request *req = NULL;
    REQUIRE_OK(portmgr_request_new(&req));
    REQUIRE_OK(portmgr_request_set_range(req, start, end));
    return req;
}

static void test_static_strings(void) {
    CHECK(strcmp(portmgr_version(), PORTMGR_VERSION) == 0);
    CHECK(strcmp(portmgr_status_str(PORTMGR_OK), "ok") == 0);
    CHECK(strcmp(portmgr_status_str(PORTMGR_IN_USE), "in use") == 0);
    CHECK(strcmp(portmgr_status_str(12345), "unknown status") == 0);
    for (uint32_t s = 0; s < 20; s++) {
        CHECK(portmgr_status_str(s) != NULL);
    }
    CHECK(PORTMGR_OK == 0 && PORTMGR_INVALID_ARGUMENT == 1 && PORTMGR_INTERNAL == 10);
}

static void test_last_error(void) {
    bool free_ = true;
    CHECK_ST(portmgr_probe(0, PORTMGR_PROTO_TCP, &free_), PORTMGR_INVALID_ARGUMENT);
    CHECK(free_ == true); /* out-param untouched on failure */
    size_t n = portmgr_last_error_message(NULL, 0);
    CHECK(n > 0);
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(portmgr_last_error_message(small, sizeof small) == n);
    CHECK(small[7] == '\0' && strlen(small) == 7);
    char untouched[4] = "abc";
    CHECK(portmgr_last_error_message(untouched, 0) == n);
    CHECK(strcmp(untouched, "abc") == 0);
    char full[512];
    CHECK(portmgr_last_error_message(full, sizeof full) == n && strlen(full) == n);
    CHECK(strstr(full, "port 0") != NULL);
    CHECK(portmgr_last_os_error() == 0);
    /* A success clears it. */
    CHECK_OK(portmgr_probe(26399, PORTMGR_PROTO_TCP, &free_));
    CHECK(portmgr_last_error_message(NULL, 0) == 0);
}

static void test_open(void) {
    portmgr_registry *r = (portmgr_registry *)(uintptr_t)0x42;
    CHECK_ST(portmgr_registry_open(dir, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_registry_open("", &r), PORTMGR_INVALID_ARGUMENT);
    CHECK(r == (portmgr_registry *)(uintptr_t)0x42);
    /* A regular file is no registry directory. */
    char file[4200];
    snprintf(file, sizeof file, "%s.file", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    portmgr_status st = portmgr_registry_open(file, &r);
    CHECK(st != PORTMGR_OK);
    CHECK(r == (portmgr_registry *)(uintptr_t)0x42);
    CHECK(portmgr_last_error_message(NULL, 0) > 0);
    unlink(file);
    /* Paths are bytes: a non-UTF-8 directory name is fine. */
    char odd[4200];
    snprintf(odd, sizeof odd, "%s-\xff\xfe", dir);
    REQUIRE_OK(portmgr_registry_open(odd, &r));
    portmgr_registry_close(r);
    portmgr_registry_close(r); /* closed twice: ignored, no crash */
    portmgr_registry_close(NULL);
    /* NULL: the default location, which honours $PORTMGR_DIR (run.sh sets a temp one). */
    if (getenv("PORTMGR_DIR") != NULL) {
        portmgr_registry *d = NULL;
        REQUIRE_OK(portmgr_registry_open(NULL, &d));
        CHECK(d != NULL);
        portmgr_registry_close(d);
    }
    REQUIRE_OK(portmgr_registry_open(dir, &reg));
    CHECK_OK(portmgr_registry_set_lock_timeout(reg, 5000));
}

static void test_request_validation(void) {
    portmgr_request *req = NULL;
    CHECK_ST(portmgr_request_new(NULL), PORTMGR_INVALID_ARGUMENT);
    REQUIRE_OK(portmgr_request_new(&req));
    CHECK_ST(portmgr_request_set_protocols(req, 0), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_protocols(req, 4), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_set_protocols(req, PORTMGR_PROTO_TCP | PORTMGR_PROTO_UDP));
    CHECK_ST(portmgr_request_set_range(req, 0, 10), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_range(req, 26010, 26000), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_exclude(req, NULL, 2), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_exclude(req, NULL, 0)); /* nothing to exclude; no range needed */
    CHECK_ST(portmgr_request_set_strategy(req, 99), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_count(req, 0), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_count(req, 100000), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_name(req, "\xff\xfe"), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "UTF-8") != NULL);
    CHECK_ST(portmgr_request_set_name(req, "bad\x01name"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_name(req, ""), PORTMGR_INVALID_ARGUMENT);
    char longname[100];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ST(portmgr_request_set_name(req, longname), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_hash_key(req, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_hash_key(req, "\xc3\x28"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_probe_addr(req, "not-an-address"), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_set_probe_addr(req, "::1"));
    CHECK_OK(portmgr_request_set_probe_addr(req, NULL));
    CHECK_OK(portmgr_request_set_name(req, "ok-name"));
    CHECK_OK(portmgr_request_set_name(req, NULL));
    CHECK_OK(portmgr_request_set_ttl_ms(req, 1000));
    CHECK_OK(portmgr_request_set_ttl_ms(req, 0));
    CHECK_OK(portmgr_request_set_watch_pid(req, (uint32_t)getpid()));
    CHECK_OK(portmgr_request_set_watch_pid(req, 0));
    CHECK_OK(portmgr_request_set_preferred(req, 0, false));
    /* NULL and forged request handles. */
    CHECK_ST(portmgr_request_set_count(NULL, 1), PORTMGR_INVALID_ARGUMENT);
    int local = 0;
    CHECK_ST(portmgr_request_set_count((portmgr_request *)&local, 1), PORTMGR_INVALID_ARGUMENT);
    /* A failing setter leaves the request unchanged: two ports, still. */
    CHECK_OK(portmgr_request_set_range(req, 26000, 26099));
    CHECK_OK(portmgr_request_set_protocols(req, PORTMGR_PROTO_TCP));
    CHECK_OK(portmgr_request_set_count(req, 2));
    CHECK_ST(portmgr_request_set_count(req, 0), PORTMGR_INVALID_ARGUMENT);
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    CHECK(portmgr_lease_ports(lease, NULL, 0) == 2);
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(req);
    /* Freed: every use is an error, a second free is ignored. */
    CHECK_ST(portmgr_request_set_count(req, 1), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "not a live portmgr_request") != NULL);
    CHECK_ST(portmgr_allocate(reg, req, &lease), PORTMGR_INVALID_ARGUMENT);
    portmgr_request_free(req);
    portmgr_request_free(NULL);
}

static void test_allocate_release(void) {
    portmgr_request *req = request_in(26000, 26099);
    portmgr_lease *lease = NULL;
    portmgr_lease *sentinel = (portmgr_lease *)(uintptr_t)0x77;
    portmgr_lease *out = sentinel;
    CHECK_ST(portmgr_allocate(NULL, req, &out), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_allocate(reg, req, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK(out == sentinel);
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    uint16_t port = portmgr_lease_port(lease);
    CHECK(port >= 26000 && port <= 26099);
    uint16_t one = 0;
    CHECK(portmgr_lease_ports(lease, &one, 1) == 1 && one == port);
    /* The registry knows it. */
    char json[65536];
    size_t n = 0;
    CHECK_OK(portmgr_registry_list_json(reg, json, sizeof json, &n));
    char needle[32];
    snprintf(needle, sizeof needle, "\"port\":%u", (unsigned)port);
    CHECK(n < sizeof json && strstr(json, needle) != NULL);
    /* Release, then release again: an error status, never a crash. */
    CHECK_OK(portmgr_lease_release(lease));
    CHECK_ST(portmgr_lease_release(lease), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "not a live portmgr_lease") != NULL);
    CHECK_ST(portmgr_lease_release(lease), PORTMGR_INVALID_ARGUMENT);
    CHECK(portmgr_lease_port(lease) == 0);
    CHECK(portmgr_lease_ports(lease, NULL, 0) == 0);
    CHECK_ST(portmgr_lease_renew(lease, 1000), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_lease_keep(lease), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_registry_list_json(reg, json, sizeof json, &n));
    CHECK(strstr(json, needle) == NULL);
    CHECK_ST(portmgr_release_port(reg, port), PORTMGR_NOT_FOUND);
    /* A NULL request: one TCP port from the default pool. */
    REQUIRE_OK(portmgr_allocate(reg, NULL, &lease));
    CHECK(portmgr_lease_port(lease) >= 1024);
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(req);
}

static void test_forged_handles(void) {
    int local = 7;
    portmgr_lease *forged = (portmgr_lease *)&local;
    CHECK(portmgr_lease_port(forged) == 0);
    CHECK_ST(portmgr_lease_release(forged), PORTMGR_INVALID_ARGUMENT);
    CHECK(local == 7);
    CHECK_ST(portmgr_lease_release((portmgr_lease *)(uintptr_t)0x1010), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_lease_release((portmgr_lease *)(uintptr_t)-16), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_lease_release(NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK(portmgr_lease_port(NULL) == 0);
    /* A registry handle where a lease belongs: named as such, untouched. */
    CHECK_ST(portmgr_lease_release((portmgr_lease *)reg), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "portmgr_registry handle") != NULL);
    portmgr_lease *lease = NULL;
    CHECK_ST(portmgr_allocate((portmgr_registry *)&local, NULL, &lease), PORTMGR_INVALID_ARGUMENT);
    CHECK(lease == NULL);
    size_t n = 0;
    CHECK_ST(portmgr_registry_list_json((portmgr_registry *)&local, NULL, 0, &n), PORTMGR_INVALID_ARGUMENT);
    portmgr_registry_close((portmgr_registry *)&local); /* ignored */
    CHECK(local == 7);
    /* A closed registry handle is dead, but its leases live on. */
    portmgr_registry *r2 = NULL;
    REQUIRE_OK(portmgr_registry_open(dir, &r2));
    portmgr_request *req = request_in(26100, 26149);
    REQUIRE_OK(portmgr_allocate(r2, req, &lease));
    portmgr_registry_close(r2);
    CHECK_ST(portmgr_allocate(r2, req, &lease), PORTMGR_INVALID_ARGUMENT);
    CHECK(portmgr_lease_port(lease) >= 26100);
    CHECK_OK(portmgr_lease_renew(lease, 60000));
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(req);
}

static void test_names(void) {
    portmgr_request *req = request_in(26150, 26199);
    CHECK_OK(portmgr_request_set_name(req, "c-api-web"));
    CHECK_OK(portmgr_request_set_strategy(req, PORTMGR_STRATEGY_HASH));
    portmgr_lease *a = NULL, *b = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &a));
    CHECK_ST(portmgr_allocate(reg, req, &b), PORTMGR_IN_USE);
    CHECK(b == NULL);
    uint16_t port = 0;
    CHECK_OK(portmgr_lookup_name(reg, "c-api-web", &port));
    CHECK(port == portmgr_lease_port(a));
    CHECK_ST(portmgr_lookup_name(reg, "c-api-web", NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_lookup_name(reg, "\xff", &port), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_release_name(reg, "\xe2\x82"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_release_name(reg, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_release_name(reg, "c-api-web"));
    uint16_t stale = 4242;
    CHECK_ST(portmgr_lookup_name(reg, "c-api-web", &stale), PORTMGR_NOT_FOUND);
    CHECK(stale == 4242);
    CHECK_OK(portmgr_lease_release(a)); /* already freed by name: fine */
    /* The hash strategy gives the name the same port again. */
    REQUIRE_OK(portmgr_allocate(reg, req, &b));
    CHECK(portmgr_lease_port(b) == port);
    CHECK_OK(portmgr_lease_release(b));
    portmgr_request_free(req);
}

static void test_multi_port(void) {
    portmgr_request *req = request_in(26200, 26299);
    CHECK_OK(portmgr_request_set_count(req, 4));
    CHECK_OK(portmgr_request_set_contiguous(req, true));
    CHECK_OK(portmgr_request_set_strategy(req, PORTMGR_STRATEGY_SEQUENTIAL));
    uint16_t excl[] = {26200, 26201};
    CHECK_OK(portmgr_request_exclude(req, excl, 2));
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    CHECK(portmgr_lease_ports(lease, NULL, 0) == 4);
    uint16_t ports[8] = {0};
    CHECK(portmgr_lease_ports(lease, ports, 8) == 4);
    CHECK(ports[0] >= 26202 && ports[0] == portmgr_lease_port(lease));
    for (int i = 1; i < 4; i++) {
        CHECK(ports[i] == ports[0] + i);
    }
    CHECK(ports[4] == 0);
    uint16_t two[2] = {0};
    CHECK(portmgr_lease_ports(lease, two, 2) == 4 && two[1] == ports[1]);
    /* Release by one port frees the whole lease. */
    CHECK_OK(portmgr_release_port(reg, ports[2]));
    CHECK_ST(portmgr_release_port(reg, ports[0]), PORTMGR_NOT_FOUND);
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(req);

    /* Exhaustion and a required preferred port (on whichever port is free right now:
     * any port of the range may be in use as some connection's ephemeral port). */
    req = request_in(26300, 26310);
    portmgr_lease *a = NULL, *b = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &a));
    uint16_t p = portmgr_lease_port(a);
    CHECK_OK(portmgr_request_set_range(req, p, p));
    CHECK_ST(portmgr_allocate(reg, req, &b), PORTMGR_EXHAUSTED);
    CHECK(b == NULL);
    CHECK_OK(portmgr_request_set_range(req, 26300, 26310));
    CHECK_OK(portmgr_request_set_preferred(req, p, true));
    CHECK_ST(portmgr_allocate(reg, req, &b), PORTMGR_IN_USE);
    CHECK_OK(portmgr_request_set_preferred(req, p, false));
    REQUIRE_OK(portmgr_allocate(reg, req, &b));
    CHECK(portmgr_lease_port(b) != p && portmgr_lease_port(b) >= 26300 && portmgr_lease_port(b) <= 26310);
    CHECK_OK(portmgr_lease_release(a));
    CHECK_OK(portmgr_lease_release(b));
    portmgr_request_free(req);
}

static void test_bound(void) {
    portmgr_request *req = request_in(26320, 26349);
    portmgr_lease *lease = NULL;
    int fds[4] = {-1, -1, -1, -1};
    size_t nfds = 99;
    CHECK_ST(portmgr_allocate_bound(reg, req, &lease, fds, 0, &nfds), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_allocate_bound(reg, req, &lease, NULL, 4, &nfds), PORTMGR_INVALID_ARGUMENT);
    CHECK(fds[0] == -1 && nfds == 99 && lease == NULL);
    REQUIRE_OK(portmgr_allocate_bound(reg, req, &lease, fds, 4, &nfds));
    CHECK(nfds == 1 && fds[0] >= 0 && fds[1] == -1);
    uint16_t port = portmgr_lease_port(lease);
    int fl = fcntl(fds[0], F_GETFD);
    CHECK(fl >= 0 && (fl & FD_CLOEXEC));
    /* The probe sees the port taken. */
    bool is_free = true;
    CHECK_OK(portmgr_probe(port, PORTMGR_PROTO_TCP, &is_free));
    CHECK(!is_free);
    CHECK_ST(portmgr_probe(port, 7, &is_free), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_probe(port, PORTMGR_PROTO_TCP, NULL), PORTMGR_INVALID_ARGUMENT);
    /* It is listening: connect, accept, exchange a byte. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(c, (struct sockaddr *)&sa, sizeof sa) == 0);
    int s = accept(fds[0], NULL, NULL);
    CHECK(s >= 0);
    char byte = 'p';
    CHECK(send(c, &byte, 1, 0) == 1);
    char got = 0;
    CHECK(s >= 0 && recv(s, &got, 1, 0) == 1 && got == 'p');
    if (s >= 0) close(s);
    close(c);
    close(fds[0]);
    CHECK_OK(portmgr_lease_release(lease));

    /* Both protocols, two ports: TCP then UDP for each port, in the lease's order. */
    CHECK_OK(portmgr_request_set_protocols(req, PORTMGR_PROTO_BOTH));
    CHECK_OK(portmgr_request_set_count(req, 2));
    CHECK_ST(portmgr_allocate_bound(reg, req, &lease, fds, 3, NULL), PORTMGR_INVALID_ARGUMENT);
    REQUIRE_OK(portmgr_allocate_bound(reg, req, &lease, fds, 4, &nfds));
    CHECK(nfds == 4);
    uint16_t ports[2];
    CHECK(portmgr_lease_ports(lease, ports, 2) == 2);
    for (int i = 0; i < 4; i++) {
        int type = 0;
        socklen_t tl = sizeof type;
        CHECK(getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &tl) == 0);
        CHECK(type == (i % 2 == 0 ? SOCK_STREAM : SOCK_DGRAM));
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        CHECK(getsockname(fds[i], (struct sockaddr *)&ss, &sl) == 0);
        uint16_t p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        CHECK(p == ports[i / 2]);
        close(fds[i]);
    }
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(req);
}

static void test_keep_renew_views(void) {
    portmgr_request *req = request_in(26350, 26399);
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    uint16_t port = portmgr_lease_port(lease);
    CHECK_ST(portmgr_lease_renew(lease, 0), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_lease_renew(lease, 60000));
    CHECK_OK(portmgr_renew_port(reg, port, 0)); /* by its own TTL again */
    /* Issue 11.2: released by port, the lease's heartbeat fails instead of "succeeding"
       while the port is free or someone else's. */
    portmgr_lease *gone = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &gone));
    uint16_t gone_port = portmgr_lease_port(gone);
    CHECK_OK(portmgr_lease_renew(gone, 60000));
    CHECK_OK(portmgr_release_port(reg, gone_port));
    CHECK_ST(portmgr_lease_renew(gone, 1000), PORTMGR_NOT_FOUND);
    CHECK_OK(portmgr_lease_release(gone));
    CHECK_OK(portmgr_lease_keep(lease));
    CHECK_ST(portmgr_lease_release(lease), PORTMGR_INVALID_ARGUMENT);
    /* Kept: still held, detached, releasable by port. */
    char json[65536];
    size_t n = 0;
    CHECK_OK(portmgr_registry_list_json(reg, NULL, 0, &n));
    CHECK(n > 2 && n < sizeof json);
    size_t n2 = 0;
    CHECK_OK(portmgr_registry_list_json(reg, json, n + 1, &n2));
    CHECK(n2 == n && strlen(json) == n && json[0] == '[');
    CHECK(strstr(json, "\"detached\":true") != NULL);
    char tiny[5];
    CHECK_OK(portmgr_registry_list_json(reg, tiny, sizeof tiny, &n2));
    CHECK(n2 == n && strlen(tiny) == 4);
    CHECK_ST(portmgr_registry_list_json(reg, NULL, 10, &n2), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_registry_list_json(reg, json, sizeof json, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_registry_stats_json(reg, json, sizeof json, &n));
    CHECK(n < sizeof json && strstr(json, "\"held\":1") != NULL && strstr(json, "\"pool\"") != NULL);
    CHECK_OK(portmgr_release_port(reg, port));
    CHECK_OK(portmgr_registry_stats_json(reg, json, sizeof json, &n));
    CHECK(strstr(json, "\"held\":0") != NULL);
    size_t freed = 99;
    CHECK_OK(portmgr_registry_gc(reg, &freed));
    CHECK(freed == 0);
    CHECK_OK(portmgr_registry_gc(reg, NULL));
    portmgr_request_free(req);
}

/* Issue 13.2: the lease id is a handle: portmgr_lease_id, lease_id in the list JSON,
 * portmgr_release_id and portmgr_renew_id; an unknown or released id is NOT_FOUND. */
static void test_lease_ids(void) {
    portmgr_request *req = request_in(26311, 26319);
    portmgr_lease *a = NULL, *b = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &a));
    REQUIRE_OK(portmgr_allocate(reg, req, &b));
    uint64_t ida = portmgr_lease_id(a), idb = portmgr_lease_id(b);
    uint16_t pa = portmgr_lease_port(a), pb = portmgr_lease_port(b);
    CHECK(ida != 0 && idb != 0 && ida != idb);
    CHECK(portmgr_lease_id(NULL) == 0);
    CHECK(strstr(last_err(), "lease") != NULL);
    /* The list JSON names the same id for the same port. */
    char json[65536], want[64];
    size_t n = 0;
    CHECK_OK(portmgr_registry_list_json(reg, json, sizeof json, &n));
    snprintf(want, sizeof want, "\"port\":%u", (unsigned)pb);
    const char *rec = strstr(json, want);
    CHECK(rec != NULL);
    snprintf(want, sizeof want, "\"lease_id\":%llu,", (unsigned long long)idb);
    const char *start = rec;
    while (start && start > json && *start != '{') start--;
    const char *end = rec ? strchr(rec, '}') : NULL;
    const char *idpos = start ? strstr(start, want) : NULL;
    CHECK(idpos != NULL && end != NULL && idpos < end);
    /* Renew by id: with a TTL, then by its own TTL again. */
    CHECK_OK(portmgr_renew_id(reg, ida, 60000));
    CHECK_OK(portmgr_renew_id(reg, ida, 0));
    /* Kept, the id still names it; released by id, every port is free and the id gone. */
    CHECK_OK(portmgr_lease_keep(a));
    CHECK(portmgr_lease_id(a) == 0);
    CHECK_OK(portmgr_release_id(reg, ida));
    CHECK_ST(portmgr_release_port(reg, pa), PORTMGR_NOT_FOUND);
    CHECK_ST(portmgr_release_id(reg, ida), PORTMGR_NOT_FOUND);
    CHECK(strstr(last_err(), "not found") != NULL || strstr(last_err(), "no live lease") != NULL);
    CHECK_ST(portmgr_renew_id(reg, ida, 1000), PORTMGR_NOT_FOUND);
    uint64_t unknown = (ida > idb ? ida : idb) + 1000;
    CHECK_ST(portmgr_release_id(reg, unknown), PORTMGR_NOT_FOUND);
    CHECK_ST(portmgr_renew_id(reg, unknown, 1000), PORTMGR_NOT_FOUND);
    CHECK_ST(portmgr_release_id(reg, 0), PORTMGR_NOT_FOUND);
    /* The other lease is untouched. */
    CHECK_OK(portmgr_renew_id(reg, idb, 60000));
    CHECK_OK(portmgr_release_id(reg, idb));
    CHECK_ST(portmgr_renew_id(reg, idb, 0), PORTMGR_NOT_FOUND);
    CHECK_OK(portmgr_lease_release(b)); /* already freed by id: succeeds */
    CHECK_ST(portmgr_release_id(NULL, idb), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_renew_id(NULL, idb, 0), PORTMGR_INVALID_ARGUMENT);
    portmgr_request_free(req);
}

/* fork: the child may use the registry handle (it gets its own owner slot); the parent's
 * lease stays the parent's, and releasing the inherited handle in the child is harmless. */
static void test_fork(void) {
    portmgr_request *req = request_in(26100, 26149);
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    uint16_t port = portmgr_lease_port(lease);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        portmgr_lease *mine = NULL;
        if (portmgr_lease_release(lease) != PORTMGR_OK) bad |= 1;
        if (portmgr_allocate(reg, req, &mine) != PORTMGR_OK) bad |= 2;
        if (portmgr_lease_port(mine) == port) bad |= 4;
        if (portmgr_lease_release(mine) != PORTMGR_OK) bad |= 8;
        /* The parent's port is still held: a required preferred request for it fails. */
        if (portmgr_request_set_preferred(req, port, true) != PORTMGR_OK) bad |= 16;
        if (portmgr_allocate(reg, req, &mine) != PORTMGR_IN_USE) bad |= 32;
        _exit(bad);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork child failed with bits %d\n", WEXITSTATUS(status));
    }
    CHECK(portmgr_lease_port(lease) == port);
    CHECK_OK(portmgr_lease_release(lease));
    CHECK_ST(portmgr_release_port(reg, port), PORTMGR_NOT_FOUND);
    portmgr_request_free(req);
}

/* The health report: the one the CLI and Python give, as JSON, sized as the other JSON
   calls. An explicit range 9/10 full is "exhausted" at 0.9 (one port of it may be bound by
   another program on a busy host: 9 of 10 still fit). A registry of its own. */
static void test_health(void) {
    char hdir[sizeof dir + 16];
    snprintf(hdir, sizeof hdir, "%s-health", dir);
    portmgr_registry *h = NULL;
    REQUIRE_OK(portmgr_registry_open(hdir, &h));
    char json[65536];
    size_t n = 0, n2 = 0;
    CHECK_OK(portmgr_registry_health_json(h, 0.9, NULL, 0, &n));
    CHECK(n > 2 && n < sizeof json);
    CHECK_OK(portmgr_registry_health_json(h, 0.9, json, sizeof json, &n2));
    CHECK(n2 == n && strlen(json) == n);
    CHECK(strstr(json, "\"ok\":true") != NULL);
    portmgr_request *req = request_in(26390, 26399);
    portmgr_lease *l[9] = {NULL};
    for (int i = 0; i < 9; i++) REQUIRE_OK(portmgr_allocate(h, req, &l[i]));
    CHECK_OK(portmgr_registry_health_json(h, 0.9, json, sizeof json, &n));
    CHECK(strstr(json, "\"ok\":false") != NULL);
    CHECK(strstr(json, "\"kind\":\"exhausted\"") != NULL);
    CHECK(strstr(json, "\"kind\":\"explicit\"") != NULL);
    CHECK(strstr(json, "\"range\":[26390,26399]") != NULL);
    CHECK_ST(portmgr_registry_health_json(h, 1.5, json, sizeof json, &n), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "threshold") != NULL);
    CHECK_ST(portmgr_registry_health_json(h, 0.9, json, sizeof json, NULL), PORTMGR_INVALID_ARGUMENT);
    for (int i = 0; i < 9; i++) CHECK_OK(portmgr_lease_release(l[i]));
    CHECK_OK(portmgr_registry_health_json(h, 0.9, json, sizeof json, &n));
    CHECK(strstr(json, "\"ok\":true") != NULL);

    /* The history: empty, then three recorded checks (healthy, full, healthy), oldest
     * first, the middle one unhealthy and each a change of state. */
    CHECK_OK(portmgr_registry_health_history_json(h, json, sizeof json, &n));
    CHECK(strcmp(json, "[]") == 0);
    CHECK_OK(portmgr_registry_record_health_json(h, 0.9, json, sizeof json, &n));
    CHECK(strstr(json, "\"ok\":true") != NULL && strstr(json, "\"seq\":") != NULL);
    for (int i = 0; i < 9; i++) REQUIRE_OK(portmgr_allocate(h, req, &l[i]));
    CHECK_OK(portmgr_registry_record_health_json(h, 0.9, json, sizeof json, &n));
    CHECK(strstr(json, "\"ok\":false") != NULL && strstr(json, "\"kind\":\"exhausted\"") != NULL);
    for (int i = 0; i < 9; i++) CHECK_OK(portmgr_lease_release(l[i]));
    CHECK_OK(portmgr_registry_record_health_json(h, 0.9, json, sizeof json, &n));
    CHECK_OK(portmgr_registry_health_history_json(h, json, sizeof json, &n));
    const char *first = strstr(json, "\"ok\":true");
    const char *bad = strstr(json, "\"ok\":false");
    const char *last = first ? strstr(first + 1, "\"ok\":true") : NULL;
    CHECK(first != NULL && bad != NULL && last != NULL && first < bad && bad < last);
    CHECK(strstr(bad, "26390") != NULL);
    CHECK_ST(portmgr_registry_record_health_json(h, -0.5, json, sizeof json, &n), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_registry_health_history_json(h, json, sizeof json, NULL), PORTMGR_INVALID_ARGUMENT);
    portmgr_request_free(req);
    portmgr_registry_close(h);
}

/* The first reachable of several endpoints (ports 26481-26483): a closed port, a
 * listening one, a closed one: the listening one wins, each outcome is reported. */
static void test_first_reachable(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    if (s < 0) return;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(26482);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int bound = bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 16) == 0;
    CHECK(bound);
    if (!bound) {
        close(s);
        return;
    }
    const char *targets[] = {"127.0.0.1:26481", "127.0.0.1:26482", "127.0.0.1:26483"};
    char json[8192];
    size_t n = 0;
    bool found = false;
    CHECK_OK(portmgr_first_reachable_json(targets, 3, 2000, json, sizeof json, &n, &found));
    CHECK(found);
    CHECK(strlen(json) == n);
    CHECK(strstr(json, "\"reachable\":\"127.0.0.1:26482\"") != NULL);
    CHECK(strstr(json, "\"winner\":1") != NULL);
    CHECK(strstr(json, "\"outcome\":\"refused\"") != NULL);
    close(s);
    /* None answers: a result, not an error. */
    CHECK_OK(portmgr_first_reachable_json(targets, 1, 500, json, sizeof json, &n, &found));
    CHECK(!found);
    CHECK(strstr(json, "\"reachable\":null") != NULL);
    CHECK_ST(portmgr_first_reachable_json(targets, 0, 500, json, sizeof json, &n, &found), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_first_reachable_json(targets, 3, 0, json, sizeof json, &n, &found), PORTMGR_INVALID_ARGUMENT);
    const char *bad[] = {"127.0.0.1:notaport"};
    CHECK_ST(portmgr_first_reachable_json(bad, 1, 500, json, sizeof json, &n, &found), PORTMGR_INVALID_ARGUMENT);
}

/* Registry-wide reservations (ports 26400-26429): never handed out, a required one is
 * refused naming the reason, a leased one keeps its lease; the per-request exclude list
 * works without a range too. */
static void test_reserved(void) {
    char json[8192];
    size_t n = 0;
    CHECK_ST(portmgr_reserve(reg, 0, 10, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_reserve(reg, 26410, 26400, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_reserve(reg, 26400, 26400, "two\nlines"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_unreserve(reg, 26400, 26409), PORTMGR_NOT_FOUND);
    CHECK_OK(portmgr_reserve(reg, 26400, 26404, "monitoring"));
    CHECK_OK(portmgr_reserved_json(reg, json, sizeof json, &n));
    CHECK(strstr(json, "\"start\":26400") != NULL && strstr(json, "\"reason\":\"monitoring\"") != NULL);

    portmgr_request *req = request_in(26400, 26409);
    CHECK_OK(portmgr_request_set_strategy(req, PORTMGR_STRATEGY_SEQUENTIAL));
    portmgr_lease *l[5] = {NULL};
    for (int i = 0; i < 5; i++) {
        REQUIRE_OK(portmgr_allocate(reg, req, &l[i]));
        CHECK(portmgr_lease_port(l[i]) >= 26405);
    }
    portmgr_lease *none = NULL;
    CHECK_ST(portmgr_allocate(reg, req, &none), PORTMGR_EXHAUSTED);
    for (int i = 0; i < 5; i++) CHECK_OK(portmgr_lease_release(l[i]));
    portmgr_request_free(req);

    req = request_in(26400, 26409);
    CHECK_OK(portmgr_request_set_preferred(req, 26402, true));
    CHECK_ST(portmgr_allocate(reg, req, &none), PORTMGR_IN_USE);
    CHECK(strstr(last_err(), "monitoring") != NULL && strstr(last_err(), "26400-26404") != NULL);
    portmgr_request_free(req);

    /* A leased port keeps its lease; once released it is blocked. */
    req = request_in(26420, 26429);
    CHECK_OK(portmgr_request_set_preferred(req, 26420, true));
    portmgr_lease *held = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &held));
    CHECK_OK(portmgr_reserve(reg, 26420, 26420, NULL));
    uint16_t port = 0;
    CHECK(portmgr_lease_port(held) == 26420);
    CHECK_OK(portmgr_lease_release(held));
    CHECK_ST(portmgr_allocate(reg, req, &none), PORTMGR_IN_USE);
    CHECK_OK(portmgr_unreserve(reg, 26420, 26420));
    REQUIRE_OK(portmgr_allocate(reg, req, &held));
    CHECK_OK(portmgr_lease_release(held));
    portmgr_request_free(req);
    (void)port;

    /* Unreserving part of a range keeps the rest. */
    CHECK_OK(portmgr_unreserve(reg, 26402, 26402));
    CHECK_OK(portmgr_reserved_json(reg, json, sizeof json, &n));
    CHECK(strstr(json, "\"end\":26401") != NULL && strstr(json, "\"start\":26403") != NULL);
    CHECK_OK(portmgr_unreserve(reg, 26400, 26409));
    CHECK_OK(portmgr_reserved_json(reg, json, sizeof json, &n));
    CHECK(strcmp(json, "[]") == 0);

    /* exclude without a range: the default pool less those ports. */
    CHECK_OK(portmgr_request_new(&req));
    uint16_t ex[] = {26421};
    CHECK_OK(portmgr_request_set_preferred(req, 26421, true));
    CHECK_OK(portmgr_request_exclude(req, ex, 1));
    CHECK_ST(portmgr_allocate(reg, req, &none), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "exclude") != NULL);
    portmgr_request_free(req);
}

/* Issue 18: a listener set on 127.0.0.1 (and ::1 when the host has IPv6), SO_REUSEPORT
 * workers, and Unix-socket paths (26460-26479). */
static int connect_to(const char *host, uint16_t port) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    int fam = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (fam == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, host, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &a->sin6_addr);
        len = sizeof *a;
    }
    int c = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = connect(c, (struct sockaddr *)&ss, len);
    close(c);
    return r;
}

static void test_listeners(void) {
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 probe6;
    memset(&probe6, 0, sizeof probe6);
    probe6.sin6_family = AF_INET6;
    probe6.sin6_addr = in6addr_loopback;
    int have_v6 = v6 >= 0 && bind(v6, (struct sockaddr *)&probe6, sizeof probe6) == 0;
    if (v6 >= 0) close(v6);
    const char *addrs[] = {"127.0.0.1", "::1"};
    size_t naddr = have_v6 ? 2 : 1;
    portmgr_request *req = request_in(26460, 26469);
    portmgr_lease *lease = NULL;
    int fds[8];
    size_t n = 0;
    CHECK_ST(portmgr_allocate_listeners(reg, req, addrs, naddr, 0, 1, 0, &lease, fds, 0, &n), PORTMGR_INVALID_ARGUMENT);
    REQUIRE_OK(portmgr_allocate_listeners(reg, req, addrs, naddr, 0, 1, 0, &lease, fds, 8, &n));
    CHECK(n == naddr);
    uint16_t port = portmgr_lease_port(lease);
    for (size_t i = 0; i < n; i++) {
        CHECK(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
        CHECK(connect_to(addrs[i], port) == 0);
        close(fds[i]);
    }
    CHECK_OK(portmgr_lease_release(lease));
    /* Workers: one port, three sockets (SO_REUSEPORT); without the flag, refused. */
    CHECK_ST(portmgr_allocate_listeners(reg, req, addrs, 1, 0, 3, 0, &lease, fds, 8, &n), PORTMGR_INVALID_ARGUMENT);
    REQUIRE_OK(portmgr_allocate_listeners(reg, req, addrs, 1, PORTMGR_LISTEN_REUSE_PORT, 3, 16, &lease, fds, 8, &n));
    CHECK(n == 3);
    for (size_t i = 0; i < n; i++) close(fds[i]);
    CHECK_OK(portmgr_lease_release(lease));
    const char *bad[] = {"not-an-ip"};
    CHECK_ST(portmgr_allocate_listeners(reg, req, bad, 1, 0, 1, 0, &lease, fds, 8, &n), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_allocate_listeners(reg, req, addrs, 1, 0xff00, 1, 0, &lease, fds, 8, &n), PORTMGR_INVALID_ARGUMENT);
    portmgr_request_free(req);

    /* Unix-socket paths. */
    portmgr_unix_path *up = NULL;
    int fd = -1;
    REQUIRE_OK(portmgr_unix_path_new(reg, "api", &up, &fd));
    char path[512];
    size_t plen = portmgr_unix_path_get(up, path, sizeof path);
    CHECK(plen > 0 && plen == strlen(path) && strstr(path, "/sockets/api-") != NULL);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    CHECK(plen < sizeof sun.sun_path);
    memcpy(sun.sun_path, path, plen + 1);
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(c, (struct sockaddr *)&sun, sizeof sun) == 0);
    close(c);
    close(fd);
    CHECK(access(path, F_OK) == 0);
    CHECK_OK(portmgr_unix_path_release(up));
    CHECK(access(path, F_OK) != 0);
    CHECK_ST(portmgr_unix_path_release(up), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_unix_path_new(reg, "bad\nname", &up, NULL), PORTMGR_INVALID_ARGUMENT);
    REQUIRE_OK(portmgr_unix_path_new(reg, NULL, &up, NULL));
    CHECK(portmgr_unix_path_get(up, NULL, 0) > 0);
    CHECK_OK(portmgr_unix_path_release(up));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REGISTRY_DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    test_static_strings();
    test_last_error();
    test_open();
    test_request_validation();
    test_allocate_release();
    test_forged_handles();
    test_names();
    test_multi_port();
    test_bound();
    test_keep_renew_views();
    test_lease_ids();
    test_health();
    test_first_reachable();
    test_reserved();
    test_listeners();
    test_fork();
    portmgr_registry_close(reg);
    return check_done("test_api");
}
