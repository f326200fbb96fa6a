//! The pyo3 skin, `portmgr._native` (filled in by the Python work).
