//! Listener sets and Unix-socket paths through the C ABI: `portmgr_allocate_listeners`,
//! `portmgr_unix_path_new`, `portmgr_unix_path_get`, `portmgr_unix_path_release`.

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::raw::c_char;
use std::sync::Arc;

use parking_lot::Mutex;

use super::guard::{c_str, guard, guard_or, need, portmgr_status, put};
use super::handles::{self, Entry, UnixPathEntry};
use super::registry::{new_lease, portmgr_registry, request_of};
use super::lease::portmgr_lease;
use crate::error::Error;
use crate::listen::ListenOptions;

/// `portmgr_allocate_listeners` flag: `SO_REUSEADDR` on every socket.
pub const PORTMGR_LISTEN_REUSE_ADDR: u32 = 1;
/// `portmgr_allocate_listeners` flag: `SO_REUSEPORT` (needed for more than one worker).
pub const PORTMGR_LISTEN_REUSE_PORT: u32 = 2;
/// `portmgr_allocate_listeners` flag: `IPV6_V6ONLY` on IPv6 sockets.
pub const PORTMGR_LISTEN_IPV6_ONLY: u32 = 4;
/// `portmgr_allocate_listeners` flag: IPv6 sockets dual-stack (`IPV6_V6ONLY` off).
pub const PORTMGR_LISTEN_DUAL_STACK: u32 = 8;

/// An opaque Unix-socket path held for this process (see `portmgr_unix_path_new`).
#[allow(non_camel_case_types)]
pub struct portmgr_unix_path {
    _private: [u8; 0],
}

/// Allocate a port as `req` asks (NULL: the defaults) and bind it on each of the
/// `n_addresses` addresses (`"127.0.0.1"`, `"::1"`, `"[::]"`...; none: the dual-stack
/// wildcard) for the request's protocols, `workers` sockets per address and protocol
/// (more than 1 needs `PORTMGR_LISTEN_REUSE_PORT`), with the `PORTMGR_LISTEN_*` `flags`
/// and the TCP `backlog` (0: 1024). All or nothing: a port in use on any address is
/// skipped for another; any other failure closes what was bound and frees the port.
///
/// `fds` receives the sockets, close-on-exec, in address order, TCP before UDP, worker
/// by worker; it must have room for addresses x protocols x workers entries; `*out_nfds`
/// (if not NULL) receives how many were written. The caller owns and closes them. On
/// `PORTMGR_OK`, `*out` is a new lease (release it with `portmgr_lease_release`).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handles, NULL `out`/`fds`, `fds` too
/// short, a bad address, an address of another host, workers without reuse-port, a
/// request with a service type or metadata), and those of `portmgr_allocate`.
/// Thread-safe.
///
/// # Safety
/// `addresses` is NULL (with `n_addresses` 0) or valid for reading `n_addresses`
/// pointers to NUL-terminated strings; `out` is NULL or valid for writing a pointer;
/// `fds` is NULL or valid for writing `fds_len` ints; `out_nfds` is NULL or valid for
/// writing a `size_t`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn portmgr_allocate_listeners(
    reg: *mut portmgr_registry,
    req: *const super::request::portmgr_request,
    addresses: *const *const c_char,
    n_addresses: usize,
    flags: u32,
    workers: u32,
    backlog: i32,
    out: *mut *mut portmgr_lease,
    fds: *mut i32,
    fds_len: usize,
    out_nfds: *mut usize,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        let entry = request_of(req)?;
        if entry.spec != crate::mapping::ServiceSpec::default() {
            return Err(Error::invalid(
                "portmgr_allocate_listeners does not record a service type, metadata or internal ports; use portmgr_allocate for those",
            ));
        }
        need(out, "out")?;
        need(fds, "fds")?;
        if addresses.is_null() && n_addresses > 0 {
            return Err(Error::invalid("`addresses` is NULL but `n_addresses` is not 0"));
        }
        let mut addrs = Vec::with_capacity(n_addresses);
        for i in 0..n_addresses {
            // SAFETY: `addresses` is valid for `n_addresses` pointers (contract).
            let p = unsafe { *addresses.add(i) };
            // SAFETY: each is NULL or NUL-terminated (contract); NULL is refused by c_str.
            let text = unsafe { c_str(p, "addresses[i]") }?;
            // The message names the address itself.
            addrs.push(crate::listen::parse_address(text)?);
        }
        if flags & !(PORTMGR_LISTEN_REUSE_ADDR | PORTMGR_LISTEN_REUSE_PORT | PORTMGR_LISTEN_IPV6_ONLY | PORTMGR_LISTEN_DUAL_STACK) != 0 {
            return Err(Error::invalid(format!("unknown flags {flags:#x}: use PORTMGR_LISTEN_* values")));
        }
        if flags & PORTMGR_LISTEN_IPV6_ONLY != 0 && flags & PORTMGR_LISTEN_DUAL_STACK != 0 {
            return Err(Error::invalid("PORTMGR_LISTEN_IPV6_ONLY and PORTMGR_LISTEN_DUAL_STACK contradict each other"));
        }
        let opts = ListenOptions {
            addresses: addrs,
            reuse_addr: flags & PORTMGR_LISTEN_REUSE_ADDR != 0,
            reuse_port: flags & PORTMGR_LISTEN_REUSE_PORT != 0,
            workers: workers.max(1) as usize,
            ipv6_only: if flags & PORTMGR_LISTEN_IPV6_ONLY != 0 {
                Some(true)
            } else if flags & PORTMGR_LISTEN_DUAL_STACK != 0 {
                Some(false)
            } else {
                None
            },
            backlog: if backlog <= 0 { 1024 } else { backlog },
        };
        opts.validate(entry.req.protocols)?;
        let per = usize::from(entry.req.protocols.tcp()) + usize::from(entry.req.protocols.udp());
        let needed = opts.addresses().len() * per * opts.workers * entry.req.count;
        if fds_len < needed {
            return Err(Error::invalid(format!("`fds` has room for {fds_len} descriptors; this set needs {needed}")));
        }
        let (lease, socks) = registry.allocate_listeners(&entry.req, &opts)?;
        let id = new_lease(lease, &entry.spec);
        let n = socks.len();
        for (i, l) in socks.into_iter().enumerate() {
            // SAFETY: `fds` is non-NULL (checked) with room for `fds_len` >= n ints (contract).
            unsafe { fds.add(i).write(l.socket.into_raw_fd()) };
        }
        // SAFETY: checked non-NULL; writable by the contract. `out_nfds` may be NULL.
        unsafe {
            put(out, handles::to_ptr(id));
            if !out_nfds.is_null() {
                put(out_nfds, n);
            }
        }
        Ok(())
    })
}

