//! Core errors and panics to Python exceptions: `From<Error> for PyErr`, and
//! [`detached`], which runs a core call without the GIL and turns a panic into
//! [`Error::Internal`] so that none reaches Python.
//!
//! The exception classes are defined in `python/portmgr/errors.py` (the hierarchy lives
//! in Python, where it is readable and picklable); Rust only picks the class through
//! `errors._from_native(code, message, errno, details)`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::error::{Error, Result, TimeoutKind};

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python exception for a core error: an instance of a `portmgr.PortError` subclass.
/// A timeout is a `LockTimeout` or a `PortTimeout` by the kind the core recorded.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::attach(|py| build(py, &e).unwrap_or_else(|err| err))
    }
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let details = PyDict::new(py);
    // One arm per variant and no catch-all: a new kind must be mapped here to compile.
    match e {
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
}

/// Run `f` without the GIL; a panic inside becomes [`Error::Internal`], never a crash or
/// a `PanicException`.
pub(super) fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
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
