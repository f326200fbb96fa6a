//! `portmgr.Reservation`: an in-process set of reserved ports (the core [`Reservation`]).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::range_arg;
use super::errors::detached;
use crate::range::PortRange;
use crate::reservation::Reservation;
use crate::strategy::Strategy;

/// An in-process set of reserved ports over a range (no shared state: another process
/// can be handed the same port; use the registry for host-wide uniqueness).
#[pyclass(name = "Reservation", module = "portmgr", frozen)]
pub(super) struct PyReservation {
    inner: Reservation,
}

#[pymethods]
impl PyReservation {
    #[new]
    #[pyo3(signature = (range = None, *, strategy = "random"))]
    fn new(py: Python<'_>, range: Option<Bound<'_, PyAny>>, strategy: &str) -> PyResult<Self> {
        let range = range.as_ref().map(range_arg).transpose()?;
        let strategy: Strategy = strategy.parse()?;
        let range = match range {
            Some(r) => r?,
            None => detached(py, PortRange::default_pool)?,
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
        detached(py, || r.reserve_port()).map_err(PyErr::from)
    }

    /// Reserve up to `n` ports; fewer (possibly none) when the range runs out.
    fn reserve_ports(&self, py: Python<'_>, n: usize) -> PyResult<Vec<u16>> {
        let r = &self.inner;
        detached(py, || r.reserve_ports(n)).map_err(PyErr::from)
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
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
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
