//! `portmgr health`: exhaustion of the default pool, held ports bound by processes
//! outside portmgr (from `/proc/net/*` and `/proc/*/fd`), expired leases; status 9 when
//! any.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::args::{Cli, Format};
use super::output::{describe, emit, emit_json, lease_json, no_env, shown};
use super::{EXIT_OK, EXIT_UNHEALTHY, R, open_registry};

pub(super) fn health(cli: &Cli, fmt: Format, threshold: f64) -> R<i32> {
    no_env(fmt, "health")?;
    let reg = open_registry(cli)?;
    let st = reg.stats()?;
    let mut problems: Vec<serde_json::Value> = Vec::new();
    if st.utilization >= threshold {
        problems.push(json!({
            "kind": "exhaustion",
            "message": format!(
                "the default pool {} is {:.1}% full ({} of {} ports held; threshold {:.0}%): release ports (`portmgr gc`, `portmgr list`) or widen the pool (PORTMGR_RANGE)",
                st.pool, st.utilization * 100.0, st.held_in_pool, st.pool_size, threshold * 100.0
            ),
        }));
    }
    let leases = reg.list()?;
    let held: HashSet<u16> = leases.iter().map(|i| i.port).collect();
    let holders = socket_holders(&held);
    for i in &leases {
        let Some(pids) = holders.get(&i.port) else { continue };
        let roots: Vec<u32> = std::iter::once(i.owner_pid).chain(i.watch_pid).collect();
        let foreign: Vec<u32> = pids.iter().copied().filter(|&p| !related(p, &roots)).collect();
        if pids.is_empty() || !foreign.is_empty() {
            let who = if foreign.is_empty() {
                "a process portmgr cannot see (another user?)".to_string()
            } else {
                format!("pid {}", foreign.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
            };
            problems.push(json!({
                "kind": "bound_elsewhere",
                "port": i.port,
                "pids": foreign,
                "lease": lease_json(i),
                "message": format!(
                    "port {} is held in the registry ({}) but bound by {who}, which is neither its owner nor a child of it: that program did not ask portmgr for its port",
                    i.port, describe(i)
                ),
            }));
        }
    }
    for i in reg.stale()? {
        if i.state == "expired" {
            problems.push(json!({
                "kind": "expired",
                "port": i.port,
                "lease": lease_json(&i),
                "message": format!(
                    "port {} ({}) is past its TTL and no longer held: renew it in time (`portmgr renew`) or run `portmgr gc`",
                    i.port, describe(&i)
                ),
            }));
        }
    }
    let healthy = problems.is_empty();
    match fmt {
        Format::Json => emit_json(&json!({
            "healthy": healthy,
            "utilization": st.utilization,
            "threshold": threshold,
            "held": st.held,
            "pool": st.pool,
            "problems": problems,
        }))?,
        _ => {
            let mut s = String::new();
            for p in &problems {
                s.push_str(&format!("warning: {}\n", shown(p["message"].as_str().unwrap_or(""))));
            }
            s.push_str(&format!(
                "{}: {} held, pool {} {:.1}% used\n",
                if healthy { "healthy" } else { "unhealthy" },
                st.held,
                st.pool,
                st.utilization * 100.0
            ));
            emit(&s)?
        }
    }
    Ok(if healthy { EXIT_OK } else { EXIT_UNHEALTHY })
}

/// For each of `ports`, the pids that have a socket bound to it (TCP or UDP, v4 or v6),
/// from `/proc/net/*` and `/proc/*/fd`. A port bound only by processes we cannot
/// inspect maps to an empty list.
pub(super) fn socket_holders(ports: &HashSet<u16>) -> HashMap<u16, Vec<u32>> {
    let mut by_inode: HashMap<u64, u16> = HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let Some(port) = cols[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok()) else {
                continue;
            };
            // TCP: only listening sockets (state 0A) own a port; UDP: any bound socket.
            if f.contains("tcp") && cols[3] != "0A" {
                continue;
            }
            if let Ok(inode) = cols[9].parse::<u64>()
                && inode != 0
                && ports.contains(&port)
            {
                by_inode.insert(inode, port);
            }
        }
    }
    let mut out: HashMap<u16, Vec<u32>> = by_inode.values().map(|&p| (p, Vec::new())).collect();
    if by_inode.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some(&port) = by_inode.get(&inode) {
                let v = out.entry(port).or_default();
                if !v.contains(&pid) {
                    v.push(pid);
                }
            }
        }
    }
    out
}

/// Whether `pid` is one of `roots` or a descendant of one.
pub(super) fn related(pid: u32, roots: &[u32]) -> bool {
    let mut p = pid;
    for _ in 0..128 {
        if roots.contains(&p) {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
        // Fields after the last ')': state, ppid, ...
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            return false;
        };
        p = ppid;
    }
    false
}
