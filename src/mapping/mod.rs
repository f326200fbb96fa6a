//! Names on top of the registry: services with types and metadata, service types with
//! default ranges, groups with layouts, and export (JSON, `.env`, nginx) and import.
//!
//! Everything goes through a [`Services`] handle (a [`Registry`] plus the [`TypeTable`]
//! in force). Views return serde-serializable [`Service`] values; exports are pure
//! functions from `&[Service]` to `String`, so every skin (CLI, C, Python) wraps them
//! thinly.
//!
//! ```no_run
//! use portmgr::{Registry, Request};
//! use portmgr::mapping::{Services, ServiceSpec, export_env};
//! let svc = Services::new(Registry::open_default()?)?;
//! let api = svc.allocate(&Request::new().name("api"), &ServiceSpec::typed("rest-api"))?;
//! print!("{}", export_env(&svc.list_named()?)?);
//! # Ok::<(), portmgr::Error>(())
//! ```
//!
//! Per-lease type, group and metadata live in `services.json` in the registry directory
//! (see the `store` notes in docs/mapping.md): written atomically under the registry
//! lock, never through a symlink, entries of dead leases dropped.

mod export;
mod group;
mod health;
mod import;
mod monitor;
mod nginx;
mod overview;
mod store;
mod textfile;
mod types;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::{BoundSocket, Lease, LeaseInfo, Registry, Request};

pub use export::{
    ExportFormat, JSON_EXPORT_VERSION, env_key, env_map_key, env_stem, export, export_env, export_json, export_nginx, nginx_location,
};
pub use group::{
    GROUP_SEPARATOR, GroupInfo, GroupLayout, GroupLease, GroupMember, GroupMemberInfo, GroupMemberLease, GroupOptions,
    LayoutSource, member_service_name,
};
pub use health::{Health, Problem, ProblemKind, RangeKind, RangeUse};
pub use monitor::{
    HISTORY_ENTRIES, HISTORY_FILE, HISTORY_SLOT, HealthEntry, HealthMonitor, HistoryProblem, MAX_ENTRY_PROBLEMS, MAX_MESSAGE,
    MIN_INTERVAL, MonitorStop, health_history, record_health,
};
pub use import::{ImportEntry, ImportFormat, ImportOptions, ImportOutcome, ImportedService, parse_import};
pub use overview::{FullStats, Overview, TypeStats};
pub use nginx::{NginxApplied, NginxDeploy, nginx_file_name, write_nginx_dir};
pub use store::SERVICES_FILE;
pub use textfile::{TEXT_FILE_MAX, read_text, read_text_file};
pub use types::{BUILTIN_TYPES, BuiltinType, ServiceType, TYPES_ENV, TypeTable, validate_type_name};
pub use validate::{
    DEFAULT_UPSTREAM_HOST, HEALTH_PATH_KEY, ROUTE_KEY, ROUTE_MAX, UPSTREAM_HOST_KEY, UPSTREAM_HOST_MAX, route_prefix,
    upstream_url_host, validate_export_metadata, validate_health_path, validate_route, validate_upstream_host,
};

/// String key/value metadata of a service (sorted by key).
pub type Metadata = BTreeMap<String, String>;

/// Most metadata entries per service.
pub const METADATA_MAX_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_MAX: usize = 128;
/// Longest metadata value, in bytes.
pub const METADATA_VALUE_MAX: usize = 4096;

/// Check metadata: at most [`METADATA_MAX_ENTRIES`] entries; keys 1 to
/// [`METADATA_KEY_MAX`] bytes without control characters or `=`; values at most
/// [`METADATA_VALUE_MAX`] bytes without control characters other than tab; and the values
/// an exporter copies into its output (`route`, `upstream_host`, `health_path`) as
/// [`validate_export_metadata`] says.
pub fn validate_metadata(m: &Metadata) -> Result<()> {
    if m.len() > METADATA_MAX_ENTRIES {
        return Err(Error::invalid(format!("at most {METADATA_MAX_ENTRIES} metadata entries, not {}", m.len())));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > METADATA_KEY_MAX || k.chars().any(|c| c.is_control() || c == '=') {
            return Err(Error::invalid(format!(
                "metadata key {k:?} must be 1 to {METADATA_KEY_MAX} bytes without control characters or '='"
            )));
        }
        if v.len() > METADATA_VALUE_MAX || v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::invalid(format!(
                "metadata value of {k:?} must be at most {METADATA_VALUE_MAX} bytes without control characters"
            )));
        }
    }
    validate_export_metadata(m)
}

