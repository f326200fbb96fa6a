//! The reliability and security suite (quick mode in `cargo test --release`; long mode via
//! scripts/reliability.sh). Scenarios and figures: RELIABILITY.md. The crash tests need
//! the `failpoints` feature and live in tests/reliability_crash.rs.
//!
//! Children are this test binary re-executed with `PORTMGR_RELIABILITY_ROLE` (see
//! `child_role`). Ports: 14000-14999 and 29800-29999 (damage), below the kernel's
//! ephemeral range; the map is in reliability/util.rs. Registries: temp
//! directories only.

#[path = "reliability/util.rs"]
mod util;
#[path = "reliability/roles.rs"]
mod roles;
#[path = "reliability/stopped.rs"]
mod stopped;
#[path = "reliability/fork.rs"]
mod fork;
#[path = "reliability/corruption.rs"]
mod corruption;
#[path = "reliability/damage.rs"]
mod damage;
#[path = "reliability/dirs.rs"]
mod dirs;
#[path = "reliability/probe_table.rs"]
mod probe_table;
#[path = "reliability/io_faults.rs"]
mod io_faults;
#[path = "reliability/concurrency.rs"]
mod concurrency;
#[path = "reliability/ffi_hostile.rs"]
mod ffi_hostile;

pub const TEST: &str = "child_role";

/// The entry point of child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    roles::run_child_role();
}

/// Roles defined by the scenario modules.
pub fn extra_role(role: &str, words: &[String]) {
    let arg = |i: usize| -> u64 { words[i].parse().unwrap() };
    match role {
        "forker" => fork::forker(arg(1)),
        "fork-holder" => fork::fork_holder(),
        "default-dir" => dirs::default_dir_role(),
        "umask" => dirs::umask_role(arg(1) as u32),
        "faulted" => io_faults::faulted_role(),
        "emfile" => io_faults::emfile_role(),
        "enospc" => io_faults::enospc_role(&words[1]),
        "worker" => concurrency::worker(arg(1), arg(2)),
        "alloc-forever" => damage::alloc_forever(arg(1) as u16, arg(2) as u16),
        other => panic!("unknown role {other}"),
    }
}
