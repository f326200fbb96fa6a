//! Registry benchmark: every figure is a ratio to a baseline measured in the same run.
//!
//! Run: `cargo bench --bench registry` (full) or `cargo bench --bench registry -- --quick`.
//! Writes `bench/results/registry.md` and prints the same table.
//!
//! Figures (issue #2):
//! * registry `allocate` + `release` (TCP+UDP probe) vs the bare TCP+UDP bind probe of one port;
//! * the same with 50,000 ports held by 100 live owner processes vs an empty registry;
//! * 8 processes x 1,000 allocations at once: duplicates and aggregate allocations/s;
//! * kernel `bind(0)` + `getsockname` + `close` as the reference.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portmgr::{PortRange, Protocols, Registry, Request, probe};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Median and p99 (µs) of each of `fs` over `n` runs (after a warm-up), interleaved in rounds so that the
/// machine's noise (other processes, frequency changes) falls on all of them alike.
fn measure_interleaved(n: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    let rounds = 20;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); fs.len()];
    for f in fs.iter_mut() {
        for _ in 0..n / 10 + 1 {
            f();
        }
    }
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            for _ in 0..n / rounds {
                let t = Instant::now();
                f();
                samples[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    samples.iter_mut().map(|v| (percentile(v, 0.5), percentile(v, 0.99))).collect()
}

fn bind0() {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_only_v6(false).unwrap();
    s.bind(&SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))).unwrap();
    let _ = s.local_addr().unwrap();
}

