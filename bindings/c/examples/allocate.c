/* Allocate a port from the shared registry, use it, release it.
 *
 *   cc allocate.c $(pkg-config --cflags --libs portmgr) -o allocate && ./allocate
 */
#include <portmgr.h>
#include <stdio.h>

/* Print the failing call's status and this thread's last error message. */
static int fail(const char *what, portmgr_status st) {
    char msg[512];
    portmgr_last_error_message(msg, sizeof msg);
    fprintf(stderr, "%s: %s: %s\n", what, portmgr_status_str(st), msg);
    return 1;
}

int main(void) {
    portmgr_registry *reg = NULL;
    portmgr_request *req = NULL;
    portmgr_lease *lease = NULL;
    portmgr_status st;

    /* NULL: the default registry ($PORTMGR_DIR, else $XDG_RUNTIME_DIR/portmgr). */
    if ((st = portmgr_registry_open(NULL, &reg)) != PORTMGR_OK) return fail("open", st);

    if ((st = portmgr_request_new(&req)) != PORTMGR_OK) return fail("request", st);
    portmgr_request_set_name(req, "example-web"); /* unique among live leases */
    portmgr_request_set_range(req, 20000, 20999);

    st = portmgr_allocate(reg, req, &lease);
    portmgr_request_free(req); /* leases do not depend on their request */
    if (st != PORTMGR_OK) {
        portmgr_registry_close(reg);
        return fail("allocate", st);
    }
    printf("example-web listens on port %u\n", (unsigned)portmgr_lease_port(lease));
    /* ... bind the port and serve; other processes will not be handed it ... */

    portmgr_lease_release(lease); /* releases and frees; also done at process exit */
    portmgr_registry_close(reg);
    return 0;
}
