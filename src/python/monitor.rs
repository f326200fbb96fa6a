//! Health monitoring with history (`portmgr::mapping::HealthMonitor`, `HealthEntry`) as
//! Python objects: `HealthMonitor` (the core monitor's thread, calling a Python callback
//! with the GIL taken), `HealthEntry`, `HistoryProblem`. The core decides and records;
//! this file only converts.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyAny;

use super::args::seconds_arg;
use super::errors::detached;
use super::mapping::PyServices;
use crate::mapping::{HealthEntry, HealthMonitor, HistoryProblem};

/// One problem of a recorded check.
#[derive(Clone)]
#[pyclass(name = "HistoryProblem", module = "portmgr", frozen, get_all)]
pub(super) struct PyHistoryProblem {
    /// "exhausted", "bound_elsewhere", "expired", "owner_gone", "damaged", or
    /// "check_failed" when the check itself failed.
    kind: String,
    /// The range concerned (exhausted), inclusive, or None.
    range: Option<(u16, u16)>,
    /// The port concerned, or None.
    port: Option<u16>,
    /// What is wrong (at most 240 bytes).
    message: String,
}

impl From<HistoryProblem> for PyHistoryProblem {
    fn from(p: HistoryProblem) -> Self {
        PyHistoryProblem { kind: p.kind, range: p.range, port: p.port, message: p.message }
    }
}

#[pymethods]
impl PyHistoryProblem {
    fn __repr__(&self) -> String {
        format!("HistoryProblem(kind={:?}, message={:?})", self.kind, self.message)
    }
}

/// One recorded health check.
#[pyclass(name = "HealthEntry", module = "portmgr", frozen, get_all)]
pub(super) struct PyHealthEntry {
    /// Its number in the history (1, 2, ...).
    seq: u64,
    /// When the check ran, in seconds since the Unix epoch (as time.time()).
    time: f64,
    /// The same, in milliseconds.
    time_ms: u64,
    /// No problems.
    ok: bool,
    /// Live ports at the check.
    held: usize,
    /// How many problems the check found (`problems` keeps the first 8).
    problem_count: usize,
    /// The problems kept.
    problems: Vec<PyHistoryProblem>,
    /// Whether the state differs from the check before (ok, and the problems' kinds and
    /// ports or ranges).
    changed: bool,
}

impl From<HealthEntry> for PyHealthEntry {
    fn from(e: HealthEntry) -> Self {
        PyHealthEntry {
            seq: e.seq,
            time: e.time_ms as f64 / 1000.0,
            time_ms: e.time_ms,
            ok: e.ok,
            held: e.held,
            problem_count: e.problem_count,
            problems: e.problems.into_iter().map(Into::into).collect(),
            changed: e.changed,
        }
    }
}

#[pymethods]
impl PyHealthEntry {
    fn __repr__(&self) -> String {
        format!(
            "HealthEntry(seq={}, ok={}, problems={}, changed={})",
            self.seq,
            if self.ok { "True" } else { "False" },
            self.problem_count,
            if self.changed { "True" } else { "False" }
        )
    }
}

/// The core's health monitor: a thread that runs the health check every `interval`
/// seconds, records each in the registry's health history and calls `callback(entry)`
/// (a `HealthEntry`; `entry.changed` against the previous check) with the GIL taken.
/// An exception in the callback is reported as unraisable; the monitor goes on.
#[pyclass(name = "HealthMonitor", module = "portmgr._native", weakref)]
pub(super) struct PyHealthMonitor {
    inner: Mutex<Option<HealthMonitor>>,
    interval: f64,
    /// The checks of a stopped monitor.
    stopped_checks: std::sync::atomic::AtomicU64,
}

#[pymethods]
impl PyHealthMonitor {
    #[new]
    #[pyo3(signature = (services, interval, callback = None, threshold = 0.9))]
    fn new(
        py: Python<'_>,
        services: PyRef<'_, PyServices>,
        interval: f64,
        callback: Option<Py<PyAny>>,
        threshold: f64,
    ) -> PyResult<Self> {
        let every = seconds_arg("interval", interval, false)?;
        if let Some(cb) = &callback
            && !cb.bind(py).is_callable()
        {
            return Err(pyo3::exceptions::PyTypeError::new_err("callback must be callable (or None)"));
        }
        let ps: &PyServices = &services;
        let svc = detached(py, || ps.svc())?;
        let m = detached(py, move || {
            HealthMonitor::start(svc, every, threshold, move |e| {
                let Some(cb) = &callback else { return };
                Python::attach(|py| {
                    let r = Py::new(py, PyHealthEntry::from(e.clone())).and_then(|obj| cb.call1(py, (obj,)));
                    if let Err(err) = r {
                        err.write_unraisable(py, Some(cb.bind(py)));
                    }
                });
            })
        })?;
        Ok(PyHealthMonitor { inner: Mutex::new(Some(m)), interval, stopped_checks: Default::default() })
    }

    /// Stop the monitor and wait for its thread (a check or callback under way finishes
    /// first). Stopping twice is harmless.
    fn stop(&self, py: Python<'_>) {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(m) = m {
            // Without the GIL: the monitor's callback may be waiting for it.
            let n = py.detach(move || m.stop());
            self.stopped_checks.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the monitor's thread runs.
    #[getter]
    fn running(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(HealthMonitor::is_running)
    }

    /// How many checks ran so far.
    #[getter]
    fn checks(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref().map_or_else(|| self.stopped_checks.load(std::sync::atomic::Ordering::Relaxed), HealthMonitor::checks)
    }

    /// The last error recording a check, or None.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(HealthMonitor::last_error)
    }

    /// The interval, in seconds.
    #[getter]
    fn interval(&self) -> f64 {
        self.interval
    }

    fn __repr__(&self) -> String {
        format!("HealthMonitor(interval={}, running={})", self.interval, if self.running() { "True" } else { "False" })
    }
}

/// Add the monitoring classes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHealthMonitor>()?;
    m.add_class::<PyHealthEntry>()?;
    m.add_class::<PyHistoryProblem>()?;
    Ok(())
}
