//! The body of the `registry_file` fuzz target, shared with the stable replay of its
//! corpus (tests/fuzz_replay.rs). The registry file on arbitrary bytes. Input: a mode
//! byte, then either the whole file (mode even: any length, exercising the size and
//! header checks) or patches over a freshly made, valid registry (mode odd: `offset u32,
//! len u8, bytes` repeated, so the fuzzer reaches the records, the bitmap and the owner
//! table behind a valid header).
//! Then open, allocate, list, stats, gc and release: errors are fine, panics are not, and
//! a port held by this process is never handed out twice.
//!
//! Ports: 12700-12763 (the fuzz suite owns 12700-12999, below the kernel's ephemeral
//! range and outside every other suite's).

use std::os::unix::fs::FileExt;
use std::sync::LazyLock;

use portmgr::{PortRange, Registry, Request};

const FILE_SIZE: u64 = 4096 + 4096 * 64 + 65536 / 8 + 65536 * 128;

static DIR: LazyLock<std::path::PathBuf> = LazyLock::new(|| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let d = std::path::PathBuf::from(format!("{base}/portmgr-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
});

/// One input; panics on a violation.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dir = &*DIR;
    let db = dir.join("registry.db");
    // A fresh, valid file to start from, in an empty directory: damaged files moved aside
    // by the previous input (8 MiB each) must not pile up (they filled /dev/shm once).
    let _ = std::fs::remove_dir_all(dir);
    drop(Registry::open(dir).expect("a fresh registry opens"));
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&db).unwrap();
    if mode % 2 == 0 {
        f.set_len(0).unwrap();
        f.write_all_at(&rest[..rest.len().min(1 << 16)], 0).unwrap();
        if mode % 4 == 2 && rest.len() > 8 {
            f.set_len(FILE_SIZE).unwrap(); // right size, arbitrary header
        }
    } else {
        let mut p = rest;
        while p.len() >= 5 {
            let off = u64::from(u32::from_le_bytes(p[..4].try_into().unwrap())) % FILE_SIZE;
            let n = usize::from(p[4]).min(p.len() - 5);
            f.write_all_at(&p[5..5 + n], off).unwrap();
            p = &p[5 + n..];
        }
    }
    drop(f);
    let Ok(reg) = Registry::open(dir) else { return };
    let range = PortRange::new(12700, 12763).unwrap();
    let mut got = Vec::new();
    for i in 0..4 {
        let req = Request::new().range(range.clone());
        let req = if i == 3 { req.count(2).contiguous(true) } else { req };
        if let Ok(l) = reg.allocate(&req) {
            got.push(l);
        }
    }
    let mut ports: Vec<u16> = got.iter().flat_map(|l| l.ports().to_vec()).collect();
    let n = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), n, "a port was handed out twice");
    let _ = reg.list();
    let _ = reg.stats();
    let _ = reg.get_by_port(12700);
    let _ = reg.gc();
    if let Some(l) = got.first() {
        let _ = reg.release_port(l.port());
    }
}

/// Remove this process's scratch registry (the fuzz runs leave that to scripts/fuzz.sh).
#[allow(dead_code)]
pub fn cleanup() {
    let _ = std::fs::remove_dir_all(&*DIR);
}
