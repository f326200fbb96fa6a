//! `portmgr health`: renders the core's health report (`Services::health`: every range in
//! use, and the problems in it); status 9 when there is any problem.

use serde_json::json;

use crate::mapping::{Health, Problem, ProblemKind, RangeKind};

use super::args::{Cli, Format};
use super::output::{emit, emit_json, lease_json, no_env, shown};
use super::{EXIT_OK, EXIT_UNHEALTHY, R, open_registry, services};

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
