//! The table of live handles.
//!
//! A handle given to C is not a pointer to Rust memory: its value is an identifier
//! (`BASE + 16 * n`, `n` counting up and never reused) that is looked up here on every
//! call. The library never dereferences a handle, so a freed, forged or wrong-kind
//! handle is an ordinary error, not undefined behaviour, and because identifiers are
//! not reused a stale handle can never reach a newer object (no ABA).
//!
//! The table's mutex is a leaf lock (nothing else is taken while it is held) and is
//! held across `fork()` by `pthread_atfork` handlers, so a child never inherits it
//! locked by a thread it does not have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Once};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::mapping::ServiceSpec;
use crate::registry::{Lease, Registry, Request};

/// A request as the C API holds it: the core request and, for the service calls, the
/// service type and metadata to record (`portmgr_request_set_type`, `_set_metadata`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestEntry {
    pub(crate) req: Request,
    pub(crate) spec: ServiceSpec,
}

/// A lease as the C API holds it: its ports (fixed at allocation) and the lease itself
/// (taken out when released or kept).
pub(crate) struct LeaseEntry {
    pub(crate) ports: Vec<u16>,
    /// The lease id (`Lease::id`), readable without taking the lease's mutex.
    pub(crate) id: u64,
    /// The process that allocated it: in a forked child the lease is the parent's.
    pub(crate) pid: u32,
    /// A module's internal -> external ports, by internal port (empty for other leases).
    pub(crate) port_map: Vec<(u16, u16)>,
    pub(crate) lease: Mutex<Option<Lease>>,
}

pub(crate) enum Entry {
    Registry(Registry),
    Request(Arc<Mutex<RequestEntry>>),
    Lease(Arc<LeaseEntry>),
    UnixPath(Arc<UnixPathEntry>),
    /// A gateway mapping (shares its state with the thread following its lease).
    NatMapping(crate::nat::Mapping),
}

/// A Unix-socket path as the C API holds it: the path (fixed) and the core's holder
/// (taken out when released or kept).
pub(crate) struct UnixPathEntry {
    pub(crate) path: std::ffi::CString,
    pub(crate) inner: Mutex<Option<crate::registry::UnixPath>>,
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Registry(_) => "portmgr_registry",
            Entry::Request(_) => "portmgr_request",
            Entry::Lease(_) => "portmgr_lease",
            Entry::UnixPath(_) => "portmgr_unix_path",
            Entry::NatMapping(_) => "portmgr_nat_mapping",
        }
    }
}

static TABLE: LazyLock<Mutex<HashMap<usize, Entry>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT: AtomicUsize = AtomicUsize::new(1);
/// Identifiers start here and step by 16: they look like aligned pointers, and small
/// integers or NULL-adjacent values are never handles.
const BASE: usize = 0x1000;

static AT_FORK: Once = Once::new();

extern "C" fn prepare() {
    std::mem::forget(TABLE.lock());
}
extern "C" fn after() {
    // SAFETY: `prepare` locked TABLE in this (the forking) thread and forgot the guard; in
    // the child this thread is the only one, so nobody else can hold it.
    unsafe { TABLE.force_unlock() };
}

/// Register `e` and return its identifier.
pub(crate) fn insert(e: Entry) -> usize {
    AT_FORK.call_once(|| {
        // Failure only loses protection against a fork racing a table access.
        let _ = crate::sys::at_fork(prepare, after, after);
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = BASE.wrapping_add(n.wrapping_mul(16));
    TABLE.lock().insert(id, e);
    id
}

/// The pointer C sees for identifier `id` (no provenance: it is never dereferenced).
pub(crate) fn to_ptr<T>(id: usize) -> *mut T {
    std::ptr::without_provenance_mut(id)
}

fn not_live(what: &str, kind: &str) -> Error {
    Error::invalid(format!("`{what}` is not a live {kind} handle (already freed or released, or not made by portmgr)"))
}

fn wrong_kind(what: &str, kind: &str, found: &str) -> Error {
    Error::invalid(format!("`{what}` is a {found} handle, not a {kind}"))
}

fn lookup<T, R>(p: *const T, what: &str, kind: &str, remove: bool, pick: impl Fn(&Entry) -> Option<R>) -> Result<R> {
    if p.is_null() {
        return Err(Error::invalid(format!("`{what}` is NULL")));
    }
    let id = p.addr();
    let mut table = TABLE.lock();
    let Some(e) = table.get(&id) else {
        return Err(not_live(what, kind));
    };
    let Some(v) = pick(e) else {
        return Err(wrong_kind(what, kind, e.kind()));
    };
    if remove {
        table.remove(&id);
    }
    Ok(v)
}

/// The registry behind handle `p`; `take` also removes the handle.
pub(crate) fn registry<T>(p: *const T, what: &str, take: bool) -> Result<Registry> {
    lookup(p, what, "portmgr_registry", take, |e| match e {
        Entry::Registry(r) => Some(r.clone()),
        _ => None,
    })
}

/// The request behind handle `p`; `take` also removes the handle.
pub(crate) fn request<T>(p: *const T, what: &str, take: bool) -> Result<Arc<Mutex<RequestEntry>>> {
    lookup(p, what, "portmgr_request", take, |e| match e {
        Entry::Request(r) => Some(r.clone()),
        _ => None,
    })
}

/// The lease behind handle `p`; `take` also removes the handle.
pub(crate) fn lease<T>(p: *const T, what: &str, take: bool) -> Result<Arc<LeaseEntry>> {
    lookup(p, what, "portmgr_lease", take, |e| match e {
        Entry::Lease(l) => Some(l.clone()),
        _ => None,
    })
}

/// The Unix-socket path behind handle `p`; `take` also removes the handle.
pub(crate) fn unix_path<T>(p: *const T, what: &str, take: bool) -> Result<Arc<UnixPathEntry>> {
    lookup(p, what, "portmgr_unix_path", take, |e| match e {
        Entry::UnixPath(u) => Some(u.clone()),
        _ => None,
    })
}

/// The gateway mapping behind handle `p`; `take` also removes the handle.
pub(crate) fn nat_mapping<T>(p: *const T, what: &str, take: bool) -> Result<crate::nat::Mapping> {
    lookup(p, what, "portmgr_nat_mapping", take, |e| match e {
        Entry::NatMapping(m) => Some(m.clone()),
        _ => None,
    })
}
