//! Python keyword arguments to the core [`Request`]: the one place where the allocation
//! keywords are named, defaulted and converted.
//!
//! Every allocating entry (`Registry.allocate`, `allocate_bound`, `free_port`,
//! `bound_socket`, `get_or_allocate`, and `Services.allocate`, `get_or_allocate`) takes
//! `**kwargs` and reads them with [`RequestArgs::from_kwargs`], naming the keywords it
//! does not take. The stub (`python/portmgr/_native.pyi`) spells each signature out for
//! type checkers.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

use super::args::{port_arg, protocols_arg, range_arg, resolve_host, seconds_arg, spans_arg};
use crate::error::{Error, Result};
use crate::mapping::{Metadata, ServiceSpec};
use crate::range::PortRange;
use crate::registry::Request;
use crate::strategy::Strategy;

/// Every option of the core [`Request`], as Python passes them: the keyword, its default
/// in [`RequestArgs::default`].
pub(super) struct RequestArgs {
    /// `proto`: "tcp", "udp" or "both".
    pub(super) proto: String,
    /// `count`: how many ports.
    count: i64,
    /// `contiguous`: consecutive ports.
    contiguous: bool,
    /// `range`: `(start, end)`, `"A-B"` or `range(a, b)`; an invalid one is reported when
    /// the request is built (after the type checks of every keyword).
    range: Option<Result<PortRange>>,
    /// `strategy`: "random", "sequential", "hash" or "kernel".
    strategy: String,
    /// `name`: the service name.
    pub(super) name: Option<String>,
    /// `preferred` and `required`: a port to try first, and whether only it will do.
    preferred: Option<i64>,
    required: bool,
    /// `ttl`: seconds.
    ttl: Option<f64>,
    /// `watch_pid`: hold while that process lives.
    watch_pid: Option<i64>,
    /// `host`: probe this address instead of every address.
    host: Option<String>,
    /// `key`: the hash strategy's key.
    key: Option<String>,
    /// `exclude`: ports never to hand out (see `spans_arg`); an invalid one is reported
    /// when the request is built.
    exclude: Option<Result<Vec<(u16, u16)>>>,
}

impl Default for RequestArgs {
    fn default() -> Self {
        RequestArgs {
            proto: "tcp".into(),
            count: 1,
            contiguous: false,
            range: None,
            strategy: "random".into(),
            name: None,
            preferred: None,
            required: false,
            ttl: None,
            watch_pid: None,
            host: None,
            key: None,
            exclude: None,
        }
    }
}

/// A `TypeError` that names the keyword, as pyo3 words its own argument errors.
fn keyword_error(name: &str, e: PyErr) -> PyErr {
    Python::attach(|py| PyTypeError::new_err(format!("argument '{name}': {}", e.value(py))))
}

fn get<'py, T: FromPyObjectOwned<'py>>(name: &str, v: &Bound<'py, PyAny>) -> PyResult<T> {
    v.extract::<T>().map_err(|e| keyword_error(name, e.into()))
}

/// The allocation keywords (each read in [`RequestArgs::from_kwargs`]).
const KEYWORDS: [&str; 13] = [
    "proto",
    "count",
    "contiguous",
    "range",
    "strategy",
    "name",
    "preferred",
    "required",
    "ttl",
    "watch_pid",
    "host",
    "key",
    "exclude",
];

/// The keywords as interned Python strings: the keys of a call's `**kwargs` are the
/// interned names of the call site, so most are found by identity, without reading
/// their text (which costs an allocation per key under the abi3 API).
static KEYWORD_NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// The index in [`KEYWORDS`] of the keyword `k`, or its text when it is none of them.
fn keyword(py: Python<'_>, k: &Bound<'_, PyAny>) -> PyResult<std::result::Result<usize, String>> {
    let names = KEYWORD_NAMES.get_or_init(py, || {
        KEYWORDS
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect()
    });
    if let Some(i) = names.iter().position(|n| n.as_ptr() == k.as_ptr()) {
        return Ok(Ok(i));
    }
    // Not interned (a key built at run time): compare the text.
    let text = k.cast::<PyString>()?.to_cow()?;
    Ok(KEYWORDS
        .iter()
        .position(|n| *n == text)
        .ok_or_else(|| text.into_owned()))
}