/// A fresh Unix-socket path for `name` (UTF-8, or NULL) in the registry's private
/// (0700) sockets directory, held for this process: removed by
/// `portmgr_unix_path_release`, and by whoever asks next once this process is gone.
/// With `out_fd` not NULL, a listening `AF_UNIX` stream socket is bound there and
/// `*out_fd` receives it (close-on-exec; the caller closes it).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out`, a bad name, a path
/// longer than the 107 bytes a socket path may have: use a shorter registry directory),
/// `PORTMGR_INSECURE_DIRECTORY`, `PORTMGR_OS`. Thread-safe.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `out` is NULL or valid for writing a pointer;
/// `out_fd` is NULL or valid for writing an int.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_unix_path_new(
    reg: *mut portmgr_registry,
    name: *const c_char,
    out: *mut *mut portmgr_unix_path,
    out_fd: *mut i32,
) -> portmgr_status {
    guard(|| {
        let registry = handles::registry(reg, "reg", false)?;
        need(out, "out")?;
        // SAFETY: `name` is NULL or NUL-terminated (contract).
        let name = if name.is_null() { None } else { Some(unsafe { c_str(name, "name") }?) };
        let (path, fd) = if out_fd.is_null() {
            (registry.unix_socket_path(name)?, None)
        } else {
            let (p, l) = registry.bound_unix_socket(name)?;
            (p, Some(l))
        };
        let c = CString::new(path.path().as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Internal("a socket path with a NUL byte".into()))?;
        let id = handles::insert(Entry::UnixPath(Arc::new(UnixPathEntry { path: c, inner: Mutex::new(Some(path)) })));
        // SAFETY: `out` checked non-NULL; `out_fd` non-NULL when `fd` is Some; both
        // writable by the contract.
        unsafe {
            put(out, handles::to_ptr(id));
            if let Some(l) = fd {
                put(out_fd, l.into_raw_fd());
            }
        }
        Ok(())
    })
}

/// Copy the path into `buf` snprintf-style (at most `len - 1` bytes and a NUL). Returns
/// the path's full length; 0 for an invalid handle (the last error says why).
/// Thread-safe.
///
/// # Safety
/// `buf` is NULL (with `len` 0) or valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_unix_path_get(path: *const portmgr_unix_path, buf: *mut c_char, len: usize) -> usize {
    guard_or(0, || {
        let e = handles::unix_path(path, "path", false)?;
        let bytes = e.path.as_bytes();
        if !buf.is_null() && len > 0 {
            let n = bytes.len().min(len - 1);
            // SAFETY: `buf` is valid for `len` > n bytes (contract); the source is ours.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                buf.add(n).write(0);
            }
        }
        Ok(bytes.len())
    })
}

/// Remove the path (and any socket file there) and free the handle. In a forked child
/// the path is the parent's: the handle is freed, the path left alone.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` for an invalid handle (a second call does nothing
/// else), `PORTMGR_OS` when the file cannot be removed. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn portmgr_unix_path_release(path: *mut portmgr_unix_path) -> portmgr_status {
    guard(|| {
        let e = handles::unix_path(path, "path", true)?;
        if let Some(mut p) = e.inner.lock().take() {
            p.release()?;
        }
        Ok(())
    })
}
