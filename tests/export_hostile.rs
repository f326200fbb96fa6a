//! Issue 13.7: the metadata that reaches an exporter (the nginx `route`, `upstream_host`
//! and `health_path`, and free-text metadata) stays as safe as names. Every entry of the
//! shared hostile list (tests/common/hostile.rs):
//!
//! * is refused when set (allocation, `update_metadata`, import), for each field that
//!   has a syntax, with a one-line message, and nothing is held;
//! * when it got into the side file another way (here: `Service` values built by hand),
//!   is skipped by the nginx exports with a message, and the configuration (the text and
//!   the directory) passes a real `nginx -t` with no directive but the good service's;
//! * in `.env` output, runs nothing when the file is `source`d by bash or `eval`ed by sh
//!   (in an empty temp directory: no `pwned` file appears) and every variable holds its
//!   port;
//! * in JSON, parses back to the same value.
//!
//! Ports: 30000-30099 (below the kernel's ephemeral range).

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::path::Path;
use std::process::Command;

use common::*;
use hostile::hostile_values;
use portmgr::ErrorCode;
use portmgr::mapping::*;

/// The fields with a syntax: every hostile value must be refused by each.
const CHECKED: &[&str] = &[ROUTE_KEY, UPSTREAM_HOST_KEY, HEALTH_PATH_KEY];
/// A free-text field: carried quoted wherever it goes.
const FREE: &str = "note";

fn services() -> (tempfile::TempDir, Services) {
    let (d, reg) = temp_registry();
    (d, Services::with_types(reg, TypeTable::builtin()))
}

fn service(name: &str, port: u16, metadata: Metadata) -> Service {
    Service {
        name: Some(name.into()),
        port,
        ports: vec![port],
        protocols: "tcp".into(),
        service_type: None,
        group: None,
        member: None,
        metadata,
        lease_id: u64::from(port),
        owner_pid: 1,
        expires_ms: None,
        state: "held".into(),
        port_map: None,
    }
}

