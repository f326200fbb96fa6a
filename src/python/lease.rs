//! `portmgr.Lease` and the abandoned leases.
//!
//! A Python `Lease` is not released when it is garbage-collected: users write
//! `portmgr.allocate().port`. When the Python object dies while still active, its core
//! [`Lease`] moves to [`ABANDONED`], a process-wide list that is never dropped: the ports
//! stay held until `release(port)` or until the process exits (the kernel then drops the
//! owner lock and every port of the process with it). `free_port()` puts its lease there
//! directly. No entry is ever held across a GIL release, so a `fork()` (which Python
//! makes with the GIL held) never copies that list's mutex in a locked state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::seconds_arg;
use super::errors::detached;
use crate::error::Error;
use crate::registry::{Lease, Registry};

/// Core leases whose Python object died while active, and `free_port()` leases: held
/// until `release(port)` or process exit. `(registry dir, lease)`; whose they are is the
/// core's answer ([`Lease::is_mine`]).
static ABANDONED: Mutex<Vec<(PathBuf, Lease)>> = Mutex::new(Vec::new());

/// Put `lease` on the abandoned list (with the GIL held, as every use of the list).
pub(super) fn abandon(lease: Lease, registry: &Registry) {
    ABANDONED.lock().push((registry.dir().to_path_buf(), lease));
}

/// Take this process's abandoned leases of `registry` that hold `port` off the list:
/// normally none or one; more when an earlier one is gone (released elsewhere, TTL
/// ended) and the port was handed to this process again.
pub(super) fn take_abandoned(registry: &Registry, port: u16) -> Vec<Lease> {
    let mut list = ABANDONED.lock();
    let mut taken = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let (d, l) = &list[i];
        if l.is_mine() && d == registry.dir() && l.ports().contains(&port) {
            taken.push(list.swap_remove(i).1);
        } else {
            i += 1;
        }
    }
    taken
}

/// `release(port)` when this process holds `port` through abandoned leases (`free_port`,
/// `bound_socket`, a Lease it dropped), taken off the list with the GIL held: the port
/// number is the caller's handle on that lease, so only that lease is released, never
/// the next holder of the port.
pub(super) fn release_abandoned(
    py: Python<'_>,
    registry: &Registry,
    port: u16,
    mine: Vec<Lease>,
) -> PyResult<Vec<u16>> {
    let live = match detached(py, || registry.get_by_port(port)) {
        Ok(info) => info.map(|i| i.lease_id),
        Err(e) => {
            for l in mine {
                abandon(l, registry);
            }
            return Err(e.into());
        }
    };
    detached(py, move || {
        let mut freed = None;
        for mut l in mine {
            if Some(l.id()) == live {
                let ports = l.ports().to_vec();
                freed = Some(l.release().map(|()| ports));
            }
            // Else it is gone: dropping it clears its own records only, not the holder's.
        }
        freed.unwrap_or_else(|| {
            let now = if live.is_some() {
                "held by another lease, which is left alone"
            } else {
                "free"
            };
            Err(Error::NotFound(format!(
                "the lease this process took on port {port} is no longer held (released elsewhere, or its TTL ended); the port is {now}. Nothing was released; a second call releases whatever holds the port then"
            )))
        })
    })
    .map_err(PyErr::from)
}

pub(super) const ACTIVE: u8 = 0;
pub(super) const RELEASED: u8 = 1;
pub(super) const KEPT: u8 = 2;

/// Ports held in the registry. Not released by garbage collection: by `release()`, by
/// leaving its `with` block, or when the process exits.
#[pyclass(name = "Lease", module = "portmgr", frozen)]
pub(super) struct PyLease {
    /// The core lease while active. Locked only without the GIL (a renew holds it while
    /// it waits for the registry lock), and never in a forked child (`pid`), where a
    /// fork may have copied it locked.
    inner: Mutex<Option<Lease>>,
    registry: Registry,
    ports: Vec<u16>,
    name: Option<String>,
    id: u64,
    /// The process that made this object. Wherever the core lease can be reached
    /// safely, its owner is the core's answer ([`Lease::is_mine`]); this is asked only
    /// where it cannot: before locking `inner` (which a fork may have copied locked), and
    /// after `keep()`, which hands the core lease over.
    pid: u32,
    state: AtomicU8,
    /// A module's internal port -> external port (see `mapping::port_map`).
    port_map: Option<std::collections::BTreeMap<u16, u16>>,
}

impl PyLease {
    pub(super) fn new(lease: Lease, registry: &Registry) -> PyLease {
        PyLease {
            ports: lease.ports().to_vec(),
            name: lease.name().map(str::to_owned),
            id: lease.id(),
            inner: Mutex::new(Some(lease)),
            registry: registry.clone(),
            pid: std::process::id(),
            state: AtomicU8::new(ACTIVE),
            port_map: None,
        }
    }

    /// With the port map of `spec`'s internal ports, when it has any.
    pub(super) fn with_spec(mut self, spec: &crate::mapping::ServiceSpec) -> PyLease {
        self.port_map = crate::mapping::port_map(&spec.internal_ports, self.ports.iter().copied());
        self
    }

    /// Whether this process made the object (not a forked child holding the parent's):
    /// see `pid`.
    fn made_here(&self) -> bool {
        self.pid == std::process::id()
    }

    fn released_error(&self, what: &str) -> Error {
        Error::NotFound(format!(
            "lease {} (port {}) was released, so it cannot be {what}: its port may be someone else's by now; allocate a new lease",
            self.id, self.ports[0]
        ))
    }
}

