//! The pyo3 skin: the extension module `portmgr._native`.
//!
//! Thin by design: every behaviour is the core's. This file converts arguments, releases
//! the GIL around every call that can block (the registry lock, probes, connects, DNS),
//! catches panics so none reaches Python, and raises the exception classes defined in
//! `python/portmgr/errors.py` (the hierarchy lives in Python, where it is readable and
//! picklable; Rust only picks the class through `errors._from_native`).
//!
//! # Leases and garbage collection
//!
//! A Python `Lease` is not released when it is garbage-collected: users write
//! `portmgr.allocate().port`. When the Python object dies while still active, its core
//! [`Lease`] moves to [`ABANDONED`], a process-wide list that is never dropped: the ports
//! stay held until `release(port)` or until the process exits (the kernel then drops the
//! owner lock and every port of the process with it). `free_port()` puts its lease there
//! directly. No entry is ever held across a GIL release, so a `fork()` (which Python
//! makes with the GIL held) never copies that list's mutex in a locked state.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyRange, PyRangeMethods, PyString, PyTuple};

use crate::error::{Error, Result, TimeoutKind};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::registry::{BoundSocket, Lease, LeaseInfo, Registry, Request, Stats};
use crate::reservation::Reservation;
use crate::strategy::Strategy;

// ---------------------------------------------------------------------------------------
// Errors

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for a core error: an instance of a `portmgr.PortError` subclass
/// built by `portmgr.errors._from_native(code, message, errno, details)`.
fn py_err(py: Python<'_>, e: Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let details = PyDict::new(py);
        // One arm per variant and no catch-all: a new kind must be mapped here to compile.
        match &e {
            Error::InvalidArgument(_) | Error::NotFound(_) | Error::Internal(_) => {}
            Error::Exhausted { what } => details.set_item("what", what)?,
            Error::PortInUse { port, holder } => {
                details.set_item("port", port)?;
                details.set_item("holder", holder)?;
            }
            Error::NameInUse { name, ports } => {
                details.set_item("name", name)?;
                details.set_item("ports", ports.clone())?;
            }
            Error::NotOwner { pid, .. } => details.set_item("pid", pid)?,
            Error::Timeout { kind, .. } => {
                details.set_item("lock", matches!(kind, TimeoutKind::Lock))?
            }
            Error::RegistryCorrupt { path, reason } | Error::InsecureDirectory { path, reason } => {
                details.set_item("path", path.to_string_lossy())?;
                details.set_item("reason", reason)?;
            }
            Error::Os { context, .. } => details.set_item("context", context)?,
        }
        let f = FROM_NATIVE.import(py, "portmgr.errors", "_from_native")?;
        let exc = f.call1((e.code() as u32, e.to_string(), e.raw_os_error(), details))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|err| err)
}

fn reg_err(py: Python<'_>) -> impl Fn(Error) -> PyErr + '_ {
    move |e| py_err(py, e)
}

fn probe_err(py: Python<'_>) -> impl Fn(Error) -> PyErr + '_ {
    move |e| py_err(py, e)
}

/// Run `f` without the GIL; a panic inside becomes [`Error::Internal`], never a crash or
/// a `PanicException`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    py.detach(|| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into());
            Err(Error::Internal(msg))
        })
    })
}

// ---------------------------------------------------------------------------------------
// Arguments

fn port_arg(what: &str, p: i64) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::invalid(format!(
            "{what} must be a port from 1 to 65535, not {p}"
        ))),
    }
}

fn seconds_arg(what: &str, s: f64, allow_zero: bool) -> Result<Duration> {
    if !s.is_finite() || s < 0.0 || (!allow_zero && s == 0.0) {
        let want = if allow_zero {
            "zero or more"
        } else {
            "more than zero"
        };
        return Err(Error::invalid(format!(
            "{what} must be a finite number of seconds, {want}, not {s}"
        )));
    }
    Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(format!("{what} of {s} seconds is too long")))
}

