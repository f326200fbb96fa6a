//! The crash half of the reliability suite: needs the `failpoints` feature, so it is
//! empty in a normal `cargo test`. Run it with
//! `cargo test --release --features failpoints --test reliability_crash`
//! (scripts/test.sh does; scripts/reliability.sh runs the long mode). See RELIABILITY.md.
#![cfg(feature = "failpoints")]

#[path = "reliability/util.rs"]
mod util;
#[path = "reliability/roles.rs"]
mod roles;
#[path = "reliability/crash.rs"]
mod crash;
#[path = "reliability/stopped.rs"]
mod stopped;
#[path = "reliability/stopped_fp.rs"]
mod stopped_fp;
#[path = "reliability/panic_fp.rs"]
mod panic_fp;

pub const TEST: &str = "child_role";

/// The entry point of child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    roles::run_child_role();
}

pub fn extra_role(role: &str, _words: &[String]) {
    match role {
        "ffi-panic" => panic_fp::ffi_panic_role(),
        other => panic!("unknown role {other}"),
    }
}
