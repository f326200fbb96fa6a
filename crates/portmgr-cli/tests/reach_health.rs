//! Issue 18 items 3 and 4 through the real `portmgr` binary: `portmgr reach` (the
//! first-reachable fallback), `portmgr health --watch` / `--history`, and the history
//! endpoint of `portmgr serve`.
//!
//! Ports 16700-16799 (outside the kernel's ephemeral range).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

fn portmgr(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--registry").arg(dir).args(args).output().unwrap()
}

#[test]
fn reach_prints_the_open_candidate_first_within_about_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let (_full, _conns) = syn_dropping_listener(16702);
    let _open = TcpListener::bind("127.0.0.1:16703").unwrap();
    // 16701 and [::1]:16704: nothing listens, refused at once.
    let args = ["reach", "127.0.0.1:16701", "127.0.0.1:16702", "[::1]:16704", "127.0.0.1:16703", "--timeout", "1500ms"];
    let t0 = Instant::now();
    let out = portmgr(d.path(), &args);
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "127.0.0.1:16703", "{stdout}");
    assert!(lines[1].contains("127.0.0.1:16701 refused"), "{stdout}");
    assert!(lines[2].contains("127.0.0.1:16702 timed_out"), "{stdout}");
    assert!(lines[3].contains("[::1]:16704 refused"), "{stdout}");
    assert!(lines[4].contains("127.0.0.1:16703 reachable"), "{stdout}");
    // About the timeout (the dropped candidate's), far below the sum (4 x 1.5 s).
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_millis(3000), "took {took:?}");

    let out = portmgr(d.path(), &["reach", "127.0.0.1:16702", "127.0.0.1:16703", "--timeout", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reachable"], "127.0.0.1:16703");
    assert_eq!(v["winner"], 1);
    assert_eq!(v["candidates"][0]["outcome"], "timed_out");
    assert_eq!(v["candidates"][1]["outcome"], "reachable");
    assert_eq!(v["candidates"][1]["address"], "127.0.0.1:16703");
    assert!(v["candidates"][0]["elapsed_ms"].as_u64().unwrap() >= 900, "{v}");
}

#[test]
fn reach_exits_7_when_nothing_is_reachable_and_2_on_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let (_full, _conns) = syn_dropping_listener(16705);
    let t0 = Instant::now();
    let out = portmgr(d.path(), &["reach", "127.0.0.1:16706", "127.0.0.1:16705", "no-such-host.invalid:1", "--timeout", "700ms"]);
    assert!(t0.elapsed() < Duration::from_millis(2000), "{:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stdout.is_empty(), "no winner line: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:16706 refused") && err.contains("127.0.0.1:16705 timed_out"), "{err}");
    assert!(err.contains("no-such-host.invalid:1 unresolvable"), "{err}");
    assert!(err.contains("no candidate accepted TCP connections within 700ms"), "{err}");
    let out = portmgr(d.path(), &["reach", "127.0.0.1:16706", "--json", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(7));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["reachable"].is_null() && v["winner"].is_null(), "{v}");

    for bad in [&["reach", "::1:80"][..], &["reach", "h:0"], &["reach"], &["reach", "127.0.0.1:1", "--timeout", "0"]] {
        assert_eq!(portmgr(d.path(), bad).status.code(), Some(2), "{bad:?}");
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_matching(rx: &mpsc::Receiver<String>, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if f(&l) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {what}; saw {seen:#?}"),
        }
    }
}

#[test]
fn health_watch_prints_each_change_and_stops_on_sigterm_and_sigint() {
    let (d, reg) = temp_registry();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(BIN)
            .arg("--registry")
            .arg(reg.dir())
            .args(["health", "--watch", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        let first = next_matching(&rx, "the first (healthy) check", |l| l.contains(" healthy: "));
        assert!(first.contains("healthy: 0 held"), "{first}");
        // Fill 16720-16729 (100% of a range in use): one change, printed once.
        let leases: Vec<_> = (0..10).map(|_| reg.allocate(&req_in(16720, 10)).unwrap()).collect();
        next_matching(&rx, "the unhealthy change", |l| l.contains("unhealthy: 1 problem, 10 held"));
        next_matching(&rx, "the exhausted problem", |l| l.contains("exhausted: the range 16720-16729 is 100.0% full"));
        drop(leases);
        next_matching(&rx, "the recovery", |l| l.contains(" healthy: 0 held"));
        // Unchanged checks print nothing.
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "a line without a change");
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(child.id() as i32, sig) };
        let t0 = Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "signal {sig}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    // The history holds those checks, the change flags with them.
    let out = portmgr(reg.dir(), &["health", "--history", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v.as_array().unwrap();
    assert!(entries.len() >= 6, "{v}");
    let bad: Vec<&serde_json::Value> = entries.iter().filter(|e| e["ok"] == false).collect();
    assert!(!bad.is_empty());
    assert!(bad.iter().all(|e| e["problems"][0]["kind"] == "exhausted" && e["problems"][0]["range"] == serde_json::json!([16720, 16729])));
    assert!(entries.iter().filter(|e| e["changed"] == true).count() >= 3);
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let out = portmgr(reg.dir(), &["health", "--history"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unhealthy: 1 problem, 10 held") && text.contains("  exhausted: the range 16720-16729"), "{text}");
    drop(d);

    let e = tempfile::tempdir().unwrap();
    let out = portmgr(e.path(), &["health", "--history"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no health checks recorded yet"));
    assert_eq!(portmgr(e.path(), &["health", "--watch", "1ms"]).status.code(), Some(2));
    assert_eq!(portmgr(e.path(), &["health", "--watch", "1s", "--history"]).status.code(), Some(2));
}

#[test]
fn serve_keeps_a_monitor_and_serves_the_history() {
    let (_d, reg) = temp_registry();
    let mut child = Command::new(BIN)
        .arg("--registry")
        .arg(reg.dir())
        .args(["serve", "--http", "127.0.0.1:0", "--health-interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let url = next_matching(&rx, "the http line", |l| l.starts_with("http ")).trim_start_matches("http ").to_string();
    let _l: Vec<_> = (0..10).map(|_| reg.allocate(&req_in(16740, 10)).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v: serde_json::Value =
            ureq::get(&format!("{url}/ports/health/history")).call().unwrap().body_mut().read_json().unwrap();
        if v.as_array().unwrap().iter().any(|e| e["ok"] == false) {
            break v;
        }
        assert!(Instant::now() < deadline, "no unhealthy entry: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let e = v.as_array().unwrap().iter().find(|e| e["ok"] == false).unwrap();
    assert_eq!(e["problems"][0]["range"], serde_json::json!([16740, 16749]));
    assert_eq!(e["changed"], true);
    // SAFETY: kill(2) on our own child, not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The server's monitor stopped with it.
    let n = portmgr::mapping::health_history(&reg).unwrap().last().unwrap().seq;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(portmgr::mapping::health_history(&reg).unwrap().last().unwrap().seq, n);
}
