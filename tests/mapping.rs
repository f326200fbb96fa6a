//! The mapping layer: service names, types, metadata, groups, export and import.
//! Registries live in temp dirs; explicit ranges are in 19000-22999.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::*;
use portmgr::mapping::*;
use portmgr::{ErrorCode, PortRange, Protocols, Registry, Request, Strategy, probe};

fn services() -> (tempfile::TempDir, Services) {
    let (d, reg) = temp_registry();
    (d, Services::with_types(reg, TypeTable::builtin()))
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The entry point of child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("PORTMGR_TEST_ROLE") else { return };
    let svc = Services::with_types(Registry::open_default().unwrap(), TypeTable::builtin());
    let mut words = role.split_whitespace();
    match words.next().unwrap() {
        // groups PREFIX N START LEN: wait for a line on stdin, place N groups of the
        // layout a+0 b+1 c+3 with the sequential strategy, print their ports, READY, then
        // hold them until stdin closes.
        "groups" => {
            let prefix = words.next().unwrap().to_string();
            let n: usize = words.next().unwrap().parse().unwrap();
            let start: u16 = words.next().unwrap().parse().unwrap();
            let len: u16 = words.next().unwrap().parse().unwrap();
            let layout = GroupLayout::parse("a=0,b=1,c=3").unwrap();
            let opts = GroupOptions {
                range: Some(range(start, len)),
                strategy: Strategy::Sequential,
                ..GroupOptions::default()
            };
            let mut stdin = BufReader::new(std::io::stdin());
            let mut line = String::new();
            stdin.read_line(&mut line).unwrap();
            let mut groups = Vec::new();
            for i in 0..n {
                groups.push(svc.allocate_group(&format!("{prefix}{i}"), &layout, &Metadata::new(), &opts).unwrap());
            }
            let mut o = std::io::stdout().lock();
            writeln!(o).unwrap();
            for g in &groups {
                for m in &g.members {
                    writeln!(o, "PORT {}", m.port).unwrap();
                }
            }
            writeln!(o, "READY").unwrap();
            o.flush().unwrap();
            drop(o);
            let _ = stdin.read_line(&mut line);
        }
        // types: the rest-api range of the table in force (PORTMGR_TYPES), or the error.
        "types" => match TypeTable::load_default() {
            Ok(t) => println!("\nRANGE {}", serde_json::to_value(t.get("rest-api").unwrap()).unwrap()["range"]),
            Err(e) => println!("\nERR {e}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn names_are_unique_get_or_allocate_and_metadata() {
    let (_d, svc) = services();
    let spec = ServiceSpec::typed("database").meta("owner", "team-a").meta("version", "16");
    let db = svc.allocate(&req_in(19000, 50).name("db"), &spec).unwrap();
    // A live name cannot be allocated twice.
    let e = svc.allocate(&req_in(19000, 50).name("db"), &ServiceSpec::new()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse, "{e}");
    // get_or_allocate returns the existing one, with its type and metadata.
    let (s, lease) = svc.get_or_allocate(&req_in(19000, 50).name("db"), &ServiceSpec::new()).unwrap();
    assert!(lease.is_none());
    assert_eq!(s.port, db.port());
    assert_eq!(s.service_type.as_deref(), Some("database"));
    assert_eq!(s.metadata, meta(&[("owner", "team-a"), ("version", "16")]));
    // ... and allocates a new name.
    let (s2, lease2) = svc.get_or_allocate(&req_in(19000, 50).name("cache"), &ServiceSpec::typed("cache")).unwrap();
    let lease2 = lease2.expect("a new name is allocated");
    assert_eq!(s2.port, lease2.port());
    assert_ne!(s2.port, db.port());
    assert_eq!(s2.service_type.as_deref(), Some("cache"));
    // Look-ups by name, port and type.
    assert_eq!(svc.by_name("db").unwrap().unwrap().port, db.port());
    assert_eq!(svc.by_port(lease2.port()).unwrap().unwrap().name.as_deref(), Some("cache"));
    assert_eq!(svc.by_type("database").unwrap().iter().map(|s| s.port).collect::<Vec<_>>(), vec![db.port()]);
    assert!(svc.by_type("grpc").unwrap().is_empty());
    assert_eq!(svc.by_type("nonsense").unwrap_err().code(), ErrorCode::InvalidArgument);
    // Metadata changes.
    let s = svc.update_metadata("db", &meta(&[("version", "17"), ("region", "eu")]), &["owner".into()]).unwrap();
    assert_eq!(s.metadata, meta(&[("region", "eu"), ("version", "17")]));
    assert_eq!(svc.update_metadata("nobody", &Metadata::new(), &[]).unwrap_err().code(), ErrorCode::NotFound);
    let bad = meta(&[("k=v", "x")]);
    assert_eq!(svc.update_metadata("db", &bad, &[]).unwrap_err().code(), ErrorCode::InvalidArgument);
    // Another handle (another process would see the same) sees the metadata.
    let other = Services::with_types(Registry::open(svc.registry().dir()).unwrap(), TypeTable::builtin());
    assert_eq!(other.by_name("db").unwrap().unwrap().metadata["region"], "eu");
    // Released: gone from the views; a new lease of the same name starts clean.
    drop(db);
    assert!(svc.by_name("db").unwrap().is_none());
    let db2 = svc.allocate(&req_in(19000, 50).name("db"), &ServiceSpec::new()).unwrap();
    let s = svc.by_name("db").unwrap().unwrap();
    assert!(s.metadata.is_empty(), "stale metadata leaked to a new lease: {:?}", s.metadata);
    assert_eq!(s.service_type, None);
    // The dead lease's entry was dropped from the side file by the next write.
    svc.update_metadata("db", &meta(&[("x", "1")]), &[]).unwrap();
    let text = std::fs::read_to_string(svc.registry().dir().join(SERVICES_FILE)).unwrap();
    assert!(!text.contains("team-a") && !text.contains("\"region\""), "dead entries kept:\n{text}");
    drop(db2);
}

#[test]
fn unnamed_leases_carry_metadata_too() {
    let (_d, svc) = services();
    let l = svc.allocate(&req_in(19050, 10).count(2).contiguous(true), &ServiceSpec::new().meta("k", "v")).unwrap();
    let s = svc.by_port(l.ports()[1]).unwrap().unwrap();
    assert_eq!(s.ports, l.ports());
    assert_eq!(s.metadata["k"], "v");
    assert_eq!(s.name, None);
    assert!(svc.list_named().unwrap().is_empty());
}

#[test]
fn every_builtin_type_has_its_range_and_allocates_from_it() {
    let expect: &[(&str, Option<(u16, u16)>)] = &[
        ("rest-api", Some((8080, 8099))),
        ("grpc", Some((50050, 50099))),
        ("websocket", Some((8100, 8199))),
        ("database", Some((5400, 5499))),
        ("cache", Some((6300, 6399))),
        ("analytics", Some((8200, 8299))),
        ("security", Some((8300, 8399))),
        ("frontend", Some((3000, 3099))),
        ("custom", None),
    ];
    let (_d, svc) = services();
    let t = svc.types();
    assert_eq!(t.names().len(), expect.len());
    let pool = svc.registry().default_pool().unwrap();
    for &(name, r) in expect {
        let ty = t.get(name).unwrap_or_else(|| panic!("no built-in type {name}"));
        assert_eq!(ty.range.as_ref().map(|r| (r.start(), r.end())), r, "range of {name}");
        // Allocating by type (no explicit range) draws from the type's range.
        let lease = svc
            .allocate(&Request::new().name(format!("t-{name}")), &ServiceSpec::typed(name))
            .unwrap_or_else(|e| panic!("allocating type {name}: {e}"));
        let want = r.map(|(a, b)| PortRange::new(a, b).unwrap()).unwrap_or_else(|| pool.clone());
        assert!(want.contains(lease.port()), "type {name} gave port {} outside {want}", lease.port());
        assert_eq!(svc.by_type(name).unwrap()[0].port, lease.port());
        assert_eq!(t.range_for(name, svc.registry()).unwrap(), want);
    }
    // An unknown type is refused, with or without an explicit range.
    for req in [Request::new(), Request::new().range(PortRange::new(19900, 19910).unwrap())] {
        let e = svc.allocate(&req, &ServiceSpec::typed("nope")).unwrap_err();
        assert_eq!(e.code(), portmgr::ErrorCode::InvalidArgument, "{e}");
        assert!(e.to_string().contains("unknown service type"), "{e}");
    }
    // The serialized view of a type.
    let v = serde_json::to_value(t.get("grpc").unwrap()).unwrap();
    assert_eq!(v["range"], "50050-50099");
    assert_eq!(serde_json::to_value(t.get("custom").unwrap()).unwrap()["range"], "pool");
}

#[test]
fn config_file_overrides_and_adds_types_and_groups() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("types.json");
    std::fs::write(
        &path,
        r#"{
  "types": {
    "rest-api": { "range": "19100-19109", "description": "ours" },
    "ml-model": { "range": [19110, 19119] },
    "scratch": { "range": "pool" }
  },
  "groups": {
    "pair": [ { "name": "web", "offset": 0, "type": "rest-api" }, { "name": "db", "offset": 2 } ]
  }
}"#,
    )
    .unwrap();
    let t = TypeTable::load(&path).unwrap();
    assert_eq!(t.get("rest-api").unwrap().range, Some(range(19100, 10)));
    assert_eq!(t.get("rest-api").unwrap().description, "ours");
    assert_eq!(t.get("rest-api").unwrap().source, path.display().to_string());
    assert_eq!(t.get("ml-model").unwrap().range, Some(range(19110, 10)));
    assert_eq!(t.get("scratch").unwrap().range, None);
    // Untouched built-ins stay.
    assert_eq!(t.get("grpc").unwrap().range, Some(range(50050, 50)));
    assert_eq!(t.group("pair").unwrap().members.len(), 2);
    assert!(t.group("stack").is_some());
    let (_rd, reg) = temp_registry();
    let svc = Services::with_types(reg, t);
    for i in 0..10 {
        let l = svc.allocate(&Request::new().name(format!("api{i}")), &ServiceSpec::typed("rest-api")).unwrap();
        assert!((19100..=19109).contains(&l.port()), "{}", l.port());
        l.keep().unwrap();
    }
    // The overridden range is full now.
    let e = svc.allocate(&Request::new(), &ServiceSpec::typed("rest-api")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted, "{e}");
    let l = svc.allocate(&Request::new(), &ServiceSpec::typed("ml-model")).unwrap();
    assert!((19110..=19119).contains(&l.port()));
    // PORTMGR_TYPES names the file for load_default.
    // (Only read here; set in a child-free way: the variable is checked by path.)
    assert_eq!(TypeTable::load(&path).unwrap(), svc.types().clone());
}

#[test]
fn portmgr_types_names_the_config_in_force() {
    let d = tempfile::tempdir().unwrap();
    let run = |types: &std::path::Path| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
            .env("PORTMGR_TEST_ROLE", "types")
            .env("PORTMGR_DIR", d.path().join("reg"))
            .env("PORTMGR_TYPES", types)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find(|l| l.starts_with("RANGE ") || l.starts_with("ERR ")).unwrap_or_default().to_string()
    };
    let good = d.path().join("good.json");
    std::fs::write(&good, r#"{"types": {"rest-api": {"range": "19700-19709"}}}"#).unwrap();
    assert_eq!(run(&good), "RANGE \"19700-19709\"");
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "{\"types\": {\n  \"rest-api\": {\"range\": \"x\"}}}").unwrap();
    let line = run(&bad);
    assert!(line.starts_with("ERR ") && line.contains("bad.json") && line.contains("line 2"), "{line}");
    assert!(run(&d.path().join("missing.json")).contains("missing.json"));
}

