//! `portmgr.Registry`: a handle on one registry directory, and the Python sockets it
//! hands over.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use super::args::{port_arg, protocols_arg, seconds_arg, spans_arg};
use super::errors::detached;
use super::lease::{PyLease, abandon, release_abandoned, take_abandoned};
use super::request::{RequestArgs, metadata_arg, spec_arg};
use super::unixpath::PyUnixPath;
use super::views::{PyLeaseInfo, PyReservedRange, PyStats};
use crate::error::Error;
use crate::mapping;
use crate::range::Protocols;
use crate::registry::{BoundSocket, Registry};

/// A handle on one registry directory (the default one when `path` is None:
/// `$PORTMGR_DIR`, else `$XDG_RUNTIME_DIR/portmgr`, else a per-user temp directory).
#[pyclass(name = "Registry", module = "portmgr", frozen)]
pub(super) struct PyRegistry {
    pub(super) reg: Registry,
}

#[pymethods]
impl PyRegistry {
    #[new]
    #[pyo3(signature = (path = None, *, lock_timeout = None))]
    fn new(py: Python<'_>, path: Option<PathBuf>, lock_timeout: Option<f64>) -> PyResult<Self> {
        let timeout = lock_timeout
            .map(|t| seconds_arg("lock_timeout", t, false))
            .transpose()?;
        let reg = detached(py, || {
            let path = match path {
                Some(p) => p,
                None => crate::registry::resolve_default_dir()?,
            };
            Registry::open_with_timeout(
                path,
                timeout.unwrap_or(crate::registry::DEFAULT_LOCK_TIMEOUT),
            )
        })?;
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
        let p = detached(py, || reg.default_pool())?;
        Ok((p.start(), p.end()))
    }

    /// How long calls wait for the registry lock before LockTimeout, in seconds.
    fn set_lock_timeout(&self, seconds: f64) -> PyResult<()> {
        self.reg
            .set_lock_timeout(seconds_arg("lock_timeout", seconds, false)?);
        Ok(())
    }