fn spawn(role: &str, dir: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("PORTMGR_BENCH_ROLE", role)
        .env("PORTMGR_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_line(c: &mut Child, want: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let out = BufReader::new(c.stdout.as_mut().unwrap());
    for l in out.lines() {
        let l = l.unwrap();
        if l == want {
            return lines;
        }
        lines.push(l);
    }
    panic!("child ended before {want}");
}

/// Child roles: `hold N A B` holds N ports of A-B without probing cost mattering;
/// `burst N` waits for a line on stdin, allocates N ports from the default pool, prints them.
fn child(role: &str) {
    let reg = Registry::open_default().unwrap();
    let w: Vec<&str> = role.split_whitespace().collect();
    let mut out = std::io::stdout().lock();
    match w[0] {
        "hold" => {
            let n: usize = w[1].parse().unwrap();
            let r = PortRange::new(w[2].parse().unwrap(), w[3].parse().unwrap()).unwrap();
            let req = Request::new().range(r).count(n);
            let lease = reg.allocate(&req).unwrap();
            writeln!(out, "READY").unwrap();
            out.flush().unwrap();
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            drop(lease);
        }
        "burst" => {
            let n: usize = w[1].parse().unwrap();
            writeln!(out, "READY").unwrap();
            out.flush().unwrap();
            let mut s = String::new();
            std::io::stdin().read_line(&mut s).unwrap();
            let leases: Vec<_> = (0..n).map(|_| reg.allocate(&Request::new()).unwrap()).collect();
            for l in &leases {
                writeln!(out, "{}", l.port()).unwrap();
            }
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
            let _ = std::io::stdin().read_line(&mut s);
        }
        _ => panic!("unknown role"),
    }
}

fn main() {
    if let Ok(role) = std::env::var("PORTMGR_BENCH_ROLE") {
        return child(&role);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2000 } else { 20000 };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    let reg = Registry::open(&dir).unwrap();
    let pool = reg.default_pool().unwrap();
    let probe_port = {
        let l = reg.allocate(&Request::new().protocols(Protocols::BOTH)).unwrap();
        l.port()
    };

    let both = Request::new().protocols(Protocols::BOTH);
    let r = measure_interleaved(
        n,
        &mut [
            &mut bind0,
            &mut || assert!(probe::is_free(probe_port, Protocols::BOTH).unwrap()),
            &mut || {
                let mut l = reg.allocate(&both).unwrap();
                l.release().unwrap();
            },
        ],
    );
    let (kernel, bare, empty) = (r[0], r[1], r[2]);

    // 50,000 ports held by 100 live owner processes.
    let full_dir = tmp.path().join("full");
    let (owners, per) = if quick { (20, 500) } else { (100, 500) };
    let t = Instant::now();
    let mut holders: Vec<Child> = Vec::new();
    for i in 0..owners {
        // Spread over 1024-65535 so the default pool is partly full too.
        holders.push(spawn(&format!("hold {per} 1024 65535"), &full_dir));
        if i % 4 == 3 {
            for h in holders.iter_mut().skip(i - 3) {
                wait_line(h, "READY");
            }
        }
    }
    for h in holders.iter_mut().skip(owners / 4 * 4) {
        wait_line(h, "READY");
    }
    let fill_s = t.elapsed().as_secs_f64();
    let full_reg = Registry::open(&full_dir).unwrap();
    let st = full_reg.stats().unwrap();
    let held = st.held;
    let r = measure_interleaved(
        n,
        &mut [
            &mut || {
                let mut l = full_reg.allocate(&both).unwrap();
                l.release().unwrap();
            },
            &mut || {
                let mut l = reg.allocate(&both).unwrap();
                l.release().unwrap();
            },
        ],
    );
    let (full, empty2) = (r[0], r[1]);
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.wait();
    }

    // 8 processes x 1,000 allocations at once.
    let burst_dir = tmp.path().join("burst");
    let (procs, each) = (8, if quick { 300 } else { 1000 });
    let mut kids: Vec<Child> = (0..procs).map(|_| spawn(&format!("burst {each}"), &burst_dir)).collect();
    for k in &mut kids {
        wait_line(k, "READY");
    }
    let t = Instant::now();
    for k in &mut kids {
        writeln!(k.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut all: Vec<u16> = Vec::new();
    for k in &mut kids {
        all.extend(wait_line(k, "DONE").iter().map(|l| l.parse::<u16>().unwrap()));
    }
    let burst_s = t.elapsed().as_secs_f64();
    for mut k in kids {
        drop(k.stdin.take());
        let _ = k.wait();
    }
    let distinct: std::collections::HashSet<u16> = all.iter().copied().collect();
    let dups = all.len() - distinct.len();
    let rate = all.len() as f64 / burst_s;

    // A full sweep of the unprivileged ports.
    let sweep = PortRange::new(1024, 65535).unwrap();
    let t = Instant::now();
    let in_use = probe::scan(&sweep, Protocols::TCP).unwrap().len();
    let scan_tcp_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = probe::scan(&sweep, Protocols::BOTH).unwrap();
    let scan_both_s = t.elapsed().as_secs_f64();

    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (lo, hi) = portmgr::range::ephemeral_range();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let ratio = |a: (f64, f64), b: (f64, f64)| a.0 / b.0;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut md = String::new();
    md += &format!(
        "# Registry benchmark ({})\n\nMachine: {cores} cores ({cpu}), Linux {}, ephemeral range {lo}-{hi}, default pool {pool}. \
         {n} timed calls per row (medians, p99 in µs). Mode: {}.\n\n",
        if quick { "quick" } else { "full" },
        kernel_release.trim(),
        if quick { "quick (smoke test)" } else { "full" }
    );
    md += "| what | median µs | p99 µs | ratio | target |\n|---|---:|---:|---:|---|\n";
    md += &format!("| kernel `bind(0)` + getsockname + close (reference) | {:.2} | {:.2} | 1.00x of itself | — |\n", kernel.0, kernel.1);
    md += &format!("| bare bind probe of one port, TCP+UDP | {:.2} | {:.2} | {:.2}x bind(0) | — |\n", bare.0, bare.1, ratio(bare, kernel));
    md += &format!(
        "| registry allocate + release, TCP+UDP, empty registry | {:.2} | {:.2} | **{:.2}x bare probe** | ≤ 1.5x: {} |\n",
        empty.0, empty.1, ratio(empty, bare), verdict(ratio(empty, bare) <= 1.5)
    );
    md += &format!(
        "| the same, {held} ports held by {owners} live owner processes | {:.2} | {:.2} | **{:.2}x empty** (empty re-measured: {:.2} µs) | ≤ 1.5x: {} |\n",
        full.0, full.1, full.0 / empty2.0, empty2.0, verdict(full.0 / empty2.0 <= 1.5)
    );
    md += &format!(
        "| {procs} processes x {each} allocations at once | — | — | **{:.0} allocations/s**, {} duplicates in {} ports | ≥ 30,000/s, 0 duplicates: {} |\n",
        rate, dups, all.len(), verdict(rate >= 30000.0 && dups == 0)
    );
    md += &format!(
        "| `scan` 1024-65535, TCP / TCP+UDP (TCP ports in use: {in_use}) | {:.0} ms / {:.0} ms | — | — | < 1 s: {} |\n",
        scan_tcp_s * 1e3, scan_both_s * 1e3, verdict(scan_tcp_s < 1.0 && scan_both_s < 1.0)
    );
    md += &format!("\nFilling the registry with {held} held ports from {owners} processes took {fill_s:.2} s.\n");
    print!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    let _ = std::fs::create_dir_all(&out);
    let name = if quick { "registry-quick.md" } else { "registry.md" };
    std::fs::write(out.join(name), &md).unwrap();
    assert_eq!(dups, 0, "duplicates handed out");
    let _ = Duration::ZERO;
}
