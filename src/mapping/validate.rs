//! The one check of the metadata values an exporter copies into its output: the nginx
//! route (`route`), the upstream host (`upstream_host`) and the health path
//! (`health_path`). [`validate_export_metadata`] runs when metadata is set (through
//! [`super::validate_metadata`]: allocation, `update_metadata`, import, groups, every
//! skin), and the nginx exporter calls the same functions again on every service it
//! writes, so that a value that got into the side file another way is skipped there
//! with a message, never copied into the configuration.
//!
//! The rules are allow-lists: nothing that nginx's configuration parser or a shell treats
//! specially (whitespace, `;`, `{`, `}`, quotes, `$`, backtick, `#`, `\`, control
//! characters) can pass.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::registry::shown_name;

use super::Metadata;

/// The metadata key of a service's nginx route path (default `/NAME/`).
pub const ROUTE_KEY: &str = "route";
/// The metadata key of the host nginx proxies a service to (default `127.0.0.1`).
pub const UPSTREAM_HOST_KEY: &str = "upstream_host";
/// The metadata key that overrides the health path (`/health` by default).
pub const HEALTH_PATH_KEY: &str = "health_path";
/// Longest route, in bytes.
pub const ROUTE_MAX: usize = 255;
/// Longest upstream host, in bytes (a DNS name's limit).
pub const UPSTREAM_HOST_MAX: usize = 253;
/// The upstream host when a service names none.
pub const DEFAULT_UPSTREAM_HOST: &str = "127.0.0.1";

/// Check a route path: starts with `/`, at most [`ROUTE_MAX`] bytes, only
/// `A-Z a-z 0-9 / - . _ ~ : @ + , = !`, no empty, `.` or `..` segment (nginx would
/// normalise them away and the location would never match). A trailing `/` is optional:
/// the route used is always a prefix ending in `/` ([`route_prefix`]).
pub fn validate_route(route: &str) -> Result<()> {
    check_path(route, "/-._~:@+,=!").map_err(|why| {
        Error::invalid(format!(
            "metadata {ROUTE_KEY}={} is not a route path: {why} (a route looks like /shop/api/: A-Z a-z 0-9 and / - . _ ~ : @ + , = !, at most {ROUTE_MAX} bytes)",
            shown_name(route)
        ))
    })
}

/// The one path rule: starts with `/`, at most [`ROUTE_MAX`] bytes, only ASCII letters,
/// digits and `extra`, no empty, `.` or `..` segment (one trailing `/` allowed).
fn check_path(p: &str, extra: &str) -> std::result::Result<(), String> {
    if !p.starts_with('/') {
        return Err("it must start with /".into());
    }
    if p.len() > ROUTE_MAX {
        return Err("it is too long".into());
    }
    if let Some(c) = p.chars().find(|&c| !(c.is_ascii_alphanumeric() || extra.contains(c))) {
        return Err(format!("{c:?} is not allowed"));
    }
    let inner = p.strip_suffix('/').unwrap_or(p);
    if p != "/" && inner.split('/').skip(1).any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err("it has an empty, . or .. segment".into());
    }
    Ok(())
}

/// The location prefix of a valid route: the route with one trailing `/`
/// (`/shop/api` -> `/shop/api/`, `/` -> `/`).
pub fn route_prefix(route: &str) -> String {
    let mut p = route.trim_end_matches('/').to_string();
    p.push('/');
    p
}

/// Check an upstream host: an IPv4 literal (`10.0.0.5`), an IPv6 literal with or without
/// brackets (`[::1]`, `::1`), or a DNS host name (labels of `A-Z a-z 0-9 - _` of 1 to 63
/// bytes, separated by `.`, not starting or ending with `-`, the last not all digits), at
/// most [`UPSTREAM_HOST_MAX`] bytes.
pub fn validate_upstream_host(host: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "metadata {UPSTREAM_HOST_KEY}={} is not a host: {why} (use an IP address such as 10.0.0.5 or [::1], or a host name such as backend.internal)",
            shown_name(host)
        )))
    };
    if host.is_empty() {
        return bad("it is empty");
    }
    if host.len() > UPSTREAM_HOST_MAX {
        return bad("it is too long");
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => bad("a bracketed host must be an IPv6 address"),
        };
    }
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if let Some(c) = label.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            return bad(&format!("{c:?} is not allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with -");
        }
    }
    if host.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return bad("it looks like an IPv4 address but is not one");
    }
    Ok(())
}

