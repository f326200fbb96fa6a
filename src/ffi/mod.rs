//! The C ABI: `include/portmgr.h`, a thin `extern "C"` skin over the core.
//!
//! Everything a C or C++ program can do with portmgr goes through the functions of this
//! module; `build.rs` turns their signatures and doc comments into `include/portmgr.h`
//! with cbindgen (the header is committed, and a test fails when it is stale).
//! `bindings/cpp/portmgr.hpp` wraps it in C++17 RAII classes.
//!
//! # Conventions (what a C programmer can rely on)
//!
//! * **Names.** Functions are `portmgr_…`, constants `PORTMGR_…`.
//! * **Status.** Every fallible function returns a [`portmgr_status`]: `PORTMGR_OK` (0)
//!   or one of the stable error codes 1 to 10 (the core's [`ErrorCode`](crate::ErrorCode)).
//!   Values never change once released; new kinds get new numbers.
//! * **Messages.** On failure, the calling thread's *last error* holds a message that
//!   says what went wrong and what to do: read it with `portmgr_last_error_message`
//!   (snprintf-style, into your buffer). Every call that can fail clears it on entry.
//!   For `PORTMGR_OS`, `portmgr_last_os_error` gives the errno.
//! * **Out-parameters** (`**out`, `*out_…`) are written only when the status is
//!   `PORTMGR_OK`; on failure your variables keep their values. Buffers filled
//!   snprintf-style (messages, JSON) are the one documented exception: they are filled,
//!   truncated and NUL-terminated as snprintf would.
//! * **Pointers are checked.** NULL where a value is required gives
//!   `PORTMGR_INVALID_ARGUMENT`, never a crash. Strings are NUL-terminated and borrowed
//!   only for the duration of the call; names must be UTF-8 (invalid bytes are an
//!   `PORTMGR_INVALID_ARGUMENT`), paths are plain bytes.
//! * **Handles are validated.** `portmgr_registry`, `portmgr_request` and `portmgr_lease`
//!   are opaque: the pointer value is an identifier that the library looks up in a table
//!   of live handles, never memory the library dereferences. Identifiers are never
//!   reused, so a freed, released, forged or wrong-kind handle gives
//!   `PORTMGR_INVALID_ARGUMENT` (or the documented fallback of an infallible getter)
//!   and never undefined behaviour — including a second `portmgr_lease_release`.
//! * **No heap strings.** Strings the library returns are static; everything else is
//!   copied into buffers you own. Nothing returned must be freed with `free()`.
//! * **Panics never cross the boundary.** Every exported body runs inside one panic
//!   guard; a bug inside portmgr becomes `PORTMGR_INTERNAL` with a message (or the
//!   fallback value of an infallible function), never an abort of your process.
//! * **Threads.** Every function may be called from any thread. A registry handle may be
//!   used by several threads at once; lease and request handles are internally locked,
//!   so concurrent calls on one are safe too (they take turns).
//! * **fork.** A child process may keep using its parent's registry handle: it gets its
//!   own owner slot on first use. Leases inherited from the parent stay the parent's:
//!   releasing them in the child frees the handle and does nothing else.

#![allow(non_camel_case_types)]

// Declaration order is the header's order: free functions, registry, request, lease,
// services (types, export, import, groups).
mod guard;
mod handles;
mod health;
mod listen;
mod misc;
mod nat;
mod registry;
mod request;
mod reserved;
mod resolve;

mod lease;
mod services;

pub use guard::{portmgr_status, portmgr_status_code};
pub use health::*;
pub use listen::*;
pub use lease::*;
pub use misc::*;
pub use nat::*;
pub use registry::*;
pub use request::*;
pub use reserved::*;
pub use resolve::*;
pub use services::*;