/// The good service, and one service `evilN` per hostile value with `key` set to it
/// (as if the side file had been edited by hand).
fn with_hostile(key: &str) -> (Service, Vec<Service>) {
    let good = service(
        "good",
        30000,
        [(ROUTE_KEY, "/good/api/"), (UPSTREAM_HOST_KEY, "localhost")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let mut all = vec![good.clone()];
    for (i, v) in hostile_values().into_iter().enumerate() {
        all.push(service(&format!("evil{i}"), 30001 + i as u16, [(key.to_string(), v)].into_iter().collect()));
    }
    (good, all)
}

fn is_one_line(e: &portmgr::Error) -> bool {
    let s = e.to_string();
    !s.contains('\n') && !s.contains('\r') && s.len() < 1024
}

#[test]
fn hostile_values_are_refused_when_set() {
    let (_d, svc) = services();
    for key in CHECKED {
        for v in hostile_values() {
            let spec = ServiceSpec::new().meta(*key, v.clone());
            let e = svc.allocate(&req_in(30000, 50).name("shop"), &spec).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{key}={v:?}: {e}");
            assert!(is_one_line(&e), "{key}={v:?}: the message is not one short line: {e}");
            assert!(svc.list().unwrap().is_empty(), "{key}={v:?}: a lease was left");
            // The check of the field itself, as the exporters call it.
            let direct = match *key {
                ROUTE_KEY => validate_route(&v),
                UPSTREAM_HOST_KEY => validate_upstream_host(&v),
                _ => validate_health_path(&v),
            };
            assert!(direct.is_err(), "{key}={v:?} passes its own check");
        }
    }
    // update_metadata refuses them too, and the service keeps what it had.
    let _shop =
        svc.allocate(&req_in(30000, 50).name("shop"), &ServiceSpec::new().meta(ROUTE_KEY, "/shop/api/")).unwrap();
    for key in CHECKED {
        for v in hostile_values() {
            let set: Metadata = [(key.to_string(), v.clone())].into_iter().collect();
            let e = svc.update_metadata("shop", &set, &[]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{key}={v:?}: {e}");
        }
    }
    assert_eq!(svc.by_name("shop").unwrap().unwrap().metadata.get(ROUTE_KEY).unwrap(), "/shop/api/");
    // Free text stays free (without control characters, up to 4096 bytes).
    let note: Metadata = [(FREE.to_string(), "'; touch pwned; \" $(x) `y` {z} #".to_string())].into_iter().collect();
    svc.update_metadata("shop", &note, &[]).unwrap();
}

#[test]
fn hostile_values_are_refused_by_import() {
    for key in CHECKED {
        for (i, v) in hostile_values().into_iter().enumerate() {
            let doc = serde_json::json!({
                "portmgr_export": 1,
                "services": [{"name": "shop", "port": 30010, "metadata": {*key: v}}],
            });
            let (_d, svc) = services();
            let text = doc.to_string();
            let outcome = parse_import(&text, None).and_then(|entries| svc.import(&entries, &ImportOptions::default()));
            match outcome {
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{key}={v:?}: {e}");
                    assert!(is_one_line(&e), "{e}");
                }
                Ok(o) => panic!("#{i} {key}={v:?} imported: {o:?}"),
            }
            assert!(svc.list().unwrap().is_empty());
        }
    }
}
/// The lines of an nginx export that are not comments or blank: its directives.
fn directives(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

#[test]
fn nginx_exports_skip_hostile_values_and_pass_a_real_nginx_test() {
    let nginx = hostile::ensure_nginx();
    for key in CHECKED.iter().chain([&FREE]) {
        let (good, all) = with_hostile(key);
        let want = directives(&export_nginx(std::slice::from_ref(&good)));
        assert!(want.iter().any(|l| l == "location /good/api/ {"), "{want:?}");
        assert!(want.iter().any(|l| l == "proxy_pass http://localhost:30000/;"), "{want:?}");

        // The text export: only the good service's directives, each evil one skipped
        // with a comment naming it (for a free-text key: routed at its default route).
        let text = export_nginx(&all);
        if *key == FREE {
            assert!(text.contains("location /evil0/ {"), "{text}");
            assert!(!text.contains("pwned"), "{text}");
        } else {
            assert_eq!(directives(&text), want, "{key}: an injected directive:\n{text}");
            for i in 0..all.len() - 1 {
                assert!(
                    text.contains(&format!("# skipped: invalid argument: service \"evil{i}\": metadata {key}=")),
                    "{text}"
                );
            }
        }
        for line in text.lines().filter(|l| l.starts_with('#')) {
            assert!(line.len() < 1024, "a comment line of {} bytes", line.len());
        }

        // The directory export, and both through a real nginx -t.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("services");
        let applied = write_nginx_dir(&dir, &all).unwrap();
        if *key == FREE {
            assert_eq!(applied.files.len(), all.len());
        } else {
            assert_eq!(applied.files, vec!["good.conf".to_string()]);
            assert_eq!(applied.skipped.len(), all.len() - 1, "{:?}", applied.skipped);
            assert!(applied.skipped.iter().all(|s| !s.contains('\n')), "{:?}", applied.skipped);
        }
        let flat = tmp.path().join("flat.conf");
        std::fs::write(&flat, &text).unwrap();
        hostile::nginx_t(&nginx, tmp.path(), &dir, &flat, [30098, 30099]);
    }
}

/// Run `script` with `shell` in the empty directory `cwd` (holding only `.env`); returns
/// its stdout, and asserts that nothing but `.env` is there afterwards.
fn shell_in(shell: &str, cwd: &Path, script: &str) -> String {
    let out = Command::new(shell)
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", cwd)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shell} -c {script:?} failed: {err}");
    assert!(err.trim().is_empty(), "{shell} complained: {err}");
    let mut left: Vec<String> =
        std::fs::read_dir(cwd).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, [".env"], "{shell} created files while reading the .env");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn env_export_of_hostile_values_runs_nothing_in_bash_or_sh() {
    for key in CHECKED.iter().chain([&FREE]) {
        let (_, all) = with_hostile(key);
        let env = export_env(&all).unwrap();
        for line in env.lines() {
            assert!(
                line.starts_with("# ") || line.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'='),
                "{key}: a line that is neither a comment nor NAME=PORT: {line:?}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".env"), &env).unwrap();
        let vars: Vec<String> = all.iter().map(|s| env_key(s.name.as_deref().unwrap())).collect();
        let want: String = all.iter().map(|s| format!("{}\n", s.port)).collect();
        let print: String = vars.iter().map(|v| format!(" \"${v}\"")).collect();
        let bash = shell_in("bash", tmp.path(), &format!("set -eu; source ./.env; printf '%s\\n'{print}"));
        assert_eq!(bash, want, "{key}: bash source");
        let sh = shell_in("sh", tmp.path(), &format!("set -eu; eval \"$(cat ./.env)\"; printf '%s\\n'{print}"));
        assert_eq!(sh, want, "{key}: sh eval");
        // The variables are the only ones set: HOME is still the temp directory.
        let home = shell_in("bash", tmp.path(), "source ./.env; printf '%s' \"$HOME\"");
        assert_eq!(home, tmp.path().display().to_string());
    }
}

#[test]
fn json_export_of_hostile_values_round_trips() {
    for key in CHECKED.iter().chain([&FREE]) {
        let (_, all) = with_hostile(key);
        let json = export_json(&all).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        let services = doc["services"].as_array().unwrap();
        assert_eq!(services.len(), all.len());
        for s in &all {
            let got = services.iter().find(|j| j["name"] == s.name.as_deref().unwrap()).unwrap();
            let meta: Metadata = serde_json::from_value(got["metadata"].clone()).unwrap();
            assert_eq!(meta, s.metadata, "{key}");
            assert_eq!(got["port"], s.port);
        }
        // And again: what parses serialises to the same document.
        let again: serde_json::Value = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(again, doc);
        // One service per line of the pretty output's "name": no value broke out.
        assert_eq!(json.matches("\"name\": \"").count(), all.len());
    }
}
