//! Registry-level behaviour seen through the real `portmgr` binary: freeing damaged
//! records (`gc --damaged`) and running out of file descriptors. Moved here from the
//! core's suites (the binary is this package's).
//!
//! Ports 29820-29830 (the damage scenarios' range, outside the kernel's ephemeral range).

use std::os::unix::fs::FileExt;
use std::path::Path;

use portmgr::{ErrorCode, PortRange, Registry, Request};

const START: u16 = 29820;
/// The registry file's layout (src/registry/layout.rs): records of 128 bytes from here.
const RECORDS_OFF: usize = 4096 + 4096 * 64 + 65536 / 8;
const RECORD_SIZE: usize = 128;

fn record_off(port: u16) -> usize {
    RECORDS_OFF + usize::from(port) * RECORD_SIZE
}

fn req_in(start: u16, len: u16) -> Request {
    Request::new().range(PortRange::new(start, start + len - 1).unwrap())
}

fn db(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(dir.join("registry.db")).unwrap()
}

/// `portmgr gc --damaged` (the real binary) frees a damaged record nobody holds, and only
/// that; the port is then handed out again.
#[test]
fn gc_damaged_frees_a_damaged_record_nobody_holds() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("reg");
    let reg = Registry::open(&dir).unwrap();
    let keep = reg.allocate(&req_in(START, 1)).unwrap();
    // A garbage record at a port nobody holds: damaged, so never handed out.
    let victim = START + 7;
    db(&dir).write_all_at(&[0xa5; RECORD_SIZE], record_off(victim) as u64).unwrap();
    let e = reg.allocate(&req_in(victim, 1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted, "{e}");
    assert!(reg.notices().iter().any(|n| n.contains(&format!("port {victim}")) && n.contains("gc --damaged")), "{:?}", reg.notices());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portmgr"))
        .args(["--registry", dir.to_str().unwrap(), "--json", "gc", "--damaged"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["freed_damaged"], serde_json::json!([victim]), "{v}");
    assert_eq!(reg.allocate(&req_in(victim, 1)).unwrap().port(), victim);
    // The live lease was not touched.
    assert_eq!(reg.get_by_port(keep.port()).unwrap().unwrap().lease_id, keep.id());
}

/// Issue 11.13: running out of file descriptors while opening the registry says so,
/// and how to fix it (the CLI run under `ulimit -n 4`).
#[test]
fn too_many_open_files_is_named_when_opening_the_registry() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("reg");
    drop(portmgr::Registry::open(&dir).unwrap());
    let script = format!("ulimit -n 4; exec '{}' --registry '{}' list", env!("CARGO_BIN_EXE_portmgr"), dir.display());
    let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("too many open files") && err.contains("ulimit -n"), "{err}");
    // Not also sent to look at the directory, which is fine.
    assert!(!err.contains("check the directory"), "{err}");
}
