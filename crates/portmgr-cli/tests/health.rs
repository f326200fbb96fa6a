//! The core health report (`Services::health`): every range in use with its fullness, and
//! each kind of problem, against a real registry, real sockets and real processes.
//!
//! Ports 16400-16499 (outside the kernel's ephemeral range).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;
use portmgr::mapping::{ProblemKind, RangeKind, ServiceSpec, Services, TypeTable};
use portmgr::{Registry, Request};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");
const TYPES: &str = r#"{"types": {"tiny": {"range": "16400-16403", "description": "a small type range"}}}"#;

fn services() -> (tempfile::TempDir, Services) {
    let (d, reg) = temp_registry();
    let types = TypeTable::from_json_str(TYPES, "test").unwrap();
    (d, Services::with_types(reg, types))
}

fn cli(reg: &Registry, args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).arg("--registry").arg(reg.dir()).args(args).output().unwrap();
    assert!(out.status.success(), "portmgr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn a_full_type_range_and_a_full_explicit_range_are_both_exhausted() {
    let (_d, svc) = services();
    let h = svc.health(0.9).unwrap();
    assert!(h.ok, "{h:?}");
    assert_eq!(h.ranges.len(), 1, "only the pool is in use: {h:?}");
    assert_eq!(h.ranges[0].kind, RangeKind::Pool);

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(svc.allocate(&Request::new(), &ServiceSpec::typed("tiny")).unwrap());
    }
    for _ in 0..3 {
        held.push(svc.registry().allocate(&req_in(16410, 3)).unwrap());
    }
    // A range in use but far from full: listed, no problem.
    held.push(svc.registry().allocate(&req_in(16420, 10)).unwrap());

    let h = svc.health(0.9).unwrap();
    assert!(!h.ok);
    assert_eq!(h.held, 8);
    let find = |kind: RangeKind, range: (u16, u16)| {
        h.ranges.iter().find(|r| r.kind == kind && r.range == range).unwrap_or_else(|| panic!("{kind:?} {range:?} missing: {h:?}"))
    };
    let tiny = find(RangeKind::Type, (16400, 16403));
    assert_eq!((tiny.service_type.as_deref(), tiny.size, tiny.held), (Some("tiny"), 4, 4));
    let full = find(RangeKind::Explicit, (16410, 16412));
    assert_eq!((full.size, full.held, full.utilization), (3, 3, 1.0));
    let light = find(RangeKind::Explicit, (16420, 16429));
    assert_eq!((light.held, light.size), (1, 10));
    // The pool (15000-32767 by default) holds them all too: ranges overlap.
    assert_eq!(h.pool().unwrap().held, 8);

    let exhausted: Vec<_> = h.problems.iter().filter(|p| p.kind == ProblemKind::Exhausted).collect();
    assert_eq!(exhausted.len(), 2, "{:?}", h.problems);
    let t = exhausted.iter().find(|p| p.service_type.as_deref() == Some("tiny")).expect("the type's range");
    assert_eq!(t.range, Some((16400, 16403)));
    assert!(t.message.contains("16400-16403") && t.message.contains("\"tiny\"") && t.message.contains("100.0% full"), "{}", t.message);
    let e = exhausted.iter().find(|p| p.service_type.is_none()).expect("the explicit range");
    assert_eq!(e.range, Some((16410, 16412)));
    assert!(e.message.contains("wider range"), "{}", e.message);
    // The same through JSON, as the C ABI and the CLI give it.
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(v["problems"][0]["kind"], "exhausted", "{v}");
    assert_eq!(v["ranges"][1]["kind"], "type", "{v}");

    // The CLI renders the same report (with the type from a PORTMGR_TYPES file).
    let types = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(types.path(), TYPES).unwrap();
    let out = Command::new(BIN)
        .arg("--registry")
        .arg(svc.registry().dir())
        .args(["health", "--json"])
        .env("PORTMGR_TYPES", types.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli: Vec<(String, String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["kind"].to_string(), p["range"].to_string(), p["type"].to_string()))
        .collect();
    assert_eq!(
        cli,
        vec![
            ("\"exhaustion\"".into(), "\"16400-16403\"".into(), "\"tiny\"".into()),
            ("\"exhaustion\"".into(), "\"16410-16412\"".into(), "null".into())
        ],
        "{v}"
    );
    assert_eq!(v["ranges"].as_array().unwrap().len(), 4, "{v}");

    // Below the threshold once a port is released; and 0.5 flags the light range too.
    held.pop();
    held.remove(0);
    let h = svc.health(0.9).unwrap();
    assert_eq!(h.problems.iter().filter(|p| p.kind == ProblemKind::Exhausted).count(), 1, "{:?}", h.problems);
    assert_eq!(svc.health(0.3).unwrap().problems.len(), 2);
    assert_eq!(svc.health(1.5).unwrap_err().code(), portmgr::ErrorCode::InvalidArgument);
}

#[test]
fn foreign_binds_expired_leases_and_dead_owners_are_problems() {
    let (_d, svc) = services();
    let reg = svc.registry().clone();
    // A lease held for a sleeping process by a CLI call that has exited: bound by this
    // test process, which is neither its owner nor a child of it.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let out = cli(&reg, &["alloc", "--range", "16440-16449", "--owner", &sleeper.id().to_string()]);
    let port: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let h = svc.health(0.9).unwrap();
    let p = h.problems.iter().find(|p| p.kind == ProblemKind::BoundElsewhere).unwrap_or_else(|| panic!("{h:?}"));
    assert_eq!(p.port, Some(port));
    assert!(p.pids.contains(&std::process::id()), "{p:?}");
    drop(l);
    // A process another test thread is spawning right now may hold a copy of the socket
    // between its fork and its exec (close-on-exec ends it there): wait that out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut h = svc.health(0.9).unwrap();
    while !h.ok && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        h = svc.health(0.9).unwrap();
    }
    assert!(h.ok, "{:?}", h.problems);

    // Its own socket is no problem: a lease of this process, bound by this process.
    let (lease, socks) = reg.allocate_bound(&req_in(16450, 10)).unwrap();
    assert!(svc.health(0.9).unwrap().ok, "{:?}", svc.health(0.9));
    drop((lease, socks));

    // A TTL that ran out, not collected.
    drop(reg.allocate(&req_in(16460, 10).ttl(Duration::from_secs(1))).unwrap().keep().unwrap());
    std::thread::sleep(Duration::from_millis(1300));
    let h = svc.health(0.9).unwrap();
    assert_eq!(h.problems.iter().map(|p| p.kind).collect::<Vec<_>>(), vec![ProblemKind::Expired], "{h:?}");
    assert!(h.problems[0].message.contains("past its TTL"));

    // A holder killed with SIGKILL: its port is free for allocation at once, and until
    // something collects it health names the dead owner.
    let mut run = Command::new(BIN)
        .arg("--registry")
        .arg(reg.dir())
        .args(["run", "--port", "h", "--range", "16470-16479", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reg.list().unwrap().iter().all(|i| !(16470..=16479).contains(&i.port)) {
        assert!(std::time::Instant::now() < deadline, "run never allocated");
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let h = svc.health(0.9).unwrap();
    let kinds: Vec<_> = h.problems.iter().map(|p| p.kind).collect();
    assert!(kinds.contains(&ProblemKind::OwnerGone), "{h:?}");
    reg.gc().unwrap();
    assert!(svc.health(0.9).unwrap().ok, "{:?}", svc.health(0.9));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}
