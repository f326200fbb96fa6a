//! The mapping layer (`portmgr::mapping`) for Python: the class `portmgr.Services` and its
//! views. As thin as the rest of the skin: each method converts its arguments, makes one
//! call into [`Services`] without the GIL, and converts the result.
//!
//! Groups and imported leases behave like `Lease`: not released by garbage collection
//! (their core leases move to the abandoned list of `lease.rs`), released by
//! `release()`, by leaving a `with` block, or when the process exits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::args::{port_arg, range_arg};
use super::errors::detached;
use super::health::PyHealth;
use super::lease::{ACTIVE, KEPT, PyLease, RELEASED, abandon};
use super::registry::PyRegistry;
use super::request::{RequestArgs, metadata_arg, spec_arg};
use crate::error::{Error, Result};
use crate::mapping::{
    ExportFormat, GroupInfo, GroupLease, GroupMemberInfo, GroupOptions, ImportFormat,
    ImportOptions, ImportOutcome, ImportedService, LayoutSource, Metadata, NginxApplied,
    NginxDeploy, Service, ServiceType, Services, TypeTable, write_nginx_dir,
};
use crate::range::PortRange;
use crate::registry::Registry;
use crate::strategy::Strategy;

// ---------------------------------------------------------------------------------------
// Views

/// One live lease as the mapping views show it (one per lease, not per port).
#[pyclass(name = "Service", module = "portmgr", frozen)]
pub(super) struct PyService {
    /// The service name (None for an unnamed lease).
    #[pyo3(get)]
    name: Option<String>,
    /// The first port.
    #[pyo3(get)]
    port: u16,
    /// All its ports, ascending.
    #[pyo3(get)]
    ports: Vec<u16>,
    /// "tcp", "udp" or "both".
    #[pyo3(get)]
    protocols: String,
    /// Its service type, if any.
    #[pyo3(get, name = "type")]
    service_type: Option<String>,
    /// The group it belongs to, if any.
    #[pyo3(get)]
    group: Option<String>,
    /// Its member name in the group, if any.
    #[pyo3(get)]
    member: Option<String>,
    /// Its metadata (a new dict at each access).
    #[pyo3(get)]
    metadata: BTreeMap<String, String>,
    /// The registry's lease id.
    #[pyo3(get)]
    lease_id: u64,
    /// The process that allocated it.
    #[pyo3(get)]
    owner_pid: u32,
    /// When its TTL ends (ms since the Unix epoch), or None.
    #[pyo3(get)]
    expires_ms: Option<u64>,
    /// "held" or "pending".
    #[pyo3(get)]
    state: String,
    /// For a module allocated with internal ports: internal port -> external port
    /// (a new dict at each access); None otherwise.
    #[pyo3(get)]
    port_map: Option<BTreeMap<u16, u16>>,
}

impl From<Service> for PyService {
    fn from(s: Service) -> Self {
        PyService {
            name: s.name,
            port: s.port,
            ports: s.ports,
            protocols: s.protocols,
            service_type: s.service_type,
            group: s.group,
            member: s.member,
            metadata: s.metadata,
            lease_id: s.lease_id,
            owner_pid: s.owner_pid,
            expires_ms: s.expires_ms,
            state: s.state,
            port_map: s.port_map,
        }
    }
}

#[pymethods]
impl PyService {
    fn __repr__(&self) -> String {
        let opt = |o: &Option<String>| o.as_ref().map_or("None".to_string(), |s| format!("{s:?}"));
        format!(
            "Service(name={}, port={}, type={}, group={}, metadata={:?})",
            opt(&self.name),
            self.port,
            opt(&self.service_type),
            opt(&self.group),
            self.metadata
        )
    }
}

fn services_py(v: Vec<Service>) -> Vec<PyService> {
    v.into_iter().map(Into::into).collect()
}

/// A service type: a name and the range its services are drawn from.
#[pyclass(name = "ServiceType", module = "portmgr", frozen, get_all)]
pub(super) struct PyServiceType {
    /// The type's name ("rest-api").
    name: String,
    /// Its range, inclusive; None means the registry's default pool.
    range: Option<(u16, u16)>,
    /// What it is for.
    description: String,
    /// "builtin" or the config file it came from.
    source: String,
}

