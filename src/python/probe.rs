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
