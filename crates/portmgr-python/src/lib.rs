//! The Python extension `portmgr._native`: the portmgr crate's `python` module
//! (`PyInit__native` and everything it registers), linked into one shared object. The
//! re-export links the module in; its `#[pymodule]` entry point is exported from here.

#[doc(hidden)]
pub use portmgr::python;
