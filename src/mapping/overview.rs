//! Statistics that know the service types, and the overview: every live service by name,
//! the port → name map, names grouped by type, and the statistics, in one call — the
//! shape a port registry's users know. `portmgr stats` / `overview`, Python's
//! `portmgr.stats_full()` / `overview()` and C's `portmgr_registry_overview_json` all
//! render these.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::health::{RangeUse, range_uses};
use super::{Service, Services, join, store};
use crate::error::Result;
use crate::registry::{Stats, reserved_ports};

/// One service type's figures (counted in ports).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeStats {
    /// The type's name.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Its range, `[start, end]`; `None` for a type that draws from the default pool.
    pub range: Option<(u16, u16)>,
    /// Usable ports in that range (the pool's for a type without one).
    pub size: usize,
    /// `active + expired`.
    pub total: usize,
    /// Ports of live services of the type.
    pub active: usize,
    /// Ports of services of the type that ran past their TTL, or whose owner died, and
    /// are not collected yet (`portmgr gc` frees them).
    pub expired: usize,
    /// Ports of the type's range that the registry's reservations block and no lease holds.
    pub reserved: usize,
    /// `(ports held in the range + reserved) / size`, 0 to 1.
    pub utilization: f64,
}

/// The registry's figures with every range in use and every service type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FullStats {
    /// The registry's own figures (pool, held, reserved, free, owners, counters).
    #[serde(flatten)]
    pub registry: Stats,
    /// Every range in use (the pool, types' ranges with leases, explicit ranges), as the
    /// health report counts them.
    pub ranges: Vec<RangeUse>,
    /// Every known service type, and any type a live service still names.
    pub types: Vec<TypeStats>,
}

/// Everything at once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    /// Every live named service, by name.
    pub services: BTreeMap<String, Service>,
    /// Port → service name, for every port of a live named service.
    pub ports: BTreeMap<u16, String>,
    /// Service type → names of its live services (sorted).
    pub by_type: BTreeMap<String, Vec<String>>,
    /// The statistics.
    pub stats: FullStats,
}

impl Services {
    /// The registry statistics with every range in use and per-type counts.
    pub fn stats_full(&self) -> Result<FullStats> {
        let (file, live) = store::snapshot(self.registry())?;
        let services = join(&file, &live);
        self.full_stats(&file, &live, &services)
    }

    /// Every live named service by name, the port → name map, the names by type, and
    /// [`Services::stats_full`].
    pub fn overview(&self) -> Result<Overview> {
        let (file, live) = store::snapshot(self.registry())?;
        let all = join(&file, &live);
        let stats = self.full_stats(&file, &live, &all)?;
        let mut services = BTreeMap::new();
        let mut ports = BTreeMap::new();
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in all {
            let Some(name) = s.name.clone() else { continue };
            for &p in &s.ports {
                ports.insert(p, name.clone());
            }
            if let Some(t) = &s.service_type {
                by_type.entry(t.clone()).or_default().push(name.clone());
            }
            services.insert(name, s);
        }
        for names in by_type.values_mut() {
            names.sort();
        }
        Ok(Overview { services, ports, by_type, stats })
    }

    fn full_stats(
        &self,
        file: &store::StoreFile,
        live: &[crate::registry::LeaseInfo],
        services: &[Service],
    ) -> Result<FullStats> {
        let reg = self.registry();
        let registry = reg.stats()?;
        let reserved = reserved_ports(&reg.reserved()?);
        let types_by_lease: HashMap<u64, String> =
            services.iter().filter_map(|s| Some((s.lease_id, s.service_type.clone()?))).collect();
        let ranges = range_uses(self, live, &types_by_lease, &reserved)?;

        // Stale records keep their side-file entry until the next write: their type.
        let stale = reg.stale()?;
        let mut expired: HashMap<String, usize> = HashMap::new();
        for i in &stale {
            if let Some(t) = file
                .leases
                .get(&i.lease_id)
                .filter(|e| e.matches(i.lease_id, &stale))
                .and_then(|e| e.service_type.clone())
            {
                *expired.entry(t).or_default() += 1;
            }
        }
        let mut active: HashMap<String, usize> = HashMap::new();
        for s in services {
            if let Some(t) = &s.service_type {
                *active.entry(t.clone()).or_default() += s.ports.len();
            }
        }
        let pool = reg.default_pool()?;
        let held: HashSet<u16> = live.iter().map(|i| i.port).collect();
        let mut names: Vec<String> = self.types().names();
        for t in active.keys().chain(expired.keys()) {
            if !names.contains(t) {
                names.push(t.clone());
            }
        }
        let types = names
            .into_iter()
            .map(|t| {
                let range = self.types().get(&t).and_then(|st| st.range.clone());
                let r = range.clone().unwrap_or_else(|| pool.clone());
                let size = r.len();
                let in_range = held.iter().filter(|&&p| r.contains(p)).count();
                let blocked = reserved.iter().filter(|&&p| r.contains(p) && !held.contains(&p)).count();
                let (a, e) = (active.get(&t).copied().unwrap_or(0), expired.get(&t).copied().unwrap_or(0));
                TypeStats {
                    range: range.map(|r| (r.start(), r.end())),
                    size,
                    total: a + e,
                    active: a,
                    expired: e,
                    reserved: blocked,
                    utilization: (in_range + blocked) as f64 / size.max(1) as f64,
                    service_type: t,
                }
            })
            .collect();
        Ok(FullStats { registry, ranges, types })
    }
}
