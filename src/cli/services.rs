//! Named services: export (JSON, `.env`, nginx), import, and groups (alloc, release,
//! list). Thin over [`crate::mapping`].

use std::collections::BTreeMap;
use std::io;

use serde_json::json;

use super::args::{Cli, ExportArgs, Format, GroupAllocArgs, ImportArgs};
use super::output::{emit, emit_json, no_env, one_line, shown};
use super::{
    EXIT_IN_USE, EXIT_NOT_FOUND, EXIT_OK, EXIT_OTHER, EXIT_USAGE, Fail, R, fail, metadata, open_registry, services,
    with_lifetime,
};
use crate::error::Error;
use crate::mapping::{self, ExportFormat, GroupOptions, ImportOptions, LayoutSource, NginxDeploy, Service};
use crate::registry::Request;

pub(super) fn export(cli: &Cli, a: &ExportArgs) -> R<i32> {
    let format = match if cli.json { Format::Json } else { cli.format.unwrap_or(Format::Json) } {
        Format::Json => ExportFormat::Json,
        Format::Env => ExportFormat::Env,
        Format::Nginx => ExportFormat::Nginx,
        Format::Plain => return Err(fail(EXIT_USAGE, "export writes --format json, env or nginx, not plain")),
    };
    if a.dir.is_some() && format != ExportFormat::Nginx {
        return Err(fail(EXIT_USAGE, "--dir writes the nginx export: add --format nginx"));
    }
    let svc = services(open_registry(cli)?)?;
    let mut list = match &a.service_type {
        Some(t) => svc.by_type(t)?.into_iter().filter(|s| s.name.is_some()).collect(),
        None => svc.list_named()?,
    };
    if let Some(g) = &a.group {
        list.retain(|s| s.group.as_deref() == Some(g.as_str()));
    }
    let Some(dir) = &a.dir else {
        emit(&mapping::export(&list, format)?)?;
        return Ok(EXIT_OK);
    };
    let applied = if a.reload {
        let nginx = a.nginx.clone().unwrap_or_else(|| "nginx".into());
        let deploy = match (&a.nginx_prefix, &a.nginx_conf) {
            (Some(p), Some(c)) => NginxDeploy::with_nginx(dir, &nginx, p, c),
            _ => NginxDeploy {
                dir: dir.clone(),
                test_command: Some(vec![nginx.clone(), "-t".into()]),
                reload_command: Some(vec![nginx, "-s".into(), "reload".into()]),
            },
        };
        deploy.apply(&list).map_err(|e| {
            let mut f = Fail::from(e);
            // nginx refusing the result (or the reload) is no usage error.
            if f.msg.contains("nginx configuration failed its test") || f.msg.contains("reloading nginx failed") {
                f.code = EXIT_OTHER;
            }
            f
        })?
    } else {
        mapping::write_nginx_dir(dir, &list)?
    };
    let mut text = format!("wrote {} file(s) to {}\n", applied.files.len(), shown(&applied.dir.display().to_string()));
    for f in &applied.files {
        text.push_str(&format!("  {}\n", shown(f)));
    }
    for f in &applied.removed {
        text.push_str(&format!("removed {} (its service is gone)\n", shown(f)));
    }
    for s in &applied.skipped {
        text.push_str(&format!("skipped: {}\n", one_line(s)));
    }
    if applied.tested {
        text.push_str("nginx -t passed\n");
    }
    if applied.reloaded {
        text.push_str("nginx reloaded\n");
    }
    emit(&text)?;
    Ok(EXIT_OK)
}