impl From<ServiceType> for PyServiceType {
    fn from(t: ServiceType) -> Self {
        PyServiceType {
            name: t.name,
            range: t.range.map(|r| (r.start(), r.end())),
            description: t.description,
            source: t.source,
        }
    }
}

#[pymethods]
impl PyServiceType {
    fn __repr__(&self) -> String {
        let range = self
            .range
            .map_or("pool".to_string(), |(a, b)| format!("{a}-{b}"));
        format!("ServiceType(name={:?}, range={range:?})", self.name)
    }
}

/// One member of an allocated group.
#[pyclass(name = "GroupMember", module = "portmgr", frozen, get_all)]
pub(super) struct PyGroupMember {
    /// Its name in the layout ("redis").
    member: String,
    /// Its service name ("ci-17.redis").
    name: String,
    /// Its offset from the group's base.
    offset: u16,
    /// Its port.
    port: u16,
    /// Its service type, if any.
    #[pyo3(name = "type")]
    service_type: Option<String>,
}

impl From<&GroupMemberInfo> for PyGroupMember {
    fn from(m: &GroupMemberInfo) -> Self {
        PyGroupMember {
            member: m.member.clone(),
            name: m.name.clone(),
            offset: m.offset,
            port: m.port,
            service_type: m.service_type.clone(),
        }
    }
}

#[pymethods]
impl PyGroupMember {
    fn __repr__(&self) -> String {
        format!(
            "GroupMember(member={:?}, port={}, offset={})",
            self.member, self.port, self.offset
        )
    }
}

/// What an import did with one service.
#[pyclass(name = "ImportedService", module = "portmgr", frozen, get_all)]
pub(super) struct PyImportedService {
    /// Its name.
    name: String,
    /// The port it had in the file.
    previous_port: u16,
    /// The port it has now (None when it failed).
    port: Option<u16>,
    /// "same", "moved" (its previous port was taken), "existing" (already live: left
    /// as it is) or "failed".
    status: String,
    /// Why it moved or failed.
    reason: Option<String>,
    /// Its type.
    #[pyo3(name = "type")]
    service_type: Option<String>,
}

impl From<&ImportedService> for PyImportedService {
    fn from(s: &ImportedService) -> Self {
        PyImportedService {
            name: s.name.clone(),
            previous_port: s.previous_port,
            port: s.port,
            status: s.status.clone(),
            reason: s.reason.clone(),
            service_type: s.service_type.clone(),
        }
    }
}

#[pymethods]
impl PyImportedService {
    fn __repr__(&self) -> String {
        format!(
            "ImportedService(name={:?}, previous_port={}, port={:?}, status={:?})",
            self.name, self.previous_port, self.port, self.status
        )
    }
}

/// What writing (and applying) the nginx export did.
#[pyclass(name = "NginxApplied", module = "portmgr", frozen, get_all)]
pub(super) struct PyNginxApplied {
    /// The directory.
    dir: String,
    /// The files written (one per service), sorted.
    files: Vec<String>,
    /// Files of an earlier export removed (their services are gone), sorted.
    removed: Vec<String>,
    /// Services left out, and why.
    skipped: Vec<String>,
    /// Whether the configuration test ran and passed.
    tested: bool,
    /// Whether nginx was reloaded.
    reloaded: bool,
}

impl From<NginxApplied> for PyNginxApplied {
    fn from(a: NginxApplied) -> Self {
        PyNginxApplied {
            dir: a.dir.to_string_lossy().into_owned(),
            files: a.files,
            removed: a.removed,
            skipped: a.skipped,
            tested: a.tested,
            reloaded: a.reloaded,
        }
    }
}

#[pymethods]
impl PyNginxApplied {
    fn __repr__(&self) -> String {
        format!(
            "NginxApplied(dir={:?}, files={:?}, tested={}, reloaded={})",
            self.dir, self.files, self.tested, self.reloaded
        )
    }
}

// ---------------------------------------------------------------------------------------
// Groups

