//! `portmgr health`: renders the core's health report (`Services::health`: every range in
//! use, and the problems in it); status 9 when there is any problem. `--watch` runs the
//! core's `HealthMonitor` and prints each change; `--history` renders the recorded checks
//! (`mapping::health_history`).

use serde_json::json;

use crate::mapping::{Health, HealthEntry, HealthMonitor, Problem, ProblemKind, RangeKind};
use crate::sys::SignalSet;

use super::args::{Cli, Format};
use super::output::{emit, emit_json, lease_json, no_env, shown};
use super::{EXIT_OK, EXIT_OTHER, EXIT_UNHEALTHY, R, fail, open_registry, services};

pub(super) fn health(cli: &Cli, fmt: Format, threshold: f64) -> R<i32> {
    no_env(fmt, "health")?;
    let h = services(open_registry(cli)?)?.health(threshold)?;
    match fmt {
        Format::Json => emit_json(&report_json(&h))?,
        _ => emit(&report_text(&h))?,
    }
    Ok(if h.ok { EXIT_OK } else { EXIT_UNHEALTHY })
}

/// The JSON shape `portmgr health --json` has always had (`healthy`, the pool's
/// `utilization`, `held`, `pool`, `problems`), plus every range in use (`ranges`).
fn report_json(h: &Health) -> serde_json::Value {
    let pool = h.pool();
    json!({
        "healthy": h.ok,
        "utilization": pool.map_or(0.0, |p| p.utilization),
        "threshold": h.threshold,
        "held": h.held,
        "reserved": h.reserved,
        "pool": pool.map(|p| format!("{}-{}", p.range.0, p.range.1)),
        "ranges": h.ranges.iter().map(|r| json!({
            "kind": r.kind,
            "range": format!("{}-{}", r.range.0, r.range.1),
            "type": r.service_type,
            "size": r.size,
            "held": r.held,
            "reserved": r.reserved,
            "utilization": r.utilization,
        })).collect::<Vec<_>>(),
        "problems": h.problems.iter().map(problem_json).collect::<Vec<_>>(),
    })
}

fn problem_json(p: &Problem) -> serde_json::Value {
    let mut v = json!({
        // The CLI's documented name for an exhausted range, kept for its users.
        "kind": if p.kind == ProblemKind::Exhausted { "exhaustion" } else { p.kind.as_str() },
        "message": p.message,
    });
    if let Some((a, b)) = p.range {
        v["range"] = json!(format!("{a}-{b}"));
    }
    if let Some(t) = &p.service_type {
        v["type"] = json!(t);
    }
    if let Some(port) = p.port {
        v["port"] = json!(port);
    }
    if p.kind == ProblemKind::BoundElsewhere {
        v["pids"] = json!(p.pids);
    }
    if let Some(l) = &p.lease {
        v["lease"] = lease_json(l);
    }
    v
}

fn report_text(h: &Health) -> String {
    let mut s = String::new();
    for p in &h.problems {
        s.push_str(&format!("warning: {}\n", shown(&p.message)));
    }
    let pool = h.pool();
    s.push_str(&format!(
        "{}: {} held{}, pool {} {:.1}% used\n",
        if h.ok { "healthy" } else { "unhealthy" },
        h.held,
        if h.reserved > 0 { format!(", {} reserved", h.reserved) } else { String::new() },
        pool.map_or_else(String::new, |p| format!("{}-{}", p.range.0, p.range.1)),
        pool.map_or(0.0, |p| p.utilization) * 100.0
    ));
    for r in h.ranges.iter().filter(|r| r.kind != RangeKind::Pool) {
        let what = match &r.service_type {
            Some(t) => format!("type {}", shown(t)),
            None => "range".to_string(),
        };
        s.push_str(&format!(
            "  {what} {}-{}: {} of {} held{}, {:.1}% used\n",
            r.range.0,
            r.range.1,
            r.held,
            r.size,
            if r.reserved > 0 { format!(", {} reserved", r.reserved) } else { String::new() },
            r.utilization * 100.0
        ));
    }
    s
}

/// `portmgr health --watch EVERY`: the core monitor, one check every `every`, each
/// recorded in the history; each change of state printed (the first check is one).
/// SIGINT and SIGTERM stop it with status 0.
pub(super) fn watch(cli: &Cli, fmt: Format, threshold: f64, every: std::time::Duration) -> R<i32> {
    no_env(fmt, "health")?;
    let svc = services(open_registry(cli)?)?;
    // Blocked before the monitor's thread starts (it inherits the mask), taken below.
    let set = SignalSet::of(&[libc::SIGINT, libc::SIGTERM]);
    let old = set.block().map_err(|e| fail(EXIT_OTHER, format!("blocking SIGINT and SIGTERM: {e}")))?;
    let json = fmt == Format::Json;
    let mon = HealthMonitor::start(svc, every, threshold, move |e| {
        if e.changed {
            let line = if json { serde_json::to_string(e).unwrap_or_default() } else { entry_text(e) };
            // A closed stdout (the reader went away) stops nothing: SIGTERM does.
            let _ = emit(&format!("{}\n", line.trim_end()));
        }
    });
    let mon = match mon {
        Ok(m) => m,
        Err(e) => {
            old.set_mask();
            return Err(e.into());
        }
    };
    loop {
        match set.wait() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    mon.stop();
    set.drain();
    old.set_mask();
    Ok(EXIT_OK)
}

/// `portmgr health --history`: the recorded checks, oldest first.
pub(super) fn history(cli: &Cli, fmt: Format) -> R<i32> {
    no_env(fmt, "health")?;
    let entries = services(open_registry(cli)?)?.health_history()?;
    match fmt {
        Format::Json => emit_json(&serde_json::to_value(&entries).map_err(|e| fail(EXIT_OTHER, e.to_string()))?)?,
        _ => {
            let mut s = String::new();
            for e in &entries {
                s.push_str(&entry_text(e));
            }
            if entries.is_empty() {
                s.push_str("no health checks recorded yet (`portmgr health --watch 30s` or `portmgr serve` record them)\n");
            }
            emit(&s)?
        }
    }
    Ok(EXIT_OK)
}

/// `TIME healthy: N held` or `TIME unhealthy: N problems`, then one indented line per
/// problem kept.
fn entry_text(e: &HealthEntry) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms);
    let mut s = if e.ok {
        format!("{} healthy: {} held\n", humantime::format_rfc3339_millis(t), e.held)
    } else {
        format!(
            "{} unhealthy: {} problem{}, {} held\n",
            humantime::format_rfc3339_millis(t),
            e.problem_count,
            if e.problem_count == 1 { "" } else { "s" },
            e.held
        )
    };
    for p in &e.problems {
        s.push_str(&format!("  {}: {}\n", shown(&p.kind), shown(&p.message)));
    }
    if e.problems.len() < e.problem_count {
        s.push_str(&format!("  ... and {} more\n", e.problem_count - e.problems.len()));
    }
    s
}
