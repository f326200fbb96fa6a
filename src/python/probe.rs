//! The probes (`is_free`, `scan`, `wait_listening`, `wait_free`, `reachable`) and the
//! defaults (`default_dir`, `default_pool`): module functions, each one core call
//! without the GIL.

use pyo3::prelude::*;

use super::args::{port_arg, protocols_arg, range_arg, resolve_host, seconds_arg, socket_addr};
use super::errors::detached;
use crate::error::Result;
use crate::probe;
use crate::range::PortRange;

/// Whether `port` can be bound for `proto` on every address (or on `host`).
#[pyfunction]
#[pyo3(signature = (port, proto = "tcp", *, host = None))]
pub(super) fn is_free(
    py: Python<'_>,
    port: i64,
    proto: &str,
    host: Option<String>,
) -> PyResult<bool> {
    let proto = proto.to_owned();
    detached(py, move || {
        let (port, protocols) = (port_arg("port", port)?, protocols_arg(&proto)?);
        match host {
            Some(h) => probe::is_free_on(resolve_host(&h)?, port, protocols),
            None => probe::is_free(port, protocols),
        }
    })
    .map_err(PyErr::from)
}

/// The ports of `range` in use for `proto`, ascending.
#[pyfunction]
#[pyo3(signature = (range, proto = "tcp"))]
pub(super) fn scan(py: Python<'_>, range: Bound<'_, PyAny>, proto: &str) -> PyResult<Vec<u16>> {
    let range = range_arg(&range)?;
    let proto = proto.to_owned();
    detached(py, move || probe::scan(&range?, protocols_arg(&proto)?)).map_err(PyErr::from)
}

/// Wait until something accepts TCP connections on `host:port`; PortTimeout after
/// `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (port, *, host = "127.0.0.1", timeout = 10.0))]
pub(super) fn wait_listening(py: Python<'_>, port: i64, host: &str, timeout: f64) -> PyResult<()> {
    let host = host.to_owned();
    detached(py, move || {
        let addr = socket_addr(&host, port_arg("port", port)?)?;
        probe::wait_listening(addr, seconds_arg("timeout", timeout, true)?)
    })
    .map_err(PyErr::from)
}

/// Wait until `port` is free for `proto`; PortTimeout after `timeout` seconds.
#[pyfunction]
#[pyo3(signature = (port, proto = "tcp", *, timeout = 10.0))]
pub(super) fn wait_free(py: Python<'_>, port: i64, proto: &str, timeout: f64) -> PyResult<()> {
    let proto = proto.to_owned();
    detached(py, move || {
        probe::wait_free(
            port_arg("port", port)?,
            protocols_arg(&proto)?,
            seconds_arg("timeout", timeout, true)?,
        )
    })
    .map_err(PyErr::from)
}

/// For each `(host, port)` of `addrs`, whether it accepts a TCP connection within
/// `timeout` seconds (the connects run in parallel).
#[pyfunction]
#[pyo3(signature = (addrs, *, timeout = 1.0))]
pub(super) fn reachable(
    py: Python<'_>,
    addrs: Vec<(String, i64)>,
    timeout: f64,
) -> PyResult<Vec<bool>> {
    detached(py, move || {
        let timeout = seconds_arg("timeout", timeout, false)?;
        let addrs = addrs
            .iter()
            .map(|(h, p)| socket_addr(h, port_arg("port", *p)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(probe::reachable(&addrs, timeout))
    })
    .map_err(PyErr::from)
}

/// The default registry directory (`PORTMGR_DIR` honoured; InvalidArgument when it is
/// set but empty).
#[pyfunction]
pub(super) fn default_dir() -> PyResult<String> {
    let d = crate::registry::resolve_default_dir()?;
    Ok(d.to_string_lossy().into_owned())
}

/// The default pool (`PORTMGR_RANGE` honoured), as an inclusive (start, end) tuple.
#[pyfunction]
pub(super) fn default_pool(py: Python<'_>) -> PyResult<(u16, u16)> {
    let p = detached(py, PortRange::default_pool)?;
    Ok((p.start(), p.end()))
}

/// One candidate of `first_reachable` and what its probe found.
#[derive(Clone)]
#[pyclass(name = "Candidate", module = "portmgr", frozen, get_all)]
pub(super) struct PyCandidate {
    /// The candidate as given ("db.internal:5432").
    target: String,
    /// Its host, as written (brackets removed).
    host: String,
    /// Its port.
    port: u16,
    /// The address that accepted ("127.0.0.1:5432"), else the first one tried; None
    /// when the name did not resolve.
    address: Option<String>,
    /// "reachable", "refused", "timed_out", "unresolvable" or "unreachable".
    outcome: String,
    /// How long its probe took, in seconds.
    elapsed: f64,
    /// The error, for every outcome but "reachable".
    error: Option<String>,
}

#[pymethods]
impl PyCandidate {
    fn __repr__(&self) -> String {
        format!("Candidate(target={:?}, outcome={:?}, elapsed={:.3})", self.target, self.outcome, self.elapsed)
    }
}

/// The answer of `first_reachable`: the winner (first reachable in priority order) and
/// every candidate's result. True when a candidate was reachable.
#[pyclass(name = "FirstReachable", module = "portmgr", frozen, get_all)]
pub(super) struct PyFirstReachable {
    /// The winner's target as given, or None.
    reachable: Option<String>,
    /// The winner's index in the list given, or None.
    winner: Option<usize>,
    /// Every candidate, in the order given.
    candidates: Vec<PyCandidate>,
    /// How long the call took, in seconds.
    elapsed: f64,
}

#[pymethods]
impl PyFirstReachable {
    /// The winning `Candidate`, or None.
    #[getter]
    fn candidate(&self) -> Option<PyCandidate> {
        self.winner.map(|i| self.candidates[i].clone())
    }

    fn __bool__(&self) -> bool {
        self.winner.is_some()
    }

    fn __repr__(&self) -> String {
        format!("FirstReachable(reachable={:?}, elapsed={:.3})", self.reachable, self.elapsed)
    }
}

/// Probe `targets` ("HOST:PORT", "[v6]:PORT"), most preferred first, all at once with
/// one `timeout` (seconds), and return the first in that order that accepts a TCP
/// connection with every candidate's result (`probe::first_reachable`).
#[pyfunction]
#[pyo3(signature = (targets, timeout = 2.0))]
pub(super) fn first_reachable(py: Python<'_>, targets: Vec<String>, timeout: f64) -> PyResult<PyFirstReachable> {
    let r = detached(py, move || probe::first_reachable(&targets, seconds_arg("timeout", timeout, false)?))?;
    Ok(PyFirstReachable {
        reachable: r.reachable,
        winner: r.winner,
        elapsed: r.elapsed.as_secs_f64(),
        candidates: r
            .candidates
            .into_iter()
            .map(|c| PyCandidate {
                target: c.target,
                host: c.host,
                port: c.port,
                address: c.address.map(|a| a.to_string()),
                outcome: c.outcome.as_str().to_string(),
                elapsed: c.elapsed.as_secs_f64(),
                error: c.error,
            })
            .collect(),
    })
}

/// Register the first-reachable classes and function.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCandidate>()?;
    m.add_class::<PyFirstReachable>()?;
    m.add_function(wrap_pyfunction!(first_reachable, m)?)?;
    Ok(())
}