/// A range given as `(start, end)` (inclusive), `"A-B"`, or `range(A, B + 1)`.
fn range_arg(obj: &Bound<'_, PyAny>) -> PyResult<std::result::Result<PortRange, Error>> {
    if obj.is_instance_of::<PyString>() {
        return Ok(obj.extract::<String>()?.parse::<PortRange>());
    }
    if let Ok(r) = obj.cast::<PyRange>() {
        let (start, stop, step) = (r.start()?, r.stop()?, r.step()?);
        if step != 1 || stop <= start {
            return Ok(Err(Error::invalid(format!(
                "range({start}, {stop}, {step}) is not a port range: use a non-empty range with step 1"
            ))));
        }
        return Ok((|| {
            PortRange::new(
                port_arg("range start", start as i64)?,
                port_arg("range end", stop as i64 - 1)?,
            )
        })());
    }
    if let Ok((a, b)) = obj.extract::<(i64, i64)>() {
        return Ok((|| {
            PortRange::new(port_arg("range start", a)?, port_arg("range end", b)?)
        })());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let types = t
            .iter()
            .map(|x| Ok(x.get_type().name()?.to_string()))
            .collect::<PyResult<Vec<_>>>()?;
        let what = if t.len() == 2 {
            "range bounds must be ints"
        } else {
            "range must be an inclusive (start, end) tuple of two ints"
        };
        return Err(PyTypeError::new_err(format!(
            "{what}, not a tuple of ({}): {}",
            types.join(", "),
            t.repr()?
        )));
    }
    Err(PyTypeError::new_err(format!(
        "range must be an inclusive (start, end) tuple, a \"START-END\" string or a range object, not {}",
        obj.get_type().name()?
    )))
}

fn protocols_arg(s: &str) -> Result<Protocols> {
    s.parse()
}

/// An IP address, or a host name resolved (call only without the GIL: DNS can block).
fn resolve_host(host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| Error::os(format!("resolving {host:?}"), e))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| Error::invalid(format!("host {host:?} has no address")))
}

fn socket_addr(host: &str, port: u16) -> Result<SocketAddr> {
    Ok(SocketAddr::new(resolve_host(host)?, port))
}

/// Every option of the core [`Request`], as Python passes them.
struct ReqArgs {
    proto: String,
    count: i64,
    contiguous: bool,
    range: Option<std::result::Result<PortRange, Error>>,
    strategy: String,
    name: Option<String>,
    preferred: Option<i64>,
    required: bool,
    ttl: Option<f64>,
    watch_pid: Option<i64>,
    host: Option<String>,
    key: Option<String>,
}

impl ReqArgs {
    /// The core request (resolves `host`: call without the GIL).
    fn request(self) -> Result<Request> {
        let mut req = Request::new().protocols(protocols_arg(&self.proto)?);
        let count = usize::try_from(self.count)
            .map_err(|_| Error::invalid(format!("count must be from 1 up, not {}", self.count)))?;
        req = req.count(count).contiguous(self.contiguous);
        if let Some(r) = self.range {
            req = req.range(r?);
        }
        let mut strategy: Strategy = self.strategy.parse()?;
        if let Some(k) = self.key {
            match strategy {
                Strategy::Hash(_) => strategy = Strategy::Hash(Some(k)),
                _ => {
                    return Err(Error::invalid(
                        "key is the hash strategy's key: pass strategy=\"hash\" with it",
                    ));
                }
            }
        }
        req = req.strategy(strategy);
        if let Some(n) = self.name {
            req = req.name(n);
        }
        match self.preferred {
            Some(p) => req = req.preferred(port_arg("preferred", p)?, self.required),
            None if self.required => {
                return Err(Error::invalid("required=True needs a preferred port"));
            }
            None => {}
        }
        if let Some(t) = self.ttl {
            req = req.ttl(seconds_arg("ttl", t, false)?);
        }
        if let Some(pid) = self.watch_pid {
            let pid = u32::try_from(pid)
                .ok()
                .filter(|&p| p > 0 && p <= i32::MAX as u32)
                .ok_or_else(|| {
                    Error::invalid(format!("watch_pid must be a process id, not {pid}"))
                })?;
            req = req.watch_pid(pid);
        }
        if let Some(h) = self.host {
            req = req.probe_addr(resolve_host(&h)?);
        }
        Ok(req)
    }
}

// ---------------------------------------------------------------------------------------
// Leases

/// Core leases whose Python object died while active, and `free_port()` leases: held
/// until `release(port)` or process exit. `(pid that made it, registry dir, lease)`.
static ABANDONED: Mutex<Vec<(u32, PathBuf, Lease)>> = Mutex::new(Vec::new());

fn abandon(lease: Lease, registry: &Registry) {
    ABANDONED
        .lock()
        .push((std::process::id(), registry.dir().to_path_buf(), lease));
}

