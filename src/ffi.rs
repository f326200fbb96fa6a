//! The C ABI (`include/portmgr.h`): a thin `extern "C"` skin over the core (filled in by the C ABI work).
