//! The health report: every range in use, how full it is, and the problems a person should
//! act on. The one place health is decided; the CLI (`portmgr health`), the C ABI
//! (`portmgr_registry_health_json`) and Python (`portmgr.health()`) only render it.
//!
//! Ranges in use: the default pool (always), the range of each service type that has
//! leases, and each range asked for explicitly that has leases (every lease records the
//! range it was asked from). Problems, in this order:
//!
//! | kind | what |
//! | --- | --- |
//! | `exhausted` | a range in use is at least `threshold` full |
//! | `bound_elsewhere` | a held port is bound by a process that is neither the lease's owner (or watched process) nor a descendant of one |
//! | `expired` | a lease ran past its TTL and nobody collected it (`gc`) |
//! | `owner_gone` | a lease whose owner died and that nobody collected yet |
//! | `damaged` | a registry record is damaged (see [`Registry::free_damaged`]) |

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::Services;
use crate::error::{Error, Result};
use crate::range::PortRange;
use crate::registry::{LeaseInfo, Registry};
use crate::sys;

/// Where a range in use comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeKind {
    /// The registry's default pool.
    Pool,
    /// A service type's range.
    Type,
    /// A range asked for explicitly.
    Explicit,
}

/// One range in use and how full it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RangeUse {
    /// Pool, a service type's range, or an explicit one.
    pub kind: RangeKind,
    /// `[start, end]`, inclusive.
    pub range: (u16, u16),
    /// The service type, for a type's range.
    pub service_type: Option<String>,
    /// Usable ports in it (the pool leaves out the kernel's reserved ports).
    pub size: usize,
    /// Live ports in it, whatever range their lease was asked from.
    pub held: usize,
    /// Ports in it that the registry's reservations block and no lease holds.
    pub reserved: usize,
    /// `(held + reserved) / size`, 0 to 1: how much of it cannot be handed out.
    pub utilization: f64,
}

/// What kind of problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A range in use is at least the threshold full.
    Exhausted,
    /// A held port is bound by a process outside its lease.
    BoundElsewhere,
    /// A lease ran past its TTL and was not collected.
    Expired,
    /// A lease's owner died and the lease was not collected.
    OwnerGone,
    /// A registry record is damaged.
    Damaged,
}

impl ProblemKind {
    /// `"exhausted"`, `"bound_elsewhere"`, `"expired"`, `"owner_gone"` or `"damaged"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Exhausted => "exhausted",
            ProblemKind::BoundElsewhere => "bound_elsewhere",
            ProblemKind::Expired => "expired",
            ProblemKind::OwnerGone => "owner_gone",
            ProblemKind::Damaged => "damaged",
        }
    }
}

/// One problem, with a message that says what to do.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The range concerned (`exhausted`), `[start, end]`.
    pub range: Option<(u16, u16)>,
    /// The service type whose range it is (`exhausted` of a type's range).
    pub service_type: Option<String>,
    /// The port concerned (every kind but `exhausted`).
    pub port: Option<u16>,
    /// The processes bound to the port outside its lease (`bound_elsewhere`; empty when
    /// the port is bound by a process this user cannot see).
    pub pids: Vec<u32>,
    /// The lease concerned, as the registry shows it.
    pub lease: Option<LeaseInfo>,
    /// What is wrong and what to do, in a sentence.
    pub message: String,
}

/// The report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// No problems.
    pub ok: bool,
    /// The fullness at which a range counts as exhausted, 0 to 1.
    pub threshold: f64,
    /// Live ports in the registry, all ranges.
    pub held: usize,
    /// Ports the registry's reservations block, all ranges.
    pub reserved: usize,
    /// Every range in use: the pool first, then by kind and start.
    pub ranges: Vec<RangeUse>,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl Health {
    /// The default pool's entry of [`Health::ranges`].
    pub fn pool(&self) -> Option<&RangeUse> {
        self.ranges.iter().find(|r| r.kind == RangeKind::Pool)
    }
}

