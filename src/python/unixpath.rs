//! `portmgr.UnixSocketPath`: a Unix-socket path held for this process (the core's
//! `UnixPath`), as a context manager and a path-like object.

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::errors::detached;
use crate::registry::UnixPath;

/// A fresh Unix-socket path in the registry's private sockets directory, held for this
/// process: removed (with any socket bound there) on `release()`, on leaving its `with`
/// block, or once this process is gone. `os.fspath(p)` and `str(p)` give the path.
#[pyclass(name = "UnixSocketPath", module = "portmgr", frozen)]
pub(super) struct PyUnixPath {
    inner: Mutex<Option<UnixPath>>,
    path: String,
}

impl PyUnixPath {
    pub(super) fn new(p: UnixPath) -> PyUnixPath {
        PyUnixPath { path: p.path().display().to_string(), inner: Mutex::new(Some(p)) }
    }
}

#[pymethods]
impl PyUnixPath {
    /// The path.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// Whether `release()` or `keep()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Remove the path (and any socket file there) now. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.inner.lock().take();
        if let Some(mut p) = taken {
            detached(py, || p.release())?;
        }
        Ok(())
    }

    /// Keep the path past this object: not removed by `release()` or garbage collection;
    /// cleaned once this process is gone. Returns the path.
    fn keep(&self) -> String {
        if let Some(p) = self.inner.lock().take() {
            p.keep();
        }
        self.path.clone()
    }

    fn __fspath__(&self) -> String {
        self.path.clone()
    }

    fn __str__(&self) -> String {
        self.path.clone()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("UnixSocketPath({:?})", self.path)
    }
}