/// An allocated group: every member's port, taken together. Not released by garbage
/// collection: by `release()`, by leaving its `with` block, or when the process exits.
#[pyclass(name = "Group", module = "portmgr", frozen)]
pub(super) struct PyGroup {
    inner: Mutex<Option<GroupLease>>,
    registry: Registry,
    info: GroupInfo,
    state: AtomicU8,
}

impl PyGroup {
    fn new(g: GroupLease, registry: &Registry) -> PyGroup {
        PyGroup {
            info: g.info(),
            inner: Mutex::new(Some(g)),
            registry: registry.clone(),
            state: AtomicU8::new(ACTIVE),
        }
    }
}

impl Drop for PyGroup {
    fn drop(&mut self) {
        // In a forked child the members are the parent's (the core says so): dropping
        // them there does nothing.
        if let Some(g) = self.inner.get_mut().take() {
            for m in g.members {
                if m.lease.is_mine() {
                    abandon(m.lease, &self.registry);
                }
            }
        }
    }
}

#[pymethods]
impl PyGroup {
    /// The group's name.
    #[getter]
    fn name(&self) -> String {
        self.info.group.clone()
    }

    /// The base port (member ports are base + offset).
    #[getter]
    fn base(&self) -> u16 {
        self.info.base
    }

    /// The members, in layout order.
    #[getter]
    fn members(&self) -> Vec<PyGroupMember> {
        self.info.members.iter().map(Into::into).collect()
    }

    /// Member name to port, in layout order.
    #[getter]
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for m in &self.info.members {
            d.set_item(&m.member, m.port)?;
        }
        Ok(d)
    }

    /// Whether `release()` or `keep()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.state.load(Ordering::Acquire) != ACTIVE
    }

    /// Release every member now. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut g) = self.inner.lock().take() else {
            return Ok(());
        };
        self.state.store(RELEASED, Ordering::Release);
        detached(py, move || g.release()).map_err(PyErr::from)
    }

    /// Stop managing the members from this object: they stay held until the process
    /// exits, and any process of the user may release them (`release_group(name)`).
    /// Returns member name to port. A released group cannot be kept (NotFound).
    fn keep<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(g) = self.inner.lock().take() {
            self.state.store(KEPT, Ordering::Release);
            detached(py, move || g.keep())?;
        } else if self.state.load(Ordering::Acquire) == RELEASED {
            return Err(PyErr::from(Error::NotFound(format!(
                "group {:?} was released, so it cannot be kept: its ports may be someone else's by now; allocate it again",
                self.info.group
            ))));
        }
        self.ports(py)
    }

    fn __getitem__(&self, member: &str) -> PyResult<u16> {
        self.info
            .members
            .iter()
            .find(|m| m.member == member)
            .map(|m| m.port)
            .ok_or_else(|| PyKeyError::new_err(member.to_string()))
    }

    fn __contains__(&self, member: &str) -> bool {
        self.info.members.iter().any(|m| m.member == member)
    }

    fn __len__(&self) -> usize {
        self.info.members.len()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = match self.state.load(Ordering::Acquire) {
            ACTIVE => "held",
            RELEASED => "released",
            _ => "kept",
        };
        let ports: Vec<String> = self
            .info
            .members
            .iter()
            .map(|m| format!("{}={}", m.member, m.port))
            .collect();
        format!(
            "<portmgr.Group {:?} base={} {} {state}>",
            self.info.group,
            self.info.base,
            ports.join(" ")
        )
    }
}

