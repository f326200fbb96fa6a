//! The `portmgr` command's service commands (`alloc --type/--meta`, `list --type/--group`,
//! `export`, `import`, `group alloc/release/list`), run as a real binary against temp
//! registries.
//!
//! Every test uses its own registry directory, its own slice of 31620-32767 (below the
//! kernel's ephemeral range, 32768-60999; tests/cli.rs has 13000-13999 and 15000-15999)
//! and loopback only; service types used here come from a temp types config (PORTMGR_TYPES), except
//! one check of a built-in type that tolerates its range being full on this host.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_portmgr");

struct Reg {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    types: Option<PathBuf>,
}

fn reg() -> Reg {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("reg");
    Reg { tmp, dir, types: None }
}

/// A registry with a types config: `t-one` 31620-31629, `t-two` 31630-31639, and the
/// group layout `trio` (a +0, b +1 of type t-two, c +2).
fn reg_with_types() -> Reg {
    let mut r = reg();
    let p = r.tmp.path().join("types.json");
    std::fs::write(
        &p,
        r#"{
  "types": {
    "t-one": { "range": "31620-31629", "description": "test type one" },
    "t-two": { "range": [31630, 31639] }
  },
  "groups": {
    "trio": [
      { "name": "a", "offset": 0 },
      { "name": "b", "offset": 1, "type": "t-two" },
      { "name": "c", "offset": 2 }
    ]
  }
}
"#,
    )
    .unwrap();
    r.types = Some(p);
    r
}

impl Reg {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--registry").arg(&self.dir).args(args);
        c.env("PORTMGR_DIR", self.dir.join("not-this-one"));
        c.env_remove("PORTMGR_RANGE");
        // No user config: the types are the built-in ones, or this test's file.
        c.env("XDG_CONFIG_HOME", self.tmp.path().join("no-config"));
        match &self.types {
            Some(p) => c.env("PORTMGR_TYPES", p),
            None => c.env_remove("PORTMGR_TYPES"),
        };
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(code(&o), 0, "portmgr {args:?}: stdout: {} stderr: {}", stdout(&o), stderr(&o));
        stdout(&o)
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("portmgr {args:?}: {e}: {out}"))
    }
    fn held(&self) -> Vec<u16> {
        let v = self.json(&["list", "--json"]);
        v.as_array().unwrap().iter().map(|i| i["port"].as_u64().unwrap() as u16).collect()
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

/// The error is one line on stderr, prefixed `portmgr:`, with the documented status.
fn assert_one_line_error(o: &Output, status: i32, contains: &str) {
    let e = stderr(o);
    assert_eq!(code(o), status, "stdout: {} stderr: {e}", stdout(o));
    assert_eq!(e.lines().count(), 1, "error is not one line: {e:?}");
    assert!(e.starts_with("portmgr: "), "{e}");
    assert!(e.contains(contains), "{e:?} should contain {contains:?}");
}

fn port_line(out: &str, key: &str) -> u16 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
        .trim()
        .parse()
        .unwrap()
}

// ----------------------------------------------------------------------------------------

