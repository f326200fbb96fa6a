//! The commands on ports and leases: alloc, release, renew, gc, list, stats, check,
//! scan, wait.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::args::{AllocArgs, Cli, Format, flat};
use super::output::{describe, emit, emit_json, env_lines, human_secs, lease_json, no_env, now_ms, one_line, shown};
use super::{
    EXIT_IN_USE, EXIT_OK, EXIT_OTHER, EXIT_TIMEOUT, EXIT_USAGE, Fail, R, fail, metadata, open_registry, services, with_lifetime,
};
use crate::error::{Error, ErrorCode};
use crate::mapping::{self, Service, ServiceSpec};
use crate::probe;
use crate::range::{PortRange, Protocols};
use crate::registry::{LeaseInfo, Request};

pub(super) fn alloc(cli: &Cli, fmt: Format, a: &AllocArgs) -> R<i32> {
    let reg = open_registry(cli)?;
    let mut req = Request::new().protocols(a.proto).count(a.count).contiguous(a.contiguous);
    if let Some(r) = &a.range {
        req = req.range(r.clone());
    }
    if let Some(s) = &a.strategy {
        req = req.strategy(s.clone());
    }
    if let Some(n) = &a.name {
        req = req.name(n.clone());
    }
    if let Some(p) = a.preferred {
        req = req.preferred(p, a.required);
    }
    req = req.exclude_spans(&flat(&a.exclude));
    // The default lifetime: the calling process (see the module docs).
    let (req, watch) = with_lifetime(req, a.owner, a.ttl);
    let spec = ServiceSpec {
        service_type: a.service_type.clone(),
        metadata: metadata(&a.meta),
        internal_ports: a.map.clone(),
        ..ServiceSpec::new()
    };
    let lease = mapping::allocate(&reg, &req, &spec)?;
    let ports = lease.ports().to_vec();
    let text = match mapping::port_map(&a.map, ports.iter().copied()) {
        // A module: its map, internal -> external.
        Some(map) => match fmt {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&map).unwrap_or_default()),
            Format::Env => {
                let name = a.name.as_deref().unwrap_or_default();
                let mut s = env_lines(Some(name), &ports[..1]);
                s.extend(map.iter().map(|(&i, &e)| format!("{}={e}\n", mapping::env_map_key(name, i))));
                s
            }
            Format::Plain | Format::Nginx => map.iter().map(|(i, e)| format!("{i}:{e}\n")).collect(),
        },
        None => match fmt {
        Format::Plain | Format::Nginx => ports.iter().map(|p| format!("{p}\n")).collect(),
        Format::Env => env_lines(a.name.as_deref(), &ports),
        Format::Json => {
            // This lease's record only: had it ended already (a tiny --ttl), the port may
            // be someone else's by now.
            let info = reg.get_by_port(ports[0])?.filter(|i| i.lease_id == lease.id());
            let v = json!({
                "ports": ports,
                "port": ports[0],
                "name": a.name,
                "protocols": a.proto.as_str(),
                "lease_id": lease.id(),
                "watch_pid": watch,
                "expires_ms": info.as_ref().and_then(|i| i.expires_ms),
                "type": a.service_type,
                "metadata": metadata(&a.meta),
            });
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        },
    };
    // Printed before it is kept: when nobody can read the port, the lease is dropped
    // (released) instead of leaking.
    emit(&text)?;
    lease.keep()?;
    Ok(EXIT_OK)
}

pub(super) fn release(cli: &Cli, fmt: Format, ports: &[u16], name: Option<&str>, id: Option<u64>) -> R<i32> {
    no_env(fmt, "release")?;
    let reg = open_registry(cli)?;
    let mut freed: Vec<u16> = Vec::new();
    let mut first_err: Option<Fail> = None;
    if let Some(id) = id {
        freed = reg.release_id(id)?;
    } else if let Some(n) = name {
        freed = reg.release_name(n)?;
    } else {
        for &p in ports {
            if freed.contains(&p) {
                continue;
            }
            match reg.release_port(p) {
                Ok(f) => freed.extend(f),
                Err(e) => {
                    let f = Fail::from(e);
                    if first_err.is_some() {
                        eprintln!("portmgr: {}", one_line(&f.msg));
                    } else {
                        first_err = Some(f);
                    }
                }
            }
        }
    }
    freed.sort_unstable();
    match fmt {
        Format::Json => emit_json(&json!({ "released": freed }))?,
        _ => emit(&freed.iter().map(|p| format!("{p}\n")).collect::<String>())?,
    }
    match first_err {
        Some(f) => Err(f),
        None => Ok(EXIT_OK),
    }
}

