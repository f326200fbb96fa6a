//! The health report (`portmgr::mapping::Health`) as Python objects: `Health`, `Problem`
//! and `RangeUse`. The core decides what is a problem; this file only converts.

use pyo3::prelude::*;

use super::views::PyLeaseInfo;
use crate::mapping::{Health, Problem, RangeKind, RangeUse};

/// One problem of the health report, with a message that says what to do.
#[pyclass(name = "Problem", module = "portmgr", frozen, get_all)]
pub(super) struct PyProblem {
    /// "exhausted", "bound_elsewhere", "expired", "owner_gone" or "damaged".
    kind: String,
    /// The range concerned (exhausted), inclusive, or None.
    range: Option<(u16, u16)>,
    /// The service type whose range it is (exhausted of a type's range), or None.
    service_type: Option<String>,
    /// The port concerned (every kind but exhausted), or None.
    port: Option<u16>,
    /// The processes bound to the port outside its lease (bound_elsewhere).
    pids: Vec<u32>,
    /// The lease concerned, as the registry shows it, or None.
    lease: Option<Py<PyLeaseInfo>>,
    /// What is wrong and what to do, in a sentence.
    message: String,
}

impl PyProblem {
    fn new(py: Python<'_>, p: Problem) -> PyResult<Self> {
        Ok(PyProblem {
            kind: p.kind.as_str().to_owned(),
            range: p.range,
            service_type: p.service_type,
            port: p.port,
            pids: p.pids,
            lease: p
                .lease
                .map(|l| Py::new(py, PyLeaseInfo::from(l)))
                .transpose()?,
            message: p.message,
        })
    }
}

#[pymethods]
impl PyProblem {
    fn __repr__(&self) -> String {
        format!("Problem(kind={:?}, message={:?})", self.kind, self.message)
    }
}

/// One range in use and how full it is.
#[pyclass(name = "RangeUse", module = "portmgr", frozen, get_all)]
pub(super) struct PyRangeUse {
    /// "pool", "type" or "explicit".
    kind: String,
    /// The range, inclusive.
    range: (u16, u16),
    /// The service type, for a type's range.
    service_type: Option<String>,
    /// Usable ports in it.
    size: usize,
    /// Live ports in it.
    held: usize,
    /// Ports in it that the registry's reservations block and no lease holds.
    reserved: usize,
    /// (held + reserved) / size, 0 to 1.
    utilization: f64,
}

impl From<RangeUse> for PyRangeUse {
    fn from(r: RangeUse) -> Self {
        PyRangeUse {
            kind: match r.kind {
                RangeKind::Pool => "pool",
                RangeKind::Type => "type",
                RangeKind::Explicit => "explicit",
            }
            .to_owned(),
            range: r.range,
            service_type: r.service_type,
            size: r.size,
            held: r.held,
            reserved: r.reserved,
            utilization: r.utilization,
        }
    }
}

#[pymethods]
impl PyRangeUse {
    fn __repr__(&self) -> String {
        format!(
            "RangeUse(kind={:?}, range={:?}, held={}, size={})",
            self.kind, self.range, self.held, self.size
        )
    }
}

/// The health report over every range in use: the default pool, every service type
/// range with leases, every explicit range with leases.
#[pyclass(name = "Health", module = "portmgr", frozen, get_all)]
pub(super) struct PyHealth {
    /// No problems.
    ok: bool,
    /// The fullness at which a range counts as exhausted, 0 to 1.
    threshold: f64,
    /// Live ports in the registry, all ranges.
    held: usize,
    /// Ports the registry's reservations block, all ranges.
    reserved: usize,
    /// Every range in use: the pool first.
    ranges: Vec<Py<PyRangeUse>>,
    /// Every problem found.
    problems: Vec<Py<PyProblem>>,
}

impl PyHealth {
    pub(super) fn new(py: Python<'_>, h: Health) -> PyResult<Self> {
        Ok(PyHealth {
            ok: h.ok,
            threshold: h.threshold,
            held: h.held,
            reserved: h.reserved,
            ranges: h
                .ranges
                .into_iter()
                .map(|r| Py::new(py, PyRangeUse::from(r)))
                .collect::<PyResult<_>>()?,
            problems: h
                .problems
                .into_iter()
                .map(|p| Py::new(py, PyProblem::new(py, p)?))
                .collect::<PyResult<_>>()?,
        })
    }
}

#[pymethods]
impl PyHealth {
    fn __repr__(&self) -> String {
        format!(
            "Health(ok={}, held={}, problems={})",
            if self.ok { "True" } else { "False" },
            self.held,
            self.problems.len()
        )
    }
}

/// Add the health classes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHealth>()?;
    m.add_class::<PyProblem>()?;
    m.add_class::<PyRangeUse>()?;
    Ok(())
}