#[test]
fn broken_config_names_line_and_field() {
    let check = |text: &str, needles: &[&str]| {
        let e = TypeTable::from_json_str(text, "types.json").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
        }
    };
    // A misspelt field.
    check(
        "{\n  \"types\": {\n    \"web\": { \"rnage\": \"19000-19010\" }\n  }\n}",
        &["types.json", "line 3", "rnage", "range"],
    );
    // A bad range value.
    check(
        "{\n  \"types\": {\n    \"web\": {\n      \"range\": \"9000-80\"\n    }\n  }\n}",
        &["line 4", "`range`", "9000-80"],
    );
    // The wrong JSON type for a field.
    check("{\"types\": {\n\"web\": {\"range\": 5}}}", &["line 2", "`range`"]);
    check("{\"types\": {\"web\": {\"range\": \"pool\", \"description\": 7}}}", &["line 1", "`description`"]);
    // A missing field.
    check("{\"types\": {\n\"web\": {}\n}}", &["line 2", "missing field `range`"]);
    // Broken JSON.
    check("{\n\"types\": {\n\"web\": {\"range\": \"19000-19010\",}\n}}", &["line 3"]);
    // An unknown top-level key.
    check("{\"tpyes\": {}}", &["tpyes"]);
    // Groups: a bad offset, an unknown member type, a bad type name.
    check("{\"groups\": {\"g\": [\n{\"name\": \"a\", \"offset\": -1}]}}", &["line 2", "`offset`"]);
    check(
        "{\"groups\": {\"g\": [{\"name\": \"a\", \"offset\": 0, \"type\": \"nosuch\"}]}}",
        &["group \"g\"", "nosuch"],
    );
    check("{\"types\": {\"Web Server\": {\"range\": \"pool\"}}}", &["Web Server"]);
    // A missing file names the file.
    let e = TypeTable::load("/nonexistent/portmgr-types.json").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/portmgr-types.json"), "{e}");
}

