//! The resolver (`Resolver`, `Endpoint`), STUN (`stun_external_address`) and gateway
//! port mapping (`nat_map`, `nat_unmap`, `PortMapping`): each call one core call without
//! the GIL (`crate::resolve`, `crate::nat`).

use pyo3::prelude::*;

use super::args::seconds_arg;
use super::errors::detached;
use crate::error::Error;
use crate::resolve::{Endpoint, Policy, Resolver, ResolverOptions};

/// One address a name resolved to.
#[pyclass(name = "Endpoint", module = "portmgr", frozen, get_all, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub(super) struct PyEndpoint {
    /// The IP address, as text.
    address: String,
    /// The port.
    port: u16,
    /// The host name the address belongs to (the SRV target, or the name's host).
    target: String,
    /// The SRV priority (0 for an A/AAAA name).
    priority: u16,
    /// The SRV weight (1 for an A/AAAA name).
    weight: u16,
}

impl From<Endpoint> for PyEndpoint {
    fn from(e: Endpoint) -> Self {
        PyEndpoint { address: e.addr.ip().to_string(), port: e.addr.port(), target: e.target, priority: e.priority, weight: e.weight }
    }
}

#[pymethods]
impl PyEndpoint {
    fn __repr__(&self) -> String {
        format!(
            "Endpoint(address={:?}, port={}, target={:?}, priority={}, weight={})",
            self.address, self.port, self.target, self.priority, self.weight
        )
    }
}

/// A caching DNS resolver with a pick policy (see `portmgr::resolve`).
#[pyclass(name = "Resolver", module = "portmgr", frozen)]
pub(super) struct PyResolver {
    inner: Resolver,
}

#[pymethods]
impl PyResolver {
    #[new]
    #[pyo3(signature = (servers = None, policy = "round-robin", *, min_ttl = 0.0, max_ttl = 86400.0, negative_ttl = 30.0, timeout = 2.0))]
    fn new(
        servers: Option<Vec<String>>,
        policy: &str,
        min_ttl: f64,
        max_ttl: f64,
        negative_ttl: f64,
        timeout: f64,
    ) -> PyResult<Self> {
        let build = || -> crate::Result<Resolver> {
            let mut o = ResolverOptions::new()
                .policy(policy.parse::<Policy>()?)
                .ttl_bounds(seconds_arg("min_ttl", min_ttl, true)?, seconds_arg("max_ttl", max_ttl, true)?)
                .negative_ttl(seconds_arg("negative_ttl", negative_ttl, true)?)
                .timeout(seconds_arg("timeout", timeout, false)?);
            for s in servers.unwrap_or_default() {
                let (host, port) = crate::probe::parse_host_port(&s)?;
                let ip = host
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("DNS server {s:?} must be an IP address and port, e.g. 127.0.0.1:53")))?;
                o.servers.push(std::net::SocketAddr::new(ip, port));
            }
            Resolver::new(o)
        };
        Ok(PyResolver { inner: build()? })
    }

    /// Every endpoint of `name` (HOST:PORT or _service._proto.domain), from the cache
    /// while the TTLs last.
    fn resolve(&self, py: Python<'_>, name: &str) -> PyResult<Vec<PyEndpoint>> {
        let r = &self.inner;
        let v = detached(py, || r.resolve(name))?;
        Ok(v.into_iter().map(PyEndpoint::from).collect())
    }

    /// One endpoint of `name`, chosen by the policy.
    fn pick(&self, py: Python<'_>, name: &str) -> PyResult<PyEndpoint> {
        let r = &self.inner;
        Ok(detached(py, || r.pick(name))?.into())
    }

    /// The policy's name.
    #[getter]
    fn policy(&self) -> &'static str {
        self.inner.options().policy.as_str()
    }

    /// How many DNS queries this resolver has sent.
    #[getter]
    fn queries(&self) -> u64 {
        self.inner.queries()
    }

    /// Forget every cached answer.
    fn clear_cache(&self) {
        self.inner.clear_cache()
    }
}

/// This host's (address, port) as the STUN server `server` ("HOST:PORT") sees it,
/// sending from `local_port` if given.
#[pyfunction]
#[pyo3(signature = (server, local_port = None))]
pub(super) fn stun_external_address(py: Python<'_>, server: &str, local_port: Option<u16>) -> PyResult<(String, u16)> {
    let a = detached(py, || crate::nat::stun_external_address(server, local_port))?;
    Ok((a.ip().to_string(), a.port()))
}

/// A port mapping a gateway granted, tied to the lease that holds the port (see
/// `portmgr::nat::mapping`): renewed while the lease lives, deleted when it ends.
#[pyclass(name = "Mapping", module = "portmgr", frozen)]
pub(super) struct PyMapping {
    inner: crate::nat::Mapping,
}

