//! # portmgr — the port allocator every test suite on a host can trust
//!
//! Parallel tests pick "free" ports and collide: a port probed free is bound by someone
//! else before its user binds it. portmgr keeps one shared, crash-safe table per user of
//! who holds which port; every process and language on the host allocates through it,
//! so nobody is handed a port someone else holds. No daemon: owners hold kernel locks,
//! so a process killed with SIGKILL frees its ports at once.
//!
//! ```no_run
//! use portmgr::{Registry, Request};
//! let reg = Registry::open_default()?;
//! let web = reg.allocate(&Request::new().name("web"))?;
//! println!("web listens on {}", web.port());
//! # Ok::<(), portmgr::Error>(())
//! ```
//!
//! Layers (each uses only those above it): [`probe`] (can this port be bound?),
//! [`range`] (ranges and the default pool), [`strategy`] (which candidate first),
//! [`Reservation`] (an in-process set), [`Registry`] (the shared table), then the skins:
//! the C ABI (`ffi`), Python (`python`, behind the `python` feature) and the command line
//! (`cli`).

#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod listen;
#[cfg(feature = "capi")]
pub mod ffi;
pub mod mapping;
#[cfg(feature = "nat")]
pub mod nat;
pub mod probe;
pub mod range;
pub mod registry;
pub mod reservation;
#[cfg(feature = "resolve")]
pub mod resolve;
pub mod strategy;
mod sys;

/// The Python extension's module (built into `portmgr._native` by
/// crates/portmgr-python); not an API of its own.
#[cfg(feature = "python")]
#[doc(hidden)]
pub mod python;

pub use error::{Error, ErrorCode, Result};
pub use range::{PortRange, Protocols};
pub use registry::{BoundSocket, Lease, LeaseInfo, Registry, Request, ReservedRange, Stats, UnixPath, default_dir};
pub use reservation::Reservation;
pub use strategy::Strategy;

/// The README's Rust examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The library's version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
