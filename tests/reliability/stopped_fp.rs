//! L5 with the holder stopped by a failpoint inside a real mutation (pending-fields:stop:
//! under the registry lock, half-way through marking a record).

use std::time::Duration;

use portmgr::Registry;

use crate::stopped::*;
use crate::util::*;

#[test]
fn holder_stopped_inside_a_mutation_gives_timeouts_naming_it() {
    let d = temp_dir();
    let dir = d.path().join("reg");
    Registry::open(&dir).unwrap();
    let w = prepare_waiters(&dir);
    let mut holder = spawn(crate::TEST, &dir, "churn 14400 50 7", &[("PORTMGR_FAILPOINT", "pending-fields@3:stop")]);
    wait_stopped(holder.pid());
    let times = check_waiters(w, holder.pid());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(holder.pid() as i32, libc::SIGCONT) };
    // It finishes that allocation: the registry is usable and consistent again.
    let got = holder.expect("A ", Duration::from_secs(20));
    assert!(got.is_some(), "the continued holder did not finish its allocation");
    let reg = Registry::open(&dir).unwrap();
    reg.allocate(&req_in(14400, 50)).unwrap();
    holder.kill();
    eprintln!("RESULT stopped-holder(failpoint): waiters={} max_ms={:.1}", times.len(), times.iter().cloned().fold(0.0, f64::max));
}
