//! Issue 18 through the real binary: `portmgr run --bind NAME --addr A --addr B` (one
//! port, every address, LISTEN_FDS), `--workers`, and the Unix-socket zero-port mode
//! (`--unix`, `--bind-unix`) with a real redis-server. Ports 29100-29199; each test has
//! its own registry directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

/// A server for LISTEN_FDS sockets: prints the port and the fd names, then answers every
/// connection on every socket with the address it was accepted on.
const SERVER: &str = r#"
import os, socket, sys, threading
n = int(os.environ["LISTEN_FDS"])
names = os.environ["LISTEN_FDNAMES"].split(":")
socks = [socket.socket(fileno=3 + i) for i in range(n)]
print(os.environ["WEB_PORT"], ",".join(names), flush=True)
def serve(s):
    while True:
        c, _ = s.accept()
        c.sendall(("hello from " + s.getsockname()[0] + "\n").encode())
        c.close()
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
sys.stdin.readline()
"#;

fn has_v6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn one_port_answers_on_127_0_0_1_and_1_through_run_bind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["--registry".to_string(), tmp.path().join("reg").display().to_string(), "run".into()];
    args.extend(["--bind", "web", "--range", "29100-29149", "--addr", "127.0.0.1"].map(String::from));
    let v6 = has_v6();
    if v6 {
        args.extend(["--addr", "::1"].map(String::from));
    }
    args.extend(["--", "python3", "-c", SERVER].map(String::from));
    let mut child = Command::new(BIN).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let mut words = line.split_whitespace();
    let port: u16 = words.next().unwrap().parse().unwrap();
    let names = words.next().unwrap();
    assert!((29100..=29149).contains(&port));
    assert_eq!(names, if v6 { "web,web" } else { "web" });
    let mut answers = Vec::new();
    for host in if v6 { vec!["127.0.0.1", "::1"] } else { vec!["127.0.0.1"] } {
        let mut c = TcpStream::connect((host, port)).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        answers.push(s.trim().to_string());
    }
    assert_eq!(answers[0], "hello from 127.0.0.1");
    if v6 {
        assert_eq!(answers[1], "hello from ::1");
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn workers_get_one_socket_each_on_one_port() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("--registry")
        .arg(tmp.path().join("reg"))
        .args(["run", "--bind", "web", "--range", "29150-29169", "--addr", "127.0.0.1", "--workers", "3", "--"])
        .args(["python3", "-c", "import os,socket; s=[socket.socket(fileno=3+i) for i in range(int(os.environ['LISTEN_FDS']))]; print(len(s), len({x.getsockname() for x in s}), os.environ['LISTEN_FDNAMES'])"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3 1 web:web:web");
    let o = Command::new(BIN).arg("--registry").arg(tmp.path().join("reg")).args(["run", "--port", "x", "--addr", "127.0.0.1", "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "--addr without --bind is a usage error");
}

#[test]
fn a_real_redis_answers_over_a_unix_socket_path_removed_when_it_exits() {
    let redis = Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ensure-deb.sh")).args(["redis-server", "redis-server"]).output().unwrap();
    assert!(redis.status.success(), "redis-server is needed: {}", String::from_utf8_lossy(&redis.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let reg = tmp.path().join("r");
    let mut child = Command::new(BIN)
        .arg("--registry")
        .arg(&reg)
        .args(["run", "--unix", "redis", "--", "sh", "-c"])
        .arg("echo \"$REDIS_SOCKET\"; exec redis-server --port 0 --unixsocket {redis} --save '' --appendonly no --daemonize no --loglevel warning")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut path = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut path).unwrap();
    let path = path.trim().to_string();
    assert!(path.starts_with(&reg.join("sockets").display().to_string()) && path.contains("redis-"), "{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        match UnixStream::connect(&path) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("redis never listened on {path}: {e}"),
        }
    };
    c.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    // SIGTERM to portmgr reaches redis; the path goes with it.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert!(!std::path::Path::new(&path).exists(), "the socket path outlived its holder");
}

#[test]
fn bind_unix_passes_a_listening_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("--registry")
        .arg(tmp.path().join("reg"))
        .args(["run", "--bind-unix", "api", "--"])
        .args(["python3", "-c", "import os,socket; s=socket.socket(fileno=3); print(os.environ['LISTEN_FDS'], os.environ['LISTEN_FDNAMES'], s.getsockname() == os.environ['API_SOCKET'], s.family == socket.AF_UNIX)"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1 api True True");
    assert_eq!(std::fs::read_dir(tmp.path().join("reg/sockets")).unwrap().count(), 0);
}
