//! `portmgr_registry`: a handle on one registry directory, and what is done through it.

use std::ffi::{c_char, c_int};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::guard::{c_bytes, c_str, copy_out, guard, need, portmgr_status, put};
use super::handles::{self, Entry, LeaseEntry, RequestEntry};
use super::lease::portmgr_lease;
use super::request::portmgr_request;
use crate::error::{Error, Result};
use crate::mapping::{self, ServiceSpec};
use crate::registry::{Registry, Request};

/// A handle on one registry directory: the shared, crash-safe table of who holds which
/// port, used by every process and language of the user (C, C++, Rust, Python, the
/// `portmgr` command). Opaque; made by `portmgr_registry_open`, freed by
/// `portmgr_registry_close`.
///
/// Functions: `portmgr_registry_open`, `portmgr_registry_close`,
/// `portmgr_registry_set_lock_timeout`, `portmgr_allocate`, `portmgr_allocate_bound`,
/// `portmgr_release_port`, `portmgr_release_name`, `portmgr_release_id`,
/// `portmgr_renew_port`, `portmgr_renew_name`, `portmgr_renew_id`, `portmgr_lookup_name`, `portmgr_registry_list_json`,
/// `portmgr_registry_stats_json`, `portmgr_registry_gc`; for named services, types and
/// groups: `portmgr_services_json`, `portmgr_export`, `portmgr_export_nginx_dir`,
/// `portmgr_import`, `portmgr_group_allocate`, `portmgr_group_release`.
///
/// Thread-safety: one handle may be used by any number of threads at once. Leases keep
/// working after their registry handle is closed (they hold their own reference).
/// Calls that change the registry wait for its lock (10 s by default, see
/// `portmgr_registry_set_lock_timeout`) and return `PORTMGR_TIMEOUT` past it.
pub struct portmgr_registry {
    _private: [u8; 0],
}

/// Open (creating it if needed) the registry in directory `dir`, or, when `dir` is NULL,
/// at the default location: `$PORTMGR_DIR` if set, else `$XDG_RUNTIME_DIR/portmgr`, else a
/// per-user directory under the temp dir. `dir` is a path of any bytes, copied.
///
/// The directory is created mode 0700 and checked every time: it must belong to the
/// user and not be a symlink or writable by others (`PORTMGR_INSECURE_DIRECTORY`
/// otherwise, with the reason and the fix in the last error). A damaged registry file is
/// moved aside and a new one started (`PORTMGR_REGISTRY_CORRUPT` when other live
/// processes still use it).
///
/// On `PORTMGR_OK`, `*out` is a new handle the caller owns and closes with
/// `portmgr_registry_close`. Other errors: `PORTMGR_INVALID_ARGUMENT` (NULL `out`,
/// empty `dir`), `PORTMGR_OS`, `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string; `out` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_open(dir: *const c_char, out: *mut *mut portmgr_registry) -> portmgr_status {
    guard(|| {
        need(out, "out")?;
        let reg = if dir.is_null() {
            Registry::open_default()?
        } else {
            // SAFETY: `dir` is non-NULL and NUL-terminated (contract).
            let bytes = unsafe { c_bytes(dir, "dir") }?;
            if bytes.is_empty() {
                return Err(Error::invalid("`dir` is an empty path; pass NULL for the default location"));
            }
            Registry::open(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))?
        };
        let id = handles::insert(Entry::Registry(reg));
        // SAFETY: checked non-NULL above; valid for writes by the contract.
        unsafe { put(out, handles::to_ptr(id)) };
        Ok(())
    })
}

/// Close a registry handle. NULL is a no-op; an invalid or already closed handle is
/// ignored (the thread's last error says so): never a crash.
///
/// Leases allocated through it stay valid and held: release them with
/// `portmgr_lease_release` as usual. The process's owner slot (and with it every lease
/// of this registry held by the process) lives until the last of them is released, or
/// the process exits. Thread-safe, but no other thread may be using `reg` afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_registry_close(reg: *mut portmgr_registry) {
    if reg.is_null() {
        return;
    }
    let _ = guard(|| handles::registry(reg, "reg", true).map(drop));
}

/// Wait at most `timeout_ms` milliseconds (at least 1) for the registry lock in later
/// calls on this handle, instead of 10 s. A timeout names the process holding the lock.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_registry_set_lock_timeout(reg: *mut portmgr_registry, timeout_ms: u64) -> portmgr_status {
    guard(|| {
        handles::registry(reg, "reg", false)?.set_lock_timeout(Duration::from_millis(timeout_ms.max(1)));
        Ok(())
    })
}