pub(super) fn import(cli: &Cli, fmt: Format, a: &ImportArgs) -> R<i32> {
    // One bounded reader for files and stdin: a regular file (no device, FIFO or directory)
    // of at most 16 MiB of UTF-8; anything else is a usage error.
    let text = if a.file.as_os_str() == "-" {
        mapping::read_text(io::stdin().lock(), "standard input")
    } else {
        mapping::read_text_file(&a.file, "import file")
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => fail(EXIT_NOT_FOUND, format!("{e}: cannot read it; check the path")),
        _ => Fail::from(e),
    })?;
    let svc = services(open_registry(cli)?)?;
    let (template, _) = with_lifetime(Request::new(), a.owner, a.ttl);
    let opts = ImportOptions { range: a.range.clone(), request: Some(template) };
    let outcome = svc.import_text(&text, a.from, &opts)?;
    let out = match fmt {
        Format::Json => {
            let s = serde_json::to_string_pretty(&json!({ "services": outcome.services }))
                .map_err(|e| fail(EXIT_OTHER, format!("encoding JSON: {e}")))?;
            format!("{s}\n")
        }
        Format::Env => outcome
            .services
            .iter()
            .filter_map(|s| Some(format!("{}={}\n", mapping::env_key(&s.name), s.port?)))
            .collect(),
        _ => outcome
            .services
            .iter()
            .map(|s| {
                // Every port of the lease: "web 8081", "multi 8081,8085,8090".
                let join = |ports: &[u16], first: Option<u16>| match ports {
                    [] => first.map(|p| p.to_string()).unwrap_or_default(),
                    _ => ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
                };
                let now = join(&s.ports, s.port);
                let before = join(&s.previous_ports, Some(s.previous_port));
                let plural = if s.previous_ports.len() > 1 { "s" } else { "" };
                let name = shown(&s.name);
                match (s.status.as_str(), s.port) {
                    ("same", Some(_)) => format!("{name} {now} (kept its previous port{plural})\n"),
                    ("moved", Some(_)) => format!(
                        "{name} {before} -> {now} (moved: {})\n",
                        one_line(s.reason.as_deref().unwrap_or("its previous port is taken"))
                    ),
                    ("existing", Some(_)) => format!("{name} {now} (already live: left as it is)\n"),
                    _ => format!("{name} failed: {}\n", one_line(s.reason.as_deref().unwrap_or("unknown reason"))),
                }
            })
            .collect(),
    };
    // Printed before the leases are kept: when nobody can read the report, they are
    // dropped (released) instead of leaking.
    emit(&out)?;
    let failed: Vec<String> = outcome
        .failed()
        .iter()
        .map(|s| format!("{} ({})", shown(&s.name), one_line(s.reason.as_deref().unwrap_or("unknown reason"))))
        .collect();
    for l in outcome.leases {
        l.keep()?;
    }
    if !failed.is_empty() {
        return Err(fail(
            EXIT_OTHER,
            format!("{} service(s) could not be re-created: {}; the others are held", failed.len(), failed.join(", ")),
        ));
    }
    Ok(EXIT_OK)
}

pub(super) fn group_alloc(cli: &Cli, fmt: Format, a: &GroupAllocArgs) -> R<i32> {
    let svc = services(open_registry(cli)?)?;
    // --layout NAME and --spec SPEC both go through the one core rule (a layout name
    // first, else a spec); clap makes sure exactly one is given.
    let text = a.layout.as_ref().or(a.spec.as_ref()).cloned().unwrap_or_default();
    let layout = svc.types().resolve_layout(&LayoutSource::Text(text))?;
    let (template, _) = with_lifetime(Request::new(), a.owner, a.ttl);
    let mut opts = GroupOptions { range: a.range.clone(), request: template, ..GroupOptions::default() };
    if let Some(s) = &a.strategy {
        opts.strategy = s.clone();
    }
    let lease = svc.allocate_group(&a.name, &layout, &metadata(&a.meta), &opts).map_err(|e| match &e {
        Error::NameInUse { name, .. } => fail(
            EXIT_IN_USE,
            format!(
                "member service {name:?} is already held; use the group (`portmgr group list`) or release it first (`portmgr group release {}`)",
                a.name
            ),
        ),
        _ => Fail::from(e),
    })?;
    let info = lease.info();
    let text = match fmt {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&info).unwrap_or_default()),
        Format::Env => info.members.iter().map(|m| format!("{}={}\n", mapping::env_key(&m.name), m.port)).collect(),
        _ => info.members.iter().map(|m| format!("{}={}\n", shown(&m.member), m.port)).collect(),
    };
    // Printed before it is kept, as for alloc.
    emit(&text)?;
    lease.keep()?;
    Ok(EXIT_OK)
}

pub(super) fn group_release(cli: &Cli, fmt: Format, name: &str) -> R<i32> {
    no_env(fmt, "group release")?;
    let svc = services(open_registry(cli)?)?;
    let mut freed = svc.release_group(name)?;
    freed.sort_unstable();
    match fmt {
        Format::Json => emit_json(&json!({ "released": freed }))?,
        _ => emit(&freed.iter().map(|p| format!("{p}\n")).collect::<String>())?,
    }
    Ok(EXIT_OK)
}

pub(super) fn group_list(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "group list")?;
    let svc = services(open_registry(cli)?)?;
    let mut groups: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for s in svc.list()? {
        if let Some(g) = s.group.clone() {
            groups.entry(g).or_default().push(s);
        }
    }
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(
            groups
                .iter()
                .map(|(g, members)| {
                    json!({
                        "group": g,
                        "members": members.iter().map(|m| json!({
                            "member": m.member, "name": m.name, "port": m.port, "type": m.service_type,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ))?,
        _ => emit(
            &groups
                .iter()
                .map(|(g, members)| {
                    let m: Vec<String> = members
                        .iter()
                        .map(|m| format!("{}={}", m.member.as_deref().map_or("?".into(), shown), m.port))
                        .collect();
                    format!("{} {}\n", shown(g), m.join(" "))
                })
                .collect::<String>(),
        )?,
    }
    Ok(EXIT_OK)
}