#[test]
fn alloc_type_draws_from_the_types_range_and_list_type_shows_it() {
    let r = reg_with_types();
    let mut ones = Vec::new();
    for _ in 0..3 {
        let p: u16 = r.ok(&["alloc", "--type", "t-one"]).trim().parse().unwrap();
        assert!((31620..=31629).contains(&p), "t-one gave {p}");
        ones.push(p);
    }
    let v =
        r.json(&["alloc", "--type", "t-two", "--name", "two", "--meta", "owner=team-a", "--meta", "x=1=2", "--json"]);
    let two = v["port"].as_u64().unwrap() as u16;
    assert!((31630..=31639).contains(&two), "{v}");
    assert_eq!(v["type"], "t-two");
    assert_eq!(v["metadata"]["owner"], "team-a");
    assert_eq!(v["metadata"]["x"], "1=2");
    // An explicit range wins over the type's; the type is still recorded.
    let p: u16 = r.ok(&["alloc", "--type", "t-two", "--range", "31640-31649"]).trim().parse().unwrap();
    assert!((31640..=31649).contains(&p));

    // The leases outlive the command (held while the calling process, this test, lives).
    let held = r.held();
    for p in ones.iter().chain([&two, &p]) {
        assert!(held.contains(p), "{p} not held: {held:?}");
    }

    // list --type: exactly the leases of that type.
    let listed = |t: &str| -> HashSet<u16> {
        r.json(&["list", "--type", t, "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["port"].as_u64().unwrap() as u16)
            .collect()
    };
    assert_eq!(listed("t-one"), ones.iter().copied().collect());
    assert_eq!(listed("t-two"), [two, p].into_iter().collect());
    assert!(listed("custom").is_empty());
    let plain = r.ok(&["list", "--type", "t-two"]);
    assert!(plain.contains("two") && plain.contains(&two.to_string()), "{plain}");

    // Metadata and type show in the export.
    let e = r.json(&["export", "--format", "json"]);
    let s = &e["services"].as_array().unwrap()[0];
    assert_eq!(s["name"], "two");
    assert_eq!(s["type"], "t-two");
    assert_eq!(s["metadata"]["owner"], "team-a");

    // Errors: one line each, with the documented status.
    assert_one_line_error(&r.run(&["alloc", "--type", "nope"]), 2, "unknown service type \"nope\"");
    assert_one_line_error(&r.run(&["list", "--type", "nope"]), 2, "known types");
    assert_one_line_error(&r.run(&["alloc", "--type", "t-one", "--meta", "novalue"]), 2, "KEY=VALUE");
    assert_one_line_error(&r.run(&["alloc", "--type", "t-one", "--meta", "=v"]), 2, "KEY=VALUE");
    assert_one_line_error(&r.run(&["alloc", "--name", "two", "--type", "t-two"]), 4, "already held");
    // Fill t-one (10 ports, 3 held): the type's range is exhausted, status 3.
    for _ in 0..7 {
        r.ok(&["alloc", "--type", "t-one", "--ttl", "5m"]);
    }
    assert_one_line_error(&r.run(&["alloc", "--type", "t-one"]), 3, "31620-31629");
    assert_eq!(listed("t-one").len(), 10);
}

#[test]
fn alloc_type_builtin_range_and_a_broken_types_config() {
    let r = reg();
    // A built-in type: database is 5400-5499. Its range may be busy on this host: then
    // status 3, never a port outside it.
    let o = r.run(&["alloc", "--type", "database", "--ttl", "1m"]);
    match code(&o) {
        0 => {
            let p: u16 = stdout(&o).trim().parse().unwrap();
            assert!((5400..=5499).contains(&p), "database gave {p}");
            assert!(r.ok(&["list", "--type", "database"]).contains(&p.to_string()));
            r.ok(&["release", &p.to_string()]);
        }
        3 => assert!(stderr(&o).contains("5400-5499"), "{}", stderr(&o)),
        c => panic!("status {c}: {}", stderr(&o)),
    }
    // A broken config is a usage error naming the file, line and field; plain alloc
    // (without --type) does not read it.
    let mut bad = reg();
    let p = bad.tmp.path().join("types.json");
    std::fs::write(&p, "{\n  \"types\": {\n    \"x\": { \"rnage\": \"1-2\" }\n  }\n}\n").unwrap();
    bad.types = Some(p);
    let o = bad.run(&["alloc", "--type", "x"]);
    assert_one_line_error(&o, 2, "line 3");
    assert!(stderr(&o).contains("rnage"), "{}", stderr(&o));
    bad.ok(&["alloc", "--range", "31650-31659"]);
}

#[test]
fn export_json_env_nginx_and_their_filters() {
    let r = reg_with_types();
    let web: u16 = r
        .ok(&["alloc", "--name", "web", "--range", "31720-31739", "--meta", "health_path=/hz"])
        .trim()
        .parse()
        .unwrap();
    let api: u16 = r.ok(&["alloc", "--name", "api.v2", "--type", "t-one"]).trim().parse().unwrap();
    let _unnamed = r.ok(&["alloc", "--range", "31720-31739"]);
    r.ok(&["group", "alloc", "g7", "--spec", "pg=0,redis=+2", "--range", "31740-31759"]);

    // JSON (the default format): named services only, sorted by name.
    for args in [&["export"][..], &["export", "--format", "json"], &["export", "--json"]] {
        let v = r.json(args);
        assert_eq!(v["portmgr_export"], 1);
        let names: Vec<&str> = v["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["api.v2", "g7.pg", "g7.redis", "web"], "{v}");
        let s = &v["services"][0];
        assert_eq!(s["port"].as_u64().unwrap() as u16, api);
        assert_eq!(s["type"], "t-one");
        assert_eq!(s["protocols"], "tcp");
        assert_eq!(v["services"][1]["group"], "g7");
        assert_eq!(v["services"][1]["member"], "pg");
    }

    // .env: NAME_PORT=1234 lines, each after a portmgr comment.
    let env = r.ok(&["export", "--format", "env"]);
    assert_eq!(port_line(&env, "WEB_PORT"), web);
    assert_eq!(port_line(&env, "API_V2_PORT"), api);
    let pg = port_line(&env, "G7_PG_PORT");
    assert_eq!(port_line(&env, "G7_REDIS_PORT"), pg + 2);
    assert!(env.contains("# portmgr {\"name\":\"api.v2\",\"type\":\"t-one\"}"), "{env}");
    assert_eq!(env.lines().filter(|l| l.contains("_PORT=")).count(), 4, "{env}");

    // Filters.
    let env = r.ok(&["export", "--format", "env", "--group", "g7"]);
    assert_eq!(env.lines().filter(|l| l.contains("_PORT=")).count(), 2, "{env}");
    let v = r.json(&["export", "--type", "t-one"]);
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    assert_eq!(v["services"][0]["name"], "api.v2");

    // nginx to stdout: a location per service, proxying to its port, with a health location.
    let ng = r.ok(&["export", "--format", "nginx"]);
    assert!(ng.contains("location /web/ {"), "{ng}");
    assert!(ng.contains(&format!("proxy_pass http://127.0.0.1:{web}/;")), "{ng}");
    assert!(ng.contains("location = /web/health {"), "{ng}");
    assert!(ng.contains(&format!("proxy_pass http://127.0.0.1:{web}/hz;")), "{ng}");
    assert!(ng.contains(&format!("proxy_pass http://127.0.0.1:{api}/;")), "{ng}");
    assert!(ng.contains("proxy_set_header Upgrade $http_upgrade;"), "{ng}");
    assert!(ng.contains("proxy_http_version 1.1;"), "{ng}");
    assert!(ng.contains("X-Content-Type-Options"), "{ng}");

    // Errors.
    assert_one_line_error(&r.run(&["export", "--format", "plain"]), 2, "json, env or nginx");
    assert_one_line_error(&r.run(&["export", "--dir", "/tmp/x"]), 2, "--format nginx");
    assert_one_line_error(&r.run(&["export", "--format", "nginx", "--reload"]), 2, "--dir");
    assert_one_line_error(&r.run(&["export", "--format", "xml"]), 2, "xml");
    assert_one_line_error(&r.run(&["export", "--type", "nope"]), 2, "unknown service type");
    assert_one_line_error(&r.run(&["list", "--format", "nginx"]), 2, "export only");
    // An empty registry exports an empty map.
    let empty = reg();
    assert_eq!(empty.json(&["export"])["services"].as_array().unwrap().len(), 0);
}

/// A stand-in for nginx: logs its arguments; `-t` fails while `fail-test` exists.
fn fake_nginx(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let log = dir.join("nginx.log");
    let flag = dir.join("fail-test");
    let prog = dir.join("fake-nginx");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \" $* \" in *' -t '*) if [ -e '{}' ]; then echo 'nginx: [emerg] unexpected \"}}\"' >&2; exit 1; fi;; esac\nexit 0\n",
            log.display(),
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (prog, log, flag)
}

#[test]
fn export_nginx_dir_reload_and_rollback() {
    let r = reg();
    let web: u16 = r.ok(&["alloc", "--name", "web", "--range", "31760-31779"]).trim().parse().unwrap();
    r.ok(&["alloc", "--name", "api", "--range", "31760-31779"]);
    let out = r.tmp.path().join("nginx.d");
    let outs = out.to_str().unwrap();

    // --dir: one file per service, written atomically, no nginx involved.
    let o = r.ok(&["export", "--format", "nginx", "--dir", outs]);
    assert!(o.contains("wrote 2 file(s)"), "{o}");
    let mut files: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, [".portmgr-nginx", "api.conf", "web.conf"]);
    let conf = std::fs::read_to_string(out.join("web.conf")).unwrap();
    assert!(conf.contains(&format!("proxy_pass http://127.0.0.1:{web}/;")), "{conf}");

    // --reload: nginx -t, then nginx -s reload.
    let (prog, log, flag) = fake_nginx(r.tmp.path());
    let o = r.ok(&["export", "--format", "nginx", "--dir", outs, "--reload", "--nginx", prog.to_str().unwrap()]);
    assert!(o.contains("nginx -t passed") && o.contains("nginx reloaded"), "{o}");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["-t", "-s reload"], "{calls}");

    // With -p/-c: passed to both calls.
    let p = r.tmp.path().to_str().unwrap();
    r.ok(&[
        "export",
        "--format",
        "nginx",
        "--dir",
        outs,
        "--reload",
        "--nginx",
        prog.to_str().unwrap(),
        "--nginx-prefix",
        p,
        "--nginx-conf",
        "/x/nginx.conf",
    ]);
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("-p {p} -c /x/nginx.conf -t")), "{calls}");
    assert!(calls.contains(&format!("-p {p} -c /x/nginx.conf -s reload")), "{calls}");

    // The test fails: the previous directory is put back, no reload, status 1.
    r.ok(&["alloc", "--name", "extra", "--range", "31760-31779"]);
    std::fs::write(&flag, "").unwrap();
    std::fs::write(&log, "").unwrap();
    let o = r.run(&["export", "--format", "nginx", "--dir", outs, "--reload", "--nginx", prog.to_str().unwrap()]);
    assert_one_line_error(&o, 1, "failed its test");
    assert!(stderr(&o).contains("emerg"), "{}", stderr(&o));
    assert!(!out.join("extra.conf").exists(), "the failed configuration was left in place");
    assert!(out.join("web.conf").exists() && out.join("api.conf").exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "-t", "reloaded after a failed test");
    // nginx not found: also rolled back, status 1.
    let o = r.run(&["export", "--format", "nginx", "--dir", outs, "--reload", "--nginx", "/nonexistent/nginx"]);
    assert_one_line_error(&o, 1, "cannot run");
    assert!(!out.join("extra.conf").exists());
    // Fixed: applied.
    std::fs::remove_file(&flag).unwrap();
    r.ok(&["export", "--format", "nginx", "--dir", outs, "--reload", "--nginx", prog.to_str().unwrap()]);
    assert!(out.join("extra.conf").exists());

    // A directory with files portmgr did not write: they stay (issue 13.5; more in
    // cli_nginx.rs).
    let foreign = r.tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.conf"), "x").unwrap();
    r.ok(&["export", "--format", "nginx", "--dir", foreign.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(foreign.join("keep.conf")).unwrap(), "x");
    assert!(foreign.join("web.conf").exists());
}