    /// Allocate ports; see `portmgr.allocate`. With a `type` or `metadata`, a typed
    /// service (the core decides: `mapping::allocate`).
    #[pyo3(signature = (*, r#type = None, metadata = None, internal_ports = None, **kwargs))]
    fn allocate(
        &self,
        py: Python<'_>,
        r#type: Option<String>,
        metadata: Option<Bound<'_, PyAny>>,
        internal_ports: Option<Vec<i64>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyLease> {
        let args = RequestArgs::from_kwargs("allocate", kwargs, &[])?;
        let spec = spec_arg(r#type, metadata_arg(metadata.as_ref())?, internal_ports)?;
        let reg = &self.reg;
        let lease = detached(py, || mapping::allocate(reg, &args.request()?, &spec))?;
        Ok(PyLease::new(lease, reg).with_spec(&spec))
    }

    /// Allocate ports and hand them over bound: a listening TCP socket and/or a bound UDP
    /// socket per port. Returns the lease and the sockets (`socket.socket`). With a
    /// `type` or `metadata`, a typed service (`mapping::allocate_bound`).
    #[pyo3(signature = (*, r#type = None, metadata = None, internal_ports = None, **kwargs))]
    fn allocate_bound<'py>(
        &self,
        py: Python<'py>,
        r#type: Option<String>,
        metadata: Option<Bound<'_, PyAny>>,
        internal_ports: Option<Vec<i64>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(PyLease, Vec<Bound<'py, PyAny>>)> {
        let args = RequestArgs::from_kwargs("allocate_bound", kwargs, &[])?;
        let spec = spec_arg(r#type, metadata_arg(metadata.as_ref())?, internal_ports)?;
        let reg = &self.reg;
        let (lease, socks) =
            detached(py, || mapping::allocate_bound(reg, &args.request()?, &spec))?;
        let lease = PyLease::new(lease, reg).with_spec(&spec);
        Ok((lease, py_sockets(py, socks)?))
    }

    /// One port, held until `release(port)` or until this process exits.
    #[pyo3(signature = (**kwargs))]
    fn free_port(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<u16> {
        let args = RequestArgs::from_kwargs("free_port", kwargs, &["count", "contiguous"])?;
        let reg = &self.reg;
        let lease = detached(py, || reg.allocate(&args.request()?))?;
        let port = lease.port();
        abandon(lease, reg);
        Ok(port)
    }

    /// A socket bound (TCP: and listening) on a registry-held port. The port stays held
    /// until `release(port)` or until this process exits.
    #[pyo3(signature = (**kwargs))]
    fn bound_socket<'py>(
        &self,
        py: Python<'py>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = RequestArgs::from_kwargs("bound_socket", kwargs, &["count", "contiguous"])?;
        if !matches!(protocols_arg(&args.proto), Ok(p) if p != Protocols::BOTH) {
            return Err(Error::invalid(format!(
                "bound_socket makes one socket: proto must be \"tcp\" or \"udp\", not {:?}",
                args.proto
            ))
            .into());
        }
        let reg = &self.reg;
        let (lease, socks) = detached(py, || reg.allocate_bound(&args.request()?))?;
        abandon(lease, reg);
        py_sockets(py, socks)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("allocate_bound gave no socket".into()).into())
    }

    /// A listener set: one allocated port bound on every address of `addresses` (default:
    /// the dual-stack wildcard), for `proto` ("tcp", "udp" or "both"), with `reuse_port`
    /// and `workers` sockets per address and protocol, all or nothing. Returns the lease
    /// and the sockets (`socket.socket`, close-on-exec: TCP listening, UDP bound), in
    /// address order, TCP before UDP, worker by worker.
    #[pyo3(signature = (*, addresses = None, reuse_addr = false, reuse_port = false, workers = 1, ipv6_only = None, backlog = 1024, **kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn bound_sockets<'py>(
        &self,
        py: Python<'py>,
        addresses: Option<Vec<String>>,
        reuse_addr: bool,
        reuse_port: bool,
        workers: usize,
        ipv6_only: Option<bool>,
        backlog: i32,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<(PyLease, Vec<Bound<'py, PyAny>>)> {
        let args = RequestArgs::from_kwargs("bound_sockets", kwargs, &["host"])?;
        let addresses = addresses
            .unwrap_or_default()
            .iter()
            .map(|a| crate::listen::parse_address(a))
            .collect::<Result<Vec<_>, Error>>()?;
        let opts = crate::listen::ListenOptions { addresses, reuse_addr, reuse_port, workers, ipv6_only, backlog };
        let reg = &self.reg;
        let (lease, socks) = detached(py, || reg.allocate_listeners(&args.request()?, &opts))?;
        let lease = PyLease::new(lease, reg);
        let socks = socks.into_iter().map(|l| py_socket(py, l.socket)).collect::<PyResult<Vec<_>>>()?;
        Ok((lease, socks))
    }

    /// A fresh Unix-socket path for `name` (or none) in the registry's private sockets
    /// directory, held for this process (see `UnixSocketPath`). Nothing is bound there.
    #[pyo3(signature = (name = None))]
    fn unix_socket_path(&self, py: Python<'_>, name: Option<String>) -> PyResult<PyUnixPath> {
        let reg = &self.reg;
        Ok(PyUnixPath::new(detached(py, || reg.unix_socket_path(name.as_deref()))?))
    }

    /// `unix_socket_path`, bound: the path and a listening `socket.socket` (AF_UNIX)
    /// there.
    #[pyo3(signature = (name = None))]
    fn bound_unix_socket<'py>(&self, py: Python<'py>, name: Option<String>) -> PyResult<(PyUnixPath, Bound<'py, PyAny>)> {
        let reg = &self.reg;
        let (path, listener) = detached(py, || reg.bound_unix_socket(name.as_deref()))?;
        let sock = socket2::Socket::from(std::os::fd::OwnedFd::from(listener));
        Ok((PyUnixPath::new(path), py_socket(py, sock)?))
    }

    /// The live lease named `name` as a list of LeaseInfo when there is one, else a new
    /// Lease allocated with these options (one call, so two processes asking at once
    /// end up sharing one lease).
    #[pyo3(signature = (name, **kwargs))]
    fn get_or_allocate<'py>(
        &self,
        py: Python<'py>,
        name: String,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut args = RequestArgs::from_kwargs("get_or_allocate", kwargs, &["name"])?;
        args.name = Some(name);
        let reg = &self.reg;
        match detached(py, || reg.get_or_allocate(&args.request()?))? {
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
        let port = port_arg("port", port)?;
        let reg = &self.reg;
        // With the GIL held, as every use of ABANDONED (see the module docs).
        let mine = take_abandoned(reg, port);
        if !mine.is_empty() {
            return release_abandoned(py, reg, port, mine);
        }
        detached(py, || reg.release_port(port)).map_err(PyErr::from)
    }

    /// Release the live lease named `name`; returns the ports freed.
    fn release_name(&self, py: Python<'_>, name: &str) -> PyResult<Vec<u16>> {
        let reg = &self.reg;
        detached(py, || reg.release_name(name)).map_err(PyErr::from)
    }

    /// Release lease `id` (`Lease.id`, `LeaseInfo.lease_id`; all its ports); returns the
    /// ports freed. NotFound for an unknown or already-released id.
    fn release_id(&self, py: Python<'_>, id: u64) -> PyResult<Vec<u16>> {
        let reg = &self.reg;
        detached(py, || reg.release_id(id)).map_err(PyErr::from)
    }

    /// Extend the TTL of the lease holding `port` to `ttl` seconds from now (its own TTL
    /// when None).
    #[pyo3(signature = (port, ttl = None))]
    fn renew(&self, py: Python<'_>, port: i64, ttl: Option<f64>) -> PyResult<()> {
        let port = port_arg("port", port)?;
        let ttl = ttl.map(|t| seconds_arg("ttl", t, false)).transpose()?;
        let reg = &self.reg;
        detached(py, || reg.renew_port(port, ttl)).map_err(PyErr::from)
    }

    /// Extend the TTL of lease `id` (as `renew`). NotFound for an unknown, released or
    /// expired id.
    #[pyo3(signature = (id, ttl = None))]
    fn renew_id(&self, py: Python<'_>, id: u64, ttl: Option<f64>) -> PyResult<()> {
        let ttl = ttl.map(|t| seconds_arg("ttl", t, false)).transpose()?;
        let reg = &self.reg;
        detached(py, || reg.renew_id(id, ttl)).map_err(PyErr::from)
    }

    /// Extend the TTL of the lease named `name` (as `renew`).
    #[pyo3(signature = (name, ttl = None))]
    fn renew_name(&self, py: Python<'_>, name: &str, ttl: Option<f64>) -> PyResult<()> {
        let ttl = ttl.map(|t| seconds_arg("ttl", t, false)).transpose()?;
        let reg = &self.reg;
        detached(py, || reg.renew_name(name, ttl)).map_err(PyErr::from)
    }

    /// Every live port, ascending.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.list())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The live ports named `name` (empty when none).
    fn get_by_name(&self, py: Python<'_>, name: &str) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.get_by_name(name))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The live lease of `port`, or None.
    fn get_by_port(&self, py: Python<'_>, port: i64) -> PyResult<Option<PyLeaseInfo>> {
        let port = port_arg("port", port)?;
        let reg = &self.reg;
        Ok(detached(py, || reg.get_by_port(port))?.map(Into::into))
    }

    /// Drop every dead or expired record; returns what was freed.
    fn gc(&self, py: Python<'_>) -> PyResult<Vec<PyLeaseInfo>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.gc())?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Pool size, held, free, utilization, live owners and the lifetime counters.
    fn stats(&self, py: Python<'_>) -> PyResult<PyStats> {
        let reg = &self.reg;
        Ok(detached(py, || reg.stats())?.into())
    }

    /// Reserve ports registry-wide (`9100`, `(9200, 9299)`, `"9100,9200-9299"` or a
    /// list of those), with an optional reason: no process or language is handed them
    /// until `unreserve`. Returns the live leases inside them, which keep their ports
    /// (blocked once released).
    #[pyo3(signature = (ports, reason = None))]
    fn reserve(&self, py: Python<'_>, ports: &Bound<'_, PyAny>, reason: Option<String>) -> PyResult<Vec<PyLeaseInfo>> {
        let spans = spans_arg("ports", ports)?.map_err(PyErr::from)?;
        let reg = &self.reg;
        Ok(detached(py, || reg.reserve(&spans, reason.as_deref()))?.into_iter().map(Into::into).collect())
    }

    /// Unreserve ports (as `reserve` takes them): a reservation that only partly overlaps
    /// keeps its other ports. Returns the parts freed; NotFound when none was reserved.
    fn unreserve(&self, py: Python<'_>, ports: &Bound<'_, PyAny>) -> PyResult<Vec<PyReservedRange>> {
        let spans = spans_arg("ports", ports)?.map_err(PyErr::from)?;
        let reg = &self.reg;
        Ok(detached(py, || reg.unreserve(&spans))?.into_iter().map(Into::into).collect())
    }

    /// Every reservation, in the order they were made.
    fn reserved(&self, py: Python<'_>) -> PyResult<Vec<PyReservedRange>> {
        let reg = &self.reg;
        Ok(detached(py, || reg.reserved())?.into_iter().map(Into::into).collect())
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
