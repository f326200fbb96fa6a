//! The nginx export against a real nginx: the per-service directory passes `nginx -t`,
//! requests through nginx to `/NAME/` and `/NAME/health` reach the service's backend on
//! its allocated port, WebSocket upgrades pass, a reload picks up a new service, and a
//! configuration nginx rejects is rolled back.
//!
//! nginx is installed by scripts/ensure-nginx.sh when missing (Debian package); when it
//! cannot be had the test fails with the script's message, never skips.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use portmgr::mapping::*;
use portmgr::probe;

fn ensure_nginx() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-nginx.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("running ensure-nginx.sh");
    assert!(
        out.status.success(),
        "nginx is needed for this test and {} could not provide it (see its message above)",
        script.display()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().expect("ensure-nginx.sh printed no path").trim().to_string()
}

/// A tiny HTTP backend: answers every request with its request line and headers; answers
/// a WebSocket upgrade with 101 and then echoes bytes.
fn backend(name: &'static str, port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("backend {name} on {port}: {e}"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_lowercase();
                if head.contains("\r\nupgrade: websocket") {
                    c.write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                    )
                    .unwrap();
                    loop {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if c.write_all(&b[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                let body = format!("backend {name} saw\n{head}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes());
            });
        }
    });
}

/// GET `path` from 127.0.0.1:`port`; returns (status line, headers lower-cased, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// The nginx master, stopped (SIGQUIT, then SIGKILL) when dropped.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn real_nginx_routes_to_allocated_ports() {
    let nginx = ensure_nginx();
    let (_d, reg) = temp_registry();
    let svc = Services::with_types(reg, TypeTable::builtin());
    let api = svc.allocate(&req_in(20100, 100).name("api"), &ServiceSpec::typed("rest-api")).unwrap();
    let ws = svc.allocate(&req_in(20100, 100).name("chat.ws"), &ServiceSpec::typed("websocket")).unwrap();
    let front = svc.allocate(&req_in(20100, 100).name("nginx"), &ServiceSpec::new()).unwrap();
    backend("api", api.port());
    backend("chat", ws.port());

    let tmp = tempfile::tempdir().unwrap();
    let prefix: PathBuf = tmp.path().to_path_buf();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // nginx's workers drop to nobody: let them reach the prefix.
        std::fs::set_permissions(&prefix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let services_dir = prefix.join("services");
    let conf = prefix.join("nginx.conf");
    let p = prefix.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;
{user}worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location /taken/ {{ return 204; }}
        include {p}/services/*.conf;
    }}
}}
",
            user = if root { "user nobody nogroup;\n" } else { "" },
            port = front.port(),
        ),
    )
    .unwrap();
    let base: Vec<String> = vec![
        nginx.clone(),
        "-e".into(),
        format!("{p}/error.log"),
        "-p".into(),
        format!("{p}/"),
        "-c".into(),
        conf.display().to_string(),
    ];
    let with =
        |extra: &[&str]| -> Vec<String> { base.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect() };

    // Export and test; nginx is not running yet, so no reload.
    let deploy = NginxDeploy { dir: services_dir.clone(), test_command: Some(with(&["-t"])), reload_command: None };
    let done = deploy.apply(&svc.list_named().unwrap()).unwrap();
    assert!(done.tested);
    assert_eq!(done.files, vec!["api.conf", "chat.ws.conf", "nginx.conf"]);
    // The test really ran nginx -t on it: run it again ourselves and look at its words.
    let t = Command::new(&base[0]).args(&with(&["-t"])[1..]).output().unwrap();
    let t_err = String::from_utf8_lossy(&t.stderr);
    assert!(t.status.success() && t_err.contains("test is successful"), "nginx -t: {t_err}");

    let server = Command::new(&base[0]).args(&base[1..]).stdin(Stdio::null()).spawn().unwrap();
    let _nginx = Nginx { child: server };
    let addr: SocketAddr = format!("127.0.0.1:{}", front.port()).parse().unwrap();
    wait_for(|| probe::accepts(addr, Duration::from_millis(200)), "nginx to listen");

    // /NAME/ reaches the backend on the allocated port, prefix stripped, headers set.
    let (status, headers, body) = get(front.port(), "/api/hello?x=1");
    assert!(status.contains("200"), "{status}\n{headers}\n{body}");
    assert!(body.starts_with("backend api saw\nget /hello?x=1 http/1.1"), "{body}");
    assert!(body.contains("x-forwarded-prefix: /api"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(headers.contains("x-content-type-options: nosniff"), "{headers}");
    assert!(headers.contains("x-frame-options: sameorigin"), "{headers}");
    // /NAME/health reaches the backend's /health.
    let (status, _, body) = get(front.port(), "/api/health");
    assert!(status.contains("200"), "{status}");
    assert!(body.starts_with("backend api saw\nget /health http/1.1"), "{body}");
    let (_, _, body) = get(front.port(), "/chat.ws/");
    assert!(body.starts_with("backend chat saw\nget / http/1.1"), "{body}");
    // /NAME redirects to /NAME/.
    let (status, headers, _) = get(front.port(), "/api");
    assert!(status.contains("308") && headers.contains("/api/"), "{status}\n{headers}");

    // A WebSocket upgrade passes through, and bytes flow both ways.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /chat.ws/socket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "nginx closed the upgrade: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s.write_all(b"ping over websocket").unwrap();
    let mut echo = vec![0u8; 19];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping over websocket");
    drop(s);

    // A new service: exported, tested, reloaded; nginx routes to it.
    let late = svc.allocate(&req_in(20100, 100).name("late"), &ServiceSpec::new()).unwrap();
    backend("late", late.port());
    let deploy = NginxDeploy {
        dir: services_dir.clone(),
        test_command: Some(with(&["-t"])),
        reload_command: Some(with(&["-s", "reload"])),
    };
    let done = deploy.apply(&svc.list_named().unwrap()).unwrap();
    assert!(done.tested && done.reloaded);
    wait_for(|| get(front.port(), "/late/x").2.starts_with("backend late saw"), "the reload to route /late/");

    // A service whose location clashes with the hand-written one: nginx -t fails, the
    // directory is rolled back, nginx is not reloaded and keeps serving.
    let taken = svc.allocate(&req_in(20100, 100).name("taken"), &ServiceSpec::new()).unwrap();
    let e = deploy.apply(&svc.list_named().unwrap()).unwrap_err();
    assert!(e.to_string().contains("duplicate location"), "{e}");
    assert!(!services_dir.join("taken.conf").exists());
    assert!(services_dir.join("late.conf").exists());
    let t = Command::new(&base[0]).args(&with(&["-t"])[1..]).output().unwrap();
    assert!(t.status.success(), "the rolled-back directory does not pass nginx -t");
    // Polled: just after a reload an old worker, not yet retired, can still take a
    // request with the previous configuration.
    wait_for(|| get(front.port(), "/late/y").2.starts_with("backend late saw"), "nginx to keep routing /late/");
    assert!(get(front.port(), "/taken/").0.contains("204"));
    drop(taken);
    drop((api, ws, late, front));
}

/// Issue 13.5: a route of the service's own (`route` metadata) and its upstream host
/// (`upstream_host`) through a real nginx, the forwarded headers, the route `/`, and a
/// directory shared with a file of the user's: the user's file stays and keeps serving,
/// a released service's file is removed at the next apply. Ports: 30300-30349.
#[test]
fn real_nginx_routes_a_custom_route_and_prunes_released_services() {
    let nginx = ensure_nginx();
    let (_d, reg) = temp_registry();
    let svc = Services::with_types(reg, TypeTable::builtin());
    let shop = svc
        .allocate(
            &req_in(30300, 50).name("shop"),
            &ServiceSpec::new().meta(ROUTE_KEY, "/shop/api/").meta(UPSTREAM_HOST_KEY, "127.0.0.1"),
        )
        .unwrap();
    let site = svc.allocate(&req_in(30300, 50).name("site"), &ServiceSpec::new().meta(ROUTE_KEY, "/")).unwrap();
    let old = svc.allocate(&req_in(30300, 50).name("old"), &ServiceSpec::new()).unwrap();
    let front = svc.allocate(&req_in(30300, 50).name("front"), &ServiceSpec::new()).unwrap();
    backend("shop", shop.port());
    backend("site", site.port());
    backend("old", old.port());

    let tmp = tempfile::tempdir().unwrap();
    let prefix: PathBuf = tmp.path().to_path_buf();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::fs::set_permissions(&prefix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let services_dir = prefix.join("services");
    std::fs::create_dir(&services_dir).unwrap();
    // The user's own file in the directory: portmgr leaves it alone.
    let mine = "location /mine/ { return 204; }\n";
    std::fs::write(services_dir.join("mine.conf"), mine).unwrap();
    let conf = prefix.join("nginx.conf");
    let p = prefix.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\n{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 64; }}\nhttp {{\n    access_log {p}/access.log;\n\
             client_body_temp_path {p}/client_body;\n    proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n\
             server {{\n        listen 127.0.0.1:{port};\n        server_name localhost;\n\
             include {p}/services/*.conf;\n    }}\n}}\n",
            user = if root { "user nobody nogroup;\n" } else { "" },
            port = front.port(),
        ),
    )
    .unwrap();
    let base: Vec<String> = vec![
        nginx.clone(),
        "-e".into(),
        format!("{p}/error.log"),
        "-p".into(),
        format!("{p}/"),
        "-c".into(),
        conf.display().to_string(),
    ];
    let with =
        |extra: &[&str]| -> Vec<String> { base.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect() };
    let deploy = NginxDeploy { dir: services_dir.clone(), test_command: Some(with(&["-t"])), reload_command: None };
    let done = deploy.apply(&svc.list_named().unwrap()).unwrap();
    assert!(done.tested);
    assert_eq!(done.files, vec!["front.conf", "old.conf", "shop.conf", "site.conf"]);
    assert!(done.removed.is_empty() && done.skipped.is_empty(), "{done:?}");
    let shop_conf = std::fs::read_to_string(services_dir.join("shop.conf")).unwrap();
    for needle in [
        "location = /shop/api {\n    return 308 /shop/api/;\n}",
        &format!("location /shop/api/ {{\n    proxy_pass http://127.0.0.1:{}/;", shop.port()),
        &format!("location = /shop/api/health {{\n    proxy_pass http://127.0.0.1:{}/health;", shop.port()),
        "proxy_set_header X-Forwarded-Port $server_port;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
    ] {
        assert!(shop_conf.contains(needle), "shop.conf lacks {needle:?}:\n{shop_conf}");
    }
    let site_conf = std::fs::read_to_string(services_dir.join("site.conf")).unwrap();
    assert!(!site_conf.contains("return 308"), "the route / has no redirect:\n{site_conf}");

    let server = Command::new(&base[0]).args(&base[1..]).stdin(Stdio::null()).spawn().unwrap();
    let _nginx = Nginx { child: server };
    let addr: SocketAddr = format!("127.0.0.1:{}", front.port()).parse().unwrap();
    wait_for(|| probe::accepts(addr, Duration::from_millis(200)), "nginx to listen");

    // The custom route reaches the shop's backend, its prefix stripped, headers set.
    let (status, _, body) = get(front.port(), "/shop/api/items?page=2");
    assert!(status.contains("200"), "{status}\n{body}");
    assert!(body.starts_with("backend shop saw\nget /items?page=2 http/1.1"), "{body}");
    for needle in [
        "x-forwarded-prefix: /shop/api\r\n".to_string(),
        format!("x-forwarded-port: {}\r\n", front.port()),
        "x-forwarded-for: 127.0.0.1\r\n".into(),
        "x-forwarded-proto: http\r\n".into(),
        "x-forwarded-host: localhost\r\n".into(),
        "x-real-ip: 127.0.0.1\r\n".into(),
    ] {
        assert!(body.contains(&needle), "the backend did not get {needle:?}:\n{body}");
    }
    let (_, _, body) = get(front.port(), "/shop/api/health");
    assert!(body.starts_with("backend shop saw\nget /health http/1.1"), "{body}");
    let (status, headers, _) = get(front.port(), "/shop/api");
    assert!(status.contains("308") && headers.contains("location: http://localhost"), "{status}\n{headers}");
    assert!(headers.contains("/shop/api/"), "{headers}");
    // The route / takes everything else; no X-Forwarded-Prefix for it.
    let (_, _, body) = get(front.port(), "/anything/else");
    assert!(body.starts_with("backend site saw\nget /anything/else http/1.1"), "{body}");
    assert!(!body.contains("x-forwarded-prefix"), "{body}");
    let (_, _, body) = get(front.port(), "/old/x");
    assert!(body.starts_with("backend old saw\nget /x http/1.1"), "{body}");
    assert!(get(front.port(), "/mine/").0.contains("204"));

    // `old` released: the next apply removes old.conf (and only it), nginx reloads, and
    // /old/ falls through to the route /.
    drop(old);
    let deploy = NginxDeploy {
        dir: services_dir.clone(),
        test_command: Some(with(&["-t"])),
        reload_command: Some(with(&["-s", "reload"])),
    };
    let done = deploy.apply(&svc.list_named().unwrap()).unwrap();
    assert!(done.tested && done.reloaded);
    assert_eq!(done.removed, vec!["old.conf"]);
    assert!(!services_dir.join("old.conf").exists());
    assert_eq!(std::fs::read_to_string(services_dir.join("mine.conf")).unwrap(), mine);
    wait_for(|| get(front.port(), "/old/x").2.starts_with("backend site saw\nget /old/x"), "the reload to drop /old/");
    assert!(get(front.port(), "/mine/").0.contains("204"));
    let mut left: Vec<String> = std::fs::read_dir(&services_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".portmgr-nginx", "front.conf", "mine.conf", "shop.conf", "site.conf"]);
    drop((shop, site, front));
}
