//! The Python extension `portmgr._native`: the portmgr crate's `python` module
//! (`PyInit__native` and everything it registers), linked into one shared object.

pub use portmgr::python::*;
