//! Single Python arguments to core values: ports, seconds, ranges, protocols, hosts.
//! Each error is the core's `InvalidArgument` (or a `TypeError` for a wrong type).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyRange, PyRangeMethods, PyString, PyTuple};

use crate::error::{Error, Result};
use crate::range::{PortRange, Protocols};

pub(super) fn port_arg(what: &str, p: i64) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::invalid(format!(
            "{what} must be a port from 1 to 65535, not {p}"
        ))),
    }
}

pub(super) fn seconds_arg(what: &str, s: f64, allow_zero: bool) -> Result<Duration> {
    if !s.is_finite() || s < 0.0 || (!allow_zero && s == 0.0) {
        let want = if allow_zero {
            "zero or more"
        } else {
            "more than zero"
        };
        return Err(Error::invalid(format!(
            "{what} must be a finite number of seconds, {want}, not {s}"
        )));
    }
    Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(format!("{what} of {s} seconds is too long")))
}

/// A range given as `(start, end)` (inclusive), `"A-B"`, or `range(A, B + 1)`.
pub(super) fn range_arg(obj: &Bound<'_, PyAny>) -> PyResult<std::result::Result<PortRange, Error>> {
    if obj.is_instance_of::<PyString>() {
        return Ok(obj.extract::<String>()?.parse::<PortRange>());
    }
    if let Ok(r) = obj.cast::<PyRange>() {
        let (start, stop, step) = (r.start()?, r.stop()?, r.step()?);
        if step != 1 || stop <= start {
            return Ok(Err(Error::invalid(format!(
                "range({start}, {stop}, {step}) is not a port range: use a non-empty range with step 1"
            ))));
        }
        return Ok((|| {
            PortRange::new(
                port_arg("range start", start as i64)?,
                port_arg("range end", stop as i64 - 1)?,
            )
        })());
    }
    if let Ok((a, b)) = obj.extract::<(i64, i64)>() {
        return Ok((|| {
            PortRange::new(port_arg("range start", a)?, port_arg("range end", b)?)
        })());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let types = t
            .iter()
            .map(|x| Ok(x.get_type().name()?.to_string()))
            .collect::<PyResult<Vec<_>>>()?;
        let what = if t.len() == 2 {
            "range bounds must be ints"
        } else {
            "range must be an inclusive (start, end) tuple of two ints"
        };
        return Err(PyTypeError::new_err(format!(
            "{what}, not a tuple of ({}): {}",
            types.join(", "),
            t.repr()?
        )));
    }
    Err(PyTypeError::new_err(format!(
        "range must be an inclusive (start, end) tuple, a \"START-END\" string or a range object, not {}",
        obj.get_type().name()?
    )))
}

pub(super) fn protocols_arg(s: &str) -> Result<Protocols> {
    s.parse()
}

/// An IP address, or a host name resolved (call only without the GIL: DNS can block).
pub(super) fn resolve_host(host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| Error::os(format!("resolving {host:?}"), e))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| Error::invalid(format!("host {host:?} has no address")))
}

pub(super) fn socket_addr(host: &str, port: u16) -> Result<SocketAddr> {
    Ok(SocketAddr::new(resolve_host(host)?, port))
}

/// Ports and ranges as Python gives them: an int, an inclusive `(start, end)` tuple, a
/// `"9100,9200-9299"` string, or an iterable of those (`[9100, (9200, 9299)]`).
pub(super) fn spans_arg(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<std::result::Result<Vec<(u16, u16)>, Error>> {
    fn one(what: &str, x: &Bound<'_, PyAny>, out: &mut Vec<(u16, u16)>) -> PyResult<std::result::Result<(), Error>> {
        if x.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err(format!("{what}: a port is an int, not a bool")));
        }
        if let Ok(p) = x.extract::<i64>() {
            return Ok(port_arg(what, p).map(|p| out.push((p, p))));
        }
        if x.is_instance_of::<PyString>() {
            return Ok(crate::range::parse_spans(&x.extract::<String>()?).map(|v| out.extend(v)));
        }
        if let Ok((a, b)) = x.extract::<(i64, i64)>() {
            return Ok((|| {
                let r = PortRange::new(port_arg(what, a)?, port_arg(what, b)?)?;
                out.push((r.start(), r.end()));
                Ok(())
            })());
        }
        Err(PyTypeError::new_err(format!(
            "{what} takes ports (int), inclusive (start, end) tuples or \"A-B\" strings, not {}",
            x.get_type().name()?
        )))
    }
    let mut out = Vec::new();
    if obj.extract::<i64>().is_ok() || obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyTuple>() && obj.len()? == 2 && obj.get_item(0)?.extract::<i64>().is_ok() {
        if let Err(e) = one(what, obj, &mut out)? {
            return Ok(Err(e));
        }
        return Ok(Ok(out));
    }
    for x in obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("{what} takes a port, a (start, end) tuple, a string or a list of them"))
    })? {
        if let Err(e) = one(what, &x?, &mut out)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(out))
}