pub(super) fn renew(
    cli: &Cli,
    fmt: Format,
    port: Option<u16>,
    name: Option<&str>,
    id: Option<u64>,
    ttl: Option<Duration>,
) -> R<i32> {
    no_env(fmt, "renew")?;
    let reg = open_registry(cli)?;
    let infos = match (id, port, name) {
        (Some(id), _, _) => {
            reg.renew_id(id, ttl)?;
            reg.list()?.into_iter().filter(|i| i.lease_id == id).collect::<Vec<_>>()
        }
        (None, Some(p), _) => {
            // The port names a lease once; then only that lease is renewed and shown, even
            // if the port changes hands in between (its lease released, the port re-let).
            let not_held = || Error::NotFound(format!("no live lease holds port {p}"));
            let id = reg.get_by_port(p)?.ok_or_else(not_held)?.lease_id;
            reg.renew_id(id, ttl).map_err(|e| if matches!(e, Error::NotFound(_)) { not_held() } else { e })?;
            reg.list()?.into_iter().filter(|i| i.lease_id == id).collect::<Vec<_>>()
        }
        (None, None, Some(n)) => {
            reg.renew_name(n, ttl)?;
            reg.get_by_name(n)?
        }
        (None, None, None) => return Err(fail(EXIT_USAGE, "give a PORT, --name NAME or --id ID")),
    };
    match fmt {
        Format::Json => emit_json(&json!({ "renewed": infos.iter().map(lease_json).collect::<Vec<_>>() }))?,
        _ => {
            let now = now_ms();
            let text: String = infos
                .iter()
                .map(|i| match i.expires_ms {
                    Some(e) => format!("{} expires in {}\n", i.port, human_secs(e.saturating_sub(now))),
                    None => format!("{}\n", i.port),
                })
                .collect();
            emit(&text)?
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn gc(cli: &Cli, fmt: Format, damaged: bool) -> R<i32> {
    no_env(fmt, "gc")?;
    let reg = open_registry(cli)?;
    let freed = reg.gc()?;
    let freed_damaged = if damaged { reg.free_damaged()? } else { Vec::new() };
    match fmt {
        Format::Json => emit_json(&json!({
            "freed": freed.iter().map(lease_json).collect::<Vec<_>>(),
            "freed_damaged": freed_damaged,
        }))?,
        _ => emit(
            &freed
                .iter()
                .map(|i| format!("{} {} ({})\n", i.port, shown(&i.state), describe(i)))
                .chain(freed_damaged.iter().map(|p| format!("{p} damaged (record freed)\n")))
                .collect::<String>(),
        )?,
    }
    Ok(EXIT_OK)
}

pub(super) fn list(
    cli: &Cli,
    fmt: Format,
    name: Option<&str>,
    port: Option<u16>,
    owner: Option<u32>,
    service_type: Option<&str>,
    group: Option<&str>,
) -> R<i32> {
    let reg = open_registry(cli)?;
    // --type and --group: the lease ids of the matching services.
    let mut only: Option<HashSet<u64>> = None;
    if service_type.is_some() || group.is_some() {
        let svc = services(reg.clone())?;
        let mut found: Vec<Service> = match service_type {
            Some(t) => svc.by_type(t)?,
            None => svc.list()?,
        };
        if let Some(g) = group {
            found.retain(|s| s.group.as_deref() == Some(g));
        }
        only = Some(found.iter().map(|s| s.lease_id).collect());
    }
    // A module's ports: external port -> its internal port, from the services' maps.
    let internal: BTreeMap<u16, u16> = services(reg.clone())?
        .list()?
        .iter()
        .flat_map(|s| s.port_map.iter().flatten().map(|(&i, &e)| (e, i)))
        .collect();
    let items: Vec<LeaseInfo> = reg
        .list()?
        .into_iter()
        .filter(|i| only.as_ref().is_none_or(|ids| ids.contains(&i.lease_id)))
        .filter(|i| name.is_none_or(|n| i.name.as_deref() == Some(n)))
        .filter(|i| port.is_none_or(|p| i.port == p))
        .filter(|i| owner.is_none_or(|o| i.owner_pid == o || i.watch_pid == Some(o)))
        .collect();
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(
            items
                .iter()
                .map(|i| {
                    let mut v = lease_json(i);
                    if let Some(p) = internal.get(&i.port) {
                        v["internal_port"] = (*p).into();
                    }
                    v
                })
                .collect(),
        ))?,
        Format::Env => {
            let mut by_lease: BTreeMap<u64, (String, Vec<u16>)> = BTreeMap::new();
            for i in &items {
                if let Some(n) = &i.name {
                    by_lease.entry(i.lease_id).or_insert_with(|| (n.clone(), Vec::new())).1.push(i.port);
                }
            }
            emit(&by_lease.values().map(|(n, ps)| env_lines(Some(n), ps)).collect::<String>())?
        }
        Format::Plain | Format::Nginx => {
            if !items.is_empty() {
                let now = now_ms();
                let mut s = format!(
                    "{:<6} {:>6} {:<5} {:<20} {:>8} {:>8} {:<10} {}\n",
                    "PORT", "ID", "PROTO", "NAME", "PID", "WATCH", "EXPIRES", "STATE"
                );
                for i in &items {
                    s.push_str(&format!(
                        "{:<6} {:>6} {:<5} {:<20} {:>8} {:>8} {:<10} {}\n",
                        i.port,
                        i.lease_id,
                        shown(&i.protocols),
                        i.name.as_deref().map_or(Cow::Borrowed("-"), shown),
                        i.owner_pid,
                        i.watch_pid.map_or("-".to_string(), |w| w.to_string()),
                        i.expires_ms.map_or("-".to_string(), |e| format!("in {}", human_secs(e.saturating_sub(now)))),
                        match (i.bound, internal.get(&i.port)) {
                            (_, Some(p)) => format!("{} (internal port {p})", shown(&i.state)),
                            (true, None) => format!("{} (bound)", shown(&i.state)),
                            (false, None) => shown(&i.state).into_owned(),
                        },
                    ));
                }
                emit(&s)?;
            }
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn check(cli: &Cli, fmt: Format, ports: &[u16], proto: Protocols) -> R<i32> {
    no_env(fmt, "check")?;
    let reg = open_registry(cli)?;
    let mut all_free = true;
    let mut any_in_use = false;
    let mut rows = Vec::new();
    let mut text = String::new();
    for &p in ports {
        let state = probe::state(p, proto)?;
        let bound = state == probe::PortState::InUse;
        let privileged = state == probe::PortState::Privileged;
        let lease = reg.get_by_port(p)?;
        let free = state == probe::PortState::Free && lease.is_none();
        all_free &= free;
        any_in_use |= bound || lease.is_some();
        let why = match (&lease, state) {
            (None, probe::PortState::Free) => "free".to_string(),
            (None, probe::PortState::Privileged) => format!("privileged: {}", probe::privileged_reason(p)),
            (None, probe::PortState::InUse) => format!("in use: bound ({proto}) by a program outside portmgr"),
            (Some(i), st) => format!(
                "in use: held in the registry ({}){}",
                describe(i),
                match st {
                    probe::PortState::InUse => ", and bound",
                    probe::PortState::Privileged => ", and privileged for this user",
                    probe::PortState::Free => "",
                }
            ),
        };
        text.push_str(&format!("{p} {why}\n"));
        rows.push(json!({
            "port": p,
            "free": free,
            "bound": bound,
            "privileged": privileged,
            "state": if lease.is_some() { "held" } else { state.as_str() },
            "lease": lease.as_ref().map(lease_json),
        }));
    }
    match fmt {
        Format::Json => emit_json(&serde_json::Value::Array(rows))?,
        _ => emit(&text)?,
    }
    // In use (4) wins over privileged (2, a permission problem).
    Ok(if all_free {
        EXIT_OK
    } else if any_in_use {
        EXIT_IN_USE
    } else {
        EXIT_USAGE
    })
}

pub(super) fn scan(cli: &Cli, fmt: Format, range: &PortRange, proto: Protocols) -> R<i32> {
    no_env(fmt, "scan")?;
    let reg = open_registry(cli)?;
    let bound: HashSet<u16> = probe::scan(range, proto)?.into_iter().collect();
    let held: BTreeMap<u16, LeaseInfo> =
        reg.list()?.into_iter().filter(|i| range.contains(i.port)).map(|i| (i.port, i)).collect();
    let mut ports: Vec<u16> = bound.iter().copied().chain(held.keys().copied()).collect();
    ports.sort_unstable();
    ports.dedup();
    match fmt {
        Format::Json => emit_json(&json!({
            "range": format!("{}-{}", range.start(), range.end()),
            "protocols": proto.as_str(),
            "in_use": ports.iter().map(|p| json!({
                "port": p,
                "bound": bound.contains(p),
                "lease": held.get(p).map(lease_json),
            })).collect::<Vec<_>>(),
        }))?,
        _ => {
            let text: String = ports
                .iter()
                .map(|p| {
                    let mut what = Vec::new();
                    if bound.contains(p) {
                        what.push("bound".to_string());
                    }
                    if let Some(i) = held.get(p) {
                        what.push(format!("held ({})", describe(i)));
                    }
                    format!("{p} {}\n", what.join(", "))
                })
                .collect();
            emit(&text)?
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn wait(fmt: Format, target: &str, timeout: Duration) -> R<i32> {
    no_env(fmt, "wait")?;
    let (host, port) = probe::parse_host_port(target)?;
    let addrs = probe::resolve(&host, port)?;
    let waited = probe::wait_listening_any(&addrs, timeout).map_err(|e| match e.code() {
        ErrorCode::Timeout => fail(
            EXIT_TIMEOUT,
            format!(
                "timed out: nothing accepted TCP connections on {target} within {}; is the server running and listening there? (--timeout to wait longer)",
                human_secs(timeout.as_millis() as u64)
            ),
        ),
        _ => Fail::from(e),
    })?;
    match fmt {
        Format::Json => emit_json(&json!({ "target": target, "ready": true, "waited_ms": waited.as_millis() as u64 }))?,
        _ => emit(&format!("{} accepts connections\n", shown(target)))?,
    }
    Ok(EXIT_OK)
}

/// `portmgr reach`: the core's first-reachable probe (`probe::first_reachable`). The
/// winner on the first line, then one line per candidate; status 7 when none is reachable
/// (the candidates' lines then go to stderr, so stdout's first line is always a winner).
pub(super) fn reach(fmt: Format, targets: &[String], timeout: Duration) -> R<i32> {
    no_env(fmt, "reach")?;
    let r = probe::first_reachable(targets, timeout)?;
    let code = if r.winner.is_some() { EXIT_OK } else { EXIT_TIMEOUT };
    if fmt == Format::Json {
        emit_json(&serde_json::to_value(&r).map_err(|e| fail(EXIT_OTHER, e.to_string()))?)?;
        return Ok(code);
    }
    let mut lines = String::new();
    for c in &r.candidates {
        lines.push_str(&format!("  {} {} {}ms", shown(&c.target), c.outcome.as_str(), c.elapsed.as_millis()));
        if let Some(a) = c.address.filter(|a| a.ip().to_string() != c.host) {
            lines.push_str(&format!(" ({a})"));
        }
        if let Some(e) = &c.error {
            lines.push_str(&format!(": {}", one_line(e)));
        }
        lines.push('\n');
    }
    match r.reachable() {
        Some(w) => emit(&format!("{}\n{lines}", shown(&w.target)))?,
        None => {
            eprint!("{lines}");
            return Err(fail(
                EXIT_TIMEOUT,
                format!(
                    "no candidate accepted TCP connections within {} (--timeout to wait longer)",
                    human_secs(timeout.as_millis() as u64)
                ),
            ));
        }
    }
    Ok(code)
}
