//! The pyo3 skin: the extension module `portmgr._native`.
//!
//! Thin by design: every behaviour is the core's. The skin converts arguments, releases
//! the GIL around every call that can block (the registry lock, probes, connects, DNS),
//! catches panics so none reaches Python, and raises the exception classes defined in
//! `python/portmgr/errors.py`. One file per job:
//!
//! - `mod.rs`: the module and the registration of every class and function;
//! - `errors.rs`: `From<Error> for PyErr`, and `detached` (a core call without the GIL,
//!   a panic turned into an error);
//! - `args.rs`: single arguments (ports, seconds, ranges, protocols, hosts);
//! - `request.rs`: the allocation keywords to the core `Request`, written once;
//! - `lease.rs`: `Lease` and the abandoned leases (garbage collection, fork);
//! - `views.rs`: `LeaseInfo`, `Stats`;
//! - `registry.rs`: `Registry` and the sockets it hands over;
//! - `reservation.rs`: `Reservation`;
//! - `probe.rs`: the probes and the defaults (`is_free`, `wait_listening`, ...);
//! - `command.rs`: `cli_main`, the command line;
//! - `mapping.rs`: `Services`, groups, export and import (`portmgr::mapping`);
//! - `health.rs`: the health report (`Health`, `Problem`, `RangeUse`);
//! - `monitor.rs`: health monitoring with history (`HealthMonitor`, `HealthEntry`);
//! - `probe.rs` also holds `first_reachable` (`FirstReachable`, `Candidate`).

use pyo3::prelude::*;

mod args;
mod command;
mod errors;
mod health;
mod lease;
mod mapping;
mod monitor;
mod probe;
mod registry;
mod request;
mod reservation;
mod resolve;
mod unixpath;
mod views;

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    m.add_class::<registry::PyRegistry>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_class::<unixpath::PyUnixPath>()?;
    m.add_class::<views::PyLeaseInfo>()?;
    m.add_class::<views::PyStats>()?;
    m.add_class::<views::PyReservedRange>()?;
    m.add_class::<reservation::PyReservation>()?;
    m.add_function(wrap_pyfunction!(probe::is_free, m)?)?;
    m.add_function(wrap_pyfunction!(probe::scan, m)?)?;
    m.add_function(wrap_pyfunction!(probe::wait_listening, m)?)?;
    m.add_function(wrap_pyfunction!(probe::wait_free, m)?)?;
    m.add_function(wrap_pyfunction!(probe::reachable, m)?)?;
    m.add_function(wrap_pyfunction!(probe::default_dir, m)?)?;
    m.add_function(wrap_pyfunction!(probe::default_pool, m)?)?;
    m.add_function(wrap_pyfunction!(command::cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(lease::_after_fork_child, m)?)?;
    mapping::register(m)?;
    health::register(m)?;
    resolve::register(m)?;
    monitor::register(m)?;
    probe::register(m)?;
    Ok(())
}
