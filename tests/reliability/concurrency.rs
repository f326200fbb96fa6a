//! L1/L2: 16 processes x 4 threads allocate, hold (bound: the consumer's plain bind) and
//! release in a loop through one registry and a small pool, while a thread of the test
//! process opens, reads and closes the registry files in a loop (closing an fd must never
//! drop a lock). Figures: duplicates (two holders' hold intervals on one port overlap,
//! from CLOCK_MONOTONIC stamps), bind failures on allocated ports, and the audit
//! `allocations - releases - reclaimed == live` (exact; also checked against the
//! workers' own counts).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portmgr::{ErrorCode, Protocols, Registry, Strategy, probe};

use crate::util::*;

const START: u16 = 14120;
const LEN: u16 = 64;

fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `worker SECS SEED`: 4 threads; prints `L port alloc_ns release_ns pid` per held port,
/// `BINDFAIL ...` with forensics, and `SUM allocated released exhausted errors`.
pub fn worker(secs: u64, seed: u64) {
    let reg = Registry::open_default().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let pid = std::process::id();
    let totals = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (reg, totals) = (reg.clone(), Arc::clone(&totals));
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed * 31 + t + 1);
                let mut log = Vec::new();
                while Instant::now() < deadline {
                    let base = req_in(START, LEN);
                    let req = match rng.below(6) {
                        0 => base.count(2),
                        1 => base.strategy(Strategy::Sequential),
                        2 => base.protocols(Protocols::BOTH),
                        3 => base.name(format!("w{pid}-{t}-{}", rng.below(1000))),
                        _ => base,
                    };
                    let bound = rng.below(5) == 0;
                    let got = if bound { reg.allocate_bound(&req).map(|(l, s)| (l, Some(s))) } else { reg.allocate(&req).map(|l| (l, None)) };
                    let (mut lease, socks) = match got {
                        Ok(x) => x,
                        Err(e) if e.code() == ErrorCode::Exhausted => {
                            totals[2].fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_micros(200));
                            continue;
                        }
                        Err(e) => {
                            totals[3].fetch_add(1, Ordering::Relaxed);
                            say(format!("ERR {e}"));
                            continue;
                        }
                    };
                    let a = mono_ns();
                    totals[0].fetch_add(lease.ports().len() as u64, Ordering::Relaxed);
                    // The consumer: a plain bind of every port (unless handed over bound).
                    let mut mine = Vec::new();
                    if socks.is_none() {
                        for &p in lease.ports() {
                            match probe::bind_listener(p, Protocols::TCP) {
                                Ok(s) => mine.push(s),
                                Err(e) => say(format!(
                                    "BINDFAIL {p} {e}; registry: {:?}; ss: {}",
                                    reg.get_by_port(p),
                                    ss(p).replace('\n', " / ")
                                )),
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_micros(rng.below(1500)));
                    drop(mine);
                    drop(socks);
                    let r = mono_ns();
                    for &p in lease.ports() {
                        log.push(format!("L {p} {a} {r} {pid}"));
                    }
                    let n = lease.ports().len() as u64;
                    lease.release().unwrap();
                    totals[1].fetch_add(n, Ordering::Relaxed);
                }
                log
            })
        })
        .collect();
    let mut out = String::new();
    for t in threads {
        for l in t.join().unwrap() {
            out.push_str(&l);
            out.push('\n');
        }
    }
    print!("{out}");
    say(format!(
        "SUM {} {} {} {}",
        totals[0].load(Ordering::Relaxed),
        totals[1].load(Ordering::Relaxed),
        totals[2].load(Ordering::Relaxed),
        totals[3].load(Ordering::Relaxed)
    ));
}

