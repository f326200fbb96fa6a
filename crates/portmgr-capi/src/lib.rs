//! libportmgr: every `extern "C"` function of the portmgr crate's C ABI (`portmgr::ffi`),
//! linked into `libportmgr.so` and `libportmgr.a`. The header is `include/portmgr.h`.

pub use portmgr_core::ffi::*;