#[test]
fn groups_are_all_or_nothing() {
    let (_d, svc) = services();
    let layout = GroupLayout::parse("a=0,b=+5,c:9/cache").unwrap();
    assert_eq!(layout.span(), 9);
    let opts =
        GroupOptions { range: Some(range(19200, 30)), strategy: Strategy::Sequential, ..GroupOptions::default() };
    // A socket outside portmgr holds base 19200's member b; a lease holds base 19201's c.
    let busy = probe::bind_listener(19205, Protocols::TCP).unwrap();
    let other = svc.allocate(&req_in(19210, 1), &ServiceSpec::new()).unwrap();
    let g = svc.allocate_group("ci1", &layout, &meta(&[("job", "1")]), &opts).unwrap();
    assert_eq!(g.base, 19202);
    assert_eq!(
        g.members.iter().map(|m| (m.name.as_str(), m.port)).collect::<Vec<_>>(),
        vec![("ci1.a", 19202), ("ci1.b", 19207), ("ci1.c", 19211)]
    );
    // The failed bases left nothing behind.
    assert_eq!(svc.registry().get_by_port(19200).unwrap(), None);
    assert_eq!(svc.registry().get_by_port(19201).unwrap(), None);
    let members = svc.by_group("ci1").unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.metadata["job"] == "1"));
    assert_eq!(svc.by_name("ci1.c").unwrap().unwrap().service_type.as_deref(), Some("cache"));
    assert_eq!(svc.by_name("ci1.b").unwrap().unwrap().member.as_deref(), Some("b"));
    let info = g.info();
    assert_eq!(info.members[2].offset, 9);
    assert_eq!(serde_json::to_value(&info).unwrap()["members"][2]["type"], "cache");
    // The same group name again: an error, nothing taken.
    let before = svc.registry().list().unwrap().len();
    let e = svc.allocate_group("ci1", &layout, &Metadata::new(), &opts).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InUse, "{e}");
    // A range with no base where all members are free: Exhausted, and no member leaked.
    let tight = GroupOptions { range: Some(range(19200, 12)), ..opts.clone() };
    let e = svc.allocate_group("ci2", &layout, &Metadata::new(), &tight).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted, "{e}");
    assert_eq!(svc.registry().list().unwrap().len(), before);
    assert!(svc.by_group("ci2").unwrap().is_empty());
    // Releasing the group frees every member.
    drop(busy);
    drop(other);
    let kept = g.keep().unwrap();
    assert_eq!(kept.base, 19202);
    let mut freed = svc.release_group("ci1").unwrap();
    freed.sort_unstable();
    assert_eq!(freed, vec![19202, 19207, 19211]);
    assert!(svc.by_group("ci1").unwrap().is_empty());
    // The built-in stack layout from the issue.
    let stack = svc.types().group("stack").unwrap().clone();
    assert_eq!(stack.span(), 500);
    let wide = GroupOptions { range: Some(range(20000, 2000)), ..GroupOptions::default() };
    let s = svc.allocate_group("dev", &stack, &Metadata::new(), &wide).unwrap();
    assert_eq!(s.port("redis").unwrap(), s.base + 100);
    assert_eq!(s.port("auth").unwrap(), s.base + 401);
    assert!(s.members.iter().all(|m| (20000..22000).contains(&m.port)));
    // Bad layouts.
    assert!(GroupLayout::parse("a=0,a=1").is_err());
    assert!(GroupLayout::parse("a=0,b=0").is_err());
    assert!(GroupLayout::parse("a").is_err());
    assert!(GroupLayout::parse("").is_err());
}