/// The request (with its service type and metadata) behind `req`, or the default request
/// for NULL.
pub(crate) fn request_of(req: *const portmgr_request) -> Result<RequestEntry> {
    if req.is_null() {
        Ok(RequestEntry { req: Request::new(), spec: ServiceSpec::default() })
    } else {
        Ok(handles::request(req, "req", false)?.lock().clone())
    }
}

pub(crate) fn new_lease(lease: crate::registry::Lease, spec: &mapping::ServiceSpec) -> usize {
    let ports = lease.ports().to_vec();
    let id = lease.id();
    let pid = std::process::id();
    let port_map = mapping::port_map(&spec.internal_ports, ports.iter().copied()).into_iter().flatten().collect();
    handles::insert(Entry::Lease(Arc::new(LeaseEntry { ports, id, pid, port_map, lease: Mutex::new(Some(lease)) })))
}

/// Allocate ports as `req` asks (NULL: one TCP port from the default pool, random
/// strategy). The ports are recorded in the registry, so no other portmgr user on the
/// host (any process, any language) is handed them while the lease lives, and probed
/// free; no socket is held: bind them yourself soon (or use `portmgr_allocate_bound`,
/// the race-free hand-over).
///
/// On `PORTMGR_OK`, `*out` is a new lease the caller owns: release it with
/// `portmgr_lease_release` (that also frees it) or detach it with `portmgr_lease_keep`.
/// If the process exits or dies first, its ports are freed at once (unless the request
/// set a TTL or a watched process).
///
/// With a service type (`portmgr_request_set_type`) and no range, the port comes from the
/// type's range; the type and metadata (`portmgr_request_set_metadata`) are recorded
/// with the lease (or nothing is allocated).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handles, NULL `out`, an inconsistent
/// request, an unknown service type or a broken types config file),
/// `PORTMGR_EXHAUSTED` (no free port in the range), `PORTMGR_IN_USE` (the
/// name is held, or a required preferred port is taken), `PORTMGR_TIMEOUT`,
/// `PORTMGR_OS`, `PORTMGR_REGISTRY_CORRUPT`. Thread-safe: allocations from many
/// threads and processes never get the same port.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_allocate(
    reg: *mut portmgr_registry,
    req: *const portmgr_request,
    out: *mut *mut portmgr_lease,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        let request = request_of(req)?;
        need(out, "out")?;
        let lease = mapping::allocate(&registry, &request.req, &request.spec)?;
        let id = new_lease(lease, &request.spec);
        // SAFETY: checked non-NULL above; valid for writes by the contract.
        unsafe { put(out, handles::to_ptr(id)) };
        Ok(())
    })
}

/// Allocate ports as `portmgr_allocate` does and hand them over *bound*: for every port,
/// a TCP socket bound and listening (backlog 1024) and/or a bound UDP socket, as the
/// request's protocols say, on the dual-stack wildcard (or the request's probe address).
/// The only race-free hand-over: nobody can take a port between allocation and use.
///
/// `fds` receives the sockets: for each port in the lease's order
/// (`portmgr_lease_ports`), the TCP socket then the UDP socket. It must have room for
/// count x protocols entries (1 for the default request); `*out_nfds` (if not NULL)
/// receives how many were written. The caller owns the descriptors and closes them with
/// `close()`; they are close-on-exec (pass them to a child by the systemd `LISTEN_FDS`
/// convention, clearing `FD_CLOEXEC` yourself). Closing them does not release the lease,
/// and releasing the lease does not close them.
///
/// On `PORTMGR_OK`, `*out` is a new lease the caller owns, as for `portmgr_allocate`.
/// Nothing is written on failure, and no descriptor is leaked. Errors: as
/// `portmgr_allocate`, plus `PORTMGR_INVALID_ARGUMENT` when `fds` is NULL or too short,
/// or when the request has a service type or metadata (use `portmgr_allocate` for those).
/// Thread-safe.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer; `fds` is NULL or valid for writing
/// `fds_len` ints; `out_nfds` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_allocate_bound(
    reg: *mut portmgr_registry,
    req: *const portmgr_request,
    out: *mut *mut portmgr_lease,
    fds: *mut c_int,
    fds_len: usize,
    out_nfds: *mut usize,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        let RequestEntry { req: request, spec } = request_of(req)?;
        if spec != ServiceSpec::default() {
            return Err(Error::invalid(
                "portmgr_allocate_bound does not record a service type, metadata or internal ports; use portmgr_allocate for those",
            ));
        }
        need(out, "out")?;
        need(fds, "fds")?;
        let per_port = usize::from(request.protocols.tcp()) + usize::from(request.protocols.udp());
        let needed = request.count.saturating_mul(per_port);
        if fds_len < needed {
            return Err(Error::invalid(format!(
                "`fds` has room for {fds_len} descriptors; this request needs {needed} ({} port(s) x {per_port} protocol(s))",
                request.count
            )));
        }
        let (lease, mut socks) = mapping::allocate_bound(&registry, &request, &spec)?;
        if socks.len() > fds_len {
            return Err(Error::Internal(format!("{} sockets for {fds_len} slots", socks.len())));
        }
        let order: Vec<u16> = lease.ports().to_vec();
        socks.sort_by_key(|s| (order.iter().position(|&p| p == s.port), s.protocol.bits()));
        let id = new_lease(lease, &spec);
        let n = socks.len();
        for (i, s) in socks.into_iter().enumerate() {
            // SAFETY: `fds` is non-NULL (checked) and has room for `fds_len` >= n ints (contract).
            unsafe { fds.add(i).write(s.socket.into_raw_fd()) };
        }
        // SAFETY: `out` checked non-NULL; `out_nfds` NULL or writable (contract).
        unsafe {
            put(out, handles::to_ptr(id));
            put(out_nfds, n);
        }
        Ok(())
    })
}

