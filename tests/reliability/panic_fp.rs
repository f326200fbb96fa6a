//! F2: a panic inside the library, injected by a failpoint at each step of a mutation
//! while the locks are held (`PORTMGR_FAILPOINT=point@N:panic`), called through the C
//! ABI: the call returns PORTMGR_INTERNAL, the locks are released by the unwind (the next
//! calls neither hang nor fail), and nothing of the panicking process outlives it.

use std::ffi::CString;
use std::ptr;
use std::time::Duration;

use portmgr::Registry;
use portmgr::ffi::*;

use crate::util::*;

const START: u16 = 14450;
const LEN: u16 = 50;

/// Role `ffi-panic`: 6 allocations then their releases through the C ABI (one of them
/// panics at the failpoint), then one more allocation; prints `STATUSES` and `AFTER`.
pub fn ffi_panic_role() {
    let dir = CString::new(portmgr::default_dir().to_str().unwrap()).unwrap();
    // SAFETY: alarm is always safe; a hang (a lock left held by the unwind) ends the child.
    unsafe { libc::alarm(20) };
    let (mut reg, mut req) = (ptr::null_mut(), ptr::null_mut());
    let mut statuses = Vec::new();
    let mut leases = Vec::new();
    // SAFETY: valid out-pointers, strings and handles.
    unsafe {
        assert_eq!(portmgr_registry_open(dir.as_ptr(), &mut reg) as u32, 0);
        assert_eq!(portmgr_request_new(&mut req) as u32, 0);
        assert_eq!(portmgr_request_set_range(req, START, START + LEN - 1) as u32, 0);
        for _ in 0..6 {
            let mut l: *mut portmgr_lease = ptr::null_mut();
            statuses.push(portmgr_allocate(reg, req, &mut l) as u32);
            if !l.is_null() {
                leases.push(l);
            }
        }
        for l in leases {
            statuses.push(portmgr_lease_release(l) as u32);
        }
        let mut l: *mut portmgr_lease = ptr::null_mut();
        let after = portmgr_allocate(reg, req, &mut l) as u32;
        let mut need = 0usize;
        let mut buf = [0u8; 4096];
        let list = portmgr_registry_list_json(reg, buf.as_mut_ptr().cast(), buf.len(), &mut need) as u32;
        say(format!("STATUSES {}", statuses.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")));
        say(format!("AFTER {after} {list}"));
    }
}

#[test]
fn a_panic_inside_each_mutation_step_is_a_status_and_later_calls_work() {
    let points = [
        ("owner-claimed", 1),
        ("picked", 2),
        ("pending-fields", 3),
        ("pending-state", 2),
        ("before-confirm", 4),
        ("release-cleared", 2),
    ];
    let mut report = Vec::new();
    for (point, nth) in points {
        let d = temp_dir();
        let dir = d.path().join("reg");
        let fp = format!("{point}@{nth}:panic");
        let mut k = spawn(crate::TEST, &dir, "ffi-panic", &[("PORTMGR_FAILPOINT", &fp), ("RUST_BACKTRACE", "0")]);
        let st_line = k.expect("STATUSES ", Duration::from_secs(30));
        let after = k.expect("AFTER ", Duration::from_secs(30));
        let exit = k.wait(Duration::from_secs(30));
        let st_line = st_line.unwrap_or_else(|| panic!("{fp}: the child hung or died ({exit:?}): {:?}", k.seen));
        let statuses: Vec<u32> = st_line.split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 10).count(), 1, "{fp}: exactly one call must report PORTMGR_INTERNAL: {statuses:?}");
        assert!(statuses.iter().all(|&s| s == 0 || s == 10), "{fp}: other calls failed: {statuses:?}");
        assert_eq!(after.as_deref(), Some("0 0"), "{fp}: calls after the panic failed");
        assert!(exit.is_some_and(|s| s.success()), "{fp}: the child did not exit cleanly: {exit:?}");
        // Nothing of the exited child is live.
        let reg = Registry::open(&dir).unwrap();
        assert!(reg.list().unwrap().is_empty(), "{fp}: ports outlived the panicking process");
        report.push(format!("{fp}: {statuses:?}"));
    }
    eprintln!("RESULT ffi-panic: points={} each=INTERNAL once, later calls ok, nothing left\n  {}", points.len(), report.join("\n  "));
}