#[test]
fn two_processes_get_disjoint_groups() {
    let d = tempfile::tempdir().unwrap();
    // Both children place 5 groups of 3 ports in the same 80-port range, starting at the
    // same first base (sequential): they contend for the same bases.
    let mut kids: Vec<_> =
        ["x", "y"].iter().map(|p| spawn_role("child_role", d.path(), &format!("groups {p} 5 19300 80"))).collect();
    for k in &mut kids {
        writeln!(k.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut all = Vec::new();
    for k in &mut kids {
        let ports = read_ports(k, "READY");
        assert_eq!(ports.len(), 15);
        // Each group keeps its layout: a, a+1, a+3.
        for g in ports.chunks(3) {
            assert_eq!((g[1] - g[0], g[2] - g[0]), (1, 3), "{g:?}");
        }
        all.extend(ports);
    }
    assert_distinct(&all);
    // The parent sees all ten groups, recorded by the children.
    let svc = Services::with_types(Registry::open(d.path()).unwrap(), TypeTable::builtin());
    let listed = svc.list().unwrap();
    assert_eq!(listed.len(), 30);
    assert_eq!(svc.by_group("x3").unwrap().len(), 3);
    assert_eq!(svc.by_group("y0").unwrap().len(), 3);
    for mut k in kids {
        drop(k.stdin.take());
        assert!(k.wait().unwrap().success());
    }
    assert!(svc.list().unwrap().is_empty());
}

fn sample(svc: &Services) -> Vec<portmgr::Lease> {
    vec![
        svc.allocate(&req_in(19400, 50).name("api"), &ServiceSpec::typed("rest-api").meta("owner", "team-a")).unwrap(),
        svc.allocate(&req_in(19400, 50).name("clickhouse.http"), &ServiceSpec::typed("analytics")).unwrap(),
        svc.allocate(&req_in(19400, 50).name("dns").protocols(Protocols::UDP), &ServiceSpec::new()).unwrap(),
        svc.allocate(&req_in(19400, 50), &ServiceSpec::new()).unwrap(), // unnamed: not exported
    ]
}

#[test]
fn export_formats() {
    let (_d, svc) = services();
    let leases = sample(&svc);
    let (api, ch, dns) = (leases[0].port(), leases[1].port(), leases[2].port());
    let named = svc.list_named().unwrap();
    assert_eq!(named.len(), 3);

    // JSON: the documented schema.
    let json: serde_json::Value = serde_json::from_str(&svc.export(ExportFormat::Json).unwrap()).unwrap();
    assert_eq!(json["portmgr_export"], 1);
    let s = json["services"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0]["name"], "api");
    assert_eq!(s[0]["port"], api);
    assert_eq!(s[0]["ports"], serde_json::json!([api]));
    assert_eq!(s[0]["protocols"], "tcp");
    assert_eq!(s[0]["type"], "rest-api");
    assert_eq!(s[0]["metadata"]["owner"], "team-a");
    assert_eq!(s[1]["name"], "clickhouse.http");
    assert_eq!(s[2]["protocols"], "udp");
    assert!(s[2]["type"].is_null());

    // .env
    let env = export_env(&named).unwrap();
    assert!(env.lines().any(|l| l == format!("API_PORT={api}")), "{env}");
    assert!(env.lines().any(|l| l == format!("CLICKHOUSE_HTTP_PORT={ch}")), "{env}");
    assert!(env.lines().any(|l| l == format!("DNS_PORT={dns}")), "{env}");
    assert!(env.contains(r#"# portmgr {"name":"clickhouse.http","type":"analytics"}"#), "{env}");
    assert_eq!(env_key("clickhouse.http"), "CLICKHOUSE_HTTP_PORT");
    assert_eq!(env_key("my-svc 2"), "MY_SVC_2_PORT");
    assert_eq!(env_key("9lives"), "_9LIVES_PORT");
    // Two names that map to one variable: an error naming both.
    let _b = svc.allocate(&req_in(19400, 50).name("click-house.http"), &ServiceSpec::new()).unwrap();
    let _c = svc.allocate(&req_in(19400, 50).name("clickhouse-http"), &ServiceSpec::new()).unwrap();
    let e = svc.export(ExportFormat::Env).unwrap_err();
    assert!(e.to_string().contains("clickhouse-http") && e.to_string().contains("CLICKHOUSE_HTTP_PORT"), "{e}");
    drop((_b, _c));

    // nginx: one location per HTTP service, health too; UDP skipped with a reason.
    let ngx = export_nginx(&named);
    assert!(ngx.contains(&format!("location /api/ {{\n    proxy_pass http://127.0.0.1:{api}/;")), "{ngx}");
    assert!(
        ngx.contains(&format!("location = /api/health {{\n    proxy_pass http://127.0.0.1:{api}/health;")),
        "{ngx}"
    );
    assert!(ngx.contains("location /clickhouse.http/ {"), "{ngx}");
    for needle in [
        "proxy_http_version 1.1;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_read_timeout 300s;",
        "add_header X-Content-Type-Options \"nosniff\" always;",
    ] {
        assert!(ngx.contains(needle), "nginx export lacks {needle:?}");
    }
    assert!(!ngx.contains("location /dns/"), "{ngx}");
    assert!(ngx.contains("# skipped: invalid argument: service \"dns\" is UDP only"), "{ngx}");
    // Names nginx cannot route safely are refused.
    let mut weird = named[0].clone();
    weird.name = Some("../etc".into());
    assert_eq!(nginx_location(&weird).unwrap_err().code(), ErrorCode::InvalidArgument);
    weird.name = Some("a b".into());
    assert!(nginx_location(&weird).is_err());
    assert_eq!("nginx".parse::<ExportFormat>().unwrap(), ExportFormat::Nginx);
    assert!("yaml".parse::<ExportFormat>().is_err());
}

#[test]
fn nginx_dir_is_replaced_atomically_and_rolled_back_when_the_test_fails() {
    let (_d, svc) = services();
    let _leases = sample(&svc);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sites");
    let named = svc.list_named().unwrap();
    let done = write_nginx_dir(&dir, &named).unwrap();
    assert_eq!(done.files, vec!["api.conf".to_string(), "clickhouse.http.conf".to_string()]);
    assert_eq!(done.skipped.len(), 1);
    let before = std::fs::read_to_string(dir.join("api.conf")).unwrap();
    // A failing test command: the old directory comes back, nothing reloaded.
    let mut deploy = NginxDeploy::new(&dir);
    deploy.test_command = Some(vec!["sh".into(), "-c".into(), "echo 'emerg: broken' >&2; exit 1".into()]);
    deploy.reload_command = Some(vec!["sh".into(), "-c".into(), format!("touch {}/reloaded", tmp.path().display())]);
    let only_api: Vec<Service> = named.iter().filter(|s| s.name.as_deref() == Some("api")).cloned().collect();
    let e = deploy.apply(&only_api).unwrap_err();
    assert!(e.to_string().contains("emerg: broken"), "{e}");
    assert!(dir.join("clickhouse.http.conf").exists(), "the old directory was not restored");
    assert_eq!(std::fs::read_to_string(dir.join("api.conf")).unwrap(), before);
    assert!(!tmp.path().join("reloaded").exists());
    // A passing test: replaced and reloaded; no staging directory left behind.
    deploy.test_command = Some(vec!["true".into()]);
    let done = deploy.apply(&only_api).unwrap();
    assert!(done.tested && done.reloaded);
    assert!(!dir.join("clickhouse.http.conf").exists());
    assert!(tmp.path().join("reloaded").exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("portmgr-new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A failing reload also rolls back.
    deploy.reload_command = Some(vec!["false".into()]);
    assert!(deploy.apply(&named).is_err());
    assert!(!dir.join("clickhouse.http.conf").exists());
    // In a directory with files of the user's, those stay (issue 13.5).
    let foreign = tmp.path().join("conf.d");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("default.conf"), "x").unwrap();
    let done = write_nginx_dir(&foreign, &named).unwrap();
    assert_eq!(done.files, vec!["api.conf".to_string(), "clickhouse.http.conf".to_string()]);
    assert_eq!(std::fs::read_to_string(foreign.join("default.conf")).unwrap(), "x");
}

#[test]
fn import_asks_for_previous_ports_and_reports_fallbacks() {
    let (_d, svc) = services();
    let leases = sample(&svc);
    let ports: BTreeMap<String, u16> =
        svc.list_named().unwrap().into_iter().map(|s| (s.name.clone().unwrap(), s.port)).collect();
    let env = svc.export(ExportFormat::Env).unwrap();
    let json = svc.export(ExportFormat::Json).unwrap();
    drop(leases);
    assert!(svc.list().unwrap().is_empty());

    // api's old port is now taken by someone else; the rest are free.
    let thief = svc.allocate(&Request::new().range(range(ports["api"], 1)), &ServiceSpec::new()).unwrap();
    // The fallback range is apart from the previous ports, so a moved service cannot
    // land on a port another one of the file is about to ask for.
    let opts = ImportOptions { range: Some(range(19450, 50)), request: None };
    let out = svc.import_text(&env, None, &opts).unwrap();
    assert_eq!(out.services.len(), 3);
    assert_eq!(out.leases.len(), 3);
    let by: BTreeMap<&str, &ImportedService> = out.services.iter().map(|s| (s.name.as_str(), s)).collect();
    assert_eq!(by["api"].status, "moved");
    assert_eq!(by["api"].previous_port, ports["api"]);
    let new_api = by["api"].port.unwrap();
    assert_ne!(new_api, ports["api"]);
    assert!((19450..19500).contains(&new_api));
    assert!(by["api"].reason.as_deref().unwrap().contains(&ports["api"].to_string()));
    assert_eq!(out.moved().len(), 1);
    for n in ["clickhouse.http", "dns"] {
        assert_eq!(by[n].status, "same", "{n}: {:?}", by[n]);
        assert_eq!(by[n].port, Some(ports[n]));
    }
    // Names, types, protocols and metadata came back from the .env comments.
    let api = svc.by_name("api").unwrap().unwrap();
    assert_eq!(api.service_type.as_deref(), Some("rest-api"));
    assert_eq!(api.metadata["owner"], "team-a");
    assert_eq!(svc.by_name("dns").unwrap().unwrap().protocols, "udp");
    // Importing again: every name is live already.
    let again = svc.import_text(&json, Some(ImportFormat::Json), &opts).unwrap();
    assert!(again.services.iter().all(|s| s.status == "existing"), "{:?}", again.services);
    assert!(again.leases.is_empty());
    drop(out);
    drop(thief);

    // JSON import, all ports free again.
    let out = svc.import_text(&json, None, &opts).unwrap();
    assert!(out.services.iter().all(|s| s.status == "same"), "{:?}", out.services);
    assert_eq!(svc.by_name("clickhouse.http").unwrap().unwrap().service_type.as_deref(), Some("analytics"));
    drop(out);

    // A hand-written .env: names from the keys; other variables ignored.
    let text = "# my ports\nexport WEB_PORT=19460 # the web\nDB_PORT=\"19461\"\nDEBUG=1\n\n";
    let entries = parse_import(text, None).unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.name.as_str(), e.port)).collect::<Vec<_>>(),
        vec![("web", 19460), ("db", 19461)]
    );
    // Errors name the line.
    let e = parse_import("A_PORT=1\nB_PORT=seventy\n", None).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = parse_import("{\"portmgr_export\": 1,\n \"services\": [{\"port\": 5}]}", None).unwrap_err();
    assert!(e.to_string().contains("line 2") && e.to_string().contains("name"), "{e}");
}

#[test]
fn side_file_is_never_followed_through_a_symlink_and_survives_damage() {
    let (_d, svc) = services();
    let l = svc.allocate(&req_in(19500, 10).name("a"), &ServiceSpec::new().meta("k", "v")).unwrap();
    let file = svc.registry().dir().join(SERVICES_FILE);
    // Damaged: views carry on without metadata; the next write moves it aside.
    std::fs::write(&file, "{ not json").unwrap();
    assert!(svc.by_name("a").unwrap().unwrap().metadata.is_empty());
    svc.update_metadata("a", &meta(&[("k2", "v2")]), &[]).unwrap();
    assert_eq!(svc.by_name("a").unwrap().unwrap().metadata, meta(&[("k2", "v2")]));
    let aside = std::fs::read_dir(svc.registry().dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("services.json.damaged-"))
        .count();
    assert_eq!(aside, 1);
    // A symlink in its place is refused, and its target untouched.
    let target = tempfile::NamedTempFile::new().unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(target.path(), &file).unwrap();
    let e = svc.update_metadata("a", &meta(&[("k3", "v3")]), &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InsecureDirectory, "{e}");
    assert_eq!(std::fs::read_to_string(target.path()).unwrap(), "");
    std::fs::remove_file(&file).unwrap();
    drop(l);
    let _ = Duration::from_secs(0);
}

#[test]
fn export_and_import_keep_groups() {
    let (_d, svc) = services();
    let opts = GroupOptions { range: Some(range(19600, 50)), ..GroupOptions::default() };
    let layout = GroupLayout::parse("db=0/database,web=10").unwrap();
    let g = svc.allocate_group("job7", &layout, &meta(&[("ci", "yes")]), &opts).unwrap();
    let (db, web) = (g.port("db").unwrap(), g.port("web").unwrap());
    for format in [ExportFormat::Env, ExportFormat::Json] {
        let text = svc.export(format).unwrap();
        if format == ExportFormat::Env {
            assert!(text.contains(&format!("JOB7_DB_PORT={db}")), "{text}");
        }
        let mut g2 = svc.by_group("job7").unwrap();
        assert_eq!(g2.len(), 2);
        for s in &g2 {
            svc.registry().release_port(s.port).unwrap();
        }
        let out =
            svc.import_text(&text, None, &ImportOptions { range: Some(range(19600, 50)), request: None }).unwrap();
        assert!(out.services.iter().all(|s| s.status == "same"), "{format:?}: {:?}", out.services);
        g2 = svc.by_group("job7").unwrap();
        assert_eq!(
            g2.iter().map(|s| (s.member.clone().unwrap(), s.port)).collect::<Vec<_>>(),
            vec![("db".to_string(), db), ("web".to_string(), web)],
            "{format:?}"
        );
        assert_eq!(svc.by_name("job7.db").unwrap().unwrap().service_type.as_deref(), Some("database"));
        assert_eq!(svc.by_name("job7.web").unwrap().unwrap().metadata["ci"], "yes");
        for l in out.leases {
            l.keep().unwrap();
        }
    }
    drop(g);
}

#[test]
fn import_fallbacks_avoid_the_ports_the_file_names() {
    let (_d, svc) = services();
    let _thief = svc.allocate(&req_in(19800, 1), &ServiceSpec::new()).unwrap();
    // a's old port is taken; its fallback range also holds b's old port, which b must get.
    let text = "A_PORT=19800\nB_PORT=19801\nC_PORT=19802\n";
    let out = svc
        .import_text(text, Some(ImportFormat::Env), &ImportOptions { range: Some(range(19800, 4)), request: None })
        .unwrap();
    let got: Vec<(&str, Option<u16>, &str)> =
        out.services.iter().map(|s| (s.name.as_str(), s.port, s.status.as_str())).collect();
    assert_eq!(got, vec![("a", Some(19803), "moved"), ("b", Some(19801), "same"), ("c", Some(19802), "same")]);
    // No room left: reported as failed with the reason; the others are unaffected.
    drop(out);
    let _more = svc.allocate(&req_in(19803, 1), &ServiceSpec::new()).unwrap();
    let out = svc.import_text(text, None, &ImportOptions { range: Some(range(19800, 4)), request: None }).unwrap();
    assert_eq!(out.failed().len(), 1);
    let a = &out.services[0];
    assert_eq!((a.status.as_str(), a.port), ("failed", None));
    assert!(a.reason.as_deref().unwrap().contains("19800"), "{a:?}");
    assert_eq!(out.leases.len(), 2);
}

// ----------------------------------------------------------------------------------------
// Issue 11 (a hostile review). Exact ports in these tests are in 23000-23999: outside the
// kernel's ephemeral range, and used by no other test.

/// Item 8: the types config is read by the bounded reader (a regular file of at most
/// 16 MiB of UTF-8); anything else is an invalid argument naming the file.
#[test]
fn types_config_is_read_bounded_from_a_regular_utf8_file() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.json");
    std::fs::File::create(&big).unwrap().set_len(17 << 20).unwrap();
    let latin1 = d.path().join("latin1.json");
    std::fs::write(&latin1, b"{\"types\": {\"caf\xe9\": {\"range\": \"23000-23009\"}}}").unwrap();
    for (path, want) in [(big, "16 MiB"), (latin1, "UTF-8"), (d.path().to_path_buf(), "not a regular file")] {
        let e = TypeTable::load(&path).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{}: {e}", path.display());
        let msg = e.to_string();
        assert!(msg.contains(want) && msg.contains(path.to_str().unwrap()), "{msg}");
    }
    // A config with a UTF-8 byte order mark still parses.
    let bom = d.path().join("bom.json");
    std::fs::write(&bom, "\u{feff}{\"types\": {\"t\": {\"range\": \"23000-23009\"}}}").unwrap();
    assert!(TypeTable::load(&bom).unwrap().get("t").is_some());
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}