/// Take this process's abandoned leases of `registry` that hold `port` off the list:
/// normally none or one; more when an earlier one is gone (released elsewhere, TTL
/// ended) and the port was handed to this process again.
fn take_abandoned(registry: &Registry, port: u16) -> Vec<Lease> {
    let pid = std::process::id();
    let mut list = ABANDONED.lock();
    let mut taken = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let (p, d, l) = &list[i];
        if *p == pid && d == registry.dir() && l.ports().contains(&port) {
            taken.push(list.swap_remove(i).2);
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
fn release_abandoned(
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
            return Err(reg_err(py)(e));
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
    .map_err(reg_err(py))
}

const ACTIVE: u8 = 0;
const RELEASED: u8 = 1;
const KEPT: u8 = 2;

/// Ports held in the registry. Not released by garbage collection: by `release()`, by
/// leaving its `with` block, or when the process exits.
#[pyclass(name = "Lease", module = "portmgr", frozen)]
struct PyLease {
    /// The core lease while active. Locked only without the GIL (a renew holds it while
    /// it waits for the registry lock), and never in a forked child (`pid`), where a
    /// fork may have copied it locked.
    inner: Mutex<Option<Lease>>,
    registry: Registry,
    ports: Vec<u16>,
    name: Option<String>,
    id: u64,
    pid: u32,
    state: AtomicU8,
}

impl PyLease {
    fn new(lease: Lease, registry: &Registry) -> PyLease {
        PyLease {
            ports: lease.ports().to_vec(),
            name: lease.name().map(str::to_owned),
            id: lease.id(),
            inner: Mutex::new(Some(lease)),
            registry: registry.clone(),
            pid: std::process::id(),
            state: AtomicU8::new(ACTIVE),
        }
    }

    /// Whether this process made the lease (not a forked child holding the parent's
    /// object). Asked before touching `inner`: a fork can copy its mutex locked.
    fn is_mine(&self) -> bool {
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
            && self.pid == std::process::id()
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

    /// Whether `release()` or `keep()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.state.load(Ordering::Acquire) != ACTIVE
    }

    /// Release the ports now. Idempotent. In a forked child, a lease inherited from the
    /// parent is the parent's: releasing it there does nothing.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if !self.is_mine() {
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
        .map_err(reg_err(py))
    }

    /// Set the lease's time to live to `ttl` seconds from now; it then lives by its TTL
    /// (renew it before it ends), no longer by this process. It acts on this lease only:
    /// after `release()` it raises NotFound (the port may be someone else's by then);
    /// in a forked child it does nothing (the lease is the parent's).
    fn renew(&self, py: Python<'_>, ttl: f64) -> PyResult<()> {
        let ttl = seconds_arg("ttl", ttl, false).map_err(reg_err(py))?;
        detached(py, || {
            crate::registry::check_ttl(ttl)?;
            if self.state.load(Ordering::Acquire) == RELEASED {
                return Err(self.released_error("renewed"));
            }
            if !self.is_mine() {
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
        .map_err(reg_err(py))
    }

    /// Stop managing the lease from this object: it stays held until the process exits
    /// (or its TTL or watched process ends), and any process of the user may release it
    /// (`portmgr release PORT`). Returns the ports. A released lease cannot be kept
    /// (NotFound); keeping twice returns the ports again.
    fn keep(&self, py: Python<'_>) -> PyResult<Vec<u16>> {
        detached(py, || {
            match self.state.load(Ordering::Acquire) {
                RELEASED => return Err(self.released_error("kept")),
                KEPT => return Ok(self.ports.clone()),
                _ => {}
            }
            if !self.is_mine() {
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
        .map_err(reg_err(py))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
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

// ---------------------------------------------------------------------------------------
// Views

/// One live port of the registry, as the views show it.
#[pyclass(name = "LeaseInfo", module = "portmgr", frozen, get_all)]
struct PyLeaseInfo {
    /// The port.
    port: u16,
    /// "tcp", "udp" or "both".
    protocols: String,
    /// The service name, if any.
    name: Option<String>,
    /// The lease this port belongs to.
    lease_id: u64,
    /// The process that allocated it.
    owner_pid: u32,
    /// When it was allocated, milliseconds since the Unix epoch.
    created_ms: u64,
    /// When its TTL ends (ms since the epoch), or None.
    expires_ms: Option<u64>,
    /// The watched process, if any.
    watch_pid: Option<u32>,
    /// Kept or detached: any process of the user may release it.
    detached: bool,
    /// Handed out as a bound socket.
    bound: bool,
    /// "held", "pending", "expired" or "owner gone".
    state: String,
}

impl From<LeaseInfo> for PyLeaseInfo {
    fn from(i: LeaseInfo) -> Self {
        PyLeaseInfo {
            port: i.port,
            protocols: i.protocols,
            name: i.name,
            lease_id: i.lease_id,
            owner_pid: i.owner_pid,
            created_ms: i.created_ms,
            expires_ms: i.expires_ms,
            watch_pid: i.watch_pid,
            detached: i.detached,
            bound: i.bound,
            state: i.state,
        }
    }
}

#[pymethods]
impl PyLeaseInfo {
    fn __repr__(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map_or("None".to_string(), |n| format!("{n:?}"));
        format!(
            "LeaseInfo(port={}, protocols={:?}, name={name}, owner_pid={}, state={:?})",
            self.port, self.protocols, self.owner_pid, self.state
        )
    }
}

/// Registry figures.
#[pyclass(name = "Stats", module = "portmgr", frozen, get_all)]
struct PyStats {
    /// The default pool, "A-B".
    pool: String,
    /// Usable ports in the default pool.
    pool_size: usize,
    /// Live ports in the registry, all ranges.
    held: usize,
    /// Live ports inside the default pool.
    held_in_pool: usize,
    /// pool_size - held_in_pool.
    free: usize,
    /// held_in_pool / pool_size, 0 to 1.
    utilization: f64,
    /// Processes attached as owners right now.
    owners: usize,
    /// Ports handed out, ever.
    allocations: u64,
    /// Ports released by a call, ever.
    releases: u64,
    /// Ports reclaimed from dead owners or expired leases, ever.
    reclaimed: u64,
}

impl From<Stats> for PyStats {
    fn from(s: Stats) -> Self {
        PyStats {
            pool: s.pool,
            pool_size: s.pool_size,
            held: s.held,
            held_in_pool: s.held_in_pool,
            free: s.free,
            utilization: s.utilization,
            owners: s.owners,
            allocations: s.allocations,
            releases: s.releases,
            reclaimed: s.reclaimed,
        }
    }
}

#[pymethods]
impl PyStats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(pool={:?}, pool_size={}, held={}, free={}, owners={})",
            self.pool, self.pool_size, self.held, self.free, self.owners
        )
    }
}

// ---------------------------------------------------------------------------------------
// Sockets

static SOCKET_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A Python `socket.socket` that takes over `sock`'s descriptor.
fn py_socket<'py>(py: Python<'py>, sock: socket2::Socket) -> PyResult<Bound<'py, PyAny>> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    let cls = SOCKET_CLASS.import(py, "socket", "socket")?;
    let fd = sock.into_raw_fd();
    let kwargs = PyDict::new(py);
    kwargs.set_item("fileno", fd)?;
    cls.call((), Some(&kwargs)).inspect_err(|_| {
        // SAFETY: `fd` came from `into_raw_fd` just above and Python did not take it
        // (the call failed), so this is its only owner; dropping closes it once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    })
}

fn py_sockets<'py>(py: Python<'py>, socks: Vec<BoundSocket>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    socks.into_iter().map(|s| py_socket(py, s.socket)).collect()
}

// ---------------------------------------------------------------------------------------
// Registry

/// A handle on one registry directory (the default one when `path` is None:
/// `$PORTMGR_DIR`, else `$XDG_RUNTIME_DIR/portmgr`, else a per-user temp directory).
#[pyclass(name = "Registry", module = "portmgr", frozen)]
struct PyRegistry {
    reg: Registry,
}

macro_rules! req_args {
    ($py:ident, $proto:ident, $count:expr, $contiguous:expr, $range:ident, $strategy:ident, $name:ident,
     $preferred:ident, $required:ident, $ttl:ident, $watch_pid:ident, $host:ident, $key:ident) => {
        ReqArgs {
            proto: $proto.to_owned(),
            count: $count,
            contiguous: $contiguous,
            range: $range.as_ref().map(range_arg).transpose()?,
            strategy: $strategy.to_owned(),
            name: $name,
            preferred: $preferred,
            required: $required,
            ttl: $ttl,
            watch_pid: $watch_pid,
            host: $host,
            key: $key,
        }
    };
}

mod mapping;

impl PyRegistry {
    fn allocate_lease(&self, py: Python<'_>, args: ReqArgs) -> PyResult<PyLease> {
        let reg = &self.reg;
        let lease = detached(py, || reg.allocate(&args.request()?)).map_err(reg_err(py))?;
        Ok(PyLease::new(lease, reg))
    }

    fn allocate_sockets<'py>(
        &self,
        py: Python<'py>,
        args: ReqArgs,
    ) -> PyResult<(PyLease, Vec<Bound<'py, PyAny>>)> {
        let reg = &self.reg;
        let (lease, socks) =
            detached(py, || reg.allocate_bound(&args.request()?)).map_err(reg_err(py))?;
        let lease = PyLease::new(lease, reg);
        Ok((lease, py_sockets(py, socks)?))
    }
}

#[pymethods]
impl PyRegistry {
    #[new]
    #[pyo3(signature = (path = None, *, lock_timeout = None))]
    fn new(py: Python<'_>, path: Option<PathBuf>, lock_timeout: Option<f64>) -> PyResult<Self> {
        let timeout = lock_timeout
            .map(|t| seconds_arg("lock_timeout", t, false))
            .transpose()
            .map_err(reg_err(py))?;
        let reg = detached(py, || {
            let path = match path {
                Some(p) => p,
                None => crate::registry::resolve_default_dir()?,
            };
            Registry::open_with_timeout(
                path,
                timeout.unwrap_or(crate::registry::DEFAULT_LOCK_TIMEOUT),
            )
        })
        .map_err(reg_err(py))?;
        Ok(PyRegistry { reg })
    }

    /// The registry's directory.
    #[getter]
    fn path(&self) -> String {
        self.reg.dir().to_string_lossy().into_owned()
    }

    /// The default pool, as an inclusive (start, end) tuple.
    #[getter]
    fn default_pool(&self, py: Python<'_>) -> PyResult<(u16, u16)> {
        let reg = &self.reg;
        let p = detached(py, || reg.default_pool()).map_err(reg_err(py))?;
        Ok((p.start(), p.end()))
    }

    /// How long calls wait for the registry lock before LockTimeout, in seconds.
    fn set_lock_timeout(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        self.reg
            .set_lock_timeout(seconds_arg("lock_timeout", seconds, false).map_err(reg_err(py))?);
        Ok(())
    }

    /// Allocate ports; see `portmgr.allocate`.
    #[pyo3(signature = (*, proto = "tcp", count = 1, contiguous = false, range = None, strategy = "random",
                        name = None, preferred = None, required = false, ttl = None, watch_pid = None,
                        host = None, key = None))]
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &self,
        py: Python<'_>,
        proto: &str,
        count: i64,
        contiguous: bool,
        range: Option<Bound<'_, PyAny>>,
        strategy: &str,
        name: Option<String>,
        preferred: Option<i64>,
        required: bool,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
        host: Option<String>,
        key: Option<String>,
    ) -> PyResult<PyLease> {
        let args = req_args!(
            py, proto, count, contiguous, range, strategy, name, preferred, required, ttl,
            watch_pid, host, key
        );
        self.allocate_lease(py, args)
    }

    /// Allocate ports and hand them over bound: a listening TCP socket and/or a bound UDP
    /// socket per port. Returns the lease and the sockets (`socket.socket`).
    #[pyo3(signature = (*, proto = "tcp", count = 1, contiguous = false, range = None, strategy = "random",
                        name = None, preferred = None, required = false, ttl = None, watch_pid = None,
                        host = None, key = None))]
    #[allow(clippy::too_many_arguments)]
    fn allocate_bound<'py>(
        &self,
        py: Python<'py>,
        proto: &str,
        count: i64,
        contiguous: bool,
        range: Option<Bound<'py, PyAny>>,
        strategy: &str,
        name: Option<String>,
        preferred: Option<i64>,
        required: bool,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
        host: Option<String>,
        key: Option<String>,
    ) -> PyResult<(PyLease, Vec<Bound<'py, PyAny>>)> {
        let args = req_args!(
            py, proto, count, contiguous, range, strategy, name, preferred, required, ttl,
            watch_pid, host, key
        );
        self.allocate_sockets(py, args)
    }

    /// One port, held until `release(port)` or until this process exits.
    #[pyo3(signature = (*, proto = "tcp", range = None, strategy = "random", name = None, preferred = None,
                        required = false, ttl = None, watch_pid = None, host = None, key = None))]
    #[allow(clippy::too_many_arguments)]
    fn free_port(
        &self,
        py: Python<'_>,
        proto: &str,
        range: Option<Bound<'_, PyAny>>,
        strategy: &str,
        name: Option<String>,
        preferred: Option<i64>,
        required: bool,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
        host: Option<String>,
        key: Option<String>,
    ) -> PyResult<u16> {
        let args = req_args!(
            py, proto, 1, false, range, strategy, name, preferred, required, ttl, watch_pid, host,
            key
        );
        let reg = &self.reg;
        let lease = detached(py, || reg.allocate(&args.request()?)).map_err(reg_err(py))?;
        let port = lease.port();
        abandon(lease, reg);
        Ok(port)
    }

    /// A socket bound (TCP: and listening) on a registry-held port. The port stays held
    /// until `release(port)` or until this process exits.
    #[pyo3(signature = (*, proto = "tcp", range = None, strategy = "random", name = None, preferred = None,
                        required = false, ttl = None, watch_pid = None, host = None, key = None))]
    #[allow(clippy::too_many_arguments)]
    fn bound_socket<'py>(
        &self,
        py: Python<'py>,
        proto: &str,
        range: Option<Bound<'py, PyAny>>,
        strategy: &str,
        name: Option<String>,
        preferred: Option<i64>,
        required: bool,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
        host: Option<String>,
        key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !matches!(protocols_arg(proto), Ok(p) if p != Protocols::BOTH) {
            return Err(py_err(
                py,
                Error::invalid(format!(
                    "bound_socket makes one socket: proto must be \"tcp\" or \"udp\", not {proto:?}"
                )),
            ));
        }
        let args = req_args!(
            py, proto, 1, false, range, strategy, name, preferred, required, ttl, watch_pid, host,
            key
        );
        let reg = &self.reg;
        let (lease, socks) =
            detached(py, || reg.allocate_bound(&args.request()?)).map_err(reg_err(py))?;
        abandon(lease, reg);
        py_sockets(py, socks)?
            .into_iter()
            .next()
            .ok_or_else(|| py_err(py, Error::Internal("allocate_bound gave no socket".into())))
    }

    /// The live lease named `name` as a list of LeaseInfo when there is one, else a new
    /// Lease allocated with these options (one call, so two processes asking at once
    /// end up sharing one lease).
    #[pyo3(signature = (name, *, proto = "tcp", count = 1, contiguous = false, range = None,
                        strategy = "random", preferred = None, required = false, ttl = None,
                        watch_pid = None, host = None, key = None))]
    #[allow(clippy::too_many_arguments)]
    fn get_or_allocate<'py>(
        &self,
        py: Python<'py>,
        name: String,
        proto: &str,
        count: i64,
        contiguous: bool,
        range: Option<Bound<'py, PyAny>>,
        strategy: &str,
        preferred: Option<i64>,
        required: bool,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
        host: Option<String>,
        key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = Some(name);
        let args = req_args!(
            py, proto, count, contiguous, range, strategy, name, preferred, required, ttl,
            watch_pid, host, key
        );
        let reg = &self.reg;
        match detached(py, || reg.get_or_allocate(&args.request()?)).map_err(reg_err(py))? {
            Ok(lease) => Ok(Bound::new(py, PyLease::new(lease, reg))?.into_any()),
            Err(infos) => {
                let infos: Vec<PyLeaseInfo> = infos.into_iter().map(Into::into).collect();
                Ok(infos.into_pyobject(py)?.into_any())
            }
        }
    }

    /// Release the lease that holds `port` (all its ports); returns the ports freed.
    /// Allowed for this process's leases, kept or detached ones, and leases whose owner
    /// is gone; NotOwner otherwise, NotFound when no live lease holds the port.
    fn release(&self, py: Python<'_>, port: i64) -> PyResult<Vec<u16>> {
        let port = port_arg("port", port).map_err(reg_err(py))?;
        let reg = &self.reg;
        // With the GIL held, as every use of ABANDONED (see the module docs).
        let mine = take_abandoned(reg, port);
        if !mine.is_empty() {
            return release_abandoned(py, reg, port, mine);
        }
        detached(py, || reg.release_port(port)).map_err(reg_err(py))
    }

    /// Release the live lease named `name`; returns the ports freed.
    fn release_name(&self, py: Python<'_>, name: &str) -> PyResult<Vec<u16>> {
        let reg = &self.reg;
        detached(py, || reg.release_name(name)).map_err(reg_err(py))
    }

    /// Extend the TTL of the lease holding `port` to `ttl` seconds from now (its own TTL
    /// when None).
    #[pyo3(signature = (port, ttl = None))]
    fn renew(&self, py: Python<'_>, port: i64, ttl: Option<f64>) -> PyResult<()> {
        let port = port_arg("port", port).map_err(reg_err(py))?;
        let ttl = ttl
            .map(|t| seconds_arg("ttl", t, false))
            .transpose()
            .map_err(reg_err(py))?;
        let reg = &self.reg;
        detached(py, || reg.renew_port(port, ttl)).map_err(reg_err(py))
    }

    /// Extend the TTL of the lease named `name` (as `renew`).
    #[pyo3(signature = (name, ttl = None))]
    fn renew_name(&self, py: Python<'_>, name: &str, ttl: Option<f64>) -> PyResult<()> {
        let ttl = ttl
            .map(|t| seconds_arg("ttl", t, false))
            .transpose()
            .map_err(reg_err(py))?;
        let reg = &self.reg;
        detached(py, || reg.renew_name(name, ttl)).map_err(reg_err(py))
    }

    /// Every live port, ascending.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.list())
            .map_err(reg_err(py))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The live ports named `name` (empty when none).
    fn get_by_name(&self, py: Python<'_>, name: &str) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.get_by_name(name))
            .map_err(reg_err(py))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The live lease of `port`, or None.
    fn get_by_port(&self, py: Python<'_>, port: i64) -> PyResult<Option<PyLeaseInfo>> {
        let port = port_arg("port", port).map_err(reg_err(py))?;
        let reg = &self.reg;
        Ok(detached(py, || reg.get_by_port(port))
            .map_err(reg_err(py))?
            .map(Into::into))
    }

    /// Drop every dead or expired record; returns what was freed.
    fn gc(&self, py: Python<'_>) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.gc())
            .map_err(reg_err(py))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Pool size, held, free, utilization, live owners and the lifetime counters.
    fn stats(&self, py: Python<'_>) -> PyResult<PyStats> {
        let reg = &self.reg;
        Ok(detached(py, || reg.stats()).map_err(reg_err(py))?.into())
    }

    /// Things the registry did on its own that a person should know of.
    fn notices(&self, py: Python<'_>) -> Vec<String> {
        // Detached: the handle's state lock can be held by a thread waiting for the file lock.
        let reg = &self.reg;
        py.detach(|| reg.notices())
    }

    fn __repr__(&self) -> String {
        format!("portmgr.Registry({:?})", self.reg.dir().to_string_lossy())
    }
}

// ---------------------------------------------------------------------------------------
// Reservation

/// An in-process set of reserved ports over a range (no shared state: another process
/// can be handed the same port; use the registry for host-wide uniqueness).
#[pyclass(name = "Reservation", module = "portmgr", frozen)]
struct PyReservation {
    inner: Reservation,
}

#[pymethods]
impl PyReservation {
    #[new]
    #[pyo3(signature = (range = None, *, strategy = "random"))]
    fn new(py: Python<'_>, range: Option<Bound<'_, PyAny>>, strategy: &str) -> PyResult<Self> {
        let range = range.as_ref().map(range_arg).transpose()?;
        let strategy: Strategy = strategy.parse().map_err(probe_err(py))?;
        let range = match range {
            Some(r) => r.map_err(probe_err(py))?,
            None => detached(py, PortRange::default_pool).map_err(probe_err(py))?,
        };
        Ok(PyReservation {
            inner: Reservation::with_strategy(range, strategy),
        })
    }

    /// The range, as an inclusive (start, end) tuple.
    #[getter]
    fn range(&self) -> (u16, u16) {
        (self.inner.range().start(), self.inner.range().end())
    }

    /// Reserve one port (free for TCP and UDP right now); PortsExhausted when none is left.
    fn reserve_port(&self, py: Python<'_>) -> PyResult<u16> {
        let r = &self.inner;
        detached(py, || r.reserve_port()).map_err(probe_err(py))
    }

    /// Reserve up to `n` ports; fewer (possibly none) when the range runs out.
    fn reserve_ports(&self, py: Python<'_>, n: usize) -> PyResult<Vec<u16>> {
        let r = &self.inner;
        detached(py, || r.reserve_ports(n)).map_err(probe_err(py))
    }

    /// Give `port` back; True when it was reserved.
    fn release_port(&self, port: u16) -> bool {
        self.inner.release_port(port)
    }

    /// Give `ports` back; returns how many were reserved.
    fn release_ports(&self, ports: Vec<u16>) -> usize {
        self.inner.release_ports(ports)
    }

    /// Give every port back.
    fn clear(&self) -> usize {
        self.inner.release_ports(self.inner.range().iter())
    }

    /// Whether `port` is reserved here.
    fn is_reserved(&self, port: u16) -> bool {
        self.inner.is_reserved(port)
    }

    fn __contains__(&self, port: i64) -> bool {
        u16::try_from(port).is_ok_and(|p| self.inner.is_reserved(p))
    }

    fn __len__(&self) -> usize {
        self.inner.reserved_count()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.clear();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<portmgr.Reservation {} reserved={}>",
            self.inner.range(),
            self.inner.reserved_count()
        )
    }
}