impl Drop for PyLease {
    fn drop(&mut self) {
        // In a forked child the lease is the parent's: dropping it there does nothing.
        if let Some(lease) = self.inner.get_mut().take()
            && lease.is_mine()
        {
            abandon(lease, &self.registry);
        }
    }
}

#[pymethods]
impl PyLease {
    /// The (first) port.
    #[getter]
    fn port(&self) -> u16 {
        self.ports[0]
    }

    /// All the ports, ascending for a contiguous block.
    #[getter]
    fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// The service name, if any.
    #[getter]
    fn name(&self) -> Option<String> {
        self.name.clone()
    }

    /// The lease id, shared by all its ports in the registry views.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// For a module allocated with `internal_ports`: internal port -> its external port;
    /// None otherwise.
    #[getter]
    fn port_map(&self) -> Option<std::collections::BTreeMap<u16, u16>> {
        self.port_map.clone()
    }

    /// Whether `release()` or `keep()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.state.load(Ordering::Acquire) != ACTIVE
    }

    /// Release the ports now. Idempotent. In a forked child, a lease inherited from the
    /// parent is the parent's: releasing it there does nothing.
    pub(super) fn release(&self, py: Python<'_>) -> PyResult<()> {
        if !self.made_here() {
            // The parent's lease: mark it released here, touch nothing.
            let _ =
                self.state
                    .compare_exchange(ACTIVE, RELEASED, Ordering::AcqRel, Ordering::Acquire);
            return Ok(());
        }
        // The handle's mutex is taken without the GIL: a renew may hold it while it
        // waits for the registry lock.
        detached(py, || {
            let mut inner = self.inner.lock();
            let Some(mut lease) = inner.take() else {
                return Ok(());
            };
            self.state.store(RELEASED, Ordering::Release);
            drop(inner);
            lease.release()
        })
        .map_err(PyErr::from)
    }

    /// Set the lease's time to live to `ttl` seconds from now; it then lives by its TTL
    /// (renew it before it ends), no longer by this process. It acts on this lease only:
    /// after `release()` it raises NotFound (the port may be someone else's by then);
    /// in a forked child it does nothing (the lease is the parent's).
    fn renew(&self, py: Python<'_>, ttl: f64) -> PyResult<()> {
        let ttl = seconds_arg("ttl", ttl, false)?;
        detached(py, || {
            crate::registry::check_ttl(ttl)?;
            if self.state.load(Ordering::Acquire) == RELEASED {
                return Err(self.released_error("renewed"));
            }
            if !self.made_here() {
                return Ok(());
            }
            let inner = self.inner.lock();
            if let Some(lease) = inner.as_ref() {
                return lease.renew(ttl);
            }
            // Read with the mutex held: release and keep change both together.
            let state = self.state.load(Ordering::Acquire);
            drop(inner);
            match state {
                // Kept: the core lease was handed over; its id is the handle.
                KEPT => self.registry.renew_id(self.id, Some(ttl)),
                _ => Err(self.released_error("renewed")),
            }
        })
        .map_err(PyErr::from)
    }

    /// Stop managing the lease from this object: it stays held until the process exits
    /// (or its TTL or watched process ends), and any process of the user may release it
    /// (`portmgr release PORT`). Returns the ports. A released lease cannot be kept
    /// (NotFound); keeping twice returns the ports again.
    pub(super) fn keep(&self, py: Python<'_>) -> PyResult<Vec<u16>> {
        detached(py, || {
            match self.state.load(Ordering::Acquire) {
                RELEASED => return Err(self.released_error("kept")),
                KEPT => return Ok(self.ports.clone()),
                _ => {}
            }
            if !self.made_here() {
                // The parent's lease: nothing to hand over here.
                let _ =
                    self.state
                        .compare_exchange(ACTIVE, KEPT, Ordering::AcqRel, Ordering::Acquire);
                return Ok(self.ports.clone());
            }
            let mut inner = self.inner.lock();
            let Some(lease) = inner.take() else {
                // Released or kept by another thread meanwhile.
                return match self.state.load(Ordering::Acquire) {
                    KEPT => Ok(self.ports.clone()),
                    _ => Err(self.released_error("kept")),
                };
            };
            self.state.store(KEPT, Ordering::Release);
            drop(inner);
            lease.keep()
        })
        .map_err(PyErr::from)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __int__(&self) -> u16 {
        self.ports[0]
    }

    fn __repr__(&self) -> String {
        let state = match self.state.load(Ordering::Acquire) {
            ACTIVE => "held",
            RELEASED => "released",
            _ => "kept",
        };
        let ports = if self.ports.len() == 1 {
            format!("port={}", self.ports[0])
        } else {
            format!("ports={:?}", self.ports)
        };
        match &self.name {
            Some(n) => format!("<portmgr.Lease {ports} name={n:?} {state}>"),
            None => format!("<portmgr.Lease {ports} {state}>"),
        }
    }
}

/// In a forked child: forget the parent's abandoned leases (the core says they are not
/// this process's; dropping them there releases nothing). Called from
/// `os.register_at_fork`.
#[pyfunction]
pub(super) fn _after_fork_child() {
    // try_lock: never wait on a mutex copied from the parent.
    if let Some(mut list) = ABANDONED.try_lock() {
        list.retain(|(_, l)| l.is_mine());
    }
}
