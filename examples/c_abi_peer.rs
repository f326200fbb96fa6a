//! The Rust side of the C ABI's cross-language test (`tests/c/run.sh`; the C side is
//! `tests/c/xlang_peer.c`): both allocate from one registry directory at the same time,
//! hold everything, and the script checks that no port was handed out twice.
//!
//! Usage: `c_abi_peer DIR START END COUNT OUT GO_FILE FINISH_FILE` — wait for GO_FILE,
//! allocate COUNT ports from START-END one at a time and hold them all, write them to OUT
//! (one per line, then `done`), wait for FINISH_FILE, release, exit.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use portmgr::{PortRange, Registry, Request};

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("c_abi_peer: {} never appeared", path.display());
    false
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: c_abi_peer DIR START END COUNT OUT GO FINISH");
        std::process::exit(2);
    }
    let reg = Registry::open(&a[1])?;
    let req = Request::new().range(PortRange::new(a[2].parse()?, a[3].parse()?)?);
    let count: usize = a[4].parse()?;
    let mut out = std::fs::File::create(&a[5])?;
    if !wait_for(Path::new(&a[6])) {
        std::process::exit(1);
    }
    let mut leases = Vec::with_capacity(count);
    for _ in 0..count {
        let lease = reg.allocate(&req)?;
        writeln!(out, "{}", lease.port())?;
        leases.push(lease);
    }
    writeln!(out, "done")?;
    drop(out);
    let ok = wait_for(Path::new(&a[7]));
    drop(leases);
    println!("xlang_peer (Rust): allocated {count}");
    std::process::exit(if ok { 0 } else { 1 });
}