// ---------------------------------------------------------------------------------------
// Probes and module functions

/// Whether `port` can be bound for `proto` on every address (or on `host`).
#[pyfunction]
#[pyo3(signature = (port, proto = "tcp", *, host = None))]
fn is_free(py: Python<'_>, port: i64, proto: &str, host: Option<String>) -> PyResult<bool> {
    let proto = proto.to_owned();
    detached(py, move || {
        let (port, protocols) = (port_arg("port", port)?, protocols_arg(&proto)?);
        match host {
            Some(h) => probe::is_free_on(resolve_host(&h)?, port, protocols),
            None => probe::is_free(port, protocols),
        }
    })
    .map_err(probe_err(py))
}

/// The ports of `range` in use for `proto`, ascending.
#[pyfunction]
#[pyo3(signature = (range, proto = "tcp"))]
fn scan(py: Python<'_>, range: Bound<'_, PyAny>, proto: &str) -> PyResult<Vec<u16>> {
    let range = range_arg(&range)?;
    let proto = proto.to_owned();
    detached(py, move || probe::scan(&range?, protocols_arg(&proto)?)).map_err(probe_err(py))
}

/// Wait until something accepts TCP connections on `host:port`; PortTimeout after
/// `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (port, *, host = "127.0.0.1", timeout = 10.0))]
fn wait_listening(py: Python<'_>, port: i64, host: &str, timeout: f64) -> PyResult<()> {
    let host = host.to_owned();
    detached(py, move || {
        let addr = socket_addr(&host, port_arg("port", port)?)?;
        probe::wait_listening(addr, seconds_arg("timeout", timeout, true)?)
    })
    .map_err(probe_err(py))
}