/// A valid upstream host as it goes into a URL: IPv6 addresses in brackets.
pub fn upstream_url_host(host: &str) -> String {
    if !host.starts_with('[') && host.parse::<Ipv6Addr>().is_ok() { format!("[{host}]") } else { host.to_string() }
}

/// Check a health path: starts with `/`, only `A-Z a-z 0-9 / . _ -`, at most
/// [`ROUTE_MAX`] bytes, no empty, `.` or `..` segment.
pub fn validate_health_path(p: &str) -> Result<()> {
    check_path(p, "/._-").map_err(|why| {
        Error::invalid(format!(
            "metadata {HEALTH_PATH_KEY}={} is not a health path: {why} (a path like /health: A-Z a-z 0-9 / . _ -, at most {ROUTE_MAX} bytes)",
            shown_name(p)
        ))
    })
}

/// Check the metadata entries an exporter copies into its output ([`ROUTE_KEY`],
/// [`UPSTREAM_HOST_KEY`], [`HEALTH_PATH_KEY`]) when present. Part of
/// [`super::validate_metadata`].
pub fn validate_export_metadata(m: &Metadata) -> Result<()> {
    if let Some(r) = m.get(ROUTE_KEY) {
        validate_route(r)?;
    }
    if let Some(h) = m.get(UPSTREAM_HOST_KEY) {
        validate_upstream_host(h)?;
    }
    if let Some(p) = m.get(HEALTH_PATH_KEY) {
        validate_health_path(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        for ok in ["/", "/shop/", "/shop/api/", "/shop/api", "/a.b/c-d_e~f/", "/v1:beta/@x/+,=!/"] {
            assert!(validate_route(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "shop/", "/a b/", "/a;/", "/a{/", "/a}/", "/a'/", "/a\"/", "/$x/", "/`x`/", "/#/", "/a\n/", "/a\\/",
            "/../", "/a/../b/", "/./", "//", "/a//b/", "/a//", "/%2e%2e/", "/a?b/",
        ] {
            assert!(validate_route(bad).is_err(), "{bad:?}");
        }
        assert!(validate_route(&format!("/{}", "a".repeat(ROUTE_MAX))).is_err());
        assert!(validate_route(&format!("/{}", "a".repeat(ROUTE_MAX - 1))).is_ok());
        assert_eq!(route_prefix("/shop/api"), "/shop/api/");
        assert_eq!(route_prefix("/shop/api/"), "/shop/api/");
        assert_eq!(route_prefix("/"), "/");
    }

    #[test]
    fn hosts() {
        for ok in ["127.0.0.1", "10.0.0.5", "[::1]", "::1", "[fe80::1]", "localhost", "backend.internal", "my_svc-2"] {
            assert!(validate_upstream_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a;b",
            "a{b",
            "[::1",
            "[127.0.0.1]",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "1.2.3.999",
            "a:80",
            "a/b",
            "$(x)",
            "`x`",
            "a'b",
            "a\"b",
            "a\nb",
            "fe80::1%eth0",
        ] {
            assert!(validate_upstream_host(bad).is_err(), "{bad:?}");
        }
        assert!(validate_upstream_host(&"a".repeat(64)).is_err());
        assert!(validate_upstream_host(&["a"; 130].join(".")).is_err());
        assert_eq!(upstream_url_host("::1"), "[::1]");
        assert_eq!(upstream_url_host("[::1]"), "[::1]");
        assert_eq!(upstream_url_host("10.0.0.5"), "10.0.0.5");
    }
}
