/* pm_helpers.h: the C helpers of the Go binding (included by the cgo preambles).
 *
 * The library keeps its error message per OS thread, and a goroutine may move to
 * another thread between two cgo calls. So an operation that can fail runs as one
 * helper call that also reads the message (and errno) before returning, on the same
 * thread. Calls without a helper read the message under runtime.LockOSThread (call in
 * errors.go). SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef PORTMGR_GO_HELPERS_H
#define PORTMGR_GO_HELPERS_H
#include <portmgr.h>
#include <stdlib.h>

// The scalar fields of a Go Request (no pointers, so Go memory may be passed).
typedef struct {
	uint32_t proto;
	size_t count;
	int contiguous;
	int set_range;
	uint16_t start, end;
	uint32_t strategy;
	int set_preferred;
	uint16_t preferred;
	int required;
	uint64_t ttl_ms;
	uint32_t watch_pid;
} pm_req;

// The failure of the calling thread's last portmgr call: a malloc'd copy of the
// message (the caller frees it) and the errno of an OS error.
static inline portmgr_status pm_fail(portmgr_status st, char **msg, int *os_errno) {
	if (st != PORTMGR_OK) {
		size_t n = portmgr_last_error_message(NULL, 0);
		char *b = malloc(n + 1);
		if (b != NULL) portmgr_last_error_message(b, n + 1);
		*msg = b;
		*os_errno = portmgr_last_os_error();
	}
	return st;
}

// Build a request; a failing setter's message is read before the request is freed
// (freeing it resets the thread's last error).
static inline portmgr_status pm_build(const pm_req *r, const char *name, const char *host,
                               const uint16_t *exclude, size_t nexclude, portmgr_request **out,
                               char **msg, int *os_errno) {
	portmgr_request *req = NULL;
	portmgr_status st = portmgr_request_new(&req);
	if (st != PORTMGR_OK) return pm_fail(st, msg, os_errno);
	if (r->proto != 0 && (st = portmgr_request_set_protocols(req, r->proto)) != PORTMGR_OK) goto fail;
	if (r->set_range && (st = portmgr_request_set_range(req, r->start, r->end)) != PORTMGR_OK) goto fail;
	if (nexclude > 0 && (st = portmgr_request_exclude(req, exclude, nexclude)) != PORTMGR_OK) goto fail;
	if (r->strategy != 0 && (st = portmgr_request_set_strategy(req, r->strategy)) != PORTMGR_OK) goto fail;
	if (name != NULL && (st = portmgr_request_set_name(req, name)) != PORTMGR_OK) goto fail;
	if (r->count != 0 && (st = portmgr_request_set_count(req, r->count)) != PORTMGR_OK) goto fail;
	if (r->contiguous && (st = portmgr_request_set_contiguous(req, true)) != PORTMGR_OK) goto fail;
	if (r->ttl_ms != 0 && (st = portmgr_request_set_ttl_ms(req, r->ttl_ms)) != PORTMGR_OK) goto fail;
	if (r->watch_pid != 0 && (st = portmgr_request_set_watch_pid(req, r->watch_pid)) != PORTMGR_OK) goto fail;
	if (r->set_preferred && (st = portmgr_request_set_preferred(req, r->preferred, r->required)) != PORTMGR_OK) goto fail;
	if (host != NULL && (st = portmgr_request_set_probe_addr(req, host)) != PORTMGR_OK) goto fail;
	*out = req;
	return PORTMGR_OK;
fail:
	pm_fail(st, msg, os_errno);
	portmgr_request_free(req);
	return st;
}

// Build the request, allocate (bound when fds is not NULL), and read the ports and the
// id: one cgo call. On failure *msg and *os_errno describe it.
static inline portmgr_status pm_allocate(portmgr_registry *reg, const pm_req *r, const char *name,
                                  const char *host, const uint16_t *exclude, size_t nexclude,
                                  int *fds, size_t nfds, size_t *out_nfds,
                                  portmgr_lease **out, uint16_t *ports, size_t nports,
                                  size_t *out_nports, uint64_t *out_id, char **msg, int *os_errno) {
	portmgr_request *req = NULL;
	portmgr_status st = pm_build(r, name, host, exclude, nexclude, &req, msg, os_errno);
	if (st != PORTMGR_OK) return st;
	portmgr_lease *lease = NULL;
	if (fds != NULL) {
		st = portmgr_allocate_bound(reg, req, &lease, fds, nfds, out_nfds);
	} else {
		st = portmgr_allocate(reg, req, &lease);
	}
	if (st != PORTMGR_OK) {
		pm_fail(st, msg, os_errno);
		portmgr_request_free(req);
		return st;
	}
	portmgr_request_free(req);
	*out_nports = portmgr_lease_ports(lease, ports, nports);
	*out_id = portmgr_lease_id(lease);
	*out = lease;
	return PORTMGR_OK;
}

static inline portmgr_status pm_lease_release(portmgr_lease *lease, char **msg, int *os_errno) {
	return pm_fail(portmgr_lease_release(lease), msg, os_errno);
}
#endif
