//! The `portmgr` command, run as a real binary against temp registries.
//!
//! Every test uses its own registry directory and its own slice of 13000-15999 (13000-13999
//! for the single tests, 15000-15999 for the two shell loops), so the tests can run in
//! parallel with each other and with other suites: below the kernel's ephemeral range
//! (32768-60999) and outside every other suite's range (tests/cli_mapping.rs has 31620-32767).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

struct Reg {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn reg() -> Reg {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reg");
    Reg { _tmp: tmp, dir }
}

impl Reg {
    /// `portmgr --registry DIR ARGS...`, with PORTMGR_DIR pointing nowhere useful so a
    /// missing --registry would show.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--registry").arg(&self.dir).args(args);
        c.env("PORTMGR_DIR", self.dir.join("not-this-one"));
        c.env_remove("PORTMGR_RANGE");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    /// Run with PORTMGR_DIR only (no --registry), as a script would.
    fn env_cmd(&self) -> String {
        format!("PORTMGR_DIR='{}' '{}'", self.dir.display(), BIN)
    }
    fn list_json(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["list", "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap().as_array().unwrap().clone()
    }
    fn held(&self) -> Vec<u16> {
        self.list_json().iter().map(|i| i["port"].as_u64().unwrap() as u16).collect()
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn ports_of(o: &Output) -> Vec<u16> {
    stdout(o).lines().map(|l| l.trim().parse().unwrap()).collect()
}

/// The error is one line on stderr, prefixed `portmgr:`.
fn assert_one_line_error(o: &Output, status: i32, contains: &str) {
    let e = stderr(o);
    assert_eq!(code(o), status, "stdout: {} stderr: {e}", stdout(o));
    assert_eq!(e.lines().count(), 1, "error is not one line: {e:?}");
    assert!(e.starts_with("portmgr: "), "{e}");
    assert!(e.contains(contains), "{e:?} should contain {contains:?}");
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s.trim_end().to_string()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

// ----------------------------------------------------------------------------------------

#[test]
fn alloc_release_renew_list_in_every_format() {
    let r = reg();
    let o = r.run(&["alloc", "--range", "13000-13049"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let p = ports_of(&o);
    assert_eq!(p.len(), 1);
    assert!((13000..=13049).contains(&p[0]));

    let o = r.run(&["alloc", "--name", "web-api", "--range", "13000-13049", "--format", "env"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let line = stdout(&o);
    let web: u16 = line.trim().strip_prefix("WEB_API_PORT=").expect(&line).parse().unwrap();

    let o = r.run(&["alloc", "--count", "3", "--contiguous", "--range", "13000-13049", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let block: Vec<u16> = v["ports"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u16).collect();
    assert_eq!(block.len(), 3);
    assert_eq!(block[1], block[0] + 1);
    assert_eq!(block[2], block[0] + 2);
    assert_eq!(v["port"].as_u64().unwrap() as u16, block[0]);
    assert!(v["watch_pid"].as_u64().is_some(), "{v}");

    let o = r.run(&["alloc", "--name", "db", "--count", "2", "--range", "13000-13049", "--format", "env"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("DB_PORT=") && stdout(&o).contains("DB_PORTS=\""), "{}", stdout(&o));

    let mut held = r.held();
    held.sort();
    assert_eq!(held.len(), 1 + 1 + 3 + 2);
    assert!(held.contains(&p[0]) && held.contains(&web));

    // list filters and formats
    let o = r.run(&["list", "--name", "web-api", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["port"].as_u64().unwrap() as u16, web);
    assert_eq!(v[0]["name"], "web-api");
    assert_eq!(v[0]["state"], "held");
    let o = r.run(&["list", "--port", &p[0].to_string()]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("PORT"), "{}", stdout(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let o = r.run(&["list", "--format", "env"]);
    assert!(stdout(&o).contains(&format!("WEB_API_PORT={web}\n")), "{}", stdout(&o));
    let me = std::process::id().to_string();
    let o = r.run(&["list", "--owner", &me, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 7, "the test process is the watched parent of every alloc: {v}");

    // stats
    let o = r.run(&["stats", "--json"]);
    assert_eq!(code(&o), 0);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["held"], 7);
    for k in ["pool", "pool_size", "free", "utilization", "owners"] {
        assert!(!s[k].is_null(), "stats lacks {k}: {s}");
    }
    let o = r.run(&["stats"]);
    assert!(stdout(&o).contains("utilization"), "{}", stdout(&o));

    // renew: a lease without a TTL needs one; with one it gets an expiry
    let o = r.run(&["renew", &web.to_string()]);
    assert_one_line_error(&o, 2, "--ttl");
    let o = r.run(&["renew", "--name", "web-api", "--ttl", "5m", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let exp = v["renewed"][0]["expires_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(exp > now + 250_000 && exp < now + 350_000, "{v}");
    let o = r.run(&["renew", &web.to_string(), "--ttl", "1h"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("expires in"), "{}", stdout(&o));
    let o = r.run(&["renew", "13049", "--ttl", "1h"]);
    let o2 = r.run(&["renew", "--name", "nope", "--ttl", "1h"]);
    if !held.contains(&13049) {
        assert_one_line_error(&o, 5, "not found");
    }
    assert_one_line_error(&o2, 5, "not found");

    // release by port (a whole block), by name, several at once; errors
    let o = r.run(&["release", &block[1].to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ports_of(&o), block);
    let o = r.run(&["release", "--name", "web-api", "--json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["released"][0].as_u64().unwrap() as u16, web);
    let o = r.run(&["release", "--name", "web-api"]);
    assert_one_line_error(&o, 5, "not found");
    let o = r.run(&["release", &p[0].to_string(), &p[0].to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ports_of(&o), vec![p[0]]);
    let o = r.run(&["release", &p[0].to_string()]);
    assert_one_line_error(&o, 5, "portmgr list");
    let o = r.run(&["release", "--name", "db"]);
    assert_eq!(code(&o), 0);
    assert!(r.held().is_empty());
    let o = r.run(&["list"]);
    assert_eq!(stdout(&o), "");
}

/// The lease id is a handle: shown by `alloc --json` and `list` (plain and JSON),
/// accepted by `release --id` and `renew --id`; an unknown or released id is exit 5.
/// Ports 13850-13869.
#[test]
fn lease_ids_release_and_renew() {
    let r = reg();
    let alloc = |args: &[&str]| {
        let mut a = vec!["alloc", "--range", "13850-13869", "--json"];
        a.extend_from_slice(args);
        let o = r.run(&a);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["lease_id"].as_u64().unwrap(), v["ports"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect::<Vec<_>>())
    };
    let (a, mut pa) = alloc(&["--count", "2"]);
    pa.sort_unstable();
    let (b, pb) = alloc(&["--name", "by-id"]);
    assert_ne!(a, b);

    // list: JSON lease_id and the plain ID column
    let ids: Vec<(u16, u64)> =
        r.list_json().iter().map(|i| (i["port"].as_u64().unwrap() as u16, i["lease_id"].as_u64().unwrap())).collect();
    for p in &pa {
        assert!(ids.contains(&(*p, a)), "{ids:?}");
    }
    assert!(ids.contains(&(pb[0], b)), "{ids:?}");
    let o = r.run(&["list"]);
    let text = stdout(&o);
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head[..3], ["PORT", "ID", "PROTO"], "{text}");
    let rows: Vec<(u16, u64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in &ids {
        assert!(rows.contains(row), "{text}");
    }

    // renew --id: the lease gets the TTL, and only that lease is shown
    let o = r.run(&["renew", "--id", &b.to_string(), "--ttl", "5m", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["renewed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["renewed"][0]["lease_id"].as_u64(), Some(b), "{v}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let exp = v["renewed"][0]["expires_ms"].as_u64().unwrap();
    assert!(exp > now + 250_000 && exp < now + 350_000, "{v}");
    let o = r.run(&["renew", "--id", &b.to_string(), "--ttl", "1h"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("{} expires in", pb[0])), "{}", stdout(&o));

    // release --id frees every port of that lease and nothing else
    let o = r.run(&["release", "--id", &a.to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ports_of(&o), pa);
    assert_eq!(r.held(), pb);

    // a released or unknown id: NotFound, exit 5, never a silent success
    let unknown = (a.max(b) + 1000).to_string();
    for id in [a.to_string(), unknown.clone(), "0".to_string()] {
        assert_one_line_error(&r.run(&["release", "--id", &id]), 5, "not found");
        assert_one_line_error(&r.run(&["renew", "--id", &id, "--ttl", "1m"]), 5, "not found");
    }
    assert_eq!(r.held(), pb);
    let o = r.run(&["release", "--id", &b.to_string(), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["released"], serde_json::json!(pb));
    assert!(r.held().is_empty());
    assert_one_line_error(&r.run(&["renew", "--id", &b.to_string()]), 5, "not found");

    // --id conflicts with a port and --name, as those conflict with each other
    for args in [
        &["release", "--id", "1", "13850"][..],
        &["release", "--id", "1", "--name", "x"],
        &["renew", "--id", "1", "13850"],
        &["renew", "--id", "1", "--name", "x"],
    ] {
        assert_one_line_error(&r.run(args), 2, "cannot be used");
    }
    assert_one_line_error(&r.run(&["release", "--id", "x"]), 2, "--id");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let r = reg();
    let cases: &[(&[&str], &str)] = &[
        (&["alloc", "--bogus"], "--bogus"),
        (&["alloc", "--ttl", "5x"], "duration"),
        (&["alloc", "--range", "9-3"], "--range"),
        (&["alloc", "--range", "a-b"], "port range"),
        (&["alloc", "--proto", "sctp"], "protocol"),
        (&["alloc", "--strategy", "best"], "strategy"),
        (&["alloc", "--required"], "--preferred"),
        (&["alloc", "--owner", "0"], "--owner"),
        (&["alloc", "--count", "0"], "count"),
        (&["alloc", "--format", "xml"], "xml"),
        (&["release"], "required"),
        (&["release", "0"], "0"),
        (&["release", "1", "--name", "x"], "cannot be used"),
        (&["renew"], "required"),
        (&["check"], "required"),
        (&["scan", "nope"], "port range"),
        (&["wait", "localhost:notaport"], "HOST:PORT"),
        (&["wait", "127.0.0.1:1", "--timeout", "soon"], "duration"),
        (&["health", "--threshold", "150%"], "threshold"),
        (&["run", "--port", "web"], "required"),
        (&["run", "--port", "a b", "--", "true"], "port name"),
        (&["run", "--port", "x", "--port", "x", "--", "true"], "twice"),
        (&["run", "--", "true"], "--port"),
        (&["stats", "--format", "env"], "--format env"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let o = r.run(args);
        assert_one_line_error(&o, 2, needle);
        assert!(o.stdout.is_empty(), "{args:?}: {}", stdout(&o));
    }
    // No command at all: the help, on stderr, status 2.
    let o = Command::new(BIN).output().unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("Usage"));
}

#[test]
fn help_on_every_command_shows_an_example() {
    for sub in ["", "alloc", "release", "renew", "gc", "list", "stats", "health", "check", "scan", "wait", "run"] {
        let mut c = Command::new(BIN);
        if !sub.is_empty() {
            c.arg(sub);
        }
        let o = c.arg("--help").output().unwrap();
        assert_eq!(code(&o), 0, "{sub}");
        let out = stdout(&o);
        assert!(out.contains("Example"), "{sub} --help has no example:\n{out}");
        assert!(out.contains("portmgr "), "{sub}");
        assert!(out.contains("--registry"), "{sub} --help lacks --registry");
    }
    let o = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("portmgr "));
    // The same entry point the Python console script calls.
    assert_eq!(portmgr::cli::main_with_args(vec!["portmgr".into(), "--version".into()]), 0);
    assert_eq!(portmgr::cli::main_with_args(vec!["portmgr".into(), "alloc".into(), "--nope".into()]), 2);
}

#[test]
fn exhausted_in_use_and_registry_errors() {
    let r = reg();
    let o = r.run(&["alloc", "--range", "13050-13051", "--count", "3"]);
    assert_one_line_error(&o, 3, "no free port");
    let o = r.run(&["alloc", "--range", "13050-13051", "--name", "svc"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let svc = ports_of(&o)[0];
    let o = r.run(&["alloc", "--range", "13050-13051", "--name", "svc"]);
    assert_one_line_error(&o, 4, "release --name svc");
    let o = r.run(&["alloc", "--range", "13050-13051", "--preferred", &svc.to_string(), "--required"]);
    assert_one_line_error(&o, 4, &svc.to_string());
    let o = r.run(&["alloc", "--range", "13050-13051"]);
    assert_eq!(code(&o), 0);
    let o = r.run(&["alloc", "--range", "13050-13051"]);
    assert_one_line_error(&o, 3, "portmgr gc");
    let o = r.run(&["alloc", "--owner", "999999999", "--range", "13052-13053"]);
    assert_one_line_error(&o, 2, "does not exist");

    // A registry directory that is not safe, or not a directory: status 6.
    let t = tempfile::tempdir().unwrap();
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = Command::new(BIN).args(["--registry"]).arg(&open).args(["list"]).output().unwrap();
    assert_one_line_error(&o, 6, "open");
    let file = t.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = Command::new(BIN).arg("--registry").arg(&file).arg("stats").output().unwrap();
    assert_one_line_error(&o, 6, "file");
    // PORTMGR_DIR is honoured when --registry is absent.
    let o = Command::new(BIN).env("PORTMGR_DIR", &open).arg("gc").output().unwrap();
    assert_one_line_error(&o, 6, "open");
}

#[test]
fn check_scan_and_wait() {
    let r = reg();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let bound = l.local_addr().unwrap().port();
    let free = 13100;
    let o = r.run(&["check", &free.to_string()]);
    assert_eq!(code(&o), 0, "{} {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("free"));
    let o = r.run(&["check", &free.to_string(), &bound.to_string()]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("{bound} in use")), "{}", stdout(&o));
    let o = r.run(&["check", &bound.to_string(), "--proto", "udp", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(code(&o), 0, "{v}");
    assert_eq!(v[0]["free"], true);

    // A port held in the registry is not free either, though nothing binds it.
    let o = r.run(&["alloc", "--range", "13101-13101"]);
    assert_eq!(ports_of(&o), vec![13101]);
    let o = r.run(&["check", "13101", "--json"]);
    assert_eq!(code(&o), 4);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["bound"], false);
    assert_eq!(v[0]["lease"]["port"], 13101);

    // scan: a listener in the range and the registry-held port.
    let l2 = TcpListener::bind("127.0.0.1:13105").unwrap();
    let o = r.run(&["scan", "13100-13110"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("13101 held"), "{lines:?}");
    assert!(lines[1].starts_with("13105 bound"), "{lines:?}");
    let o = r.run(&["scan", "13100-13110", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["in_use"].as_array().unwrap().len(), 2, "{v}");
    drop(l2);

    // wait: ready at once; timeout with status 7; a listener that comes up later.
    let o = r.run(&["wait", &format!("127.0.0.1:{bound}"), "--timeout", "5s"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let t0 = Instant::now();
    let o = r.run(&["wait", "127.0.0.1:13106", "--timeout", "300ms"]);
    assert_one_line_error(&o, 7, "timed out");
    assert!(t0.elapsed() < Duration::from_secs(3));
    let waiter =
        r.cmd(&["wait", "127.0.0.1:13107", "--timeout", "10s", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let l3 = TcpListener::bind("127.0.0.1:13107").unwrap();
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ready"], true);
    drop((l, l3));
}

#[test]
fn health_reports_exhaustion_foreign_binds_and_expired_leases() {
    let r = reg();
    let pool = |c: &mut Command| {
        c.env("PORTMGR_RANGE", "13200-13203");
    };
    let h = |args: &[&str]| {
        let mut c = r.cmd(args);
        pool(&mut c);
        c.output().unwrap()
    };
    let o = h(&["health"]);
    assert_eq!(code(&o), 0, "{} {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("healthy"));

    // A sleeper to watch: the leases live with it, not with this test process.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let spid = sleeper.id().to_string();
    for _ in 0..4 {
        let o = h(&["alloc", "--owner", &spid]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = h(&["health", "--json"]);
    assert_eq!(code(&o), 9, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["healthy"], false);
    let kinds: Vec<&str> = v["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["exhaustion"], "{v}");
    let o = h(&["health", "--threshold", "100%"]);
    assert_eq!(code(&o), 9, "100% full is at the threshold");
    let o = h(&["alloc"]);
    assert_eq!(code(&o), 3);

    // This process binds a port the sleeper's lease holds: not its owner, not a child.
    let o = h(&["release", "13200", "13201", "13202"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let l = TcpListener::bind("127.0.0.1:13203").unwrap();
    let o = h(&["health", "--json"]);
    assert_eq!(code(&o), 9, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["problems"][0];
    assert_eq!(p["kind"], "bound_elsewhere", "{v}");
    assert_eq!(p["port"], 13203);
    // (A child forked by another test may share the socket for a moment before its exec.)
    let pids: Vec<u32> = p["pids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    assert!(pids.contains(&std::process::id()), "{v}");
    drop(l);
    let o = h(&["health"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // A lease past its TTL that nobody collected.
    // (1 s: the shortest TTL the core takes.)
    let o = h(&["alloc", "--ttl", "1s", "--name", "short"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(1300));
    let o = h(&["health"]);
    assert_eq!(code(&o), 9);
    assert!(stdout(&o).contains("past its TTL"), "{}", stdout(&o));
    let o = h(&["gc", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["freed"][0]["state"], "expired", "{v}");
    assert_eq!(v["freed"][0]["name"], "short");
    let o = h(&["health"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn alloc_from_a_shell_script_lives_with_the_shell() {
    let r = reg();
    let pm = r.env_cmd();
    // Both the plain call and $(...): the port is held after portmgr exits and until
    // the shell itself exits.
    let script = format!(
        "{pm} alloc --range 13300-13399; P=$({pm} alloc --range 13300-13399); echo $P; echo done; read x; echo bye"
    );
    let mut sh =
        Command::new("sh").arg("-c").arg(&script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(sh.stdout.take().unwrap());
    let a: u16 = read_line(&mut out).parse().unwrap();
    let b: u16 = read_line(&mut out).parse().unwrap();
    assert_eq!(read_line(&mut out), "done");
    // Both portmgr processes have exited; the shell is waiting on stdin.
    let held = r.list_json();
    assert_eq!(held.len(), 2, "{held:?}");
    for i in &held {
        assert_eq!(i["watch_pid"].as_u64().unwrap() as u32, sh.id(), "watched process is the shell: {i}");
        assert_eq!(i["state"], "held");
    }
    let o = r.run(&["check", &a.to_string(), &b.to_string()]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    // Nobody else gets them meanwhile.
    let o = r.run(&["alloc", "--range", "13300-13399", "--count", "98"]);
    assert_eq!(code(&o), 0);
    let mut others = ports_of(&o);
    others.sort();
    assert!(!others.contains(&a) && !others.contains(&b));
    let o = r.run(&["alloc", "--range", "13300-13399"]);
    assert_one_line_error(&o, 3, "no free port");
    let o = r.run(&["release", &others[50].to_string()]);
    assert_eq!(ports_of(&o), others, "the whole 98-port lease");

    // The shell exits: its ports are free at once, with no gc.
    drop(sh.stdin.take());
    assert_eq!(read_line(&mut out), "bye");
    sh.wait().unwrap();
    assert!(r.held().is_empty(), "{:?}", r.list_json());
    let o = r.run(&["check", &a.to_string(), &b.to_string()]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn alloc_env_format_evals_in_a_shell() {
    let r = reg();
    let pm = r.env_cmd();
    let script = format!(
        "eval \"$({pm} alloc --name api --range 13310-13319 --format env)\"; eval \"$({pm} alloc --count 2 --range 13310-13319 --format env)\"; echo \"$API_PORT|$PORTS\"; {pm} list --json"
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let (first, rest) = out.split_once('\n').unwrap();
    let (api, ports) = first.split_once('|').unwrap();
    let api: u16 = api.parse().unwrap();
    let two: Vec<u16> = ports.split(' ').map(|p| p.parse().unwrap()).collect();
    assert_eq!(two.len(), 2);
    let held: Vec<serde_json::Value> =
        serde_json::from_str::<serde_json::Value>(rest).unwrap().as_array().unwrap().clone();
    assert_eq!(held.len(), 3, "held while the shell lived: {held:?}");
    assert!(held.iter().any(|i| i["port"] == api && i["name"] == "api"));
    assert!(r.held().is_empty(), "freed once the shell exited");
}

#[test]
fn alloc_owner_and_ttl_lifetimes() {
    let r = reg();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let o = r.run(&["alloc", "--range", "13700-13799", "--owner", &sleeper.id().to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let p = ports_of(&o)[0];
    let o = r.run(&["alloc", "--range", "13700-13799", "--ttl", "1500ms", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["watch_pid"].is_null(), "--ttl alone watches nobody: {v}");
    assert!(v["expires_ms"].as_u64().is_some());
    let t = v["port"].as_u64().unwrap() as u16;
    let o = r.run(&["alloc", "--range", "13700-13799", "--ttl", "1h", "--owner", &sleeper.id().to_string()]);
    let both = ports_of(&o)[0];
    let mut held = r.held();
    held.sort();
    let mut want = vec![p, t, both];
    want.sort();
    assert_eq!(held, want);
    wait_until("the TTL lease ends", Duration::from_secs(5), || !r.held().contains(&t));
    assert!(r.held().contains(&p));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    wait_until("the watched process's ports are freed", Duration::from_secs(5), || r.held().is_empty());
    let o = r.run(&["gc"]);
    assert_eq!(code(&o), 0);
}

#[test]
fn run_passes_ports_by_env_and_argv_and_returns_the_status() {
    let r = reg();
    let pm = r.env_cmd();
    let script =
        format!("echo \"argv $1 $2\"; echo \"env $WEB_PORT $DB_PORT ${{PORT:-none}}\"; {pm} list --json; exit 3");
    let o = r.run(&[
        "run",
        "--range",
        "13400-13449",
        "--port",
        "web",
        "--port",
        "db:udp",
        "--",
        "sh",
        "-c",
        &script,
        "x",
        "{web}",
        "db={db}!",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let argv: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let env: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(env[0], "env");
    assert_eq!(env[3], "none", "PORT only when there is exactly one port");
    assert_eq!(argv[1], env[1], "{{web}} is WEB_PORT");
    assert_eq!(argv[2], format!("db={}!", env[2]), "{{db}} inside an argument");
    let during: serde_json::Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n")).unwrap();
    let during = during.as_array().unwrap();
    assert_eq!(during.len(), 2, "both ports held while the command runs");
    assert!(during.iter().any(|i| i["protocols"] == "udp" && i["port"].as_u64().unwrap().to_string() == env[2]));
    assert!(r.held().is_empty(), "released when the command exited");

    // One port: PORT too; status 0; a hyphenated name.
    let o = r.run(&["run", "--range", "13400-13449", "--port", "my-svc", "--", "sh", "-c", "echo $MY_SVC_PORT $PORT"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Vec<String> = stdout(&o).split_whitespace().map(String::from).collect();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0], v[1]);

    // Killed by a signal: 128 + N. Not found: 127.
    let o = r.run(&["run", "--range", "13400-13449", "--port", "a", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&o), 128 + 9);
    let o = r.run(&["run", "--range", "13400-13449", "--port", "a", "--", "/nonexistent/cmd"]);
    assert_one_line_error(&o, 127, "not found");
    let o = r.run(&["run", "--range", "13400-13400", "--port", "a", "--port", "b", "--", "true"]);
    assert_one_line_error(&o, 3, "no free port");
    assert!(r.held().is_empty());
}

/// The fds a python3 child sees (the listdir fd excluded).
const PY_FDS: &str = r#"import os
def fds():
    out = []
    for f in os.listdir('/proc/self/fd'):
        try:
            os.readlink('/proc/self/fd/' + f)
            out.append(int(f))
        except OSError:
            pass
    return sorted(out)
"#;

#[test]
fn run_bind_hands_a_listening_socket_by_socket_activation() {
    let r = reg();
    let server = format!(
        "{PY_FDS}\
import socket, sys\n\
env = os.environ\n\
s = socket.socket(fileno=3)\n\
print(env['LISTEN_FDS'], env['LISTEN_PID'], os.getpid(), env['LISTEN_FDNAMES'], env['HTTP_PORT'], env['PORT'], s.getsockname()[1], fds(), flush=True)\n\
c, _ = s.accept()\n\
c.sendall(b'hello from fd 3')\n\
c.close()\n"
    );
    let baseline = Command::new("python3").arg("-c").arg(format!("{PY_FDS}print(fds())")).output().unwrap();
    assert_eq!(code(&baseline), 0, "python3 is needed: {}", stderr(&baseline));
    let base: HashSet<i32> = serde_json::from_str::<Vec<i32>>(stdout(&baseline).trim()).unwrap().into_iter().collect();

    let mut child = r
        .cmd(&["run", "--range", "13500-13549", "--bind", "http", "--", "python3", "-c", &server])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = read_line(&mut out);
    let (head, fds) = line.split_once('[').unwrap();
    let f: Vec<&str> = head.split_whitespace().collect();
    assert_eq!(f[0], "1", "LISTEN_FDS: {line}");
    assert_eq!(f[1], f[2], "LISTEN_PID is the command's own pid: {line}");
    assert_eq!(f[3], "http", "LISTEN_FDNAMES: {line}");
    assert_eq!(f[4], f[6], "HTTP_PORT is the socket's port: {line}");
    assert_eq!(f[5], f[6], "PORT too: {line}");
    let fds: HashSet<i32> = fds.trim_end_matches(']').split(',').map(|x| x.trim().parse().unwrap()).collect();
    let mut want = base.clone();
    want.insert(3);
    assert_eq!(fds, want, "the command gets fd 3 and nothing else of portmgr's");
    let port: u16 = f[6].parse().unwrap();
    assert!((13500..=13549).contains(&port));
    // The child never bound: the socket was listening before it started.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from fd 3");
    let st = child.wait().unwrap();
    assert!(st.success());
    assert!(r.held().is_empty());

    // Without --bind the command inherits none of portmgr's fds, and no LISTEN_* from us.
    let o = r
        .cmd(&[
            "run",
            "--range",
            "13500-13549",
            "--port",
            "p",
            "--",
            "python3",
            "-c",
            &format!("{PY_FDS}print(fds(), os.environ.get('LISTEN_FDS'))"),
        ])
        .env("LISTEN_FDS", "7")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = stdout(&o);
    let mut b: Vec<i32> = base.into_iter().collect();
    b.sort();
    let want = format!("{} None", serde_json::to_string(&b).unwrap().replace(',', ", "));
    assert_eq!(got.trim(), want);

    // Two binds: fds 3 and 4, names in order; UDP works too.
    let o = r
        .run(&["run", "--range", "13500-13549", "--bind", "a", "--bind", "b:udp", "--", "python3", "-c",
            "import os, socket\n\
a = socket.socket(fileno=3); b = socket.socket(fileno=4)\n\
print(os.environ['LISTEN_FDS'], os.environ['LISTEN_FDNAMES'], a.type == socket.SOCK_STREAM, b.type == socket.SOCK_DGRAM, a.getsockname()[1] == int(os.environ['A_PORT']), b.getsockname()[1] == int(os.environ['B_PORT']))"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "2 a:b True True True True");
}

#[test]
fn run_forwards_sigterm_and_releases() {
    let r = reg();
    let py = "import signal, sys, time\n\
signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(42)))\n\
print('ready', flush=True)\n\
time.sleep(30)\n\
print('not signalled', flush=True)\n";
    let mut child: Child = r
        .cmd(&["run", "--range", "13600-13649", "--port", "p", "--", "python3", "-c", py])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(read_line(&mut out), "ready");
    assert_eq!(r.held().len(), 1);
    let t0 = Instant::now();
    kill(child.id(), libc::SIGTERM);
    assert_eq!(read_line(&mut out), "got TERM");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(42), "portmgr exits with the command's status");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(r.held().is_empty());

    // A command that does not handle TERM dies of it: 128 + 15. HUP and INT too.
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGHUP, "HUP"), (libc::SIGINT, "INT")] {
        let mut child = r
            .cmd(&["run", "--range", "13600-13649", "--port", "p", "--", "sh", "-c", "echo ready; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        assert_eq!(read_line(&mut out), "ready");
        // `exec sleep` may not have happened yet; the signal kills sh or sleep alike.
        kill(child.id(), sig);
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(128 + sig), "{name}");
    }
    assert!(r.held().is_empty());
}

/// Ctrl-C at a terminal reaches the whole foreground process group, the command
/// included: portmgr must not send it a second time.
#[test]
fn run_does_not_double_a_terminal_ctrl_c() {
    let r = reg();
    let child = r#"import signal, sys, time
n = [0]
def h(*a):
    n[0] += 1
    print('INT', n[0], flush=True)
signal.signal(signal.SIGINT, h)
print('ready', flush=True)
t = time.time()
while time.time() - t < 1.5:
    time.sleep(0.05)
sys.exit(40 + n[0])
"#;
    let driver = r#"
import os, pty, sys, time
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
buf = b""
while b"ready" not in buf:
    buf += os.read(fd, 100)
os.write(fd, b"\x03")
try:
    while True:
        d = os.read(fd, 100)
        if not d:
            break
        buf += d
except OSError:
    pass
_, st = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(st), buf.decode(errors="replace").replace("\r", "").replace("\n", "|"))
"#;
    let o = Command::new("python3")
        .args(["-c", driver, BIN, "--registry"])
        .arg(&r.dir)
        .args(["run", "--range", "13900-13949", "--port", "p", "--", "python3", "-c", child])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("41 "), "exactly one SIGINT, status from the command: {out}");
    assert!(r.held().is_empty());
}

#[test]
fn run_leases_belong_to_the_run() {
    let r = reg();
    let mut child = r
        .cmd(&[
            "run",
            "--range",
            "13650-13699",
            "--bind",
            "web",
            "--port",
            "web",
            "--",
            "sh",
            "-c",
            "echo $WEB_PORT; read x",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = read_line(&mut out);
    let held = r.list_json();
    assert_eq!(held.len(), 1, "--bind NAME and --port NAME are one port: {held:?}");
    assert_eq!(held[0]["port"].as_u64().unwrap().to_string(), port);
    assert_eq!(held[0]["bound"], true);
    assert_eq!(held[0]["owner_pid"].as_u64().unwrap() as u32, child.id());
    // Another process may not take a live run's port away.
    let o = r.run(&["release", &port]);
    assert_one_line_error(&o, 8, "held by live process");
    // The run's command binds nothing itself, and the run's socket is its own: healthy.
    let o = r.run(&["health"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(r.held().is_empty());
}

#[test]
fn two_concurrent_shell_loops_get_no_duplicates() {
    let r = reg();
    let pm = r.env_cmd();
    let script = format!("for i in $(seq 200); do {pm} alloc --range 15000-15999 || exit 1; done; echo END; read x");
    let spawn =
        || Command::new("sh").arg("-c").arg(&script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut shells = vec![spawn(), spawn()];
    let readers: Vec<_> = shells
        .iter_mut()
        .map(|c| {
            let out = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut ports = Vec::new();
                for line in BufReader::new(out).lines() {
                    let line = line.unwrap();
                    if line == "END" {
                        break;
                    }
                    ports.push(line.parse::<u16>().unwrap());
                }
                ports
            })
        })
        .collect();
    let lists: Vec<Vec<u16>> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(lists[0].len(), 200);
    assert_eq!(lists[1].len(), 200);
    let all: HashSet<u16> = lists.iter().flatten().copied().collect();
    assert_eq!(all.len(), 400, "duplicates between or within the loops");
    assert_eq!(r.held().len(), 400, "all 400 held while both shells live");
    for mut s in shells {
        s.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(s.wait().unwrap().success());
    }
    assert!(r.held().is_empty());
}

#[test]
fn registry_flag_and_env_agree() {
    // PORTMGR_DIR and --registry name the same registry.
    let r = reg();
    let o = Command::new(BIN)
        .env("PORTMGR_DIR", &r.dir)
        .args(["alloc", "--range", "13800-13809", "--ttl", "1m"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let p = ports_of(&o)[0];
    assert_eq!(r.held(), vec![p]);
    // --registry is accepted after the command too.
    let o = Command::new(BIN).args(["list", "--json", "--registry"]).arg(&r.dir).output().unwrap();
    assert!(stdout(&o).contains(&format!("\"port\": {p}")), "{}", stdout(&o));
    let o = Command::new(BIN).env("PORTMGR_DIR", &r.dir).args(["release", &p.to_string()]).output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(r.held().is_empty());
    assert!(Path::new(&r.dir).join("registry.db").exists());
}

// ----------------------------------------------------------------------------------------
// Issue 11 (a hostile review). Exact ports in these tests are in 13950-13970, in this
// suite's range like the rest.

/// Item 13: a duration too large to hold says so and names the maximum (it is a duration,
/// just too long); every form the other tests use still parses.
#[test]
fn too_long_durations_name_the_maximum() {
    let r = reg();
    for args in [
        &["alloc", "--ttl", "100000000d", "--range", "13950-13959"][..],
        &["alloc", "--ttl", "18446744073709551615s", "--range", "13950-13959"],
        &["wait", "127.0.0.1:1", "--timeout", "36501d"],
    ] {
        let o = r.run(args);
        assert_one_line_error(&o, 2, "too long");
        assert!(stderr(&o).contains("36500d"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("not a duration"), "{args:?}: {}", stderr(&o));
    }
    // Parsed (by `wait --timeout`, which has no lower bound of its own, against a
    // listener that is ready at once).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    for ok in ["36500d", "1h30m", "1h 30m", "90s", "250ms", "12", "0.5", "5min", "2hrs", "3secs"] {
        let o = r.run(&["wait", &target, "--timeout", ok]);
        assert_eq!(code(&o), 0, "--timeout {ok}: {}", stderr(&o));
    }
    for bad in ["", "5x", "m", "-1s", "1.2.3s", "ms5", "1e3"] {
        assert_one_line_error(&r.run(&["alloc", &format!("--ttl={bad}")]), 2, "duration");
    }
}

/// Item 13: two `run` port names that differ but map to one environment variable say
/// so, naming the variable, instead of calling the second one "given twice".
#[test]
fn run_names_that_share_a_variable_name_the_variable() {
    let r = reg();
    let o = r.run(&["run", "--port", "a-b", "--port", "a.b", "--range", "13960-13969", "--", "true"]);
    assert_one_line_error(&o, 2, "A_B_PORT");
    assert!(stderr(&o).contains("\"a-b\"") && stderr(&o).contains("\"a.b\""), "{}", stderr(&o));
    assert!(r.held().is_empty());
}

/// The registry file's record of `port`: where its service name starts.
fn record_name_offset(port: u16) -> u64 {
    const RECORDS_OFF: u64 = 4096 + 4096 * 64 + 65536 / 8;
    RECORDS_OFF + u64::from(port) * 128 + 72
}

/// Item 12: human output escapes control characters of a damaged record's name (ANSI
/// escapes, newlines, carriage returns) instead of printing them raw: one helper for
/// every string field the plain output prints.
#[test]
fn plain_output_escapes_control_characters_of_a_damaged_record() {
    use std::os::unix::fs::FileExt;
    let r = reg();
    let port = 13970u16;
    let o = r.run(&["alloc", "--name", "abcdefghijklmnop", "--range", "13970-13970", "--ttl", "10m"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Damage the record in place: same length, so only the bytes change.
    let evil = b"\x1b[31mEVIL\nFAKE\r!";
    assert_eq!(evil.len(), 16);
    let f = std::fs::OpenOptions::new().write(true).open(r.dir.join("registry.db")).unwrap();
    f.write_all_at(evil, record_name_offset(port)).unwrap();
    drop(f);
    let rows = r.list_json();
    let raw = String::from_utf8_lossy(evil).into_owned();
    let shown = rows.iter().any(|i| i["name"] == raw.as_str());
    let cases: [(&[&str], bool); 5] = [
        (&["list"], true),
        (&["check", "13970"], true),
        (&["scan", "13970-13970"], true),
        (&["gc"], false),
        (&["health"], false),
    ];
    for (args, names_it) in cases {
        let o = r.run(args);
        let out = stdout(&o);
        assert!(!out.contains(['\x1b', '\r']), "{args:?} printed control characters raw: {out:?}");
        assert!(!out.lines().any(|l| l.starts_with("FAKE")), "{args:?} printed a raw newline: {out:?}");
        if shown && names_it {
            assert!(out.contains(r"\u{1b}[31mEVIL\nFAKE\r!"), "{args:?}: {out:?}");
        }
    }
    assert!(shown, "the damaged name is not listed at all: {rows:?}");
    r.run(&["release", "13970"]);
}

/// The core writes nothing to stderr; the CLI shows what the registry did on its own
/// (here a damaged file moved aside) on stderr, once, after the command's own output.
#[test]
fn registry_notices_reach_stderr() {
    let r = reg();
    let o = r.run(&["list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    std::fs::write(r.dir.join("registry.db"), b"not a registry").unwrap();
    let o = r.run(&["list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("moved it aside").count(), 1, "{err}");
    assert!(err.starts_with("portmgr: registry file"), "{err}");
}

// Issue 13.6: privileged ports said plainly. Ports 13870-13879.

/// `portmgr ARGS...` as uid/gid 65534 (nobody) on a registry directory owned by it.
/// Run `bin` (a copy of the binary nobody may execute, see `privileged_ports_said_plainly`)
/// as uid/gid 65534.
fn as_nobody(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .arg("--registry")
        .arg(dir)
        .args(args)
        .env("PORTMGR_DIR", dir.join("not-this-one"))
        .env_remove("PORTMGR_RANGE")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

/// For a user who may not bind below `net.ipv4.ip_unprivileged_port_start`, `check` and
/// `alloc --preferred P --required` say the port is privileged (exit 2), not in use; root
/// (CAP_NET_BIND_SERVICE) may bind the same port, so for root it is free.
#[test]
fn privileged_ports_said_plainly() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test drops to uid 65534, so it must start as root");
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A registry directory nobody owns (mode 0700) under a directory it may traverse.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The binary, copied where uid 65534 may execute it: the checkout (and so target/)
    // may sit under a directory only root can enter.
    let bin = tmp.path().join("portmgr");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("reg");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let root = reg();
    let check_json = |o: &Output| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))[0].clone()
    };

    // An unprivileged port free for everyone: never "privileged", for nobody or root.
    let o = as_nobody(&bin, &dir, &["check", "--json", "13870"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let row = check_json(&o);
    assert_eq!((row["free"].as_bool(), row["privileged"].as_bool()), (Some(true), Some(false)), "{row}");
    assert_eq!(row["state"], "free", "{row}");

    if start <= 1 {
        println!("note: net.ipv4.ip_unprivileged_port_start is {start}: no port is privileged here, only the unprivileged behaviour was checked");
        return;
    }
    // A privileged port that nothing holds (root's probe says free), highest first.
    let port = (1..start)
        .rev()
        .find(|p| check_json(&root.run(&["check", "--json", "--proto", "both", &p.to_string()]))["free"] == true)
        .expect("every port below ip_unprivileged_port_start is in use");
    let ps = port.to_string();

    // Nobody: privileged, exit 2, said in words, not "in use".
    let o = as_nobody(&bin, &dir, &["check", &ps]);
    assert_eq!(code(&o), 2, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with(&format!("{port} privileged: ")), "{out}");
    assert!(out.contains(&format!("ip_unprivileged_port_start = {start}")), "{out}");
    assert!(out.contains("CAP_NET_BIND_SERVICE"), "{out}");
    assert!(!out.contains("in use"), "{out}");
    let o = as_nobody(&bin, &dir, &["check", "--json", &ps]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let row = check_json(&o);
    assert_eq!(row["privileged"], true, "{row}");
    assert_eq!(row["bound"], false, "{row}");
    assert_eq!(row["free"], false, "{row}");
    assert_eq!(row["state"], "privileged", "{row}");
    // With a port in use beside it, "in use" (4) wins.
    let held = TcpListener::bind("0.0.0.0:13871").unwrap();
    let o = as_nobody(&bin, &dir, &["check", &ps, "13871"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    drop(held);

    let o = as_nobody(&bin, &dir, &["alloc", "--preferred", &ps, "--required", "--ttl", "1m"]);
    assert_one_line_error(&o, 2, &format!("port {port} is privileged for this user"));
    assert!(stderr(&o).contains(&format!("use a port from {start} up")), "{}", stderr(&o));
    assert!(!stderr(&o).contains("in use"), "{}", stderr(&o));
    // Not required: falls back to the strategy as before.
    let o = as_nobody(&bin, &dir, &["alloc", "--preferred", &ps, "--range", "13872-13879", "--ttl", "1m"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got = ports_of(&o);
    assert!(got.len() == 1 && (13872..=13879).contains(&got[0]), "{got:?}");
    assert_eq!(code(&as_nobody(&bin, &dir, &["release", &got[0].to_string()])), 0);

    // Root may bind it: free, and allocated as preferred.
    let o = root.run(&["check", "--json", &ps]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let row = check_json(&o);
    assert_eq!((row["privileged"].as_bool(), row["state"].as_str()), (Some(false), Some("free")), "{row}");
    let o = root.run(&["alloc", "--preferred", &ps, "--required", "--ttl", "1m"]);
    assert_eq!((code(&o), ports_of(&o)), (0, vec![port]), "{}", stderr(&o));
    assert_eq!(code(&root.run(&["release", &ps])), 0);
}

/// Issue 13.1: `portmgr reserved add/remove/list`, through the real binary, and
/// `alloc --exclude` (ports 13880-13899).
#[test]
fn reserved_ports_through_the_command() {
    let r = reg();
    let o = r.run(&["reserved", "add", "13880", "13882-13884,13886", "--reason", "monitoring"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "13880        monitoring\n13882-13884  monitoring\n13886        monitoring\n");
    let o = r.run(&["reserved", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let spans: Vec<(u64, u64)> = v.as_array().unwrap().iter().map(|e| (e["start"].as_u64().unwrap(), e["end"].as_u64().unwrap())).collect();
    assert_eq!(spans, vec![(13880, 13880), (13882, 13884), (13886, 13886)]);
    assert!(v.as_array().unwrap().iter().all(|e| e["reason"] == "monitoring" && e["created_ms"].as_u64().unwrap() > 0));

    // Every alloc skips them; a required one fails with status 4 naming the reason.
    let mut got = Vec::new();
    for _ in 0..2 {
        let o = r.run(&["alloc", "--range", "13880-13886", "--ttl", "1m"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        got.push(stdout(&o).trim().parse::<u16>().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, vec![13881, 13885]);
    let o = r.run(&["alloc", "--range", "13880-13886", "--ttl", "1m"]);
    assert_eq!(code(&o), 3, "only 13881 and 13885 are free of 13880-13886: {}", stdout(&o));
    let o = r.run(&["alloc", "--preferred", "13883", "--required", "--ttl", "1m"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("13882-13884") && stderr(&o).contains("monitoring"), "{}", stderr(&o));

    // A hostile reason is refused (status 2), a long one too.
    for bad in ["two\nlines", "esc\u{1b}[2J", &"x".repeat(300)] {
        let o = r.run(&["reserved", "add", "13890", "--reason", bad]);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
    // Reserving a leased port keeps the lease, and says so.
    let o = r.run(&["alloc", "--preferred", "13890", "--required", "--ttl", "1m"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = r.run(&["reserved", "add", "13890"]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("port 13890 stays leased"), "{}", stderr(&o));
    assert!(r.held().contains(&13890));

    // remove: a part of a range; an unknown one is status 5.
    let o = r.run(&["reserved", "remove", "13883"]);
    assert_eq!((code(&o), stdout(&o)), (0, "13883        monitoring\n".to_string()), "{}", stderr(&o));
    let o = r.run(&["reserved", "remove", "13899"]);
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("no reservation covers 13899"), "{}", stderr(&o));
    let o = r.run(&["reserved", "add", "0"]);
    assert_eq!(code(&o), 2);
    let o = r.run(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["reserved"], 5, "{st}");

    // alloc --exclude, with a range and with the pool.
    let o = r.run(&["alloc", "--range", "13891-13895", "--strategy", "sequential", "--exclude", "13891,13892-13893", "--ttl", "1m"]);
    assert_eq!((code(&o), stdout(&o).trim()), (0, "13894"), "{}", stderr(&o));
    let o = r.run(&["alloc", "--range", "13891-13892", "--exclude", "13891", "--exclude", "13892"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = r.run(&["alloc", "--exclude", "x-y"]);
    assert_eq!(code(&o), 2);
}

#[path = "../../../tests/common/hostile.rs"]
mod hostile;

/// Issue 13.7: every hostile reservation reason is refused (status 2) or stored and shown
/// harmlessly: one line in `reserved list`, the same string back from `--json`, one line
/// in the error of a required allocation; every hostile internal-port list and port span
/// is refused (ports 13896-13899).
#[test]
fn hostile_reasons_port_maps_and_spans() {
    let r = reg();
    let mut stored = 0;
    for v in hostile::hostile_values() {
        if v.contains('\0') {
            continue; // cannot be an argument
        }
        let o = r.run(&["reserved", "add", "13896", "--reason", &v]);
        match code(&o) {
            2 => {
                assert_eq!(stderr(&o).lines().count(), 1, "{v:?}: {}", stderr(&o));
                continue;
            }
            0 => stored += 1,
            c => panic!("{v:?}: status {c}: {}", stderr(&o)),
        }
        let plain = stdout(&r.run(&["reserved", "list"]));
        assert_eq!(plain.lines().count(), 1, "{v:?}: {plain:?}");
        let json: serde_json::Value = serde_json::from_slice(&r.run(&["reserved", "list", "--json"]).stdout).unwrap();
        let want = if v.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(v.clone()) };
        assert_eq!(json[0]["reason"], want, "{v:?}");
        let o = r.run(&["alloc", "--preferred", "13896", "--required", "--ttl", "1m"]);
        assert_eq!(code(&o), 4);
        assert_eq!(stderr(&o).lines().count(), 1, "{v:?}: {}", stderr(&o));
        r.run(&["reserved", "remove", "13896"]);
    }
    assert!(stored > 20, "only {stored} hostile reasons were stored: the test would not see their output");
    for v in hostile::hostile_values() {
        if v.contains('\0') {
            continue;
        }
        let o = r.run(&["alloc", "--name", "m", "--map", &v, "--range", "13897-13899"]);
        assert_eq!(code(&o), 2, "--map {v:?}: {}", stdout(&o));
        let o = r.run(&["reserved", "add", &v]);
        assert_eq!(code(&o), 2, "reserved add {v:?}");
        let o = r.run(&["alloc", "--exclude", &v, "--range", "13897-13899", "--ttl", "1m"]);
        assert_eq!(code(&o), 2, "--exclude {v:?}: {}", stdout(&o));
    }
    assert!(r.held().is_empty());
    assert!(!r.dir.join("pwned").exists() && !std::path::Path::new("pwned").exists());
}