#[test]
fn import_keeps_previous_ports_and_reports_fallbacks() {
    let r = reg_with_types();
    let web: u16 = r.ok(&["alloc", "--name", "web", "--range", "31820-31829", "--meta", "k=v"]).trim().parse().unwrap();
    let db: u16 = r.ok(&["alloc", "--name", "db", "--type", "t-one"]).trim().parse().unwrap();
    let env_file = r.tmp.path().join(".env.dynamic");
    let json_file = r.tmp.path().join("services.json");
    std::fs::write(&env_file, r.ok(&["export", "--format", "env"])).unwrap();
    std::fs::write(&json_file, r.ok(&["export", "--format", "json"])).unwrap();
    r.ok(&["release", "--name", "web"]);
    r.ok(&["release", "--name", "db"]);
    assert!(r.held().is_empty());

    // Both previous ports free: both kept, and the leases outlive the command.
    let out = r.ok(&["import", env_file.to_str().unwrap()]);
    assert!(out.contains(&format!("web {web} (kept its previous port)")), "{out}");
    assert!(out.contains(&format!("db {db} (kept its previous port)")), "{out}");
    let mut held = r.held();
    held.sort();
    let mut want = vec![web, db];
    want.sort();
    assert_eq!(held, want);
    // Type and metadata came back with them.
    let v = r.json(&["export"]);
    let s: Vec<&serde_json::Value> = v["services"].as_array().unwrap().iter().collect();
    assert_eq!(s[0]["name"], "db");
    assert_eq!(s[0]["type"], "t-one");
    assert_eq!(s[1]["metadata"]["k"], "v");
    // Imported again while live: left as they are.
    let v = r.json(&["import", json_file.to_str().unwrap(), "--json"]);
    assert!(v["services"].as_array().unwrap().iter().all(|s| s["status"] == "existing"), "{v}");

    // web's port is now taken by someone else: web moves to the range and is reported.
    r.ok(&["release", "--name", "web"]);
    r.ok(&["release", "--name", "db"]);
    r.ok(&["alloc", "--preferred", &web.to_string(), "--required", "--range", "31820-31829"]);
    let out = r.ok(&["import", env_file.to_str().unwrap(), "--range", "31830-31839", "--ttl", "10m"]);
    let moved = out.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(moved.contains(&format!("web {web} -> ")) && moved.contains("moved"), "{out}");
    let new_web: u16 = moved.split("-> ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((31830..=31839).contains(&new_web), "{out}");
    assert!(out.contains(&format!("db {db} (kept its previous port)")), "{out}");
    // --ttl: the imported leases carry it.
    let list = r.json(&["list", "--name", "web", "--json"]);
    assert!(list[0]["expires_ms"].as_u64().is_some(), "{list}");

    // JSON report and --owner.
    r.ok(&["release", "--name", "web"]);
    let v = r.json(&["import", json_file.to_str().unwrap(), "--json", "--range", "31830-31839", "--owner", "1"]);
    let web_rep = v["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!(web_rep["status"], "moved", "{v}");
    assert_eq!(web_rep["previous_port"].as_u64().unwrap() as u16, web);
    assert!(web_rep["reason"].as_str().unwrap().contains("taken"), "{v}");
    let list = r.json(&["list", "--name", "web", "--json"]);
    assert_eq!(list[0]["watch_pid"], 1, "{list}");

    // A plain .env without portmgr comments, read from stdin; --format env output.
    r.ok(&["release", "--name", "web"]);
    let mut child = r.cmd(&["import", "-", "--format", "env", "--range", "31830-31839"]);
    let mut child = child.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"# a comment\nOTHER=1\nCACHE_PORT=31845\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "CACHE_PORT=31845\n");

    // A service that cannot be placed: reported, status 1, the others kept.
    r.ok(&["release", "--name", "cache"]);
    r.ok(&["alloc", "--preferred", "31845", "--required", "--range", "31840-31849"]);
    let f = r.tmp.path().join("two.env");
    std::fs::write(&f, "CACHE_PORT=31845\nQUEUE_PORT=31846\n").unwrap();
    let o = r.run(&["import", f.to_str().unwrap(), "--range", "31845-31845"]);
    assert_one_line_error(&o, 1, "1 service(s) could not be re-created: cache");
    assert!(stdout(&o).contains("cache failed: "), "{}", stdout(&o));
    assert!(stdout(&o).contains("queue 31846 (kept its previous port)"), "{}", stdout(&o));
    assert!(r.held().contains(&31846));

    // Errors.
    assert_one_line_error(&r.run(&["import", "/nonexistent/file.env"]), 5, "cannot read");
    std::fs::write(&f, "garbage\n").unwrap();
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap()]), 2, "line 1");
    std::fs::write(&f, "{\"portmgr_export\": 1, \"services\": [{\"name\": \"x\"}]}").unwrap();
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap()]), 2, "port");
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap(), "--from", "yaml"]), 2, "yaml");
    assert_one_line_error(&r.run(&["import"]), 2, "FILE");
}