/// What a service is, besides its ports: type, metadata, and (for group members) its
/// group. Goes with a [`Request`] (which carries name, range, TTL, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service type; when the request names no range, the port is drawn from the
    /// type's range.
    pub service_type: Option<String>,
    /// Metadata recorded with the lease.
    pub metadata: Metadata,
    /// The group (set by group allocation).
    pub group: Option<String>,
    /// The member name in the group (set by group allocation).
    pub member: Option<String>,
    /// A module's internal ports: one external port is allocated for each, in this order,
    /// all in one lease (the request's count becomes their number), and the map internal
    /// → external is recorded ([`Service::port_map`]).
    pub internal_ports: Vec<u16>,
}

impl ServiceSpec {
    /// No type, no metadata.
    pub fn new() -> ServiceSpec {
        ServiceSpec::default()
    }
    /// Of type `t`.
    pub fn typed(t: &str) -> ServiceSpec {
        ServiceSpec { service_type: Some(t.to_string()), ..ServiceSpec::default() }
    }
    /// One external port for each of these internal ports (see [`ServiceSpec::internal_ports`]).
    pub fn map(mut self, internal: impl IntoIterator<Item = u16>) -> ServiceSpec {
        self.internal_ports = internal.into_iter().collect();
        self
    }
    /// Add a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> ServiceSpec {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// One live lease as the mapping views show it (one entry per lease, not per port).
///
/// JSON: `{"name": "api", "port": 8081, "ports": [8081], "protocols": "tcp", "type":
/// "rest-api", "group": null, "member": null, "metadata": {}, "lease_id": 7,
/// "owner_pid": 1234, "expires_ms": null, "state": "held"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The service name (`None` for an unnamed lease).
    pub name: Option<String>,
    /// The first port.
    pub port: u16,
    /// All its ports, ascending.
    pub ports: Vec<u16>,
    /// `"tcp"`, `"udp"` or `"both"`.
    pub protocols: String,
    /// Its service type.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// The group it belongs to.
    pub group: Option<String>,
    /// Its member name in the group.
    pub member: Option<String>,
    /// Its metadata.
    pub metadata: Metadata,
    /// The registry's lease id.
    pub lease_id: u64,
    /// The process that allocated it.
    pub owner_pid: u32,
    /// When its TTL ends (ms since the Unix epoch).
    pub expires_ms: Option<u64>,
    /// `"held"` or `"pending"`.
    pub state: String,
    /// For a module allocated with internal ports: internal port → its external port
    /// (JSON: an object `{"8080": 15123}`); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_map: Option<BTreeMap<u16, u16>>,
}