/// Item 5: a multi-port lease (3 ports, TCP and UDP) comes back whole from its JSON and
/// .env exports: the same count and protocols, and the same ports when they are free.
/// When one of them is taken the lease moves whole (a contiguous block stays contiguous)
/// and the report names the ports.
#[test]
fn import_restores_every_port_of_a_multi_port_lease() {
    let (_d, svc) = services();
    let opts = ImportOptions { range: Some(range(23040, 20)), request: None };
    let req = req_in(23000, 20).name("multi").count(3).protocols(Protocols::BOTH);
    let lease = svc.allocate(&req, &ServiceSpec::typed("custom")).unwrap();
    let ports = sorted(lease.ports().to_vec());
    let json = svc.export(ExportFormat::Json).unwrap();
    let env = svc.export(ExportFormat::Env).unwrap();
    drop(lease);
    for (what, text) in [("json", &json), ("env", &env)] {
        let out = svc.import_text(text, None, &opts).unwrap();
        let live = svc.by_name("multi").unwrap().unwrap();
        assert_eq!(live.ports, ports, "{what}: {:?}", out.services);
        assert_eq!(live.protocols, "both", "{what}");
        assert_eq!(live.service_type.as_deref(), Some("custom"), "{what}");
        let rep = serde_json::to_value(&out.services[0]).unwrap();
        assert_eq!(rep["status"], "same", "{what}: {rep}");
        assert_eq!(rep["ports"], serde_json::json!(ports), "{what}: {rep}");
        assert_eq!(rep["previous_ports"], serde_json::json!(ports), "{what}: {rep}");
        drop(out);
        assert!(svc.list().unwrap().is_empty());
    }
    // One of its ports is taken: the whole lease moves to the fallback range.
    let thief = svc.allocate(&req_in(ports[1], 1), &ServiceSpec::new()).unwrap();
    let out = svc.import_text(&json, None, &opts).unwrap();
    let rep = serde_json::to_value(&out.services[0]).unwrap();
    assert_eq!(rep["status"], "moved", "{rep}");
    assert!(rep["reason"].as_str().unwrap().contains(&ports[1].to_string()), "{rep}");
    let live = svc.by_name("multi").unwrap().unwrap();
    assert_eq!(live.ports.len(), 3, "{rep}");
    assert!(live.ports.iter().all(|p| (23040..23060).contains(p)), "{rep}");
    assert_eq!(rep["ports"], serde_json::json!(live.ports), "{rep}");
    assert_eq!(live.protocols, "both");
    drop(out);
    drop(thief);

    // A contiguous block comes back as one, and stays one when it has to move.
    let block = svc.allocate(&req_in(23060, 10).name("block").count(4).contiguous(true), &ServiceSpec::new()).unwrap();
    let bports = block.ports().to_vec();
    let json = svc.export(ExportFormat::Json).unwrap();
    drop(block);
    let out = svc.import_text(&json, None, &opts).unwrap();
    assert_eq!(svc.by_name("block").unwrap().unwrap().ports, bports);
    drop(out);
    let _thief = svc.allocate(&req_in(bports[3], 1), &ServiceSpec::new()).unwrap();
    let out = svc.import_text(&json, None, &opts).unwrap();
    assert_eq!(out.services[0].status, "moved", "{:?}", out.services);
    let moved = svc.by_name("block").unwrap().unwrap().ports;
    assert_eq!(moved.len(), 4);
    assert!(moved.windows(2).all(|w| w[1] == w[0] + 1), "{moved:?}");
}

