//! The resolver (`Resolver`, `Endpoint`) and STUN (`stun_external_address`): each call
//! one core call without the GIL (`crate::resolve`, `crate::nat`).

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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEndpoint>()?;
    m.add_class::<PyResolver>()?;
    m.add_function(wrap_pyfunction!(stun_external_address, m)?)?;
    Ok(())
}