#[test]
fn group_alloc_is_all_or_nothing_and_release_list_work() {
    let r = reg_with_types();
    // Only one base fits in 31920-31924 for a layout spanning 5 ports; take its last port.
    r.ok(&["alloc", "--preferred", "31924", "--required", "--range", "31920-31924"]);
    let o = r.run(&["group", "alloc", "g1", "--spec", "a=0,b=+4", "--range", "31920-31924"]);
    assert_one_line_error(&o, 3, "no base");
    assert_eq!(r.held(), [31924], "a failed group left members behind");
    assert!(r.ok(&["group", "list"]).is_empty());
    r.ok(&["release", "31924"]);
    let out = r.ok(&["group", "alloc", "g1", "--spec", "a=0,b=+4", "--range", "31920-31924"]);
    assert_eq!(out, "a=31920\nb=31924\n");
    // Members outlive the command.
    let mut held = r.held();
    held.sort();
    assert_eq!(held, [31920, 31924]);

    // A layout from the types config; --format env and --json; metadata on every member.
    let env = r.ok(&["group", "alloc", "g2", "--layout", "trio", "--range", "31930-31949", "--format", "env"]);
    let a = port_line(&env, "G2_A_PORT");
    assert_eq!(port_line(&env, "G2_B_PORT"), a + 1);
    assert_eq!(port_line(&env, "G2_C_PORT"), a + 2);
    let v =
        r.json(&["group", "alloc", "g3", "--layout", "trio", "--range", "31930-31949", "--meta", "job=17", "--json"]);
    assert_eq!(v["group"], "g3");
    let base = v["base"].as_u64().unwrap() as u16;
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[1]["name"], "g3.b");
    assert_eq!(members[1]["type"], "t-two");
    assert_eq!(members[2]["port"].as_u64().unwrap() as u16, base + 2);
    let e = r.json(&["export", "--group", "g3"]);
    assert!(e["services"].as_array().unwrap().iter().all(|s| s["metadata"]["job"] == "17"), "{e}");
    // The built-in stack layout.
    let out = r.ok(&["group", "alloc", "st", "--layout", "stack", "--range", "32020-32619", "--ttl", "5m"]);
    let pg = port_line(&out, "postgres");
    assert_eq!(port_line(&out, "auth"), pg + 401);
    assert_eq!(port_line(&out, "frontend"), pg + 500);

    // list / list --group / group list.
    let gl = r.ok(&["group", "list"]);
    assert!(gl.contains("g1 a=31920 b=31924"), "{gl}");
    assert_eq!(gl.lines().count(), 4, "{gl}");
    let v = r.json(&["group", "list", "--json"]);
    assert_eq!(v.as_array().unwrap().len(), 4);
    let listed = r.json(&["list", "--group", "g2", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(r.json(&["list", "--type", "t-two", "--json"]).as_array().unwrap().len(), 2);

    // Release.
    assert_eq!(r.ok(&["group", "release", "g1"]), "31920\n31924\n");
    assert_eq!(r.json(&["group", "release", "g2", "--json"])["released"].as_array().unwrap().len(), 3);
    assert!(!r.ok(&["group", "list"]).contains("g1 "));
    assert_one_line_error(&r.run(&["group", "release", "g1"]), 5, "g1");

    // Errors.
    let o = r.run(&["group", "alloc", "g3", "--layout", "trio", "--range", "31930-31949"]);
    assert_one_line_error(&o, 4, "\"g3.a\" is already held");
    assert!(stderr(&o).contains("portmgr group release g3"), "{}", stderr(&o));
    assert_one_line_error(&r.run(&["group", "alloc", "g9", "--layout", "nope"]), 2, "known layouts: stack, trio");
    assert_one_line_error(&r.run(&["group", "alloc", "g9"]), 2, "--layout");
    assert_one_line_error(&r.run(&["group", "alloc", "g9", "--layout", "trio", "--spec", "a=0"]), 2, "cannot be used");
    assert_one_line_error(&r.run(&["group", "alloc", "g9", "--spec", "a=0,b"]), 2, "NAME=OFFSET");
    assert_one_line_error(&r.run(&["group", "alloc", "g9", "--spec", "a=0,b=0"]), 2, "same offset");
    assert_one_line_error(&r.run(&["group", "alloc", "g.9", "--spec", "a=0", "--range", "31950-31959"]), 2, "'.'");
    assert_one_line_error(
        &r.run(&["group", "alloc", "g9", "--spec", "a=0,b=20", "--range", "31950-31959"]),
        2,
        "too small",
    );
    assert_one_line_error(&r.run(&["group", "list", "--format", "env"]), 2, "--format env");
    // Without a subcommand: the help, status 2 (as `portmgr` alone).
    let o = r.run(&["group"]);
    assert_eq!(code(&o), 2);
    assert!(stdout(&o).contains("portmgr group alloc") || stderr(&o).contains("portmgr group alloc"));
}

#[test]
fn concurrent_group_allocs_get_disjoint_groups() {
    let r = reg();
    // Eight processes at once place 4-port groups by the sequential strategy in 48 ports:
    // without all-or-nothing placement under the registry they would collide.
    for round in 0..2 {
        let lo = 32120 + round * 100;
        let range = format!("{lo}-{}", lo + 47);
        let children: Vec<_> = (0..8)
            .map(|i| {
                r.cmd(&[
                    "group",
                    "alloc",
                    &format!("r{round}-g{i}"),
                    "--spec",
                    "a=0,b=1,c=2,d=3",
                    "--range",
                    &range,
                    "--strategy",
                    "sequential",
                    "--json",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let mut all = Vec::new();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let ports: Vec<u16> =
                v["members"].as_array().unwrap().iter().map(|m| m["port"].as_u64().unwrap() as u16).collect();
            let base = v["base"].as_u64().unwrap() as u16;
            assert_eq!(ports, [base, base + 1, base + 2, base + 3]);
            all.extend(ports);
        }
        let distinct: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(all.len(), 32);
        assert_eq!(distinct.len(), 32, "two groups share a port: {all:?}");
        let held: HashSet<u16> = r.held().into_iter().filter(|p| (lo..lo + 48).contains(p)).collect();
        assert_eq!(held, distinct);
    }
}

#[test]
fn every_new_command_has_help_with_an_example() {
    for cmd in
        [&["export"][..], &["import"], &["group"], &["group", "alloc"], &["group", "release"], &["group", "list"]]
    {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(code(&o), 0, "{args:?}");
        let h = stdout(&o);
        assert!(h.contains("Example"), "{args:?}: {h}");
        assert!(h.contains("--registry"), "{args:?}: {h}");
    }
    let h = stdout(&Command::new(BIN).args(["alloc", "--help"]).output().unwrap());
    assert!(h.contains("--type") && h.contains("--meta"), "{h}");
    let h = stdout(&Command::new(BIN).args(["list", "--help"]).output().unwrap());
    assert!(h.contains("--type") && h.contains("--group"), "{h}");
}

/// A tiny HTTP backend on 127.0.0.1:`port`: answers every request with its name and the
/// request line it saw.
fn backend(name: &'static str, port: u16) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("backend {name}: {e}"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let body = format!("backend {name} saw {}\n", head.lines().next().unwrap_or(""));
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
}

/// GET `path` from 127.0.0.1:`port`: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (String::new(), String::new()) };
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ok() {
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `portmgr export --format nginx --dir D --reload` against a real, unprivileged nginx
/// on a loopback port (installed by scripts/ensure-nginx.sh when missing): requests
/// through nginx reach the services' backends; a configuration nginx rejects is rolled
/// back and nginx keeps serving.
#[test]
fn export_reload_with_a_real_nginx() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-nginx.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "nginx is needed for this test; {} could not provide it", script.display());
    let nginx = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string();

    let r = reg();
    let web: u16 = r.ok(&["alloc", "--name", "web", "--range", "32620-32669"]).trim().parse().unwrap();
    let front: u16 = r.ok(&["alloc", "--range", "32670-32719"]).trim().parse().unwrap();
    backend("web", web);
    let prefix = r.tmp.path().to_path_buf();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // nginx's workers drop to nobody: let them reach the prefix.
        std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p = prefix.display().to_string();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\n{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 64; }}\nhttp {{\n    access_log {p}/access.log;\n\
             client_body_temp_path {p}/client_body;\n    proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n\
             server {{\n        listen 127.0.0.1:{front};\n        location /taken/ {{ return 204; }}\n\
             include {p}/services/*.conf;\n    }}\n}}\n",
            user = if root { "user nobody nogroup;\n" } else { "" },
        ),
    )
    .unwrap();
    let services = format!("{p}/services");
    let conf_s = conf.display().to_string();
    let prefix_s = format!("{p}/");
    let reload = |r: &Reg| {
        r.run(&[
            "export",
            "--format",
            "nginx",
            "--dir",
            &services,
            "--reload",
            "--nginx",
            &nginx,
            "--nginx-prefix",
            &prefix_s,
            "--nginx-conf",
            &conf_s,
        ])
    };

    // Written first, then nginx starts on it.
    r.ok(&["export", "--format", "nginx", "--dir", &services]);
    struct Nginx(std::process::Child);
    impl Drop for Nginx {
        fn drop(&mut self) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGQUIT) };
            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < end {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Nginx(
        Command::new(&nginx)
            .args(["-e", &format!("{p}/error.log"), "-p", &prefix_s, "-c", &conf_s])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("nginx to route /web/", || get(front, "/web/x").1.starts_with("backend web saw GET /x "));
    let (status, body) = get(front, "/web/health");
    assert!(status.contains("200") && body.starts_with("backend web saw GET /health "), "{status} {body}");

    // A new service: `--reload` tests, reloads, and nginx routes to it.
    let api: u16 = r.ok(&["alloc", "--name", "api", "--range", "32620-32669"]).trim().parse().unwrap();
    backend("api", api);
    let o = reload(&r);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("nginx -t passed") && stdout(&o).contains("nginx reloaded"), "{}", stdout(&o));
    wait_for("the reload to route /api/", || get(front, "/api/y").1.starts_with("backend api saw GET /y "));

    // A service whose location clashes with the hand-written one: nginx -t fails, the
    // directory is rolled back, status 1, nginx keeps serving.
    r.ok(&["alloc", "--name", "taken", "--range", "32620-32669"]);
    let o = reload(&r);
    assert_one_line_error(&o, 1, "duplicate location");
    assert!(!prefix.join("services/taken.conf").exists());
    assert!(prefix.join("services/api.conf").exists());
    // nginx keeps serving the last good configuration (polled: on a loaded machine one
    // request can be slow to pass through nginx and the single-threaded backend).
    wait_for("nginx to keep routing /api/", || get(front, "/api/z").1.starts_with("backend api saw GET /z "));
    assert!(get(front, "/taken/").0.contains("204"));
}

/// `group alloc` and `import` hold their ports as `alloc` does: by default while the
/// calling process lives, with `--owner PID` while PID lives, with `--ttl` for that long.
#[test]
fn group_and_import_leases_live_as_long_as_alloc_says() {
    let r = reg();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let owner = sleeper.id().to_string();
    r.ok(&["group", "alloc", "w", "--spec", "a=0,b=1", "--range", "32720-32739", "--owner", &owner]);
    let f = r.tmp.path().join("x.env");
    std::fs::write(&f, "X_PORT=32750\n").unwrap();
    r.ok(&["import", f.to_str().unwrap(), "--owner", &owner]);
    let v = r.json(&["group", "alloc", "t", "--spec", "a=0", "--range", "32720-32739", "--ttl", "1500ms", "--json"]);
    let t = v["members"][0]["port"].as_u64().unwrap() as u16;
    // Default: this test process (the parent of portmgr) is watched.
    r.ok(&["group", "alloc", "d", "--spec", "a=0", "--range", "32720-32739"]);
    let list = r.json(&["list", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{list}");
    let watch = |name: &str| rows.iter().find(|i| i["name"] == name).unwrap()["watch_pid"].clone();
    assert_eq!(watch("w.a"), sleeper.id());
    assert_eq!(watch("x"), sleeper.id());
    assert_eq!(watch("d.a"), std::process::id());
    assert!(watch("t.a").is_null());

    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.held().contains(&t) {
        assert!(std::time::Instant::now() < end, "the TTL member outlived its TTL");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.held().len() != 1 {
        assert!(std::time::Instant::now() < end, "the watched process's ports were not freed: {:?}", r.held());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(r.ok(&["group", "list"]).lines().collect::<Vec<_>>().len(), 1);
}

// ----------------------------------------------------------------------------------------
// Issue 11 (a hostile review). Exact ports in these tests are in 31660-31669, 31850-31879
// and 31960-31989: gaps in this suite's range that no other test here uses.

/// Run `c` with a deadline and a 1 GiB address-space limit, so that a regression (reading
/// a device forever, blocking on a FIFO) fails the test instead of hanging it or eating
/// the host's memory.
fn run_bounded(mut c: Command, stdin: Stdio, secs: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let hook = || {
        let lim = libc::rlimit { rlim_cur: 1 << 30, rlim_max: 1 << 30 };
        // SAFETY: setrlimit(2) with a valid pointer; async-signal-safe, allocates nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook only calls setrlimit(2) (see above).
    unsafe { c.pre_exec(hook) };
    let mut child = c.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("{c:?} did not finish within {secs}s; stderr: {}", stderr(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Items 8 and 13: the import file and the types config are read by one helper, which
/// takes only a regular file of at most 16 MiB of UTF-8. A device (/dev/zero), a FIFO, a
/// huge file or a non-UTF-8 file is a usage error (status 2) at once: no endless read, no
/// hang, no status 1.
#[test]
fn import_and_types_config_refuse_devices_fifos_huge_and_non_utf8_files() {
    let r = reg();
    let fifo = r.tmp.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = r.tmp.path().join("big.json");
    std::fs::File::create(&big).unwrap().set_len(17 << 20).unwrap();
    let latin1 = r.tmp.path().join("latin1.env");
    std::fs::write(&latin1, b"# caf\xe9\nWEB_PORT=31661\n").unwrap();
    let cases = [
        (PathBuf::from("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file"),
        (r.tmp.path().to_path_buf(), "not a regular file"),
        (big, "16 MiB"),
        (latin1, "UTF-8"),
    ];
    for (path, want) in &cases {
        let p = path.to_str().unwrap();
        let o = run_bounded(r.cmd(&["import", p]), Stdio::null(), 20);
        assert_one_line_error(&o, 2, want);
        assert!(stderr(&o).contains(p), "the error names the file: {}", stderr(&o));
        let mut c = r.cmd(&["alloc", "--type", "rest-api", "--range", "31660-31669"]);
        c.env("PORTMGR_TYPES", path);
        let o = run_bounded(c, Stdio::null(), 20);
        assert_one_line_error(&o, 2, want);
        assert!(stderr(&o).contains("types config"), "{}", stderr(&o));
    }
    // Standard input is read with the same limit.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let o = run_bounded(r.cmd(&["import", "-"]), Stdio::from(zero), 20);
    assert_one_line_error(&o, 2, "16 MiB");
    assert!(r.held().is_empty(), "{:?}", r.held());
}

/// Item 5: `import` of the JSON export of `alloc --count 3 --proto both --name multi`
/// re-creates all three ports (the same ones, TCP and UDP), not only the first.
#[test]
fn import_restores_every_port_of_a_multi_port_lease() {
    let r = reg();
    let out = r.ok(&["alloc", "--count", "3", "--proto", "both", "--name", "multi", "--range", "31850-31869"]);
    let mut ports: Vec<u16> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    ports.sort_unstable();
    assert_eq!(ports.len(), 3);
    let f = r.tmp.path().join("multi.json");
    std::fs::write(&f, r.ok(&["export", "--format", "json"])).unwrap();
    r.ok(&["release", "--name", "multi"]);
    assert!(r.held().is_empty());

    let out = r.ok(&["import", f.to_str().unwrap()]);
    let shown: Vec<String> = ports.iter().map(u16::to_string).collect();
    assert!(out.contains(&format!("multi {} (kept its previous ports)", shown.join(","))), "{out}");
    let rows = r.json(&["list", "--name", "multi", "--json"]);
    let rows = rows.as_array().unwrap();
    let mut held: Vec<u16> = rows.iter().map(|i| i["port"].as_u64().unwrap() as u16).collect();
    held.sort_unstable();
    assert_eq!(held, ports, "{rows:?}");
    assert!(rows.iter().all(|i| i["protocols"] == "both"), "{rows:?}");
    let v = r.json(&["export", "--format", "json"]);
    assert_eq!(v["services"][0]["ports"], serde_json::json!(ports));
    // The JSON report lists every port.
    r.ok(&["release", "--name", "multi"]);
    let v = r.json(&["import", f.to_str().unwrap(), "--json"]);
    assert_eq!(v["services"][0]["ports"], serde_json::json!(ports), "{v}");
    assert_eq!(v["services"][0]["previous_ports"], serde_json::json!(ports), "{v}");
}

/// Item 6: an import whose `group`/`member` do not match the service's name (or are not
/// valid names) is refused whole, so `group release` of that group can never release an
/// unrelated service; a .env variable that is no identifier is refused naming its line.
#[test]
fn import_refuses_bad_groups_members_and_env_names() {
    let r = reg();
    r.ok(&["alloc", "--name", "web", "--range", "31870-31879"]);
    let text = r.ok(&["export", "--format", "json"]);
    r.ok(&["release", "--name", "web"]);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["services"][0]["group"] = "h".into();
    v["services"][0]["member"] = "x".into();
    let f = r.tmp.path().join("forged.json");
    std::fs::write(&f, v.to_string()).unwrap();
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap()]), 2, "h.x");
    assert!(r.held().is_empty(), "{:?}", r.held());
    v["services"][0]["name"] = "h.x".into();
    v["services"][0]["group"] = "h\n".into();
    std::fs::write(&f, v.to_string()).unwrap();
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap()]), 2, "group");
    assert!(r.held().is_empty(), "{:?}", r.held());

    std::fs::write(&f, "OK_PORT=31871\n$(id)_PORT=31872\n").unwrap();
    assert_one_line_error(&r.run(&["import", f.to_str().unwrap()]), 2, "line 2");
    // A byte order mark: not part of the first name, and JSON still parses as JSON.
    std::fs::write(&f, "\u{feff}BOM_PORT=31873\n").unwrap();
    assert!(r.ok(&["import", f.to_str().unwrap()]).starts_with("bom 31873 "));
    std::fs::write(&f, format!("\u{feff}{text}")).unwrap();
    assert!(r.ok(&["import", f.to_str().unwrap()]).contains("web "));
    let mut names: Vec<String> =
        r.json(&["list", "--json"]).as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().into()).collect();
    names.sort();
    assert_eq!(names, ["bom", "web"]);
}

/// Item 9: `export --format nginx --dir DIR/.` (or `DIR/..`, `DIR/./`) is a usage error
/// saying what is wrong, like the other refused directories, not "Device or resource
/// busy"; DIR is left as it was.
#[test]
fn export_nginx_dir_ending_in_a_dot_is_a_usage_error() {
    let r = reg();
    r.ok(&["alloc", "--name", "api", "--range", "31960-31969"]);
    let dir = r.tmp.path().join("nginx");
    r.ok(&["export", "--format", "nginx", "--dir", dir.to_str().unwrap()]);
    let files = || {
        let mut v: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let before = files();
    assert!(before.contains(&"api.conf".to_string()), "{before:?}");
    let d = dir.to_str().unwrap();
    for bad in [format!("{d}/."), format!("{d}/./"), format!("{d}/.."), ".".to_string()] {
        let o = r.run(&["export", "--format", "nginx", "--dir", &bad]);
        assert_one_line_error(&o, 2, "ends in . or ..");
        assert!(stderr(&o).contains(&bad), "{}", stderr(&o));
    }
    assert_eq!(files(), before);
}

/// Item 12: group, member and type names from a damaged side file are printed escaped in
/// human output (`group list`), never raw.
#[test]
fn plain_group_list_escapes_control_characters_from_a_damaged_side_file() {
    let r = reg();
    r.ok(&["group", "alloc", "g", "--spec", "a=0", "--range", "31980-31989"]);
    let file = r.dir.join("services.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for (_, e) in v["leases"].as_object_mut().unwrap() {
        e["group"] = "g\x1b[2J".into();
        e["member"] = "a\nFAKE=1\r".into();
    }
    std::fs::write(&file, v.to_string()).unwrap();
    let out = r.ok(&["group", "list"]);
    assert!(!out.contains(['\x1b', '\r']), "{out:?}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.contains(r"g\u{1b}[2J a\nFAKE=1\r="), "{out:?}");
}

/// Issue 12: `--layout` and `--spec` resolve by the core's one layout rule, the same as
/// C and Python: a layout name first, else a text with `=` or `:` is a spec, else an
/// unknown layout listing the known ones.
#[test]
fn group_layouts_follow_the_core_rules() {
    let r = reg_with_types();
    // A configured name given as --spec is still the named layout.
    let out = r.ok(&["group", "alloc", "l1", "--spec", "trio", "--range", "32000-32019", "--strategy", "sequential"]);
    assert_eq!(out, "a=32000\nb=32001\nc=32002\n");
    // A spec given as --layout is a spec; ':' separates like '='.
    let out =
        r.ok(&["group", "alloc", "l2", "--layout", "x:0,y=+3", "--range", "32000-32019", "--strategy", "sequential"]);
    assert_eq!(out, "x=32003\ny=32006\n");
    // Unknown names, by either option: the known layouts and how to give a spec.
    for opt in ["--layout", "--spec"] {
        let o = r.run(&["group", "alloc", "l3", opt, "nope"]);
        assert_one_line_error(&o, 2, "no group layout named \"nope\"");
        assert!(stderr(&o).contains("known layouts: stack, trio"), "{}", stderr(&o));
        assert!(stderr(&o).contains("spec"), "{}", stderr(&o));
    }
    assert_eq!(r.ok(&["group", "release", "l1"]), "32000\n32001\n32002\n");
    assert_eq!(r.ok(&["group", "release", "l2"]), "32003\n32006\n");
}

/// A registry with one type of its own: `t-stats` 31690-31699.
fn reg_with_stats_type() -> Reg {
    let mut r = reg();
    let p = r.tmp.path().join("types.json");
    std::fs::write(&p, r#"{"types": {"t-stats": {"range": "31690-31699"}}}"#).unwrap();
    r.types = Some(p);
    r
}

/// Issue 13.4: `alloc --map` gives a module one external port per internal port, all in
/// one lease; list, overview and every export carry the map; import re-makes it (ports
/// 31670-31689).
#[test]
fn module_port_maps_through_the_command() {
    let r = reg();
    let out = r.ok(&["alloc", "--name", "shop", "--map", "8080,9090", "--range", "31680-31689", "--ttl", "5m"]);
    let lines: Vec<(u16, u16)> = out
        .lines()
        .map(|l| {
            let (i, e) = l.split_once(':').unwrap();
            (i.parse().unwrap(), e.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), vec![8080, 9090], "{out}");
    let (e1, e2) = (lines[0].1, lines[1].1);
    assert!((31680..=31689).contains(&e1) && (31680..=31689).contains(&e2) && e1 < e2, "{out}");
    // One lease holds both.
    let rows = r.json(&["list", "--json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["lease_id"], rows[1]["lease_id"]);
    let internal: Vec<u64> = rows.iter().map(|x| x["internal_port"].as_u64().unwrap()).collect();
    assert_eq!(internal, vec![8080, 9090]);
    // --json: exactly the map.
    let v = r.json(&["alloc", "--name", "cart", "--map", "7000", "--range", "31670-31679", "--ttl", "5m", "--json"]);
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["7000"]);
    assert!((31670..=31679).contains(&(obj["7000"].as_u64().unwrap() as u16)));
    // Overview and exports.
    let ov = r.json(&["overview", "--json"]);
    assert_eq!(ov["services"]["shop"]["port_map"]["8080"], e1);
    assert_eq!(ov["services"]["shop"]["port_map"]["9090"], e2);
    assert_eq!(ov["ports"][e2.to_string()], "shop");
    let json = r.json(&["export", "--format", "json"]);
    let shop = json["services"].as_array().unwrap().iter().find(|s| s["name"] == "shop").unwrap().clone();
    assert_eq!(shop["port_map"]["9090"], e2);
    let env = r.ok(&["export", "--format", "env"]);
    assert!(env.contains(&format!("\nSHOP_8080_PORT={e1}\n")) && env.contains(&format!("\nSHOP_9090_PORT={e2}\n")), "{env}");
    let sourced = Command::new("bash")
        .args(["-c", "set -eu; source /dev/stdin; echo $SHOP_PORT $SHOP_8080_PORT $SHOP_9090_PORT $CART_7000_PORT"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(env.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let words: Vec<String> = stdout(&sourced).split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[..3], [e1.to_string(), e1.to_string(), e2.to_string()]);
    // Releasing the name frees every port of the module.
    let freed = r.ok(&["release", "--name", "shop"]);
    assert_eq!(freed.lines().count(), 2, "{freed}");
    // Import from the .env: the module comes back with its map (not as extra services).
    let f = r.tmp.path().join("env");
    std::fs::write(&f, &env).unwrap();
    r.ok(&["release", "--name", "cart"]);
    r.ok(&["import", f.to_str().unwrap(), "--ttl", "5m"]);
    let ov = r.json(&["overview", "--json"]);
    assert_eq!(ov["services"].as_object().unwrap().len(), 2, "{ov}");
    assert_eq!(ov["services"]["shop"]["port_map"]["9090"], e2);
    assert_eq!(ov["services"]["cart"]["port_map"].as_object().unwrap().len(), 1);
    // Bad maps: status 2, nothing held.
    r.ok(&["release", "--name", "shop"]);
    for bad in [&["--map", "8080,8080"][..], &["--map", "0"], &["--map", "8080", "--count", "2"], &["--map", "x"]] {
        let mut args = vec!["alloc", "--name", "bad", "--range", "31680-31689"];
        args.extend_from_slice(bad);
        assert_eq!(code(&r.run(&args)), 2, "{bad:?}");
    }
    let o = r.run(&["alloc", "--map", "8080"]);
    assert_eq!(code(&o), 2, "--map needs --name");
    assert!(r.json(&["overview", "--json"])["services"].get("bad").is_none());
}

/// Issue 13.3: per-type counts (total, active, expired, reserved), every range in use in
/// `stats`, and the overview (ports 31690-31699 and 31700-31709).
#[test]
fn stats_per_type_and_the_overview() {
    let r = reg_with_stats_type();
    r.ok(&["alloc", "--name", "a", "--type", "t-stats", "--ttl", "5m"]);
    r.ok(&["alloc", "--name", "b", "--type", "t-stats", "--ttl", "5m"]);
    r.ok(&["alloc", "--name", "short", "--type", "t-stats", "--ttl", "1s"]);
    r.ok(&["alloc", "--name", "plain", "--range", "31700-31709", "--ttl", "5m"]);
    // Two free ports of the type's range reserved (which ones are free: ask list).
    let held = r.held();
    let free: Vec<String> = (31690..=31699).filter(|p| !held.contains(p)).take(2).map(|p| p.to_string()).collect();
    r.ok(&["reserved", "add", &free[0], &free[1], "--reason", "stats test"]);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let st = r.json(&["stats", "--json"]);
    let t = st["types"].as_array().unwrap().iter().find(|t| t["type"] == "t-stats").unwrap().clone();
    assert_eq!((t["active"].as_u64(), t["expired"].as_u64(), t["total"].as_u64(), t["reserved"].as_u64()), (Some(2), Some(1), Some(3), Some(2)), "{t}");
    assert_eq!(t["range"], serde_json::json!([31690, 31699]));
    assert_eq!(t["size"], 10);
    // The old top-level keys stay; every range in use is listed.
    assert_eq!(st["held"], 3, "{st}");
    assert_eq!(st["reserved"], 2);
    let ranges: Vec<serde_json::Value> = st["ranges"].as_array().unwrap().clone();
    assert!(ranges.iter().any(|u| u["kind"] == "type" && u["range"] == serde_json::json!([31690, 31699]) && u["reserved"] == 2), "{st}");
    assert!(ranges.iter().any(|u| u["kind"] == "explicit" && u["range"] == serde_json::json!([31700, 31709]) && u["held"] == 1), "{st}");
    let text = r.ok(&["stats"]);
    assert!(text.contains("t-stats") && text.contains("31700-31709"), "{text}");
    // The overview: services by name, port -> name, names by type, the stats.
    let ov = r.json(&["overview", "--json"]);
    let names: Vec<&String> = ov["services"].as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["a", "b", "plain"]);
    let a_port = ov["services"]["a"]["port"].as_u64().unwrap();
    assert_eq!(ov["ports"][a_port.to_string()], "a");
    assert_eq!(ov["by_type"]["t-stats"], serde_json::json!(["a", "b"]));
    assert_eq!(ov["stats"]["types"], st["types"]);
    let text = r.ok(&["overview"]);
    assert!(text.lines().next().unwrap().starts_with("SERVICE") && text.contains("t-stats: a, b"), "{text}");
    // gc collects the expired one: expired goes to 0.
    r.ok(&["gc"]);
    let st = r.json(&["stats", "--json"]);
    let t = st["types"].as_array().unwrap().iter().find(|t| t["type"] == "t-stats").unwrap().clone();
    assert_eq!((t["active"].as_u64(), t["expired"].as_u64()), (Some(2), Some(0)), "{t}");
}
