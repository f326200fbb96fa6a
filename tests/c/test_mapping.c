/* The C API of named services: service types and metadata on requests, the services
 * view, export (JSON, .env, nginx text and directory), import, groups (all or nothing,
 * disjoint across threads).
 *
 * Usage: test_mapping REGISTRY_DIR   (a fresh directory; ports come from 27800-27999;
 * the service types come from a types config written next to it, via PORTMGR_TYPES) */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char dir[4096];
static portmgr_registry *reg;
static char big[65536];

static portmgr_request *request_in(uint16_t start, uint16_t end) {
    portmgr_request *req = NULL;
    REQUIRE_OK(portmgr_request_new(&req));
    REQUIRE_OK(portmgr_request_set_range(req, start, end));
    return req;
}

/* The registry's services as JSON into `big`. */
static const char *services(const char *type) {
    size_t n = 0;
    CHECK_OK(portmgr_services_json(reg, type, big, sizeof big, &n));
    CHECK(n < sizeof big);
    return big;
}

static size_t count_of(const char *hay, const char *needle) {
    size_t c = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle)) c++;
    return c;
}

static void write_types(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s.types.json", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs("{\"types\": {\"t-one\": {\"range\": \"27810-27819\"}, \"t-two\": {\"range\": [27820, 27829]}},\n"
          " \"groups\": {\"trio\": [{\"name\": \"a\", \"offset\": 0}, {\"name\": \"b\", \"offset\": 1, "
          "\"type\": \"t-two\"}, {\"name\": \"c\", \"offset\": 2}]}}\n",
          f);
    fclose(f);
    setenv("PORTMGR_TYPES", path, 1);
}

