//! Issue 13.5 and 13.7 through the real `portmgr` binary: nginx routes from the `route`
//! and `upstream_host` metadata (`alloc --meta route=/shop/api/`), `export --dir` in a
//! directory shared with the user's files (only portmgr's own files are rewritten or
//! removed), and hostile values: refused by `alloc --meta`, and when they got into the
//! side file another way, skipped by the nginx export (which still passes a real
//! `nginx -t`), harmless in `.env` (sourced by bash, eval'ed by sh) and intact in JSON.
//!
//! Every test uses its own registry directory and its own slice of 30100-30499 (below
//! the kernel's ephemeral range, 32768-60999); the hostile list is
//! tests/common/hostile.rs at the repository's root.

#[path = "../../../tests/common/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

struct Reg {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn reg() -> Reg {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reg");
    Reg { tmp, dir }
}

impl Reg {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--registry")
            .arg(&self.dir)
            .args(args)
            .env("PORTMGR_DIR", self.dir.join("not-this-one"))
            .env_remove("PORTMGR_RANGE")
            .env_remove("PORTMGR_TYPES")
            .env("XDG_CONFIG_HOME", self.tmp.path().join("no-config"))
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(code(&o), 0, "portmgr {args:?}: stdout: {} stderr: {}", stdout(&o), stderr(&o));
        stdout(&o)
    }
    fn port(&self, args: &[&str]) -> u16 {
        self.ok(args).trim().parse().unwrap()
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

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
#[test]
fn alloc_meta_route_and_upstream_host_reach_the_nginx_export() {
    let nginx = hostile::ensure_nginx();
    let r = reg();
    let shop = r.port(&[
        "alloc",
        "--name",
        "shop",
        "--range",
        "30100-30149",
        "--meta",
        "route=/shop/api",
        "--meta",
        "upstream_host=localhost",
    ]);
    let web = r.port(&["alloc", "--name", "web", "--range", "30100-30149"]);
    let v6 = r.port(&["alloc", "--name", "v6", "--range", "30100-30149", "--meta", "upstream_host=::1"]);
    let json: serde_json::Value = serde_json::from_str(&r.ok(&["export", "--format", "json"])).unwrap();
    let entry = json["services"].as_array().unwrap().iter().find(|s| s["name"] == "shop").unwrap();
    assert_eq!(entry["metadata"]["route"], "/shop/api", "{entry}");

    let text = r.ok(&["export", "--format", "nginx"]);
    for needle in [
        format!("location /shop/api/ {{\n    proxy_pass http://localhost:{shop}/;"),
        "location = /shop/api {\n    return 308 /shop/api/;\n}".to_string(),
        format!("location /web/ {{\n    proxy_pass http://127.0.0.1:{web}/;"),
        format!("location /v6/ {{\n    proxy_pass http://[::1]:{v6}/;"),
        "proxy_set_header X-Forwarded-Port $server_port;".into(),
        "proxy_set_header X-Forwarded-Prefix \"/shop/api\";".into(),
        "proxy_buffering off;".into(),
        "proxy_request_buffering off;".into(),
    ] {
        assert!(text.contains(&needle), "the export lacks {needle:?}:\n{text}");
    }
    let dir = r.tmp.path().join("nginx.d");
    let o = r.ok(&["export", "--format", "nginx", "--dir", dir.to_str().unwrap()]);
    assert!(o.contains("wrote 3 file(s)"), "{o}");
    let flat = r.tmp.path().join("flat.conf");
    std::fs::write(&flat, &text).unwrap();
    hostile::nginx_t(&nginx, r.tmp.path(), &dir, &flat, [30498, 30499]);

    // Two services with one route: the second (by name) is skipped, nginx -t still passes.
    r.ok(&["alloc", "--name", "zshop", "--range", "30100-30149", "--meta", "route=/shop/api/"]);
    let o = r.ok(&["export", "--format", "nginx", "--dir", dir.to_str().unwrap()]);
    assert!(o.contains("skipped: invalid argument: service \"zshop\": its location") && o.contains("\"shop\""), "{o}");
    std::fs::write(&flat, r.ok(&["export", "--format", "nginx"])).unwrap();
    hostile::nginx_t(&nginx, r.tmp.path(), &dir, &flat, [30498, 30499]);
}

#[test]
fn alloc_refuses_hostile_routes_and_upstream_hosts() {
    let r = reg();
    for key in ["route", "upstream_host", "health_path"] {
        for v in hostile::hostile_values() {
            if v.contains('\0') {
                continue; // an argument cannot carry a NUL byte
            }
            let meta = format!("{key}={v}");
            let o = r.run(&["alloc", "--name", "shop", "--range", "30150-30199", "--meta", &meta]);
            let e = stderr(&o);
            assert_eq!(code(&o), 2, "{meta:?} was not refused: stdout {} stderr {e}", stdout(&o));
            assert_eq!(e.lines().count(), 1, "{meta:?}: the error is not one line: {e:?}");
            assert!(e.starts_with("portmgr: ") && e.contains(key), "{e}");
            assert!(e.len() < 1024, "{meta:?}: a {}-byte error", e.len());
        }
    }
    assert_eq!(r.ok(&["list", "--json"]).trim(), "[]", "a refused allocation left a lease");
}

#[test]
fn export_dir_keeps_user_files_and_removes_released_services() {
    let r = reg();
    let dir = r.tmp.path().join("conf.d");
    let d = dir.to_str().unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("custom.conf"), "location /custom/ { return 204; }\n").unwrap();
    std::fs::write(dir.join("README"), "hand-written\n").unwrap();
    std::fs::write(dir.join("admin.conf"), "# the user's own admin.conf\n").unwrap();
    r.ok(&["alloc", "--name", "web", "--range", "30200-30249"]);
    r.ok(&["alloc", "--name", "api", "--range", "30200-30249"]);
    r.ok(&["alloc", "--name", "admin", "--range", "30200-30249"]);

    let o = r.ok(&["export", "--format", "nginx", "--dir", d]);
    assert!(o.contains("wrote 2 file(s)"), "{o}");
    // admin.conf is the user's: left alone, the service not routed, and said so.
    assert!(o.contains("skipped: invalid argument: service \"admin\"") && o.contains("not written by portmgr"), "{o}");
    assert_eq!(std::fs::read_to_string(dir.join("admin.conf")).unwrap(), "# the user's own admin.conf\n");
    assert_eq!(files(&dir), [".portmgr-nginx", "README", "admin.conf", "api.conf", "custom.conf", "web.conf"]);
    let manifest = std::fs::read_to_string(dir.join(".portmgr-nginx")).unwrap();
    let listed: Vec<&str> = manifest.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(listed, ["api.conf", "web.conf"], "{manifest}");

    // api released: its file goes at the next export, and only it.
    r.ok(&["release", "--name", "api"]);
    let o = r.ok(&["export", "--format", "nginx", "--dir", d]);
    assert!(o.contains("removed api.conf"), "{o}");
    assert_eq!(files(&dir), [".portmgr-nginx", "README", "admin.conf", "custom.conf", "web.conf"]);
    assert_eq!(std::fs::read_to_string(dir.join("README")).unwrap(), "hand-written\n");
    // Nothing left: portmgr's files go, the user's stay.
    r.ok(&["release", "--name", "web"]);
    r.ok(&["release", "--name", "admin"]);
    let o = r.ok(&["export", "--format", "nginx", "--dir", d]);
    assert!(o.contains("wrote 0 file(s)") && o.contains("removed web.conf"), "{o}");
    assert_eq!(files(&dir), [".portmgr-nginx", "README", "admin.conf", "custom.conf"]);
    // A manifest line naming a path outside the directory is ignored, never followed.
    let outside = r.tmp.path().join("outside.conf");
    std::fs::write(&outside, "x").unwrap();
    std::fs::write(dir.join(".portmgr-nginx"), "# portmgr\n../outside.conf\n/etc/passwd\n.hidden.conf\n").unwrap();
    r.ok(&["export", "--format", "nginx", "--dir", d]);
    assert!(outside.exists());

    // A directory written by the portmgr that replaced it whole (its marker, no list):
    // every *.conf there was portmgr's, so the gone service's file is removed.
    let legacy = r.tmp.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(
        legacy.join(".portmgr-nginx"),
        "This directory is written by portmgr; it is replaced whole on every export.\n",
    )
    .unwrap();
    std::fs::write(legacy.join("gone.conf"), "location /gone/ { return 204; }\n").unwrap();
    r.ok(&["alloc", "--name", "new", "--range", "30200-30249"]);
    let o = r.ok(&["export", "--format", "nginx", "--dir", legacy.to_str().unwrap()]);
    assert!(o.contains("removed gone.conf"), "{o}");
    assert_eq!(files(&legacy), [".portmgr-nginx", "new.conf"]);
}

/// Run `script` with `shell` in `cwd` (holding only `.env`); its stdout. Asserts that
/// nothing else appears in `cwd`.
fn shell_in(shell: &str, cwd: &Path, script: &str) -> String {
    let out = Command::new(shell)
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{shell} -c {script:?}: {err}");
    assert_eq!(files(cwd), [".env"], "{shell} created files while reading the .env");
    String::from_utf8(out.stdout).unwrap()
}

/// Values that got into the side file another way (edited by hand): `export` skips them
/// in nginx with a message (the result passes a real `nginx -t`), runs nothing in `.env`,
/// and keeps them intact in JSON.
#[test]
fn hostile_values_in_the_side_file_are_skipped_by_nginx_and_harmless_elsewhere() {
    let nginx = hostile::ensure_nginx();
    let r = reg();
    let values = hostile::hostile_values();
    let good = r.port(&["alloc", "--name", "good", "--range", "30250-30399", "--meta", "route=/good/"]);
    let mut ports = vec![("GOOD_PORT".to_string(), good)];
    for i in 0..values.len() {
        let name = format!("evil{i}");
        let p = r.port(&["alloc", "--name", &name, "--range", "30250-30399", "--meta", "note=x"]);
        ports.push((format!("EVIL{i}_PORT"), p));
    }
    let side = r.dir.join("services.json");
    for key in ["route", "upstream_host", "health_path", "note"] {
        // Rewrite the side file in place: evilN's metadata is {key: values[N]}.
        let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
        for e in doc["leases"].as_object_mut().unwrap().values_mut() {
            let Some(i) = e["name"].as_str().and_then(|n| n.strip_prefix("evil")) else { continue };
            let v = &values[i.parse::<usize>().unwrap()];
            e["metadata"] = serde_json::json!({ key: v });
        }
        std::fs::write(&side, serde_json::to_string(&doc).unwrap()).unwrap();

        // nginx: the directory and the text, through a real nginx -t.
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("services");
        let o = r.ok(&["export", "--format", "nginx", "--dir", dir.to_str().unwrap()]);
        let text = r.ok(&["export", "--format", "nginx"]);
        if key == "note" {
            assert!(o.contains(&format!("wrote {} file(s)", values.len() + 1)), "{o}");
        } else {
            assert!(o.contains("wrote 1 file(s)"), "{key}: {o}");
            assert_eq!(o.matches("skipped: ").count(), values.len(), "{key}: {o}");
            assert_eq!(files(&dir), [".portmgr-nginx", "good.conf"]);
            let directives: Vec<&str> =
                text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
            assert_eq!(directives.iter().filter(|l| l.starts_with("location")).count(), 3, "{key}:\n{text}");
            assert!(directives.iter().all(|l| !l.contains("pwned") && !l.contains("evil")), "{key}:\n{text}");
        }
        let flat = work.path().join("flat.conf");
        std::fs::write(&flat, &text).unwrap();
        hostile::nginx_t(&nginx, work.path(), &dir, &flat, [30498, 30499]);

        // .env: sourced by bash, eval'ed by sh, in an empty directory.
        let env = r.ok(&["export", "--format", "env"]);
        let shell_dir = tempfile::tempdir().unwrap();
        std::fs::write(shell_dir.path().join(".env"), &env).unwrap();
        let print: String = ports.iter().map(|(k, _)| format!(" \"${k}\"")).collect();
        let want: String = ports.iter().map(|(_, p)| format!("{p}\n")).collect();
        let bash = shell_in("bash", shell_dir.path(), &format!("set -eu; source ./.env; printf '%s\\n'{print}"));
        assert_eq!(bash, want, "{key}: bash");
        let sh = shell_in("sh", shell_dir.path(), &format!("set -eu; eval \"$(cat ./.env)\"; printf '%s\\n'{print}"));
        assert_eq!(sh, want, "{key}: sh");

        // JSON: every value back as it was.
        let json: serde_json::Value = serde_json::from_str(&r.ok(&["export", "--format", "json"])).unwrap();
        for s in json["services"].as_array().unwrap() {
            if let Some(i) = s["name"].as_str().unwrap().strip_prefix("evil") {
                assert_eq!(s["metadata"][key], values[i.parse::<usize>().unwrap()].as_str(), "{key}");
            }
        }
    }
}