/// A layout as Python gives it: a string (a layout name or a spec: the core decides
/// which, [`TypeTable::resolve_layout`]) or a mapping of member name to offset or
/// `(offset, type)`. Only the types are converted here.
fn layout_arg(obj: &Bound<'_, PyAny>) -> PyResult<LayoutSource> {
    if obj.is_instance_of::<PyString>() {
        return Ok(LayoutSource::Text(obj.extract()?));
    }
    let type_err = || {
        PyTypeError::new_err(
            "layout must be a spec string (\"postgres=0,redis=100\"), a layout name, or a mapping of member \
             name to offset or (offset, type)",
        )
    };
    let items = obj.call_method0("items").map_err(|_| type_err())?;
    let mut members = Vec::new();
    for item in items.try_iter()? {
        let (name, value): (String, Bound<'_, PyAny>) = item?.extract().map_err(|_| type_err())?;
        let (offset, ty) = match value.extract::<i64>() {
            Ok(o) => (o, None),
            Err(_) => value
                .extract::<(i64, Option<String>)>()
                .map_err(|_| type_err())?,
        };
        members.push((name, offset, ty));
    }
    Ok(LayoutSource::Members(members))
}

// ---------------------------------------------------------------------------------------
// Import report

/// What `import_services` did: one ImportedService per entry and the new leases. The
/// leases are not released by garbage collection: by `release()`, by leaving its `with`
/// block, or when the process exits.
#[pyclass(name = "ImportReport", module = "portmgr", frozen)]
pub(super) struct PyImportReport {
    // The core outcome without its leases (those are `leases`), for `moved()`/`failed()`.
    outcome: ImportOutcome,
    leases: Vec<Py<PyLease>>,
}

fn imported(v: Vec<&ImportedService>) -> Vec<PyImportedService> {
    v.into_iter().map(Into::into).collect()
}

#[pymethods]
impl PyImportReport {
    /// One per entry of the file, in file order.
    #[getter]
    fn services(&self) -> Vec<PyImportedService> {
        imported(self.outcome.services.iter().collect())
    }

    /// The services that did not get their previous port.
    #[getter]
    fn moved(&self) -> Vec<PyImportedService> {
        imported(self.outcome.moved())
    }

    /// The services that could not be re-created.
    #[getter]
    fn failed(&self) -> Vec<PyImportedService> {
        imported(self.outcome.failed())
    }

    /// The leases created (not those already live), as Lease objects.
    #[getter]
    fn leases(&self, py: Python<'_>) -> Vec<Py<PyLease>> {
        self.leases.iter().map(|l| l.clone_ref(py)).collect()
    }

    /// Release every lease the import created. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        for l in &self.leases {
            l.get().release(py)?;
        }
        Ok(())
    }

    /// Keep every lease the import created (see `Lease.keep`); returns their ports.
    fn keep(&self, py: Python<'_>) -> PyResult<Vec<u16>> {
        let mut ports = Vec::new();
        for l in &self.leases {
            ports.extend(l.get().keep(py)?);
        }
        Ok(ports)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<portmgr.ImportReport services={} moved={} failed={}>",
            self.outcome.services.len(),
            self.outcome.moved().len(),
            self.outcome.failed().len()
        )
    }
}

// ---------------------------------------------------------------------------------------
// Services

/// The mapping layer on one registry: named services with types and metadata, groups,
/// export and import. The service types config (`$PORTMGR_TYPES`, else
/// `~/.config/portmgr/types.json`, or the file `types`) is read at each call.
#[pyclass(name = "Services", module = "portmgr", frozen)]
pub(super) struct PyServices {
    reg: Registry,
    types: Option<PathBuf>,
}

impl PyServices {
    /// The core handle (reads the types config: call without the GIL).
    pub(super) fn svc(&self) -> Result<Services> {
        let table = match &self.types {
            Some(p) => TypeTable::load(p)?,
            None => TypeTable::load_default()?,
        };
        Ok(Services::with_types(self.reg.clone(), table))
    }
}

fn opt_range(
    range: Option<Bound<'_, PyAny>>,
) -> PyResult<Option<std::result::Result<PortRange, Error>>> {
    range.as_ref().map(range_arg).transpose()
}

#[pymethods]
impl PyServices {
    #[new]
    #[pyo3(signature = (registry = None, *, types = None))]
    fn new(
        py: Python<'_>,
        registry: Option<Bound<'_, PyRegistry>>,
        types: Option<PathBuf>,
    ) -> PyResult<Self> {
        let reg = match registry {
            Some(r) => r.get().reg.clone(),
            None => detached(py, || {
                Registry::open(crate::registry::resolve_default_dir()?)
            })?,
        };
        Ok(PyServices { reg, types })
    }

    /// The registry's directory.
    #[getter]
    fn path(&self) -> String {
        self.reg.dir().to_string_lossy().into_owned()
    }