#[test]
fn sixteen_processes_four_threads_no_duplicates_exact_audit() {
    let secs = knob("PORTMGR_RELIABILITY_SECONDS", 6);
    let procs = knob("PORTMGR_RELIABILITY_PROCS", 16);
    let d = temp_dir();
    let dir = d.path().join("reg");
    let reg = Registry::open(&dir).unwrap();
    let before = reg.stats().unwrap();
    // L2: open / read / close the registry's files in a loop, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dir) = (Arc::clone(&stop), dir.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                for f in ["registry.db", "registry.lock"] {
                    if let Ok(mut file) = std::fs::File::open(dir.join(f)) {
                        let _ = file.read(&mut buf);
                        n += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            n
        })
    };
    // C clients (through the C ABI) when libportmgr.so has been built next to the tests.
    let c_worker = build_c_worker(d.path());
    let c_procs = if c_worker.is_some() { knob("PORTMGR_RELIABILITY_C_PROCS", 4).min(procs) } else { 0 };
    // Python clients when a Python with the portmgr package is there.
    let python = find_python();
    let py_procs = if python.is_some() { knob("PORTMGR_RELIABILITY_PY_PROCS", 4).min(procs - c_procs) } else { 0 };
    // Go clients (bindings/go/cmd/portmgr-worker, built by bindings/go/run.sh) when
    // PORTMGR_RELIABILITY_GO_WORKER names the binary.
    let go_worker = std::env::var_os("PORTMGR_RELIABILITY_GO_WORKER").map(std::path::PathBuf::from).filter(|p| p.exists());
    let go_procs = if go_worker.is_some() { knob("PORTMGR_RELIABILITY_GO_PROCS", 4).min(procs - c_procs - py_procs) } else { 0 };
    // Java clients (bindings/java's ReliabilityWorker, a launcher script written by
    // bindings/java/run.sh) when PORTMGR_RELIABILITY_JAVA_WORKER names it.
    let java_worker = std::env::var_os("PORTMGR_RELIABILITY_JAVA_WORKER").map(std::path::PathBuf::from).filter(|p| p.exists());
    let java_procs = if java_worker.is_some() { knob("PORTMGR_RELIABILITY_JAVA_PROCS", 4).min(procs - c_procs - py_procs - go_procs) } else { 0 };
    // Node clients (bindings/node/bin/reliability-worker.js, run by bindings/node/run.sh)
    // when PORTMGR_RELIABILITY_NODE_WORKER names the (executable) script.
    let node_worker = std::env::var_os("PORTMGR_RELIABILITY_NODE_WORKER").map(std::path::PathBuf::from).filter(|p| p.exists());
    let node_procs = if node_worker.is_some() { knob("PORTMGR_RELIABILITY_NODE_PROCS", 4).min(procs - c_procs - py_procs - go_procs - java_procs) } else { 0 };
    let args = |i: u64| [START.to_string(), LEN.to_string(), secs.to_string(), (i + 1).to_string()];
    let mut kids: Vec<Kid> = (0..procs)
        .map(|i| {
            if i < c_procs {
                let mut cmd = std::process::Command::new(c_worker.as_ref().unwrap());
                cmd.arg(&dir).args(args(i));
                spawn_cmd(cmd)
            } else if i < c_procs + py_procs {
                let mut cmd = std::process::Command::new(python.as_ref().unwrap());
                cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reliability/py_worker.py")).arg(&dir).args(args(i));
                spawn_cmd(cmd)
            } else if i < c_procs + py_procs + go_procs {
                let mut cmd = std::process::Command::new(go_worker.as_ref().unwrap());
                cmd.arg(&dir).args(args(i));
                spawn_cmd(cmd)
            } else if i < c_procs + py_procs + go_procs + java_procs {
                let mut cmd = std::process::Command::new(java_worker.as_ref().unwrap());
                cmd.arg(&dir).args(args(i));
                spawn_cmd(cmd)
            } else if i < c_procs + py_procs + go_procs + java_procs + node_procs {
                let mut cmd = std::process::Command::new(node_worker.as_ref().unwrap());
                cmd.arg(&dir).args(args(i));
                spawn_cmd(cmd)
            } else {
                spawn(crate::TEST, &dir, &format!("worker {secs} {}", i + 1), &[])
            }
        })
        .collect();
    let mut intervals: HashMap<u16, Vec<(u64, u64, u32)>> = HashMap::new();
    let (mut allocated, mut released, mut exhausted, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut bindfails = Vec::new();
    let mut other_errors = Vec::new();
    for k in &mut kids {
        let sum = k.expect("SUM ", Duration::from_secs(secs + 120)).unwrap_or_else(|| panic!("a worker gave no summary"));
        let v: Vec<u64> = sum.split_whitespace().map(|w| w.parse().unwrap()).collect();
        allocated += v[0];
        released += v[1];
        exhausted += v[2];
        errors += v[3];
        for line in &k.seen {
            if let Some(rest) = line.strip_prefix("L ") {
                let f: Vec<u64> = rest.split_whitespace().map(|w| w.parse().unwrap()).collect();
                intervals.entry(f[0] as u16).or_default().push((f[1], f[2], f[3] as u32));
            } else if line.starts_with("BINDFAIL") {
                bindfails.push(line.clone());
            } else if line.starts_with("ERR") {
                other_errors.push(line.clone());
            }
        }
        let st = k.wait(Duration::from_secs(30));
        assert!(st.is_some_and(|s| s.success()), "a worker failed: {st:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    // Duplicates: two hold intervals on one port that overlap.
    let mut dups = Vec::new();
    let mut held_ports = 0usize;
    for (port, iv) in intervals.iter_mut() {
        held_ports += iv.len();
        iv.sort_unstable();
        let mut max_end = (0u64, 0u32);
        for &(a, r, pid) in iv.iter() {
            if a < max_end.0 {
                dups.push(format!("port {port}: held by {} until {} and by {pid} from {a}", max_end.1, max_end.0));
            }
            if r > max_end.0 {
                max_end = (r, pid);
            }
        }
    }
    let s = reg.stats().unwrap();
    let audit = s.allocations as i64 - s.releases as i64 - s.reclaimed as i64 - s.held as i64;
    eprintln!(
        "RESULT concurrency: procs={procs} (C clients {c_procs}{}, Python clients {py_procs}, Go clients {go_procs}, Java clients {java_procs}, Node clients {node_procs}) threads_each=4 seconds={secs} ports_allocated={allocated} released={released} intervals={held_ports} exhausted_retries={exhausted} other_errors={errors} duplicates={} bind_failures={} audit(alloc-rel-recl-live)={audit} live={} reclaimed={} file_reads={reads}",
        if c_worker.is_some() { "" } else { "; libportmgr.so not built: cargo build --release -p portmgr-capi" },
        dups.len(),
        bindfails.len(),
        s.held,
        s.reclaimed
    );
    assert!(dups.is_empty(), "{} duplicates: {:?}\n{}", dups.len(), &dups[..dups.len().min(5)], forensics(&dir, &[]));
    assert!(bindfails.is_empty(), "{} bind failures on allocated ports: {:?}", bindfails.len(), &bindfails[..bindfails.len().min(5)]);
    assert!(other_errors.is_empty(), "unexpected errors: {:?}", &other_errors[..other_errors.len().min(5)]);
    assert_eq!(audit, 0, "audit broken: {s:?}");
    assert_eq!(s.held, 0, "ports outlived their processes: {s:?}");
    assert_eq!(s.allocations - before.allocations, allocated, "the registry counted other allocations than the workers made");
    assert_eq!(s.releases - before.releases, released, "the registry counted other releases than the workers made");
    assert_eq!(held_ports as u64, allocated);
    assert!(allocated > 1000 * secs.min(5), "too little work to mean anything: {allocated}");
    assert!(reads > 0);
}

/// Compile tests/reliability/c_worker.c against the libportmgr.so next to this test
/// binary (target/<profile>/), or `PORTMGR_RELIABILITY_LIBDIR`. None when there is none.
fn build_c_worker(tmp: &std::path::Path) -> Option<std::path::PathBuf> {
    let libdir = match std::env::var_os("PORTMGR_RELIABILITY_LIBDIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::current_exe().ok()?.parent()?.parent()?.to_path_buf(),
    };
    if !libdir.join("libportmgr.so").exists() {
        eprintln!("concurrency: no {}; Rust clients only", libdir.join("libportmgr.so").display());
        return None;
    }
    // A private copy, plus a link named by its soname (build.rs sets one), as installed.
    let lib = tmp.join("lib");
    std::fs::create_dir_all(&lib).ok()?;
    std::fs::copy(libdir.join("libportmgr.so"), lib.join("libportmgr.so")).ok()?;
    let elf = std::process::Command::new("readelf").arg("-d").arg(lib.join("libportmgr.so")).output().ok()?;
    let text = String::from_utf8_lossy(&elf.stdout);
    if let Some(soname) = text.lines().find_map(|l| l.split("Library soname: [").nth(1)?.split(']').next()) {
        let _ = std::os::unix::fs::symlink("libportmgr.so", lib.join(soname));
    }
    let libdir = lib;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = tmp.join("c_worker");
    let st = std::process::Command::new("cc")
        .args(["-O2", "-pthread", "-Wall", "-Werror"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/reliability/c_worker.c"))
        .arg("-L")
        .arg(&libdir)
        .arg("-lportmgr")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .ok()?;
    assert!(st.success(), "c_worker.c did not compile against {}", libdir.display());
    Some(exe)
}

/// A Python that can `import portmgr`: `PORTMGR_RELIABILITY_PYTHON`, the repository's
/// .venv, or python3.
fn find_python() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<std::path::PathBuf> = std::env::var_os("PORTMGR_RELIABILITY_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([root.join(".venv/bin/python"), "python3".into()])
        .collect();
    for py in candidates {
        let ok = std::process::Command::new(&py).args(["-c", "import portmgr"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    eprintln!("concurrency: no Python with the portmgr package; no Python clients");
    None
}