impl Services {
    /// The health report over every range in use; `threshold` (0 to 1) is the fullness at
    /// which a range counts as exhausted (`portmgr health` uses 0.9).
    pub fn health(&self, threshold: f64) -> Result<Health> {
        report(self, threshold)
    }
}

/// Every range in use (the pool first, then by kind and start) with its held and reserved
/// counts: what `health` and `stats` report. `leases`: the registry's live ports;
/// `types`: service types by lease id.
pub fn range_uses(
    svc: &Services,
    leases: &[LeaseInfo],
    types: &HashMap<u64, String>,
    reserved: &[u16],
) -> Result<Vec<RangeUse>> {
    let reg: &Registry = svc.registry();
    let pool = reg.default_pool()?;

    // The ranges in use: the pool, then every recorded range with leases.
    let mut ranges: BTreeMap<(RangeKind, u16, u16), Option<String>> = BTreeMap::new();
    ranges.insert((RangeKind::Pool, pool.start(), pool.end()), None);
    for i in leases {
        let Some((a, b)) = i.range else { continue };
        let typed = types.get(&i.lease_id).filter(|t| {
            svc.types().get(t).and_then(|st| st.range.as_ref()).is_some_and(|r| (r.start(), r.end()) == (a, b))
        });
        match typed {
            Some(t) => {
                ranges.insert((RangeKind::Type, a, b), Some(t.clone()));
            }
            None if (a, b) == (pool.start(), pool.end()) => {}
            None => {
                ranges.insert((RangeKind::Explicit, a, b), None);
            }
        }
    }
    // A type's range wins over the same range asked for explicitly.
    let typed_ranges: HashSet<(u16, u16)> =
        ranges.keys().filter(|k| k.0 == RangeKind::Type).map(|k| (k.1, k.2)).collect();
    ranges.retain(|k, _| k.0 != RangeKind::Explicit || !typed_ranges.contains(&(k.1, k.2)));

    let held_ports: HashSet<u16> = leases.iter().map(|i| i.port).collect();
    let mut uses = Vec::new();
    for ((kind, a, b), service_type) in ranges {
        let range = if kind == RangeKind::Pool { pool.clone() } else { PortRange::new(a, b)? };
        let size = range.len();
        let held = leases.iter().filter(|i| range.contains(i.port)).count();
        let reserved = reserved.iter().filter(|&&p| range.contains(p) && !held_ports.contains(&p)).count();
        let utilization = (held + reserved) as f64 / size.max(1) as f64;
        uses.push(RangeUse { kind, range: (a, b), service_type, size, held, reserved, utilization });
    }
    Ok(uses)
}