/// Item 6: import validates what it records. `group` and `member` must be valid names
/// (no newline, not empty, a group without '.'), come together, and match the service's
/// name `GROUP.MEMBER` (else `group release` of that group would release an unrelated
/// service). `.env` variable names must be identifiers; a byte order mark is not part of
/// the first name, and a JSON file with one still parses as JSON.
#[test]
fn import_validates_groups_members_and_env_names() {
    let doc = |name: &str, group: serde_json::Value, member: serde_json::Value| {
        serde_json::json!({"portmgr_export": 1, "services": [
            {"name": name, "port": 23200, "group": group, "member": member}
        ]})
        .to_string()
    };
    use serde_json::Value::Null;
    let bad = [
        doc("h.x", "h\n".into(), "x".into()),
        doc(".x", "".into(), "x".into()),
        doc("h.", "h".into(), "".into()),
        doc("web", "h".into(), "x".into()),
        doc("h.x", "h".into(), Null),
        doc("h.x", Null, "x".into()),
        doc("a.b.c", "a.b".into(), "c".into()),
        doc("h.x y", "h".into(), "x y".into()),
    ];
    for text in &bad {
        let e = parse_import(text, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{text}: {e}");
        assert!(e.to_string().contains("group") || e.to_string().contains("member"), "{text}: {e}");
        // The same in a .env comment.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let s = &v["services"][0];
        let comment = serde_json::json!({"name": s["name"], "group": s["group"], "member": s["member"]});
        let env = format!("# portmgr {comment}\n{}=23200\n", env_key(s["name"].as_str().unwrap()));
        let e = parse_import(&env, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{env}: {e}");
    }
    let good = parse_import(&doc("h.x", "h".into(), "x".into()), None).unwrap();
    assert_eq!((good[0].group.as_deref(), good[0].member.as_deref()), (Some("h"), Some("x")));

    // .env variable names: identifiers only, and the error names the line.
    for line in ["A B_PORT=23200", "$(id)_PORT=23200", ".._PORT=23200", "A.B_PORT=23200", "A-B_PORT=23200"] {
        let e = parse_import(&format!("# ok\nOK_PORT=23201\n{line}\n"), Some(ImportFormat::Env)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{line}: {e}");
        assert!(e.to_string().contains("line 3"), "{line}: {e}");
    }
    // A byte order mark is dropped, in .env and JSON alike.
    let e = parse_import("\u{feff}WEB_PORT=23200\n", None).unwrap();
    assert_eq!(e[0].name, "web");
    let j = parse_import(&format!("\u{feff}{}", doc("h.x", "h".into(), "x".into())), None).unwrap();
    assert_eq!(j[0].name, "h.x");
}

/// Item 12, in the nginx export: a service type from a damaged side file cannot put a
/// line of its own into the generated configuration (its comment shows it escaped).
#[test]
fn nginx_location_never_copies_a_raw_newline_from_the_type() {
    let s = Service {
        name: Some("api".into()),
        port: 23600,
        ports: vec![23600],
        protocols: "tcp".into(),
        service_type: Some("x\nlocation /evil { return 200; }".into()),
        group: None,
        member: None,
        metadata: Metadata::new(),
        lease_id: 1,
        owner_pid: 1,
        expires_ms: None,
        state: "held".into(),
        port_map: None,
    };
    let conf = nginx_location(&s).unwrap();
    assert!(!conf.lines().any(|l| l.trim_start().starts_with("location /evil")), "{conf}");
    assert!(conf.contains(r"x\nlocation /evil"), "{conf}");
}

/// Issue 11.13: a lookup by a huge name that is not there does not echo it whole.
#[test]
fn a_huge_unknown_name_is_truncated_in_not_found() {
    let (_d, svc) = services();
    let huge = "m".repeat(100_000);
    let e = svc.update_metadata(&huge, &meta(&[("k", "v")]), &[]).unwrap_err();
    assert_eq!(e.code(), portmgr::ErrorCode::NotFound, "{e}");
    assert!(e.to_string().len() < 300 && e.to_string().contains("100000 bytes"), "{} bytes", e.to_string().len());
}

/// Issue 12: the one layout resolver every skin uses. A name is looked up first, then a
/// text with `=` or `:` is a spec, anything else is an unknown name listing the known
/// layouts; members are range-checked; every result is validated.
#[test]
fn layout_resolver_rules() {
    let t = TypeTable::from_json_str(
        r#"{"groups": {"trio": [{"name": "a", "offset": 0}, {"name": "b", "offset": 1, "type": "cache"},
                                  {"name": "c", "offset": 2}],
                       "odd=name": [{"name": "z", "offset": 7}]}}"#,
        "test",
    )
    .unwrap();
    let text = |s: &str| LayoutSource::Text(s.to_string());
    // 1. Names first: built in and configured, even a name that looks like a spec.
    assert_eq!(t.resolve_layout(&text("stack")).unwrap(), GroupLayout::stack());
    assert_eq!(t.resolve_layout(&text("trio")).unwrap(), t.group("trio").unwrap().clone());
    assert_eq!(t.resolve_layout(&text("odd=name")).unwrap().members[0].name, "z");
    // 2. Else a spec, with either separator.
    assert_eq!(
        t.resolve_layout(&text("pg=0,redis:+100/cache")).unwrap(),
        GroupLayout::new().member("pg", 0, None).member("redis", 100, Some("cache"))
    );
    // 3. Else an unknown name: the message lists the known layouts and how to give a spec.
    for unknown in ["nope", "", "Stack"] {
        let e = t.resolve_layout(&text(unknown)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let m = e.to_string();
        assert!(m.contains(&format!("no group layout named {unknown:?}")), "{m}");
        assert!(m.contains("known layouts: odd=name, stack, trio"), "{m}");
        assert!(m.contains("spec"), "{m}");
    }
    // A bad spec is the spec's own error.
    let e = t.resolve_layout(&text("a=0,a=1")).unwrap_err();
    assert!(e.to_string().contains("appears twice"), "{e}");
    let e = t.resolve_layout(&text("a=x")).unwrap_err();
    assert!(e.to_string().contains("offset"), "{e}");
    // 4. Members, in order, offsets checked, then validated like any layout.
    let members = |v: &[(&str, i64, Option<&str>)]| {
        LayoutSource::Members(v.iter().map(|(n, o, ty)| (n.to_string(), *o, ty.map(str::to_string))).collect())
    };
    assert_eq!(
        t.resolve_layout(&members(&[("web", 5, None), ("db", 0, Some("database"))])).unwrap(),
        GroupLayout::new().member("web", 5, None).member("db", 0, Some("database"))
    );
    for bad in [-1, 65535, 1 << 40] {
        let e = t.resolve_layout(&members(&[("a", bad, None)])).unwrap_err();
        assert!(e.to_string().contains(&format!("offset {bad} must be a number from 0 to 65534")), "{e}");
    }
    assert!(t.resolve_layout(&members(&[])).unwrap_err().to_string().contains("at least one member"));
    assert!(
        t.resolve_layout(&members(&[("a", 0, None), ("b", 0, None)])).unwrap_err().to_string().contains("same offset")
    );
    assert!(t.resolve_layout(&members(&[("a b", 0, None)])).unwrap_err().to_string().contains("member name"));
    // A name only another table knows is unknown here.
    assert_eq!(TypeTable::builtin().resolve_layout(&text("trio")).unwrap_err().code(), ErrorCode::InvalidArgument);
}

/// Issue 12: the one typed-or-plain allocation path, plain and bound.
#[test]
fn one_allocation_path_for_plain_and_typed_requests() {
    let (_d, reg) = temp_registry();
    let svc = Services::with_types(reg.clone(), TypeTable::builtin());
    // Plain: a registry lease, nothing recorded.
    let plain = portmgr::mapping::allocate(&reg, &req_in(22100, 10), &ServiceSpec::new()).unwrap();
    let s = svc.by_port(plain.port()).unwrap().unwrap();
    assert_eq!((s.service_type, s.metadata.len()), (None, 0));
    // Typed with an explicit range: the range wins, the type and metadata are recorded.
    let typed =
        portmgr::mapping::allocate(&reg, &req_in(22100, 10), &ServiceSpec::typed("cache").meta("k", "v")).unwrap();
    assert!((22100..22110).contains(&typed.port()));
    let s = svc.by_port(typed.port()).unwrap().unwrap();
    assert_eq!(s.service_type.as_deref(), Some("cache"));
    assert_eq!(s.metadata["k"], "v");
    // An unknown type: nothing allocated, the known types named.
    let before = reg.list().unwrap().len();
    let e = portmgr::mapping::allocate(&reg, &req_in(22100, 10), &ServiceSpec::typed("nosuch")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("known types"), "{e}");
    assert_eq!(reg.list().unwrap().len(), before);

    // Bound and typed: a listening socket on the held port, and the type recorded.
    let (lease, socks) =
        portmgr::mapping::allocate_bound(&reg, &req_in(22110, 10).name("bound-db"), &ServiceSpec::typed("database"))
            .unwrap();
    assert_eq!(socks.len(), 1);
    assert_eq!(socks[0].port, lease.port());
    assert!(!probe::is_free(lease.port(), Protocols::TCP).unwrap());
    let s = svc.by_name("bound-db").unwrap().unwrap();
    assert_eq!((s.port, s.service_type.as_deref()), (lease.port(), Some("database")));
    assert!(reg.get_by_port(lease.port()).unwrap().unwrap().bound);
    // Bound and typed without a range: from the type's range (builtin cache: 6300-6399),
    // through the Services handle.
    let (l2, _s2) = svc.allocate_bound(&Request::new(), &ServiceSpec::typed("cache")).unwrap();
    assert!((6300..=6399).contains(&l2.port()), "{}", l2.port());
    // Bad metadata: nothing allocated, nothing bound.
    let before = reg.list().unwrap().len();
    let bad = ServiceSpec::new().meta("a=b", "x");
    assert_eq!(svc.allocate_bound(&req_in(22110, 10), &bad).unwrap_err().code(), ErrorCode::InvalidArgument);
    assert_eq!(reg.list().unwrap().len(), before);
    // Plain bound.
    let (l3, s3) = portmgr::mapping::allocate_bound(&reg, &req_in(22120, 10), &ServiceSpec::new()).unwrap();
    assert_eq!(s3[0].port, l3.port());
    assert_eq!(svc.by_port(l3.port()).unwrap().unwrap().service_type, None);
}

/// Issue 12: one env-variable rule for `run --port` and the `.env` export.
#[test]
fn one_env_name_rule() {
    assert_eq!(env_stem("web-api"), "WEB_API");
    assert_eq!(env_stem("2nd"), "_2ND");
    assert_eq!(env_stem("clickhouse.http"), "CLICKHOUSE_HTTP");
    for n in ["web-api", "2nd", "ci-17.redis", "é"] {
        assert_eq!(env_key(n), format!("{}_PORT", env_stem(n)));
    }
}

// Issue 13 (ports 23700-23749).

/// A module's internal ports: one lease, all or nothing, the map in every view.
#[test]
fn module_port_maps_are_one_lease_all_or_nothing() {
    let (_d, svc) = services();
    let lease = svc.allocate(&req_in(23700, 10).name("shop"), &ServiceSpec::new().map([9090, 8080])).unwrap();
    assert_eq!(lease.ports().len(), 2);
    let s = svc.by_name("shop").unwrap().unwrap();
    let map = s.port_map.clone().unwrap();
    let mut ext = lease.ports().to_vec();
    ext.sort_unstable();
    // 9090 was given first: the internal ports in order get the ports in ascending order.
    assert_eq!(map, BTreeMap::from([(9090, ext[0]), (8080, ext[1])]));
    assert_eq!(portmgr::mapping::port_map(&[9090, 8080], lease.ports().iter().copied()), Some(map.clone()));
    // All or nothing: 3 internal ports, 2 free ports left in a range of 3 -> nothing held.
    let (_d2, svc2) = services();
    let _one = svc2.registry().allocate(&req_in(23710, 1)).unwrap();
    let e = svc2.allocate(&req_in(23710, 3).name("big"), &ServiceSpec::new().map([1, 2, 3])).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Exhausted);
    assert_eq!(svc2.registry().list().unwrap().len(), 1);
    // The count must agree; internal ports are validated.
    for (req, internal) in [(req_in(23720, 5).count(3), vec![1, 2]), (req_in(23720, 5), vec![1, 1]), (req_in(23720, 5), vec![0])] {
        assert_eq!(svc.allocate(&req.name("bad"), &ServiceSpec::new().map(internal)).unwrap_err().code(), ErrorCode::InvalidArgument);
    }
    // JSON round trip through import keeps the map.
    let json = svc.export(ExportFormat::Json).unwrap();
    drop(lease);
    let (_d3, svc3) = services();
    let out = svc3.import(&parse_import(&json, Some(ImportFormat::Json)).unwrap(), &ImportOptions::default()).unwrap();
    let _held = out.leases;
    assert_eq!(svc3.by_name("shop").unwrap().unwrap().port_map, Some(map));
}

