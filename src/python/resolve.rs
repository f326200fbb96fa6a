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

/// A port mapping a gateway granted.
#[pyclass(name = "PortMapping", module = "portmgr", frozen, get_all)]
pub(super) struct PyMapping {
    /// The gateway's address.
    gateway: String,
    /// "tcp" or "udp".
    protocol: &'static str,
    /// This host's port.
    internal_port: u16,
    /// The port on the gateway's external address.
    external_port: u16,
    /// Seconds the gateway keeps it unless renewed (map again to renew).
    lifetime: f64,
}

#[pymethods]
impl PyMapping {
    fn __repr__(&self) -> String {
        format!(
            "PortMapping(gateway={:?}, protocol={:?}, internal_port={}, external_port={}, lifetime={})",
            self.gateway, self.protocol, self.internal_port, self.external_port, self.lifetime
        )
    }
}

fn gateway_arg(gateway: Option<&str>) -> crate::Result<Option<std::net::Ipv4Addr>> {
    gateway
        .map(|g| g.parse().map_err(|_| Error::InvalidArgument(format!("gateway {g:?} must be an IPv4 address"))))
        .transpose()
}

fn transport(udp: bool) -> crate::nat::MapProtocol {
    if udp { crate::nat::MapProtocol::Udp } else { crate::nat::MapProtocol::Tcp }
}

/// Map `port` of this host on the gateway ("natpmp", "upnp" or "auto": NAT-PMP, then
/// UPnP IGD) for `lifetime` seconds; call again to renew.
#[pyfunction]
#[pyo3(signature = (port, protocol = "auto", *, gateway = None, lifetime = 3600.0, udp = false))]
pub(super) fn nat_map(
    py: Python<'_>,
    port: u16,
    protocol: &str,
    gateway: Option<&str>,
    lifetime: f64,
    udp: bool,
) -> PyResult<PyMapping> {
    let m = detached(py, || {
        let method = protocol.parse::<crate::nat::MapMethod>()?;
        crate::nat::map_port(port, transport(udp), method, gateway_arg(gateway)?, seconds_arg("lifetime", lifetime, false)?)
    })?;
    Ok(PyMapping {
        gateway: m.gateway.to_string(),
        protocol: m.protocol.as_str(),
        internal_port: m.internal_port,
        external_port: m.external_port,
        lifetime: m.lifetime.as_secs_f64(),
    })
}

/// Delete the gateway's mapping of `port`.
#[pyfunction]
#[pyo3(signature = (port, protocol = "auto", *, gateway = None, udp = false))]
pub(super) fn nat_unmap(py: Python<'_>, port: u16, protocol: &str, gateway: Option<&str>, udp: bool) -> PyResult<()> {
    detached(py, || {
        let method = protocol.parse::<crate::nat::MapMethod>()?;
        crate::nat::unmap_port(port, transport(udp), method, gateway_arg(gateway)?)
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