fn report(svc: &Services, threshold: f64) -> Result<Health> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::invalid(format!("the health threshold must be from 0 to 1 (0% to 100%), not {threshold}")));
    }
    let reg: &Registry = svc.registry();
    let leases = reg.list()?;
    // Service types by lease id, from the mapping's side file.
    let types: HashMap<u64, String> =
        svc.list()?.into_iter().filter_map(|s| Some((s.lease_id, s.service_type?))).collect();
    let reserved = crate::registry::reserved_ports(&reg.reserved()?);
    let uses = range_uses(svc, &leases, &types, &reserved)?;

    let mut problems = Vec::new();
    for u in &uses {
        let (kind, (a, b), service_type, size, held, reserved, utilization) =
            (u.kind, u.range, &u.service_type, u.size, u.held, u.reserved, u.utilization);
        if utilization >= threshold {
            let fix = match kind {
                RangeKind::Pool => "release ports (`portmgr gc`, `portmgr list`) or widen the pool (PORTMGR_RANGE)".to_string(),
                RangeKind::Type => format!(
                    "release ports (`portmgr gc`, `portmgr list --type {}`) or give the type a wider range (PORTMGR_TYPES)",
                    service_type.as_deref().unwrap_or("")
                ),
                RangeKind::Explicit => "release ports (`portmgr gc`, `portmgr list`) or ask for a wider range".to_string(),
            };
            let what = match (kind, &service_type) {
                (RangeKind::Pool, _) => format!("the default pool {a}-{b}"),
                (RangeKind::Type, Some(t)) => format!("the range {a}-{b} of service type {t:?}"),
                _ => format!("the range {a}-{b}"),
            };
            problems.push(Problem {
                kind: ProblemKind::Exhausted,
                range: Some((a, b)),
                service_type: service_type.clone(),
                port: None,
                pids: Vec::new(),
                lease: None,
                message: format!(
                    "{what} is {:.1}% full ({held} of {size} ports held{}; threshold {:.0}%): {fix}",
                    utilization * 100.0,
                    if reserved > 0 { format!(", {reserved} reserved") } else { String::new() },
                    threshold * 100.0
                ),
            });
        }
    }

    // Held ports bound by processes outside their lease.
    let held: HashSet<u16> = leases.iter().map(|i| i.port).collect();
    let holders = sys::socket_holders(&held);
    for i in &leases {
        let Some(pids) = holders.get(&i.port) else { continue };
        let roots: Vec<u32> = std::iter::once(i.owner_pid).chain(i.watch_pid).collect();
        let foreign: Vec<u32> = pids.iter().copied().filter(|&p| !sys::is_descendant(p, &roots)).collect();
        if pids.is_empty() || !foreign.is_empty() {
            let who = if foreign.is_empty() {
                "a process portmgr cannot see (another user?)".to_string()
            } else {
                format!("pid {}", foreign.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
            };
            problems.push(Problem {
                kind: ProblemKind::BoundElsewhere,
                range: None,
                service_type: types.get(&i.lease_id).cloned(),
                port: Some(i.port),
                pids: foreign,
                lease: Some(i.clone()),
                message: format!(
                    "port {} is held in the registry ({}) but bound by {who}, which is neither its owner nor a child of it: that program did not ask portmgr for its port",
                    i.port,
                    describe(i)
                ),
            });
        }
    }

    // Records that are no longer live but still in the table, and damaged ones.
    for i in reg.stale()? {
        let (kind, message) = match i.state.as_str() {
            "expired" => (
                ProblemKind::Expired,
                format!(
                    "port {} ({}) is past its TTL and no longer held: renew it in time (`portmgr renew`) or run `portmgr gc`",
                    i.port,
                    describe(&i)
                ),
            ),
            _ => (
                ProblemKind::OwnerGone,
                format!(
                    "port {} ({}) belonged to a process that is gone and is not collected yet: run `portmgr gc`",
                    i.port,
                    describe(&i)
                ),
            ),
        };
        problems.push(Problem { kind, range: None, service_type: None, port: Some(i.port), pids: Vec::new(), lease: Some(i), message });
    }
    for i in leases.iter().filter(|i| i.state == "damaged") {
        problems.push(Problem {
            kind: ProblemKind::Damaged,
            range: None,
            service_type: None,
            port: Some(i.port),
            pids: Vec::new(),
            lease: Some(i.clone()),
            message: format!(
                "the registry record of port {} is damaged: the process holding it repairs it at its next call; if none does, run `portmgr gc --damaged`",
                i.port
            ),
        });
    }
    Ok(Health { ok: problems.is_empty(), threshold, held: leases.len(), reserved: reserved.len(), ranges: uses, problems })
}

/// `"name", pid N, watching pid W`.
fn describe(i: &LeaseInfo) -> String {
    let mut s = format!("pid {}", i.owner_pid);
    if let Some(n) = &i.name {
        s = format!("{n:?}, {s}");
    }
    if let Some(w) = i.watch_pid {
        s.push_str(&format!(", watching pid {w}"));
    }
    s
}
