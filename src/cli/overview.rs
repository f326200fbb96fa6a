//! `portmgr stats` and `portmgr overview`: the core's statistics (every range in use,
//! every service type) and overview, rendered.

use std::borrow::Cow;

use super::args::{Cli, Format};
use super::output::{emit, emit_json, no_env, shown};
use super::{EXIT_OK, R, open_registry, services};
use crate::mapping::{FullStats, RangeKind};

pub(super) fn stats(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "stats")?;
    let st = services(open_registry(cli)?)?.stats_full()?;
    match fmt {
        Format::Json => emit_json(&serde_json::to_value(&st).unwrap_or_default())?,
        _ => emit(&stats_text(&st))?,
    }
    Ok(EXIT_OK)
}

pub(super) fn overview(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "overview")?;
    let ov = services(open_registry(cli)?)?.overview()?;
    if fmt == Format::Json {
        emit_json(&serde_json::to_value(&ov).unwrap_or_default())?;
        return Ok(EXIT_OK);
    }
    let mut s = String::new();
    if ov.services.is_empty() {
        s.push_str("no named services\n");
    } else {
        s.push_str(&format!("{:<24} {:<18} {:<16} {:>6}  {}\n", "SERVICE", "PORTS", "TYPE", "ID", "PORT MAP"));
        for (name, svc) in &ov.services {
            let ports: Vec<String> = svc.ports.iter().map(u16::to_string).collect();
            let map: Vec<String> = svc.port_map.iter().flatten().map(|(i, e)| format!("{i}:{e}")).collect();
            s.push_str(&format!(
                "{:<24} {:<18} {:<16} {:>6}  {}\n",
                shown(name),
                ports.join(","),
                svc.service_type.as_deref().map_or(Cow::Borrowed("-"), shown),
                svc.lease_id,
                if map.is_empty() { "-".to_string() } else { map.join(" ") },
            ));
        }
    }
    if !ov.by_type.is_empty() {
        s.push_str("\nby type:\n");
        for (t, names) in &ov.by_type {
            let names: Vec<Cow<'_, str>> = names.iter().map(|n| shown(n)).collect();
            s.push_str(&format!("  {}: {}\n", shown(t), names.join(", ")));
        }
    }
    s.push('\n');
    s.push_str(&stats_text(&ov.stats));
    emit(&s)?;
    Ok(EXIT_OK)
}

/// The registry's figures, every range in use, and the service types with any port.
fn stats_text(st: &FullStats) -> String {
    let r = &st.registry;
    let mut s = format!(
        "pool         {}\npool size    {}\nheld         {} ({} in the pool)\nreserved     {} ({} free ones in the pool)\nfree         {}\nutilization  {:.1}%\nowners       {}\nallocations  {}\nreleases     {}\nreclaimed    {}\n",
        r.pool,
        r.pool_size,
        r.held,
        r.held_in_pool,
        r.reserved,
        r.reserved_in_pool,
        r.free,
        r.utilization * 100.0,
        r.owners,
        r.allocations,
        r.releases,
        r.reclaimed
    );
    let others: Vec<_> = st.ranges.iter().filter(|u| u.kind != RangeKind::Pool).collect();
    if !others.is_empty() {
        s.push_str("ranges in use:\n");
        for u in others {
            let what = match &u.service_type {
                Some(t) => format!("type {}", shown(t)),
                None => "range".to_string(),
            };
            s.push_str(&format!(
                "  {what} {}-{}: {} of {} held{}, {:.1}% used\n",
                u.range.0,
                u.range.1,
                u.held,
                u.size,
                if u.reserved > 0 { format!(", {} reserved", u.reserved) } else { String::new() },
                u.utilization * 100.0
            ));
        }
    }
    let used: Vec<_> = st.types.iter().filter(|t| t.total > 0 || t.reserved > 0).collect();
    if !used.is_empty() {
        s.push_str(&format!(
            "{:<16} {:<12} {:>6} {:>7} {:>8} {:>7}\n",
            "TYPE", "RANGE", "ACTIVE", "EXPIRED", "RESERVED", "USED"
        ));
        for t in used {
            s.push_str(&format!(
                "{:<16} {:<12} {:>6} {:>7} {:>8} {:>6.1}%\n",
                shown(&t.service_type),
                t.range.map_or("pool".to_string(), |(a, b)| format!("{a}-{b}")),
                t.active,
                t.expired,
                t.reserved,
                t.utilization * 100.0
            ));
        }
    }
    s
}