/// Release the lease holding `port` (all of its ports), whoever allocated it: allowed
/// when this process holds it, when it was kept or detached (TTL, watched process), or
/// when its owner is gone. A lease handle of it in this process becomes a no-op to
/// release.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle), `PORTMGR_NOT_FOUND` (no live
/// lease holds the port), `PORTMGR_NOT_OWNER` (held by another live process, not
/// detached), `PORTMGR_TIMEOUT`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_release_port(reg: *mut portmgr_registry, port: u16) -> portmgr_status {
    guard(|| {
        handles::registry(reg, "reg", false)?.release_port(port)?;
        Ok(())
    })
}

/// Release the live lease named `name` (UTF-8), as `portmgr_release_port`.
///
/// Errors: as `portmgr_release_port`, plus `PORTMGR_INVALID_ARGUMENT` for a NULL or
/// non-UTF-8 name. Thread-safe.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_release_name(reg: *mut portmgr_registry, name: *const c_char) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        // SAFETY: `name` is NULL or NUL-terminated (contract).
        let name = unsafe { c_str(name, "name") }?;
        registry.release_name(name)?;
        Ok(())
    })
}

/// Release lease `id` (all of its ports; the id of `portmgr_lease_id`, `lease_id` in
/// `portmgr_registry_list_json`), as `portmgr_release_port`: the handle users of a port
/// registry know.
///
/// Errors: as `portmgr_release_port`; an unknown or already-released id is
/// `PORTMGR_NOT_FOUND`, never a silent success. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_release_id(reg: *mut portmgr_registry, id: u64) -> portmgr_status {
    guard(|| {
        handles::registry(reg, "reg", false)?.release_id(id)?;
        Ok(())
    })
}

/// Extend the TTL of the lease holding `port` to `ttl_ms` from now (0: by its own TTL
/// again): the heartbeat of a detached lease.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, or 0 for a lease without a
/// TTL), `PORTMGR_NOT_FOUND`, `PORTMGR_TIMEOUT`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_renew_port(reg: *mut portmgr_registry, port: u16, ttl_ms: u64) -> portmgr_status {
    guard(|| {
        let ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        handles::registry(reg, "reg", false)?.renew_port(port, ttl)?;
        Ok(())
    })
}

/// Extend the TTL of lease `id` to `ttl_ms` from now (0: by its own TTL again), as
/// `portmgr_renew_port`.
///
/// Errors: as `portmgr_renew_port`; an unknown, released or expired id is
/// `PORTMGR_NOT_FOUND`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_renew_id(reg: *mut portmgr_registry, id: u64, ttl_ms: u64) -> portmgr_status {
    guard(|| {
        let ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        handles::registry(reg, "reg", false)?.renew_id(id, ttl)?;
        Ok(())
    })
}

/// Extend the TTL of the lease named `name` (UTF-8), as `portmgr_renew_port`.
///
/// Errors: as `portmgr_renew_port`, plus `PORTMGR_INVALID_ARGUMENT` for a NULL or
/// non-UTF-8 name. Thread-safe.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_renew_name(
    reg: *mut portmgr_registry,
    name: *const c_char,
    ttl_ms: u64,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        // SAFETY: `name` is NULL or NUL-terminated (contract).
        let name = unsafe { c_str(name, "name") }?;
        let ttl = (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms));
        registry.renew_name(name, ttl)?;
        Ok(())
    })
}