/// Check a module's internal ports: 1 to [`crate::registry::MAX_COUNT`] distinct ports
/// from 1 to 65535 (each gets one external port).
pub fn validate_internal_ports(ports: &[u16]) -> Result<()> {
    if ports.len() > crate::registry::MAX_COUNT {
        return Err(Error::invalid(format!(
            "at most {} internal ports per service, not {}",
            crate::registry::MAX_COUNT,
            ports.len()
        )));
    }
    if ports.contains(&0) {
        return Err(Error::invalid("internal port 0 is not a port: give ports from 1 to 65535"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(p) = ports.iter().find(|p| !seen.insert(**p)) {
        return Err(Error::invalid(format!("internal port {p} is given twice: each internal port gets one external port")));
    }
    Ok(())
}

/// The mapping layer's handle: a registry and the service types in force. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    reg: Registry,
    types: TypeTable,
}

impl Services {
    /// On `reg`, with the types config in force ([`TypeTable::load_default`]).
    pub fn new(reg: Registry) -> Result<Services> {
        Ok(Services { reg, types: TypeTable::load_default()? })
    }

    /// On `reg`, with `types`.
    pub fn with_types(reg: Registry, types: TypeTable) -> Services {
        Services { reg, types }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// The type table.
    pub fn types(&self) -> &TypeTable {
        &self.types
    }

    /// The request `req` with the range of `spec`'s type filled in (when it names none).
    pub fn typed_request(&self, req: &Request, spec: &ServiceSpec) -> Result<Request> {
        let mut req = req.clone();
        if !spec.internal_ports.is_empty() {
            validate_internal_ports(&spec.internal_ports)?;
            let n = spec.internal_ports.len();
            if req.count != 1 && req.count != n {
                return Err(Error::invalid(format!(
                    "{n} internal ports need {n} external ports, but the request asks for {}: leave the count out",
                    req.count
                )));
            }
            req.count = n;
        }
        if let Some(t) = &spec.service_type {
            // An unknown type is an error even with an explicit range: it would be
            // recorded, and then no lookup by that type could work.
            self.types.require(t)?;
            if req.range.is_none() {
                req.range = Some(self.types.range_for(t, &self.reg)?);
            }
        }
        Ok(req)
    }

    /// Allocate as `req` asks, drawing from the range of `spec`'s type when `req` names no
    /// range, and record the type and metadata. The name (if any) must not be held by a
    /// live lease ([`Error::NameInUse`]; see [`Services::get_or_allocate`]).
    pub fn allocate(&self, req: &Request, spec: &ServiceSpec) -> Result<Lease> {
        validate_metadata(&spec.metadata)?;
        let req = self.typed_request(req, spec)?;
        let lease = self.allocate_raw(&req)?;
        if spec != &ServiceSpec::default() {
            // If recording fails, the lease is dropped (released): no unrecorded service.
            self.record_many(&[&lease], std::slice::from_ref(spec))?;
        }
        Ok(lease)
    }

    /// The live service named by `req`'s name if there is one (`(service, None)`), else
    /// allocate it as [`Services::allocate`] does (`(service, Some(lease))`).
    pub fn get_or_allocate(&self, req: &Request, spec: &ServiceSpec) -> Result<(Service, Option<Lease>)> {
        let name = req.get_name().ok_or_else(|| Error::invalid("get_or_allocate needs a name"))?.to_string();
        for _ in 0..3 {
            if let Some(s) = self.by_name(&name)? {
                return Ok((s, None));
            }
            match self.allocate(req, spec) {
                Ok(lease) => {
                    let s = self.by_name(&name)?.ok_or_else(|| Error::Internal("a new lease vanished".into()))?;
                    return Ok((s, Some(lease)));
                }
                // Taken by someone else between the look-up and the allocation: look again.
                Err(Error::NameInUse { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Internal(format!("service {name:?} kept appearing and vanishing")))
    }

    /// Allocate as [`Services::allocate`] does and hand the ports over bound, as
    /// [`Registry::allocate_bound`] does: the race-free hand-over, with a service type
    /// (its range when `req` names none) and metadata recorded. When recording fails the
    /// lease is released and the sockets closed: nothing half-made is left.
    pub fn allocate_bound(&self, req: &Request, spec: &ServiceSpec) -> Result<(Lease, Vec<BoundSocket>)> {
        validate_metadata(&spec.metadata)?;
        let req = self.typed_request(req, spec)?;
        let (lease, sockets) = self.reg.allocate_bound(&req)?;
        if spec != &ServiceSpec::default() {
            self.record_many(&[&lease], std::slice::from_ref(spec))?;
        }
        Ok((lease, sockets))
    }

    pub(crate) fn allocate_raw(&self, req: &Request) -> Result<Lease> {
        self.reg.allocate(req)
    }

    /// Record type/group/metadata for freshly allocated leases.
    pub(crate) fn record_many(&self, leases: &[&Lease], specs: &[ServiceSpec]) -> Result<()> {
        store::update(&self.reg, |file, live| {
            for (lease, spec) in leases.iter().zip(specs) {
                let info = live
                    .iter()
                    .find(|i| i.port == lease.port() && i.lease_id == lease.id())
                    .ok_or_else(|| Error::Internal(format!("lease of port {} is not live", lease.port())))?;
                file.put(
                    lease.id(),
                    store::Entry {
                        port: info.port,
                        created_ms: info.created_ms,
                        name: info.name.clone(),
                        service_type: spec.service_type.clone(),
                        group: spec.group.clone(),
                        member: spec.member.clone(),
                        metadata: spec.metadata.clone(),
                        internal_ports: spec.internal_ports.clone(),
                        seq: 0,
                    },
                );
            }
            Ok(())
        })
    }

    /// Every live lease, one [`Service`] each, by first port.
    pub fn list(&self) -> Result<Vec<Service>> {
        let (file, live) = store::snapshot(&self.reg)?;
        Ok(join(&file, &live))
    }

    /// The live ports (as [`Registry::list`]) and the services over them, from one read
    /// of each table: a view that needs both (the server's allocations) sees them agree.
    pub fn list_with_leases(&self) -> Result<(Vec<LeaseInfo>, Vec<Service>)> {
        let (file, live) = store::snapshot(&self.reg)?;
        let services = join(&file, &live);
        Ok((live, services))
    }

    /// The live named services (what the exports show), sorted by name.
    pub fn list_named(&self) -> Result<Vec<Service>> {
        let mut v: Vec<Service> = self.list()?.into_iter().filter(|s| s.name.is_some()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The live service called `name`.
    pub fn by_name(&self, name: &str) -> Result<Option<Service>> {
        Ok(self.list()?.into_iter().find(|s| s.name.as_deref() == Some(name)))
    }

    /// The live service holding `port`.
    pub fn by_port(&self, port: u16) -> Result<Option<Service>> {
        Ok(self.list()?.into_iter().find(|s| s.ports.contains(&port)))
    }

    /// The live services of type `t` (`t` must be a known type).
    pub fn by_type(&self, t: &str) -> Result<Vec<Service>> {
        self.types.require(t)?;
        Ok(self.list()?.into_iter().filter(|s| s.service_type.as_deref() == Some(t)).collect())
    }

    /// The live members of group `group`.
    pub fn by_group(&self, group: &str) -> Result<Vec<Service>> {
        Ok(self.list()?.into_iter().filter(|s| s.group.as_deref() == Some(group)).collect())
    }

    /// Release every live member of group `group`; returns the ports freed.
    ///
    /// Each member is released by its lease id, never by its port: a member released
    /// (or expired) since the look-up, whose port another lease took, is skipped rather
    /// than releasing that other lease.
    pub fn release_group(&self, group: &str) -> Result<Vec<u16>> {
        let members = self.by_group(group)?;
        if members.is_empty() {
            return Err(Error::NotFound(format!("no live member of group {group:?}")));
        }
        let mut freed = Vec::new();
        for m in members {
            match self.reg.release_id(m.lease_id) {
                Ok(ports) => freed.extend(ports),
                // Gone since the look-up: nothing of this group's to free.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if freed.is_empty() {
            return Err(Error::NotFound(format!("no live member of group {group:?}")));
        }
        Ok(freed)
    }

    /// Change the metadata of the live service `name`: `set` entries are added or
    /// replaced, `remove` keys removed. Returns the service as it now is.
    pub fn update_metadata(&self, name: &str, set: &Metadata, remove: &[String]) -> Result<Service> {
        let info =
            self.reg.get_by_name(name)?.into_iter().next().ok_or_else(|| {
                Error::NotFound(format!("no live service named {}", crate::registry::shown_name(name)))
            })?;
        store::update(&self.reg, |file, live| {
            let first =
                live.iter().filter(|i| i.lease_id == info.lease_id).min_by_key(|i| i.port).ok_or_else(|| {
                    Error::NotFound(format!("no live service named {}", crate::registry::shown_name(name)))
                })?;
            let mut e = file.entry_for(first, live).cloned().unwrap_or_else(|| store::Entry {
                port: first.port,
                created_ms: first.created_ms,
                name: first.name.clone(),
                ..store::Entry::default()
            });
            for k in remove {
                e.metadata.remove(k);
            }
            e.metadata.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            validate_metadata(&e.metadata)?;
            file.put(first.lease_id, e);
            Ok(())
        })?;
        self.by_name(name)?
            .ok_or_else(|| Error::NotFound(format!("no live service named {}", crate::registry::shown_name(name))))
    }

    /// Export the live named services in `format` (see [`export`]).
    pub fn export(&self, format: ExportFormat) -> Result<String> {
        export::export(&self.list_named()?, format)
    }
}

/// Allocate on `reg` as `req` asks, as a typed service when `spec` says so: the one
/// typed-or-plain allocation path every skin (CLI, C, Python) takes.
///
/// With no service type, metadata or group in `spec` (`ServiceSpec::default()`), a plain
/// [`Registry::allocate`]: the types config file is not even read, so a broken one
/// cannot fail a plain allocation. Otherwise [`Services::allocate`] with the types
/// config in force ([`TypeTable::load_default`]): the port comes from the type's range
/// when `req` names no range, an unknown type is an invalid argument naming the known
/// ones, and the type and metadata are recorded with the lease (or nothing is held).
pub fn allocate(reg: &Registry, req: &Request, spec: &ServiceSpec) -> Result<Lease> {
    if spec == &ServiceSpec::default() { reg.allocate(req) } else { Services::new(reg.clone())?.allocate(req, spec) }
}

/// [`allocate`], with the ports handed over bound ([`Registry::allocate_bound`] for a
/// plain request, [`Services::allocate_bound`] for a typed one): a listening TCP socket
/// and/or a bound UDP socket per port, close-on-exec.
pub fn allocate_bound(reg: &Registry, req: &Request, spec: &ServiceSpec) -> Result<(Lease, Vec<BoundSocket>)> {
    if spec == &ServiceSpec::default() {
        reg.allocate_bound(req)
    } else {
        Services::new(reg.clone())?.allocate_bound(req, spec)
    }
}

/// A module's port map: internal port `internal[i]` → the `i`-th smallest of its
/// lease's ports `external` (the one pairing rule, used by every view and skin). `None`
/// without internal ports, or when the counts differ (a lease partly gone).
pub fn port_map(internal: &[u16], external: impl IntoIterator<Item = u16>) -> Option<BTreeMap<u16, u16>> {
    let mut external: Vec<u16> = external.into_iter().collect();
    external.sort_unstable();
    (!internal.is_empty() && internal.len() == external.len())
        .then(|| internal.iter().copied().zip(external).collect())
}

/// Join the live table (one row per port) with the side file (one entry per lease).
fn join(file: &store::StoreFile, live: &[LeaseInfo]) -> Vec<Service> {
    let mut by_lease: BTreeMap<u64, Vec<&LeaseInfo>> = BTreeMap::new();
    for i in live {
        by_lease.entry(i.lease_id).or_default().push(i);
    }
    let mut out: Vec<Service> = by_lease
        .into_values()
        .map(|mut infos| {
            infos.sort_by_key(|i| i.port);
            // The side-file entry names the lease's first port at allocation.
            let entry = infos.iter().find_map(|i| file.entry_for(i, live));
            let first = infos[0];
            Service {
                name: first.name.clone(),
                port: first.port,
                ports: infos.iter().map(|i| i.port).collect(),
                protocols: first.protocols.clone(),
                service_type: entry.and_then(|e| e.service_type.clone()),
                group: entry.and_then(|e| e.group.clone()),
                member: entry.and_then(|e| e.member.clone()),
                metadata: entry.map(|e| e.metadata.clone()).unwrap_or_default(),
                lease_id: first.lease_id,
                owner_pid: first.owner_pid,
                expires_ms: first.expires_ms,
                state: first.state.clone(),
                port_map: entry.and_then(|e| port_map(&e.internal_ports, infos.iter().map(|i| i.port))),
            }
        })
        .collect();
    out.sort_by_key(|s| s.port);
    out
}