impl RequestArgs {
    /// The keywords of `kwargs` for the entry `func`, which takes every allocation
    /// keyword except those in `without` (a `TypeError` names any other keyword, as
    /// Python does for a function that does not take it).
    pub(super) fn from_kwargs(
        func: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        without: &[&str],
    ) -> PyResult<Self> {
        let mut a = RequestArgs::default();
        let Some(kwargs) = kwargs else {
            return Ok(a);
        };
        let py = kwargs.py();
        for (k, v) in kwargs.iter() {
            let i = match keyword(py, &k)? {
                Ok(i) if !without.contains(&KEYWORDS[i]) => i,
                Ok(i) => return Err(unexpected(func, KEYWORDS[i])),
                Err(text) => return Err(unexpected(func, &text)),
            };
            match KEYWORDS[i] {
                name @ "proto" => a.proto = get(name, &v)?,
                name @ "count" => a.count = get(name, &v)?,
                name @ "contiguous" => a.contiguous = get(name, &v)?,
                "range" if v.is_none() => a.range = None,
                "range" => a.range = Some(range_arg(&v)?),
                name @ "strategy" => a.strategy = get(name, &v)?,
                name @ "name" => a.name = get(name, &v)?,
                name @ "preferred" => a.preferred = get(name, &v)?,
                name @ "required" => a.required = get(name, &v)?,
                name @ "ttl" => a.ttl = get(name, &v)?,
                name @ "watch_pid" => a.watch_pid = get(name, &v)?,
                name @ "host" => a.host = get(name, &v)?,
                name @ "key" => a.key = get(name, &v)?,
                "exclude" if v.is_none() => a.exclude = None,
                name @ "exclude" => a.exclude = Some(spans_arg(name, &v)?),
                name => return Err(unexpected(func, name)),
            }
        }
        Ok(a)
    }

    /// Only the lifetime options (protocols, TTL, watched pid): the template of the
    /// requests a group or an import makes.
    pub(super) fn lifetime(proto: &str, ttl: Option<f64>, watch_pid: Option<i64>) -> Self {
        RequestArgs {
            proto: proto.to_owned(),
            ttl,
            watch_pid,
            ..RequestArgs::default()
        }
    }

    /// The core request (resolves `host`: call without the GIL).
    pub(super) fn request(self) -> Result<Request> {
        let mut req = Request::new().protocols(protocols_arg(&self.proto)?);
        let count = usize::try_from(self.count)
            .map_err(|_| Error::invalid(format!("count must be from 1 up, not {}", self.count)))?;
        req = req.count(count).contiguous(self.contiguous);
        if let Some(r) = self.range {
            req = req.range(r?);
        }
        let mut strategy: Strategy = self.strategy.parse()?;
        if let Some(k) = self.key {
            match strategy {
                Strategy::Hash(_) => strategy = Strategy::Hash(Some(k)),
                _ => {
                    return Err(Error::invalid(
                        "key is the hash strategy's key: pass strategy=\"hash\" with it",
                    ));
                }
            }
        }
        req = req.strategy(strategy);
        if let Some(n) = self.name {
            req = req.name(n);
        }
        match self.preferred {
            Some(p) => req = req.preferred(port_arg("preferred", p)?, self.required),
            None if self.required => {
                return Err(Error::invalid("required=True needs a preferred port"));
            }
            None => {}
        }
        if let Some(t) = self.ttl {
            req = req.ttl(seconds_arg("ttl", t, false)?);
        }
        if let Some(pid) = self.watch_pid {
            let pid = u32::try_from(pid)
                .ok()
                .filter(|&p| p > 0 && p <= i32::MAX as u32)
                .ok_or_else(|| {
                    Error::invalid(format!("watch_pid must be a process id, not {pid}"))
                })?;
            req = req.watch_pid(pid);
        }
        if let Some(h) = self.host {
            req = req.probe_addr(resolve_host(&h)?);
        }
        if let Some(ex) = self.exclude {
            req = req.exclude_spans(&ex?);
        }
        Ok(req)
    }
}

/// The service spec of an allocation: its `type`, `metadata` and `internal_ports`
/// keywords (a module's internal ports, one external port each). Without any of them it
/// is the plain spec, and the core takes the plain path ([`crate::mapping::allocate`]).
pub(super) fn spec_arg(
    service_type: Option<String>,
    metadata: Option<Metadata>,
    internal_ports: Option<Vec<i64>>,
) -> Result<ServiceSpec> {
    let internal_ports = internal_ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| port_arg("internal_ports", p))
        .collect::<Result<_>>()?;
    Ok(ServiceSpec {
        service_type,
        metadata: metadata.unwrap_or_default(),
        internal_ports,
        ..ServiceSpec::default()
    })
}

/// `metadata`: a dict, or any mapping (read as `dict(metadata)`), of str to str; None is
/// none.
pub(super) fn metadata_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Metadata>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let metadata = match obj.cast::<PyDict>() {
        Ok(d) => d.extract(),
        Err(_) => obj.py().get_type::<PyDict>().call1((obj,))?.extract(),
    };
    metadata.map(Some).map_err(|e| keyword_error("metadata", e))
}

fn unexpected(func: &str, k: &str) -> PyErr {
    PyTypeError::new_err(format!("{func}() got an unexpected keyword argument '{k}'"))
}