/// Look up the (first) port of the live lease named `name` (UTF-8), held by any process.
///
/// On `PORTMGR_OK`, `*out_port` is the port. Errors: `PORTMGR_NOT_FOUND` when no live
/// lease has the name, `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL or non-UTF-8
/// name, NULL `out_port`), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out_port` is NULL or valid for writing a
/// `uint16_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_lookup_name(
    reg: *const portmgr_registry,
    name: *const c_char,
    out_port: *mut u16,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        // SAFETY: `name` is NULL or NUL-terminated (contract).
        let name = unsafe { c_str(name, "name") }?;
        need(out_port, "out_port")?;
        let infos = registry.get_by_name(name)?;
        let port = infos
            .iter()
            .map(|i| i.port)
            .min()
            .ok_or_else(|| Error::NotFound(format!("no live lease is named {name:?}")))?;
        // SAFETY: checked non-NULL above; writable by the contract.
        unsafe { put(out_port, port) };
        Ok(())
    })
}

/// Serialize `value` and copy it out snprintf-style.
///
/// # Safety
/// `buf` NULL or writable for `len` bytes; `out_len` non-NULL checked by the caller and
/// writable.
/// A JSON view of the registry behind `reg`: the handle checked, `out_len` required, the
/// value made by `view` and copied out as `json_out` does. Every `portmgr_registry_*_json`
/// call is this.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes; `out_len` is NULL or valid for writing
/// a `size_t`.
pub(crate) unsafe fn registry_json<T: serde::Serialize>(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
    view: impl FnOnce(Registry) -> Result<T>,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        need(out_len, "out_len")?;
        let value = view(registry)?;
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { json_out(&value, buf, len, out_len) }
    })
}

pub(crate) unsafe fn json_out(
    value: &impl serde::Serialize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Result<()> {
    if buf.is_null() && len > 0 {
        return Err(Error::invalid("`buf` is NULL but `len` is not 0"));
    }
    let text = serde_json::to_string(value).map_err(|e| Error::Internal(format!("serializing to JSON: {e}")))?;
    // SAFETY: `buf` is NULL (then len is 0) or writable for `len` bytes; `out_len` is
    // writable (caller's contract).
    unsafe {
        let n = copy_out(text.as_bytes(), buf, len);
        put(out_len, n);
    }
    Ok(())
}

/// Every live port of the registry (all processes), ascending, as a JSON array of
/// objects: `port`, `protocols` (`"tcp"`, `"udp"`, `"both"`), `name` (or null),
/// `lease_id`, `owner_pid`, `created_ms`, `expires_ms` (or null), `watch_pid` (or null),
/// `detached`, `bound`, `state`. New keys may be added.
///
/// Copied into `buf` snprintf-style: at most `len - 1` bytes and a NUL. On `PORTMGR_OK`,
/// `*out_len` is the full length without the NUL; if it is `>= len` the text was
/// truncated: call again with a buffer of `*out_len + 1` bytes (`buf` NULL and `len` 0
/// asks for the size only; the registry may change between the calls).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`, NULL `buf` with
/// `len > 0`), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes; `out_len` is NULL or valid for writing
/// a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_list_json(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| r.list()) }
}

/// The registry's figures as a JSON object: `pool` (`"A-B"`), `pool_size`, `held`,
/// `held_in_pool`, `free`, `utilization` (0 to 1), `owners`, `allocations`,
/// `releases`, `reclaimed`. New keys may be added. Copied into `buf` and sized as
/// `portmgr_registry_list_json`; same errors. Thread-safe.
///
/// # Safety
/// As `portmgr_registry_list_json`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_stats_json(
    reg: *const portmgr_registry,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    // SAFETY: forwarded contract.
    unsafe { registry_json(reg, buf, len, out_len, |r| r.stats()) }
}

/// Free every record of a dead owner or an expired lease now (allocation does this by
/// itself as it goes; this is for tidy views). On `PORTMGR_OK`, `*out_freed` (if not
/// NULL) is the number of ports freed.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `out_freed` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_registry_gc(reg: *mut portmgr_registry, out_freed: *mut usize) -> portmgr_status {
    guard(|| {
        let freed = handles::registry(reg, "reg", false)?.gc()?;
        // SAFETY: NULL or writable (contract).
        unsafe { put(out_freed, freed.len()) };
        Ok(())
    })
}