/// Per-type statistics and the overview, from the core.
#[test]
fn stats_full_and_overview_count_by_type() {
    let (d, reg) = temp_registry();
    let types = d.path().join("types.json");
    std::fs::write(&types, r#"{"types": {"t-a": {"range": "23730-23739"}}}"#).unwrap();
    let svc = Services::with_types(reg, TypeTable::load(&types).unwrap());
    svc.registry().reserve(&[(23738, 23739)], Some("x")).unwrap();
    let a = svc.allocate(&Request::new().name("a"), &ServiceSpec::typed("t-a")).unwrap();
    let _b = svc.allocate(&Request::new().name("b").ttl(Duration::from_secs(1)), &ServiceSpec::typed("t-a")).unwrap();
    let _c = svc.allocate(&req_in(23740, 5).name("c"), &ServiceSpec::new()).unwrap();
    _b.keep().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let st = svc.stats_full().unwrap();
    let t = st.types.iter().find(|t| t.service_type == "t-a").unwrap();
    assert_eq!((t.active, t.expired, t.total, t.reserved, t.size), (1, 1, 2, 2, 10), "{t:?}");
    assert_eq!(t.range, Some((23730, 23739)));
    assert!(st.ranges.iter().any(|u| u.range == (23740, 23744) && u.held == 1));
    let ov = svc.overview().unwrap();
    assert_eq!(ov.services.keys().collect::<Vec<_>>(), vec!["a", "c"]);
    assert_eq!(ov.ports.get(&a.port()).map(String::as_str), Some("a"));
    assert_eq!(ov.by_type.get("t-a"), Some(&vec!["a".to_string()]));
    assert_eq!(ov.stats, st);
}
