//! `portmgr serve`, the real binary, talked to by real clients: an HTTP client (ureq) for
//! every endpoint and error, curl run as another user, raw Unix-socket clients of the
//! portserver protocol, signals, restarts and socket activation.
//!
//! Every server gets its own registry directory, listens on 127.0.0.1 port 0 (the kernel
//! picks) and hands out ports from 64000-64999 (PORTMGR_RANGE and explicit ranges; outside
//! the kernel's ephemeral range); the abstract portserver names carry the test's pid.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

struct Server {
    child: Child,
    url: String,
    portserver: Option<String>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `portmgr serve` on `dir` with `args`; wait for its listener lines.
fn start_in(dir: &Path, range: &str, args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .arg("--registry")
        .arg(dir)
        .arg("serve")
        .args(args)
        .env("PORTMGR_RANGE", range)
        .env("PORTMGR_TYPES", dir.with_extension("types.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut url, mut portserver) = (String::new(), None);
    let want_ps = args.contains(&"--portserver");
    let want_http = args.contains(&"--http");
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server ended before printing its listeners");
        if let Some(u) = line.trim().strip_prefix("http ") {
            url = u.to_string();
        } else if let Some(p) = line.trim().strip_prefix("portserver ") {
            portserver = Some(p.to_string());
        }
        if (!want_http || !url.is_empty()) && (!want_ps || portserver.is_some()) {
            break;
        }
    }
    Server { child, url, portserver, dir: dir.to_path_buf(), _tmp: None }
}

/// A server on a fresh registry, with a types config (`t-web` 64900-64909).
fn start(args: &[&str]) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reg");
    std::fs::write(dir.with_extension("types.json"), r#"{"types": {"t-web": {"range": "64900-64909"}}}"#).unwrap();
    let mut s = start_in(&dir, "64000-64499", args);
    s._tmp = Some(tmp);
    s
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// `(status, body as JSON or as a string)`.
fn call(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (u16, Value) {
    let a = agent();
    let mut resp = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call().unwrap()
        }
        (_, b) => {
            let mut r = a.post(url).header("content-type", "application/json");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match b {
                Some(b) => r.send(b).unwrap(),
                None => r.send_empty().unwrap(),
            }
        }
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    call("GET", &format!("{}{path}", s.url), None, &[])
}
fn post(s: &Server, path: &str, body: &str) -> (u16, Value) {
    call("POST", &format!("{}{path}", s.url), Some(body), &[])
}

fn held(dir: &Path) -> Vec<u16> {
    let o = Command::new(BIN).arg("--registry").arg(dir).args(["list", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap().iter().map(|i| i["port"].as_u64().unwrap() as u16).collect()
}

/// The error shape: `{"success": false, "error": {"code", "kind", "message"}}`.
fn assert_error(r: &(u16, Value), status: u16, kind: &str) {
    assert_eq!(r.0, status, "{}", r.1);
    assert_eq!(r.1["success"], false, "{}", r.1);
    assert_eq!(r.1["error"]["kind"], kind, "{}", r.1);
    assert!(r.1["error"]["code"].as_u64().is_some() && !r.1["error"]["message"].as_str().unwrap().is_empty());
}

#[test]
fn every_rest_endpoint_and_its_errors() {
    let s = start(&["--http", "127.0.0.1:0"]);
    // Allocate: a TTL lease by default (the heartbeat timeout), a typed one, a required one.
    let r = post(&s, "/ports/allocate", r#"{"service_name": "web"}"#);
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["success"], true);
    let web = r.1["allocation"].clone();
    let port = web["port"].as_u64().unwrap() as u16;
    assert!((64000..=64499).contains(&port));
    let id = web["allocation_id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok(), "allocation_id is a string of the lease id: {web}");
    for k in ["allocated_at", "last_heartbeat", "expires_at"] {
        let t = web[k].as_str().unwrap();
        assert!(t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{k}: {t}");
    }
    assert_eq!((web["status"].as_str(), web["service_name"].as_str()), (Some("active"), Some("web")));
    assert!(web["process_id"].is_null() && !web["host"].as_str().unwrap().is_empty());
    assert!(held(&s.dir).contains(&port), "an ordinary registry lease");
    let r = post(&s, "/ports/allocate", r#"{"service_name": "api", "service_type": "t-web", "ttl_seconds": 300}"#);
    assert_eq!(r.0, 200, "{}", r.1);
    let api_port = r.1["allocation"]["port"].as_u64().unwrap();
    assert!((64900..=64909).contains(&api_port) && r.1["allocation"]["service_type"] == "t-web");
    let me = std::process::id();
    let r = post(&s, "/ports/allocate", &format!(r#"{{"service_name": "pinned", "preferred_port": 64450, "required": true, "process_id": {me}}}"#));
    assert_eq!((r.0, r.1["allocation"]["port"].as_u64(), r.1["allocation"]["process_id"].as_u64()), (200, Some(64450), Some(u64::from(me))), "{}", r.1);
    assert!(r.1["allocation"]["expires_at"].is_null());
    // Errors, never a 500 for bad input.
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "web"}"#), 409, "in use");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "preferred_port": 64450, "required": true}"#), 409, "in use");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "required": true}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "preferred_port": 70000}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "service_type": "nope"}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "ttl_seconds": 0.001}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "ttl_seconds": -1}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "a\u0007b"}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"service_name": "x", "process_id": 999999999}"#), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", "{not json"), 400, "invalid argument");
    assert_error(&post(&s, "/ports/allocate", r#"{"no_name": 1}"#), 400, "invalid argument");
    let big = format!(r#"{{"service_name": "{}"}}"#, "x".repeat(100_000));
    assert_error(&post(&s, "/ports/allocate", &big), 413, "body too large");
    assert_error(&call("POST", &format!("{}/ports/allocate", s.url), None, &[]), 400, "invalid argument");
    // Lookups.
    let r = get(&s, "/ports/directory");
    assert_eq!(r.0, 200);
    let names: Vec<&String> = r.1.as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["api", "pinned", "web"]);
    assert_eq!(r.1["web"]["port"], port);
    assert_eq!(get(&s, "/ports/service/web").1["allocation"]["allocation_id"], id.as_str());
    assert_eq!(get(&s, &format!("/ports/port/{port}")).1["allocation"]["service_name"], "web");
    let r = get(&s, "/ports/type/t-web");
    assert_eq!(r.1["allocations"].as_array().unwrap().len(), 1, "{}", r.1);
    assert_error(&get(&s, "/ports/service/nobody"), 404, "not found");
    assert_error(&get(&s, "/ports/port/64499"), 404, "not found");
    assert_error(&get(&s, "/ports/port/0"), 400, "invalid argument");
    assert_error(&get(&s, "/ports/port/x"), 400, "invalid argument");
    assert_error(&get(&s, "/ports/type/nope"), 400, "invalid argument");
    assert_error(&get(&s, "/nowhere"), 404, "no such endpoint");
    // Views.
    let ov = get(&s, "/ports/overview").1;
    assert_eq!(ov["ports"][port.to_string()], "web");
    assert_eq!(ov["by_type"]["t-web"], json!(["api"]));
    let st = get(&s, "/ports/stats").1;
    assert_eq!(st["held"], 3);
    assert!(st["types"].as_array().unwrap().iter().any(|t| t["type"] == "t-web" && t["active"] == 1));
    assert_eq!(get(&s, "/ports/health").1["ok"], true);
    let ranges = get(&s, "/ports/ranges").1;
    assert_eq!(ranges["pool"], json!([64000, 64499]));
    assert!(ranges["types"].as_array().unwrap().iter().any(|t| t["type"] == "t-web" && t["range"] == json!([64900, 64909])));
    // Heartbeat extends the TTL; release frees; both 404 once gone.
    let before = get(&s, "/ports/service/web").1["allocation"]["expires_at"].clone();
    std::thread::sleep(Duration::from_millis(20));
    let r = post(&s, &format!("/ports/heartbeat/{id}"), "");
    assert_eq!(r.0, 200, "{}", r.1);
    assert!(r.1["allocation"]["expires_at"].as_str() > before.as_str(), "{} vs {before}", r.1);
    assert_error(&post(&s, "/ports/heartbeat/999999", ""), 404, "not found");
    assert_error(&post(&s, "/ports/heartbeat/abc", ""), 404, "not found");
    let r = post(&s, "/ports/release", &format!(r#"{{"allocation_id": "{id}"}}"#));
    assert_eq!((r.0, r.1["released_ports"].clone()), (200, json!([port])), "{}", r.1);
    assert!(!held(&s.dir).contains(&port));
    assert_error(&post(&s, "/ports/release", &format!(r#"{{"allocation_id": "{id}"}}"#)), 404, "not found");
    assert_error(&post(&s, "/ports/release", r#"{"allocation_id": 7}"#), 400, "invalid argument");
    // Cleanup frees an expired TTL allocation.
    let r = post(&s, "/ports/allocate", r#"{"service_name": "short", "ttl_seconds": 1}"#);
    let short = r.1["allocation"]["port"].as_u64().unwrap() as u16;
    std::thread::sleep(Duration::from_millis(1200));
    let r = post(&s, "/ports/cleanup", "");
    assert_eq!(r.0, 200);
    assert!(r.1["freed_ports"].as_array().unwrap().contains(&json!(short)), "{}", r.1);
    // The gRPC-style port server.
    let (st, body) = get(&s, "/get");
    let p: u16 = match body {
        Value::Number(n) => n.as_u64().unwrap() as u16,
        other => panic!("{other}"),
    };
    assert_eq!(st, 200);
    assert!(held(&s.dir).contains(&p));
    assert!(get(&s, "/dump").1[p.to_string()]["expires_at"].is_string());
    assert_eq!(get(&s, &format!("/drop/{p}")).0, 200);
    assert!(!held(&s.dir).contains(&p));
    assert_error(&get(&s, &format!("/drop/{p}")), 404, "not found");
    assert!(get(&s, "/version_number").1.is_number());
    // The served OpenAPI document is the committed one.
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../portmgr-serve/openapi.json")).unwrap()).unwrap();
    assert_eq!(get(&s, "/openapi.json").1, committed, "openapi.json is stale: run `portmgr serve --openapi > crates/portmgr-serve/openapi.json`");
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly_and_a_restart_keeps_every_allocation() {
    let s = start(&["--http", "127.0.0.1:0"]);
    let r = post(&s, "/ports/allocate", r#"{"service_name": "keep", "ttl_seconds": 600}"#);
    let port = r.1["allocation"]["port"].as_u64().unwrap();
    let dir = s.dir.clone();
    let mut s = s;
    for (sig, again) in [(libc::SIGTERM, true), (libc::SIGINT, false)] {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(s.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "signal {sig} did not stop the server");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "signal {sig}");
        if again {
            assert!(held(&dir).contains(&(port as u16)), "stopping the server lost an allocation");
            let tmp = s._tmp.take();
            s = start_in(&dir, "64000-64499", &["--http", "127.0.0.1:0"]);
            s._tmp = tmp;
            let r = get(&s, "/ports/service/keep");
            assert_eq!(r.1["allocation"]["port"], port, "{}", r.1);
        }
    }
}

/// Another local user's requests are refused with 403 and change nothing; the same for
/// the portserver protocol (the connection closes without a port).
#[test]
fn another_local_user_is_refused_and_changes_nothing() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test runs clients as uid 65534, so it must start as root");
    let name = format!("@portmgr-test-{}-other", std::process::id());
    let s = start(&["--http", "127.0.0.1:0", "--portserver", &name]);
    let before = held(&s.dir);
    for (method, path, body) in [
        ("POST", "/ports/allocate", r#"{"service_name": "intruder"}"#),
        ("POST", "/ports/cleanup", ""),
        ("GET", "/ports/directory", ""),
        ("GET", "/get", ""),
    ] {
        let mut c = Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}", "-X", method, "-H", "content-type: application/json"]);
        if !body.is_empty() {
            c.args(["-d", body]);
        }
        let o = c.arg(format!("{}{path}", s.url)).uid(65534).gid(65534).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        assert_eq!(code, "403", "{method} {path}: {out} {}", String::from_utf8_lossy(&o.stderr));
        assert!(body.contains("\"forbidden\""), "{body}");
    }
    // The portserver: no port for another user.
    let py = format!(
        "import socket,os\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0{}')\ntry:\n  s.sendall(b'%d\\n'%os.getpid())\n  print(repr(s.recv(100)))\nexcept (ConnectionResetError, BrokenPipeError):\n  print(repr(b''))",
        &name[1..]
    );
    let o = Command::new("python3").args(["-c", &py]).uid(65534).gid(65534).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "b''", "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(held(&s.dir), before, "a refused request changed the registry");
    // The server's own user still gets through.
    assert_eq!(post(&s, "/ports/allocate", r#"{"service_name": "mine"}"#).0, 200);
}

#[test]
fn a_token_is_required_when_given_and_non_loopback_needs_one() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // A token file others can read is refused; so is a non-loopback address without one.
    let o = Command::new(BIN).args(["--registry"]).arg(tmp.path().join("r")).args(["serve", "--http", "127.0.0.1:0", "--token-file"]).arg(&token).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("chmod 600"));
    let o = Command::new(BIN).args(["--registry"]).arg(tmp.path().join("r")).args(["serve", "--http", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(BIN).args(["--registry"]).arg(tmp.path().join("r")).arg("serve").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "no listener is a usage error");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let s = start(&["--http", "127.0.0.1:0", "--token-file", token.to_str().unwrap()]);
    let url = format!("{}/ports/directory", s.url);
    let r = call("GET", &url, None, &[]);
    assert_error(&r, 401, "unauthorized");
    assert_error(&call("GET", &url, None, &[("authorization", "Bearer wrong")]), 401, "unauthorized");
    assert_error(&call("GET", &url, None, &[("authorization", "s3cret-token")]), 401, "unauthorized");
    assert_eq!(call("GET", &url, None, &[("authorization", "Bearer s3cret-token")]).0, 200);
}

#[test]
fn each_client_is_rate_limited() {
    let s = start(&["--http", "127.0.0.1:0", "--rate-limit", "5"]);
    let statuses: Vec<u16> = (0..40).map(|_| get(&s, "/ports/directory").0).collect();
    assert!(statuses.iter().filter(|&&c| c == 429).count() >= 20, "{statuses:?}");
    assert_eq!(statuses[0], 200);
    let r = get(&s, "/ports/directory");
    assert_error(&r, 429, "rate limited");
}

/// portpicker's protocol, raw: pid in, port out, held while that pid lives.
#[test]
fn the_portserver_protocol_leases_to_the_clients_pid() {
    let name = format!("@portmgr-test-{}-ps", std::process::id());
    let path_tmp = tempfile::tempdir().unwrap();
    let path = path_tmp.path().join("ps.sock");
    let s = start(&["--portserver", &name, "--portserver", path.to_str().unwrap()]);
    assert!(s.portserver.is_some());
    // A child process asks, then sleeps: its port is held until it dies (SIGKILL).
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let ask = |addr: &str, pid: u32| -> String {
        use std::os::linux::net::SocketAddrExt;
        let mut c = match addr.strip_prefix('@') {
            Some(n) => {
                let a = std::os::unix::net::SocketAddr::from_abstract_name(n).unwrap();
                std::os::unix::net::UnixStream::connect_addr(&a).unwrap()
            }
            None => std::os::unix::net::UnixStream::connect(addr).unwrap(),
        };
        c.write_all(format!("{pid}\n").as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let a = ask(&name, sleeper.id());
    let b = ask(path.to_str().unwrap(), sleeper.id());
    let (pa, pb): (u16, u16) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
    assert!(a.ends_with('\n') && pa != pb && (64000..=64499).contains(&pa));
    let held_now = held(&s.dir);
    assert!(held_now.contains(&pa) && held_now.contains(&pb));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let after = held(&s.dir);
    assert!(!after.contains(&pa) && !after.contains(&pb), "the dead client's ports are still held: {after:?}");
    // Garbage gets no port.
    assert_eq!(ask(&name, 0), "");
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.write_all(b"not-a-pid\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert_eq!(out, "");
}

/// Ports from `/get` and from the library at the same time never collide.
#[test]
fn get_and_the_library_at_once_never_collide() {
    let s = start(&["--http", "127.0.0.1:0"]);
    let url = format!("{}/get", s.url);
    let http = std::thread::spawn(move || (0..150).map(|_| call("GET", &url, None, &[]).1.as_u64().unwrap() as u16).collect::<Vec<u16>>());
    let reg = portmgr::Registry::open(&s.dir).unwrap();
    let lib: Vec<portmgr::Lease> =
        (0..150).map(|_| reg.allocate(&portmgr::Request::new().range(portmgr::PortRange::new(64000, 64499).unwrap())).unwrap()).collect();
    let mut all: Vec<u16> = http.join().unwrap();
    all.extend(lib.iter().map(|l| l.port()));
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 300, "duplicates between /get and the library");
}

/// systemd socket activation: the listening socket comes as fd 3 (LISTEN_FDS=1).
#[test]
fn socket_activation_serves_the_passed_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --registry \"$1\" serve", BIN])
        .arg(tmp.path().join("reg"))
        .env("PORTMGR_RANGE", "64500-64599")
        .stdout(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; fd is open in the parent. dup2 onto
    // itself keeps close-on-exec, so an fd that already is 3 has it cleared instead.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(l);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("http http://{addr}"));
    let r = call("GET", &format!("http://{addr}/ports/directory"), None, &[]);
    assert_eq!(r.0, 200, "{}", r.1);
    let _ = child.kill();
    let _ = child.wait();
}

/// CORS headers only for the `--cors-origin` origins.
#[test]
fn cors_headers_only_for_the_given_origin() {
    let s = start(&["--http", "127.0.0.1:0", "--cors-origin", "http://dash.localhost:3000"]);
    let a = agent();
    let url = format!("{}/ports/directory", s.url);
    let r = a.get(&url).header("origin", "http://dash.localhost:3000").call().unwrap();
    assert_eq!(
        r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string()),
        Some("http://dash.localhost:3000".into())
    );
    let r = a.get(&url).header("origin", "http://evil.localhost").call().unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let plain = start(&["--http", "127.0.0.1:0"]);
    let r = a.get(&format!("{}/ports/directory", plain.url)).header("origin", "http://dash.localhost:3000").call().unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no --cors-origin, no CORS headers");
}