static void test_type_and_metadata(void) {
    portmgr_request *req = NULL;
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_request_new(&req));
    CHECK_ST(portmgr_request_set_type(NULL, "t-one"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_type(req, "Bad Type"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_type(req, "\xff"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_metadata(req, NULL, "v"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_metadata(req, "a=b", "v"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_metadata(req, "", "v"), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_metadata(req, "k", "bad\x01value"), PORTMGR_INVALID_ARGUMENT);

    /* A well-formed but unknown type fails at allocation, naming the known ones. */
    CHECK_OK(portmgr_request_set_type(req, "nope"));
    lease = (portmgr_lease *)(uintptr_t)0x42;
    CHECK_ST(portmgr_allocate(reg, req, &lease), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "t-one") != NULL);
    CHECK(lease == (portmgr_lease *)(uintptr_t)0x42);

    /* The type's range (from the config file); type and metadata recorded. */
    CHECK_OK(portmgr_request_set_type(req, "t-one"));
    CHECK_OK(portmgr_request_set_metadata(req, "owner", "team-a"));
    CHECK_OK(portmgr_request_set_metadata(req, "gone", "x"));
    CHECK_OK(portmgr_request_set_metadata(req, "gone", NULL));
    CHECK_OK(portmgr_request_set_name(req, "typed"));
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    uint16_t p = portmgr_lease_port(lease);
    CHECK(p >= 27810 && p <= 27819);
    const char *js = services("t-one");
    char needle[64];
    snprintf(needle, sizeof needle, "\"port\":%u", (unsigned)p);
    CHECK(strstr(js, needle) != NULL);
    CHECK(strstr(js, "\"type\":\"t-one\"") != NULL);
    CHECK(strstr(js, "\"owner\":\"team-a\"") != NULL);
    CHECK(strstr(js, "gone") == NULL);
    CHECK(strstr(services("t-two"), needle) == NULL);
    CHECK(strcmp(services("t-two"), "[]") == 0);
    size_t n = 0;
    CHECK_ST(portmgr_services_json(reg, "nope", big, sizeof big, &n), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_services_json(reg, NULL, big, sizeof big, NULL), PORTMGR_INVALID_ARGUMENT);

    /* An explicit range wins; the type is still recorded. */
    portmgr_request *r2 = request_in(27830, 27839);
    CHECK_OK(portmgr_request_set_type(r2, "t-two"));
    portmgr_lease *l2 = NULL;
    REQUIRE_OK(portmgr_allocate(reg, r2, &l2));
    CHECK(portmgr_lease_port(l2) >= 27830 && portmgr_lease_port(l2) <= 27839);
    CHECK(count_of(services("t-two"), "\"lease_id\"") == 1);
    /* NULL removes the type: a plain allocation again. */
    CHECK_OK(portmgr_request_set_type(r2, NULL));
    portmgr_lease *l3 = NULL;
    REQUIRE_OK(portmgr_allocate(reg, r2, &l3));
    CHECK(count_of(services("t-two"), "\"lease_id\"") == 1);

    /* allocate_bound records no type. */
    int fds[2] = {-1, -1};
    size_t nfds = 0;
    portmgr_lease *l4 = NULL;
    CHECK_OK(portmgr_request_set_type(r2, "t-two"));
    CHECK_ST(portmgr_allocate_bound(reg, r2, &l4, fds, 2, &nfds), PORTMGR_INVALID_ARGUMENT);
    CHECK(l4 == NULL && fds[0] == -1);

    CHECK_OK(portmgr_lease_release(lease));
    CHECK_OK(portmgr_lease_release(l2));
    CHECK_OK(portmgr_lease_release(l3));
    portmgr_request_free(req);
    portmgr_request_free(r2);
}

static void test_export(uint16_t *web_out) {
    portmgr_request *req = request_in(27840, 27849);
    portmgr_lease *web = NULL, *api = NULL;
    CHECK_OK(portmgr_request_set_name(req, "web"));
    REQUIRE_OK(portmgr_allocate(reg, req, &web));
    CHECK_OK(portmgr_request_set_name(req, "api"));
    CHECK_OK(portmgr_request_set_type(req, "t-one"));
    CHECK_OK(portmgr_request_set_range(req, 27810, 27819));
    REQUIRE_OK(portmgr_allocate(reg, req, &api));
    uint16_t wp = portmgr_lease_port(web), ap = portmgr_lease_port(api);
    char needle[128];
    size_t n = 0, n2 = 0;

    CHECK_OK(portmgr_export(reg, "json", NULL, 0, &n));
    CHECK(n > 10 && n < sizeof big);
    CHECK_OK(portmgr_export(reg, "json", big, n + 1, &n2));
    CHECK(n2 == n && strlen(big) == n);
    CHECK(strstr(big, "\"portmgr_export\": 1") != NULL);
    CHECK(strstr(big, "\"name\": \"api\"") != NULL && strstr(big, "\"type\": \"t-one\"") != NULL);
    CHECK(strstr(big, "\"name\": \"api\"") < strstr(big, "\"name\": \"web\"")); /* sorted */

    CHECK_OK(portmgr_export(reg, "env", big, sizeof big, &n));
    snprintf(needle, sizeof needle, "\nWEB_PORT=%u\n", (unsigned)wp);
    CHECK(strstr(big, needle) != NULL);
    snprintf(needle, sizeof needle, "\nAPI_PORT=%u\n", (unsigned)ap);
    CHECK(strstr(big, needle) != NULL);
    CHECK(strstr(big, "# portmgr {\"name\":\"api\",\"type\":\"t-one\"}") != NULL);

    CHECK_OK(portmgr_export(reg, "nginx", big, sizeof big, &n));
    CHECK(strstr(big, "location /web/ {") != NULL && strstr(big, "location = /web/health {") != NULL);
    snprintf(needle, sizeof needle, "proxy_pass http://127.0.0.1:%u/;", (unsigned)wp);
    CHECK(strstr(big, needle) != NULL);

    /* snprintf-style truncation. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CHECK_OK(portmgr_export(reg, "nginx", tiny, sizeof tiny, &n2));
    CHECK(n2 == n && tiny[7] == '\0' && strlen(tiny) == 7);

    /* Errors leave *out_len alone. */
    n2 = 12345;
    CHECK_ST(portmgr_export(reg, "xml", big, sizeof big, &n2), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "xml") != NULL);
    CHECK_ST(portmgr_export(reg, NULL, big, sizeof big, &n2), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_export(reg, "json", NULL, 10, &n2), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_export(reg, "json", big, sizeof big, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_export(NULL, "json", big, sizeof big, &n2), PORTMGR_INVALID_ARGUMENT);
    CHECK(n2 == 12345);

    /* The nginx directory: one file per service. */
    char ngx[4200], file[4300];
    snprintf(ngx, sizeof ngx, "%s.nginx", dir);
    size_t files = 0;
    CHECK_OK(portmgr_export_nginx_dir(reg, ngx, false, &files));
    CHECK(files == 2);
    snprintf(file, sizeof file, "%s/web.conf", ngx);
    CHECK(access(file, R_OK) == 0);
    CHECK_OK(portmgr_export_nginx_dir(reg, ngx, false, NULL)); /* replaced: ours */
    CHECK_ST(portmgr_export_nginx_dir(reg, "", false, &files), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_export_nginx_dir(reg, NULL, false, &files), PORTMGR_INVALID_ARGUMENT);

    /* reload: `nginx -t`, then `nginx -s reload` (nginx from PATH: a stand-in here that
     * fails the test while DIR.fail exists); a failed test puts the old directory back. */
    char bindir[4200], script[4300], flag[4200], oldpath[8192];
    snprintf(bindir, sizeof bindir, "%s.bin", dir);
    snprintf(script, sizeof script, "%s/nginx", bindir);
    snprintf(flag, sizeof flag, "%s.fail", dir);
    CHECK(mkdir(bindir, 0755) == 0);
    FILE *f = fopen(script, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "#!/bin/sh\nif [ \"$1\" = -t ] && [ -e '%s' ]; then echo 'nginx: [emerg] no' >&2; exit 1; fi\nexit 0\n",
                flag);
        fclose(f);
    }
    CHECK(chmod(script, 0755) == 0);
    snprintf(oldpath, sizeof oldpath, "%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    char newpath[12400];
    snprintf(newpath, sizeof newpath, "%s:%s", bindir, oldpath);
    setenv("PATH", newpath, 1);
    files = 0;
    CHECK_OK(portmgr_export_nginx_dir(reg, ngx, true, &files));
    CHECK(files == 2);
    portmgr_lease *late = NULL;
    CHECK_OK(portmgr_request_set_name(req, "late"));
    CHECK_OK(portmgr_request_set_type(req, NULL));
    REQUIRE_OK(portmgr_allocate(reg, req, &late));
    f = fopen(flag, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    files = 99;
    CHECK_ST(portmgr_export_nginx_dir(reg, ngx, true, &files), PORTMGR_INVALID_ARGUMENT);
    CHECK(files == 99 && strstr(last_err(), "emerg") != NULL);
    snprintf(file, sizeof file, "%s/late.conf", ngx);
    CHECK(access(file, F_OK) != 0);
    snprintf(file, sizeof file, "%s/web.conf", ngx);
    CHECK(access(file, F_OK) == 0);
    unlink(flag);
    CHECK_OK(portmgr_export_nginx_dir(reg, ngx, true, &files));
    CHECK(files == 3);
    setenv("PATH", oldpath, 1);
    CHECK_OK(portmgr_lease_release(late));

    *web_out = wp;
    portmgr_lease_keep(web); /* released by name in test_import */
    CHECK_OK(portmgr_lease_release(api));
    portmgr_request_free(req);
}

static void test_import(uint16_t web_port) {
    /* Save the map, free it, import it back: web keeps its port. */
    char saved[8192];
    size_t n = 0, rn = 0;
    CHECK_OK(portmgr_export(reg, "env", saved, sizeof saved, &n));
    CHECK(n < sizeof saved);
    CHECK_OK(portmgr_release_name(reg, "web"));
    uint16_t p = 0;
    CHECK_ST(portmgr_lookup_name(reg, "web", &p), PORTMGR_NOT_FOUND);

    CHECK_OK(portmgr_import(reg, saved, n, NULL, big, sizeof big, &rn));
    CHECK(rn < sizeof big && strstr(big, "{\"services\":[") == big);
    CHECK(strstr(big, "\"status\":\"same\"") != NULL);
    CHECK_OK(portmgr_lookup_name(reg, "web", &p));
    CHECK(p == web_port);
    /* Imported leases are kept: they are released by name. Again while live: existing. */
    CHECK_OK(portmgr_import(reg, saved, n, NULL, big, sizeof big, &rn));
    CHECK(strstr(big, "\"status\":\"existing\"") != NULL && strstr(big, "\"same\"") == NULL);
    CHECK_OK(portmgr_release_name(reg, "web"));

    /* Its port taken by someone else: web moves into the request's range, reported. */
    portmgr_request *holder = request_in(web_port, web_port);
    portmgr_lease *h = NULL;
    REQUIRE_OK(portmgr_allocate(reg, holder, &h));
    portmgr_request *tmpl = request_in(27850, 27859);
    CHECK_OK(portmgr_request_set_ttl_ms(tmpl, 600000));
    /* Only the first n bytes are read: the text need not be NUL-terminated. */
    saved[n] = 'Z';
    CHECK_OK(portmgr_import(reg, saved, n, tmpl, big, sizeof big, &rn));
    CHECK(strstr(big, "\"status\":\"moved\"") != NULL);
    CHECK(strstr(big, "taken") != NULL);
    CHECK_OK(portmgr_lookup_name(reg, "web", &p));
    CHECK(p >= 27850 && p <= 27859);
    CHECK_OK(portmgr_release_name(reg, "web"));

    /* A plain .env. */
    const char *plain = "# comment\nFOO=bar\nCACHE_PORT=27861\n";
    CHECK_OK(portmgr_import(reg, plain, strlen(plain), NULL, NULL, 0, &rn));
    CHECK(rn > 0);
    CHECK_OK(portmgr_lookup_name(reg, "cache", &p));
    CHECK(p == 27861);
    CHECK_OK(portmgr_release_name(reg, "cache"));

    /* Errors: nothing imported, *out_len untouched. */
    rn = 777;
    const char *bad = "garbage\n";
    CHECK_ST(portmgr_import(reg, bad, strlen(bad), NULL, big, sizeof big, &rn), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "line 1") != NULL);
    CHECK_ST(portmgr_import(reg, NULL, 5, NULL, big, sizeof big, &rn), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_import(reg, "\xff\xfe", 2, NULL, big, sizeof big, &rn), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_import(reg, plain, strlen(plain), NULL, big, sizeof big, NULL), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_import(reg, plain, strlen(plain), NULL, NULL, 4, &rn), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_set_type(tmpl, "t-one"));
    CHECK_ST(portmgr_import(reg, plain, strlen(plain), tmpl, big, sizeof big, &rn), PORTMGR_INVALID_ARGUMENT);
    CHECK(rn == 777);
    CHECK_ST(portmgr_lookup_name(reg, "cache", &p), PORTMGR_NOT_FOUND);
    /* An empty text imports nothing. */
    CHECK_OK(portmgr_import(reg, NULL, 0, NULL, big, sizeof big, &rn));
    CHECK(strcmp(big, "{\"services\":[]}") == 0);

    CHECK_OK(portmgr_lease_release(h));
    portmgr_request_free(holder);
    portmgr_request_free(tmpl);
}

static void test_groups(void) {
    uint16_t ports[8] = {0};
    size_t count = 0, freed = 0, n = 0;
    /* One base fits 27900-27904 for a layout spanning 5 ports; take its last port. */
    portmgr_request *holder = request_in(27904, 27904);
    portmgr_lease *h = NULL;
    REQUIRE_OK(portmgr_allocate(reg, holder, &h));
    portmgr_request *req = request_in(27900, 27904);
    count = 99;
    CHECK_ST(portmgr_group_allocate(reg, "g1", "a=0,b=+4", req, ports, 8, &count), PORTMGR_EXHAUSTED);
    CHECK(count == 99 && ports[0] == 0);
    CHECK_OK(portmgr_registry_list_json(reg, big, sizeof big, &n));
    CHECK(count_of(big, "\"port\"") == 1); /* all or nothing */
    CHECK_OK(portmgr_lease_release(h));

    CHECK_OK(portmgr_request_set_metadata(req, "job", "17"));
    REQUIRE_OK(portmgr_group_allocate(reg, "g1", "a=0,b=+4", req, ports, 8, &count));
    CHECK(count == 2 && ports[0] == 27900 && ports[1] == 27904);
    uint16_t p = 0;
    CHECK_OK(portmgr_lookup_name(reg, "g1.b", &p));
    CHECK(p == 27904);
    CHECK(count_of(services(NULL), "\"job\":\"17\"") == 2);
    CHECK(count_of(big, "\"group\":\"g1\"") == 2);

    /* A layout of the types config: member types recorded. */
    portmgr_request *r2 = request_in(27910, 27929);
    REQUIRE_OK(portmgr_group_allocate(reg, "g2", "trio", r2, ports, 3, &count));
    CHECK(count == 3 && ports[1] == ports[0] + 1 && ports[2] == ports[0] + 2);
    CHECK(count_of(services("t-two"), "\"member\":\"b\"") == 1);

    /* Errors, nothing allocated. */
    CHECK_ST(portmgr_group_allocate(reg, "g1", "a=0,b=+4", req, ports, 8, &count), PORTMGR_IN_USE);
    CHECK_ST(portmgr_group_allocate(reg, "g3", "trio", r2, ports, 2, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "3 members") != NULL);
    CHECK_ST(portmgr_group_allocate(reg, "g3", "trio", r2, NULL, 0, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_group_allocate(reg, "g3", "nope", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "stack, trio") != NULL);
    CHECK_ST(portmgr_group_allocate(reg, "g3", "a=0,a=1", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_group_allocate(reg, "g.3", "a=0", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_group_allocate(reg, NULL, "a=0", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_group_allocate(reg, "g3", NULL, r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_group_allocate(reg, "g3", "a=0,b=50", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_set_type(r2, "t-one"));
    CHECK_ST(portmgr_group_allocate(reg, "g3", "a=0", r2, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK(count_of(services(NULL), "\"group\":\"g3\"") == 0);

    /* Release. */
    CHECK_OK(portmgr_group_release(reg, "g1", &freed));
    CHECK(freed == 2);
    CHECK_OK(portmgr_group_release(reg, "g2", NULL));
    freed = 99;
    CHECK_ST(portmgr_group_release(reg, "g1", &freed), PORTMGR_NOT_FOUND);
    CHECK(freed == 99);
    CHECK_ST(portmgr_group_release(reg, NULL, &freed), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_lookup_name(reg, "g1.a", &p), PORTMGR_NOT_FOUND);

    portmgr_request_free(holder);
    portmgr_request_free(req);
    portmgr_request_free(r2);
}

/* Threads place 4-port groups at once, sequentially from the same start: disjoint. */
#define THREADS 6
static uint16_t thread_ports[THREADS][4];

static void *place(void *arg) {
    intptr_t i = (intptr_t)arg;
    char name[32];
    snprintf(name, sizeof name, "t%d", (int)i);
    portmgr_request *req = request_in(27940, 27979);
    CHECK_OK(portmgr_request_set_strategy(req, PORTMGR_STRATEGY_SEQUENTIAL));
    size_t count = 0;
    CHECK_OK(portmgr_group_allocate(reg, name, "a=0,b=1,c=2,d=3", req, thread_ports[i], 4, &count));
    CHECK(count == 4);
    portmgr_request_free(req);
    return NULL;
}

static void test_group_threads(void) {
    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, place, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    int dups = 0;
    for (int a = 0; a < THREADS * 4; a++) {
        uint16_t pa = thread_ports[a / 4][a % 4];
        CHECK(pa >= 27940 && pa <= 27979);
        for (int b = a + 1; b < THREADS * 4; b++) dups += pa == thread_ports[b / 4][b % 4];
    }
    CHECK(dups == 0);
    for (int i = 0; i < THREADS; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        CHECK_OK(portmgr_group_release(reg, name, NULL));
    }
}

/* The layout rules every skin shares (issue 12): a layout name is looked up first, else
 * a text with '=' or ':' is a spec, else it is an unknown layout, named with the known
 * ones. */
static void test_layout_rules(void) {
    uint16_t ports[8] = {0};
    size_t count = 0;
    portmgr_request *req = request_in(27980, 27999);
    CHECK_OK(portmgr_request_set_strategy(req, PORTMGR_STRATEGY_SEQUENTIAL));
    /* A configured name. */
    REQUIRE_OK(portmgr_group_allocate(reg, "lr1", "trio", req, ports, 8, &count));
    CHECK(count == 3 && ports[1] == ports[0] + 1 && ports[2] == ports[0] + 2);
    /* A spec, with either separator and a member type. */
    REQUIRE_OK(portmgr_group_allocate(reg, "lr2", "x:0,y=+3/t-two", req, ports, 8, &count));
    CHECK(count == 2 && ports[1] == ports[0] + 3);
    CHECK(count_of(services("t-two"), "\"name\":\"lr2.y\"") == 1);
    /* Unknown names, the empty text included: the known layouts and how to give a spec. */
    const char *unknown[] = {"nope", "", "Trio"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        count = 99;
        CHECK_ST(portmgr_group_allocate(reg, "lr3", unknown[i], req, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
        CHECK(strstr(last_err(), "no group layout named") != NULL);
        CHECK(strstr(last_err(), "known layouts: stack, trio") != NULL);
        CHECK(strstr(last_err(), "spec") != NULL);
        CHECK(count == 99);
    }
    /* A malformed spec is the spec's own error. */
    CHECK_ST(portmgr_group_allocate(reg, "lr3", "a=x", req, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "offset") != NULL);
    CHECK_ST(portmgr_group_allocate(reg, "lr3", "a=0,b:0", req, ports, 8, &count), PORTMGR_INVALID_ARGUMENT);
    CHECK(strstr(last_err(), "same offset") != NULL);
    CHECK(count_of(services(NULL), "\"group\":\"lr3\"") == 0);
    CHECK_OK(portmgr_group_release(reg, "lr1", NULL));
    CHECK_OK(portmgr_group_release(reg, "lr2", NULL));
    portmgr_request_free(req);
}

/* Issue 13.3/13.4: a module's internal -> external ports (27870-27879) and the
 * overview with its per-type statistics. */
static void test_module_and_overview(void) {
    portmgr_request *req = request_in(27870, 27879);
    CHECK_OK(portmgr_request_set_name(req, "shop"));
    uint16_t dup[] = {8080, 8080}, zero[] = {0}, internal[] = {9090, 8080};
    CHECK_ST(portmgr_request_set_internal_ports(req, dup, 2), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_internal_ports(req, zero, 1), PORTMGR_INVALID_ARGUMENT);
    CHECK_ST(portmgr_request_set_internal_ports(req, NULL, 2), PORTMGR_INVALID_ARGUMENT);
    CHECK_OK(portmgr_request_set_internal_ports(req, internal, 2));
    int fds[4];
    portmgr_lease *none = NULL;
    CHECK_ST(portmgr_allocate_bound(reg, req, &none, fds, 4, NULL), PORTMGR_INVALID_ARGUMENT);
    portmgr_lease *lease = NULL;
    REQUIRE_OK(portmgr_allocate(reg, req, &lease));
    CHECK(portmgr_lease_ports(lease, NULL, 0) == 2);
    uint16_t in[4] = {0}, ex[4] = {0}, ports[2] = {0};
    CHECK(portmgr_lease_port_map(lease, NULL, NULL, 0) == 2);
    CHECK(portmgr_lease_port_map(lease, NULL, ex, 2) == 0); /* NULL with len > 0 */
    CHECK(portmgr_lease_port_map(lease, in, ex, 4) == 2);
    portmgr_lease_ports(lease, ports, 2);
    uint16_t lo = ports[0] < ports[1] ? ports[0] : ports[1], hi = ports[0] ^ ports[1] ^ lo;
    /* 9090 was given first: internal ports in order get the ports in ascending order. */
    CHECK(in[0] == 8080 && in[1] == 9090);
    CHECK(ex[1] == lo && ex[0] == hi);
    char want[128];
    snprintf(want, sizeof want, "\"port_map\":{\"8080\":%u,\"9090\":%u}", (unsigned)hi, (unsigned)lo);
    size_t n = 0;
    CHECK_OK(portmgr_registry_overview_json(reg, big, sizeof big, &n));
    CHECK(n < sizeof big && strlen(big) == n);
    CHECK(strstr(big, want) != NULL);
    snprintf(want, sizeof want, "\"%u\":\"shop\"", (unsigned)lo);
    CHECK(strstr(big, want) != NULL);
    CHECK(strstr(big, "\"by_type\":{") != NULL && strstr(big, "\"types\":[") != NULL);
    CHECK(strstr(big, "\"type\":\"t-one\"") != NULL);
    CHECK_ST(portmgr_registry_overview_json(reg, big, sizeof big, NULL), PORTMGR_INVALID_ARGUMENT);
    /* The .env export carries the map. */
    CHECK_OK(portmgr_export(reg, "env", big, sizeof big, &n));
    snprintf(want, sizeof want, "SHOP_9090_PORT=%u\n", (unsigned)lo);
    CHECK(strstr(big, want) != NULL);
    /* A plain lease has no map. */
    portmgr_lease *plain = NULL;
    portmgr_request *r2 = request_in(27870, 27879);
    REQUIRE_OK(portmgr_allocate(reg, r2, &plain));
    CHECK(portmgr_lease_port_map(plain, in, ex, 4) == 0);
    CHECK_OK(portmgr_lease_release(plain));
    CHECK_OK(portmgr_lease_release(lease));
    portmgr_request_free(r2);
    portmgr_request_free(req);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REGISTRY_DIR\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    write_types();
    REQUIRE_OK(portmgr_registry_open(dir, &reg));
    uint16_t web = 0;
    test_type_and_metadata();
    test_export(&web);
    test_import(web);
    test_groups();
    test_group_threads();
    test_layout_rules();
    test_module_and_overview();
    portmgr_registry_close(reg);
    return check_done("test_mapping");
}