    /// Every service type in force, sorted by name.
    fn types(&self, py: Python<'_>) -> PyResult<Vec<PyServiceType>> {
        let v = detached(py, || Ok(self.svc()?.types().types()))?;
        Ok(v.into_iter().map(Into::into).collect())
    }

    /// The group layout names in force (built in: "stack").
    fn layouts(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        detached(py, || Ok(self.svc()?.types().group_names())).map_err(PyErr::from)
    }

    /// Allocate as `Registry.allocate` does, drawing from the range of `type` when no
    /// `range` is given, and record the type and `metadata` with the lease.
    #[pyo3(signature = (*, r#type = None, metadata = None, internal_ports = None, **kwargs))]
    fn allocate(
        &self,
        py: Python<'_>,
        r#type: Option<String>,
        metadata: Option<Bound<'_, PyAny>>,
        internal_ports: Option<Vec<i64>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyLease> {
        let args = RequestArgs::from_kwargs("allocate", kwargs, &[])?;
        let spec = spec_arg(r#type, metadata_arg(metadata.as_ref())?, internal_ports)?;
        let lease = detached(py, || self.svc()?.allocate(&args.request()?, &spec))?;
        Ok(PyLease::new(lease, &self.reg).with_spec(&spec))
    }

    /// The live service `name` if there is one: `(service, None)`; else allocate it as
    /// `allocate` does: `(service, lease)`.
    #[pyo3(signature = (name, *, r#type = None, metadata = None, **kwargs))]
    fn get_or_allocate(
        &self,
        py: Python<'_>,
        name: String,
        r#type: Option<String>,
        metadata: Option<Metadata>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(PyService, Option<PyLease>)> {
        let mut args = RequestArgs::from_kwargs("get_or_allocate", kwargs, &["name"])?;
        args.name = Some(name);
        let spec = spec_arg(r#type, metadata, None)?;
        let (s, lease) = detached(py, || self.svc()?.get_or_allocate(&args.request()?, &spec))?;
        Ok((s.into(), lease.map(|l| PyLease::new(l, &self.reg))))
    }

    /// Every live lease, one Service each, by first port.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<PyService>> {
        Ok(services_py(detached(py, || self.svc()?.list())?))
    }

    /// The live named services (what the exports show), by name.
    fn list_named(&self, py: Python<'_>) -> PyResult<Vec<PyService>> {
        Ok(services_py(detached(py, || self.svc()?.list_named())?))
    }

    /// The live service called `name`, or None.
    fn by_name(&self, py: Python<'_>, name: &str) -> PyResult<Option<PyService>> {
        Ok(detached(py, || self.svc()?.by_name(name))?.map(Into::into))
    }

    /// The live service holding `port`, or None.
    fn by_port(&self, py: Python<'_>, port: i64) -> PyResult<Option<PyService>> {
        let port = port_arg("port", port)?;
        Ok(detached(py, || self.svc()?.by_port(port))?.map(Into::into))
    }

    /// The live services of type `type` (InvalidArgument for an unknown type).
    fn by_type(&self, py: Python<'_>, r#type: &str) -> PyResult<Vec<PyService>> {
        Ok(services_py(detached(py, || self.svc()?.by_type(r#type))?))
    }

    /// The live members of group `group`.
    fn by_group(&self, py: Python<'_>, group: &str) -> PyResult<Vec<PyService>> {
        Ok(services_py(detached(py, || self.svc()?.by_group(group))?))
    }

    /// Change the metadata of the live service `name`: `set` entries added or replaced,
    /// `remove` keys removed. Returns the service as it now is.
    #[pyo3(signature = (name, set = None, *, remove = None))]
    fn update_metadata(
        &self,
        py: Python<'_>,
        name: &str,
        set: Option<Metadata>,
        remove: Option<Vec<String>>,
    ) -> PyResult<PyService> {
        let (set, remove) = (set.unwrap_or_default(), remove.unwrap_or_default());
        Ok(detached(py, || self.svc()?.update_metadata(name, &set, &remove))?.into())
    }

    /// Allocate group `group`: every member port (base + offset) free at one base, all
    /// or none. Members are named "GROUP.MEMBER" and carry the group, member, type and
    /// `metadata`.
    #[pyo3(signature = (group, layout = None, *, metadata = None, range = None, strategy = "random",
                        max_attempts = 2000, proto = "tcp", ttl = None, watch_pid = None))]
    #[allow(clippy::too_many_arguments)]
    fn allocate_group(
        &self,
        py: Python<'_>,
        group: String,
        layout: Option<Bound<'_, PyAny>>,
        metadata: Option<Metadata>,
        range: Option<Bound<'_, PyAny>>,
        strategy: &str,
        max_attempts: usize,
        proto: &str,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
    ) -> PyResult<PyGroup> {
        let layout = match layout {
            Some(l) => layout_arg(&l)?,
            None => LayoutSource::Text("stack".into()),
        };
        let range = opt_range(range)?;
        let tmpl = RequestArgs::lifetime(proto, ttl, watch_pid);
        let strategy = strategy.to_owned();
        let metadata = metadata.unwrap_or_default();
        let g = detached(py, || {
            let svc = self.svc()?;
            let layout = svc.types().resolve_layout(&layout)?;
            let strategy: Strategy = strategy.parse()?;
            let opts = GroupOptions {
                range: range.transpose()?,
                strategy,
                max_attempts,
                request: tmpl.request()?,
            };
            svc.allocate_group(&group, &layout, &metadata, &opts)
        })?;
        Ok(PyGroup::new(g, &self.reg))
    }

    /// Release every live member of group `group` (NotFound when none); returns the
    /// ports freed.
    fn release_group(&self, py: Python<'_>, group: &str) -> PyResult<Vec<u16>> {
        detached(py, || self.svc()?.release_group(group)).map_err(PyErr::from)
    }

    /// The live named services as "json", "env" or "nginx" text.
    #[pyo3(signature = (format = "json"))]
    fn export(&self, py: Python<'_>, format: &str) -> PyResult<String> {
        detached(py, || self.svc()?.export(format.parse::<ExportFormat>()?)).map_err(PyErr::from)
    }

    /// Write the nginx export to `dir` (one NAME.conf per service, each atomically; files of
    /// services gone removed, files portmgr did not write kept), without testing or
    /// reloading nginx.
    fn write_nginx_dir(&self, py: Python<'_>, dir: PathBuf) -> PyResult<PyNginxApplied> {
        Ok(detached(py, || write_nginx_dir(&dir, &self.svc()?.list_named()?))?.into())
    }

    /// Write the nginx export to `dir` as `write_nginx_dir` does, run `test_command`
    /// (default `nginx -t`) and only when it passes `reload_command` (default
    /// `nginx -s reload`); on failure portmgr's previous files are restored. An empty
    /// command skips that step.
    #[pyo3(signature = (dir, *, test_command = None, reload_command = None))]
    fn apply_nginx(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        test_command: Option<Vec<String>>,
        reload_command: Option<Vec<String>>,
    ) -> PyResult<PyNginxApplied> {
        let mut deploy = NginxDeploy::new(dir);
        if let Some(c) = test_command {
            deploy.test_command = (!c.is_empty()).then_some(c);
        }
        if let Some(c) = reload_command {
            deploy.reload_command = (!c.is_empty()).then_some(c);
        }
        Ok(detached(py, || deploy.apply(&self.svc()?.list_named()?))?.into())
    }

    /// Re-create services from a JSON export or a .env file (`path`, or the `text`
    /// itself): each name asks for its previous port first; a taken port falls back to
    /// `range` (else the service's type's range, else the pool) and is reported as
    /// "moved"; a live name is left as it is ("existing"); failures are reported, not
    /// raised. `format`: "json", "env", or None to guess.
    #[pyo3(signature = (path = None, *, text = None, format = None, range = None, ttl = None, watch_pid = None))]
    #[allow(clippy::too_many_arguments)]
    fn import_services(
        &self,
        py: Python<'_>,
        path: Option<PathBuf>,
        text: Option<String>,
        format: Option<String>,
        range: Option<Bound<'_, PyAny>>,
        ttl: Option<f64>,
        watch_pid: Option<i64>,
    ) -> PyResult<PyImportReport> {
        let range = opt_range(range)?;
        let tmpl = RequestArgs::lifetime("tcp", ttl, watch_pid);
        let mut outcome = detached(py, || {
            let format = format.map(|f| f.parse::<ImportFormat>()).transpose()?;
            let opts = ImportOptions {
                range: range.transpose()?,
                request: Some(tmpl.request()?),
            };
            // The core reads the file (a regular file, size-capped): never a skin.
            match (path, text) {
                (Some(p), None) => self.svc()?.import_file(&p, format, &opts),
                (None, Some(t)) => self.svc()?.import_text(&t, format, &opts),
                _ => Err(Error::invalid(
                    "import_services needs a path or text=, not both",
                )),
            }
        })?;
        let leases = std::mem::take(&mut outcome.leases)
            .into_iter()
            .map(|l| Py::new(py, PyLease::new(l, &self.reg)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyImportReport { outcome, leases })
    }

    /// The health report over every range in use (the pool, every service type range and
    /// every explicit range with leases): a range at least `threshold` (0 to 1) full is
    /// "exhausted"; held ports bound by processes outside portmgr, expired leases and
    /// dead owners are problems too.
    #[pyo3(signature = (threshold = 0.9))]
    fn health(&self, py: Python<'_>, threshold: f64) -> PyResult<PyHealth> {
        let h = detached(py, || self.svc()?.health(threshold))?;
        PyHealth::new(py, h)
    }

    /// The recorded health checks of this registry, oldest first (`HealthEntry`; the last
    /// 256, recorded by `HealthMonitor`, `portmgr health --watch` and `portmgr serve`).
    fn health_history(&self, py: Python<'_>) -> PyResult<Vec<super::monitor::PyHealthEntry>> {
        let v = detached(py, || self.svc()?.health_history())?;
        Ok(v.into_iter().map(Into::into).collect())
    }

    /// Every live named service by name (`Service`), the port -> name map, the names
    /// grouped by type, and the statistics (`stats_full()`), as a dict:
    /// `{"services": {...}, "ports": {15123: "web"}, "by_type": {"rest-api": ["web"]},
    /// "stats": {...}}`.
    fn overview<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ov = detached(py, || self.svc()?.overview())?;
        let out = PyDict::new(py);
        let services = PyDict::new(py);
        for (name, svc) in ov.services {
            services.set_item(name, Py::new(py, PyService::from(svc))?)?;
        }
        out.set_item("services", services)?;
        out.set_item("ports", ov.ports)?;
        out.set_item("by_type", ov.by_type)?;
        out.set_item("stats", json_to_py(py, &ov.stats)?)?;
        Ok(out)
    }

    /// The registry's statistics with every range in use and per-type counts, as a dict
    /// (the JSON of `portmgr stats --json`): `pool`, `held`, `reserved`, `free`, ...,
    /// `ranges` (each: `kind`, `range`, `type`, `size`, `held`, `reserved`,
    /// `utilization`) and `types` (each: `type`, `range`, `size`, `total`, `active`,
    /// `expired`, `reserved`, `utilization`).
    fn stats_full<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let st = detached(py, || self.svc()?.stats_full())?;
        json_to_py(py, &st)
    }

    fn __repr__(&self) -> String {
        format!("portmgr.Services({:?})", self.reg.dir().to_string_lossy())
    }
}

/// Add the mapping classes to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyServices>()?;
    m.add_class::<PyService>()?;
    m.add_class::<PyServiceType>()?;
    m.add_class::<PyGroup>()?;
    m.add_class::<PyGroupMember>()?;
    m.add_class::<PyImportReport>()?;
    m.add_class::<PyImportedService>()?;
    m.add_class::<PyNginxApplied>()?;
    Ok(())
}

/// A serializable core value as plain Python objects (dicts, lists, numbers, strings),
/// through `json.loads`.
fn json_to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| PyErr::from(crate::error::Error::Internal(format!("serializing to JSON: {e}"))))?;
    py.import("json")?.call_method1("loads", (text,))
}