/// Wait until `port` is free for `proto`; PortTimeout after `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (port, proto = "tcp", *, timeout = 10.0))]
fn wait_free(py: Python<'_>, port: i64, proto: &str, timeout: f64) -> PyResult<()> {
    let proto = proto.to_owned();
    detached(py, move || {
        probe::wait_free(
            port_arg("port", port)?,
            protocols_arg(&proto)?,
            seconds_arg("timeout", timeout, true)?,
        )
    })
    .map_err(probe_err(py))
}

/// For each `(host, port)` of `addrs`, whether it accepts a TCP connection within
/// `timeout` seconds (the connects run in parallel).
#[pyfunction]
#[pyo3(signature = (addrs, *, timeout = 1.0))]
fn reachable(py: Python<'_>, addrs: Vec<(String, i64)>, timeout: f64) -> PyResult<Vec<bool>> {
    detached(py, move || {
        let timeout = seconds_arg("timeout", timeout, false)?;
        let addrs = addrs
            .iter()
            .map(|(h, p)| socket_addr(h, port_arg("port", *p)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(probe::reachable(&addrs, timeout))
    })
    .map_err(probe_err(py))
}

/// The default registry directory (`PORTMGR_DIR` honoured; InvalidArgument when it is
/// set but empty).
#[pyfunction]
fn default_dir(py: Python<'_>) -> PyResult<String> {
    let d = crate::registry::resolve_default_dir().map_err(reg_err(py))?;
    Ok(d.to_string_lossy().into_owned())
}

/// The default pool (`PORTMGR_RANGE` honoured), as an inclusive (start, end) tuple.
#[pyfunction]
fn default_pool(py: Python<'_>) -> PyResult<(u16, u16)> {
    let p = detached(py, PortRange::default_pool).map_err(probe_err(py))?;
    Ok((p.start(), p.end()))
}

/// Run the `portmgr` command line with `argv` (argv[0] is the program name); returns
/// the exit status. The same Rust code as the cargo binary.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(|| {
        use std::io::Write;
        // main_with_args catches its own panics; this is a second net.
        let code =
            catch_unwind(|| crate::cli::main_with_args(argv)).unwrap_or(crate::cli::EXIT_OTHER);
        // No Rust `main` runs here to flush on exit: flush now, before Python exits.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    })
}

/// In a forked child: forget the parent's abandoned leases (they are the parent's;
/// dropping them there releases nothing). Called from `os.register_at_fork`.
#[pyfunction]
fn _after_fork_child() {
    let pid = std::process::id();
    // try_lock: never wait on a mutex copied from the parent.
    if let Some(mut list) = ABANDONED.try_lock() {
        list.retain(|(p, _, _)| *p == pid);
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    m.add_class::<PyRegistry>()?;
    m.add_class::<PyLease>()?;
    m.add_class::<PyLeaseInfo>()?;
    m.add_class::<PyStats>()?;
    m.add_class::<PyReservation>()?;
    m.add_function(wrap_pyfunction!(is_free, m)?)?;
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_function(wrap_pyfunction!(wait_listening, m)?)?;
    m.add_function(wrap_pyfunction!(wait_free, m)?)?;
    m.add_function(wrap_pyfunction!(reachable, m)?)?;
    m.add_function(wrap_pyfunction!(default_dir, m)?)?;
    m.add_function(wrap_pyfunction!(default_pool, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_child, m)?)?;
    mapping::register(m)?;
    Ok(())
}