#[pymethods]
impl PyMapping {
    /// The gateway's address.
    #[getter]
    fn gateway(&self) -> String {
        self.inner.granted().gateway.to_string()
    }
    /// "tcp" or "udp".
    #[getter]
    fn protocol(&self) -> &'static str {
        self.inner.granted().protocol.as_str()
    }
    /// "natpmp" or "upnp": the gateway protocol that granted it.
    #[getter]
    fn method(&self) -> &'static str {
        self.inner.method().as_str()
    }
    /// This host's port.
    #[getter]
    fn internal_port(&self) -> u16 {
        self.inner.granted().internal_port
    }
    /// The port on the gateway's external address.
    #[getter]
    fn external_port(&self) -> u16 {
        self.inner.granted().external_port
    }
    /// Seconds the gateway keeps it unless renewed (the last grant).
    #[getter]
    fn lifetime(&self) -> f64 {
        self.inner.granted().lifetime.as_secs_f64()
    }
    /// The id of the lease it is tied to; None when no lease held the port.
    #[getter]
    fn lease_id(&self) -> Option<u64> {
        self.inner.lease_id()
    }
    /// "active", "lease_ended" or "deleted".
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().as_str()
    }
    /// How many renewals succeeded.
    #[getter]
    fn renewals(&self) -> u64 {
        self.inner.renewals()
    }
    /// The last failure of a renewal or of the deletion after the lease ended, or None.
    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.last_error()
    }
    /// Renew now (map again).
    fn renew(&self, py: Python<'_>) -> PyResult<()> {
        detached(py, || self.inner.renew())?;
        Ok(())
    }
    /// Delete the mapping now (idempotent); raises when the gateway's deletion failed.
    fn delete(&self, py: Python<'_>) -> PyResult<()> {
        detached(py, || self.inner.delete())?;
        Ok(())
    }
    /// Wait until it ended (its lease's end or delete()) and the deletion was tried, at
    /// most `timeout` seconds (None: no limit); whether it ended.
    #[pyo3(signature = (timeout = None))]
    fn wait_ended(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let t = timeout.map(|t| seconds_arg("timeout", t, true)).transpose()?;
        Ok(py.detach(|| self.inner.wait_ended(t)))
    }
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    /// Leaving a `with` block deletes the mapping.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.delete(py)?;
        Ok(false)
    }
    fn __repr__(&self) -> String {
        let g = self.inner.granted();
        format!(
            "Mapping(gateway={:?}, protocol={:?}, method={:?}, internal_port={}, external_port={}, lifetime={}, lease_id={}, state={:?})",
            g.gateway.to_string(),
            g.protocol.as_str(),
            self.inner.method().as_str(),
            g.internal_port,
            g.external_port,
            g.lifetime.as_secs_f64(),
            self.inner.lease_id().map_or("None".to_string(), |i| i.to_string()),
            self.inner.state().as_str(),
        )
    }
}

fn gateway_arg(gateway: Option<&str>) -> crate::Result<Option<std::net::Ipv4Addr>> {
    gateway
        .map(|g| g.parse().map_err(|_| Error::InvalidArgument(format!("gateway {g:?} must be an IPv4 address"))))
        .transpose()
}

/// Map `port` of this host on the gateway ("natpmp", "upnp" or "auto": NAT-PMP, then
/// UPnP IGD) for `lifetime` seconds, tied to the lease in `registry` that holds it.
#[pyfunction]
#[pyo3(signature = (port, protocol = "auto", *, gateway = None, lifetime = 3600.0, udp = false, registry))]
pub(super) fn nat_map(
    py: Python<'_>,
    port: u16,
    protocol: &str,
    gateway: Option<&str>,
    lifetime: f64,
    udp: bool,
    registry: PyRef<'_, super::registry::PyRegistry>,
) -> PyResult<PyMapping> {
    let reg = registry.reg.clone();
    let inner = detached(py, || {
        let opts = crate::nat::MapOptions {
            method: protocol.parse()?,
            gateway: gateway_arg(gateway)?,
            transport: crate::nat::MapProtocol::of_udp(udp),
            lifetime: seconds_arg("lifetime", lifetime, false)?,
            ..Default::default()
        };
        crate::nat::map(&reg, port, &opts)
    })?;
    Ok(PyMapping { inner })
}

/// Delete the gateway's mapping of `port`.
#[pyfunction]
#[pyo3(signature = (port, protocol = "auto", *, gateway = None, udp = false))]
pub(super) fn nat_unmap(py: Python<'_>, port: u16, protocol: &str, gateway: Option<&str>, udp: bool) -> PyResult<()> {
    detached(py, || {
        let method = protocol.parse::<crate::nat::MapMethod>()?;
        crate::nat::unmap_port(port, crate::nat::MapProtocol::of_udp(udp), method, gateway_arg(gateway)?)
    })?;
    Ok(())
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEndpoint>()?;
    m.add_class::<PyResolver>()?;
    m.add_function(wrap_pyfunction!(stun_external_address, m)?)?;
    m.add_class::<PyMapping>()?;
    m.add_function(wrap_pyfunction!(nat_map, m)?)?;
    m.add_function(wrap_pyfunction!(nat_unmap, m)?)?;
    Ok(())
}
