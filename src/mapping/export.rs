//! Exports of the live service map: JSON, `.env` and nginx `location` blocks. Pure
//! functions of `&[Service]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::validate::{
    DEFAULT_UPSTREAM_HOST, HEALTH_PATH_KEY, ROUTE_KEY, UPSTREAM_HOST_KEY, route_prefix, upstream_url_host,
    validate_health_path, validate_route, validate_upstream_host,
};
use super::{Metadata, Service};

/// The `portmgr_export` version of the JSON export.
pub const JSON_EXPORT_VERSION: u32 = 1;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// [`export_json`].
    Json,
    /// [`export_env`].
    Env,
    /// [`export_nginx`].
    Nginx,
}

impl FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ExportFormat> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(ExportFormat::Json),
            "env" | "dotenv" | ".env" => Ok(ExportFormat::Env),
            "nginx" => Ok(ExportFormat::Nginx),
            other => Err(Error::invalid(format!("unknown export format {other:?}: use json, env or nginx"))),
        }
    }
}

/// `services` in `format`.
pub fn export(services: &[Service], format: ExportFormat) -> Result<String> {
    match format {
        ExportFormat::Json => export_json(services),
        ExportFormat::Env => export_env(services),
        ExportFormat::Nginx => Ok(export_nginx(services)),
    }
}

/// One service in the JSON export (also what import reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExportedService {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default = "tcp")]
    pub protocols: String,
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    /// A module's internal → external ports (absent for other services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_map: Option<BTreeMap<u16, u16>>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Serialize, Deserialize)]
pub(crate) struct JsonExport {
    pub portmgr_export: u32,
    pub services: Vec<ExportedService>,
}

/// The named services as JSON:
///
/// ```json
/// { "portmgr_export": 1,
///   "services": [ { "name": "api", "port": 8081, "ports": [8081], "protocols": "tcp",
///                   "type": "rest-api", "group": null, "member": null,
///                   "metadata": { "owner": "team-a" } } ] }
/// ```
///
/// Sorted by name; unnamed leases are left out. `type`, `group` and `member` are `null`
/// when not set.
pub fn export_json(services: &[Service]) -> Result<String> {
    let mut out: Vec<ExportedService> = services
        .iter()
        .filter_map(|s| {
            Some(ExportedService {
                name: s.name.clone()?,
                port: s.port,
                ports: s.ports.clone(),
                protocols: s.protocols.clone(),
                service_type: s.service_type.clone(),
                group: s.group.clone(),
                member: s.member.clone(),
                metadata: s.metadata.clone(),
                port_map: s.port_map.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let doc = JsonExport { portmgr_export: JSON_EXPORT_VERSION, services: out };
    let mut s =
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(format!("serializing the export: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// The environment-variable stem of a name: upper-cased, every character other than
/// `A-Z 0-9` turned into `_`, a leading digit prefixed with `_` (`"web-api"` ->
/// `WEB_API`, `"2nd"` -> `_2ND`). The one env-name rule of portmgr: `portmgr run --port
/// NAME` sets `{stem}_PORT`, and the `.env` export writes [`env_key`].
pub fn env_stem(name: &str) -> String {
    let mut k: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if k.starts_with(|c: char| c.is_ascii_digit()) {
        k.insert(0, '_');
    }
    k
}

/// The `.env` variable of service `name`: its [`env_stem`], then `_PORT`
/// (`"clickhouse.http"` -> `CLICKHOUSE_HTTP_PORT`).
pub fn env_key(name: &str) -> String {
    let mut k = env_stem(name);
    k.push_str("_PORT");
    k
}

/// The variable of a module's internal port in the `.env` export: `{stem}_{internal}_PORT`
/// (`shop`, 8080 -> `SHOP_8080_PORT`), holding the external port.
pub fn env_map_key(name: &str, internal: u16) -> String {
    format!("{}_{internal}_PORT", env_stem(name))
}

/// The named services as `.env` lines, `NAME_PORT=1234` (see [`env_key`]), sorted by
/// name. Each line is preceded by a comment `# portmgr {"name":...,"type":...}` so that
/// import recovers the exact name, type, protocols, metadata, group and (for a lease of
/// several ports) every port. Two names that map to the same variable are an error.
pub fn export_env(services: &[Service]) -> Result<String> {
    let mut named: Vec<&Service> = services.iter().filter(|s| s.name.is_some()).collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = String::from("# Generated by portmgr export --format env\n");
    for s in named {
        let name = s.name.as_deref().unwrap_or_default();
        let key = env_key(name);
        if let Some(other) = seen.insert(key.clone(), name) {
            return Err(Error::invalid(format!(
                "services {other:?} and {name:?} both map to the variable {key}: rename one of them"
            )));
        }
        let mut comment = serde_json::Map::new();
        comment.insert("name".into(), name.into());
        if let Some(t) = &s.service_type {
            comment.insert("type".into(), t.clone().into());
        }
        if let (Some(g), Some(m)) = (&s.group, &s.member) {
            comment.insert("group".into(), g.clone().into());
            comment.insert("member".into(), m.clone().into());
        }
        if s.protocols != "tcp" {
            comment.insert("protocols".into(), s.protocols.clone().into());
        }
        if s.ports.len() > 1 {
            // The variable holds the first port; import re-creates them all from here.
            comment.insert("ports".into(), s.ports.clone().into());
        }
        if !s.metadata.is_empty() {
            comment.insert("metadata".into(), serde_json::to_value(&s.metadata).unwrap_or_default());
        }
        if let Some(map) = &s.port_map {
            comment.insert("port_map".into(), serde_json::to_value(map).unwrap_or_default());
        }
        let _ = writeln!(out, "# portmgr {}", serde_json::Value::Object(comment));
        let _ = writeln!(out, "{key}={}", s.port);
        // A module's map: one variable per internal port (import reads the map from the
        // comment above and skips these).
        for (&internal, &external) in s.port_map.iter().flatten() {
            let k = env_map_key(name, internal);
            if let Some(other) = seen.insert(k.clone(), name) {
                return Err(Error::invalid(format!(
                    "services {other:?} and {name:?} both map to the variable {k}: rename one of them"
                )));
            }
            let _ = writeln!(out, "{k}={external}");
        }
    }
    Ok(out)
}

/// Whether `name` can be used as an nginx file name (and default location path):
/// `A-Z a-z 0-9 . _ -`, not starting with `.`.
fn nginx_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Where nginx routes a service: its location prefix, the upstream host as it goes into
/// the URL, and the health path. Every value checked by `validate` (the same rules as
/// when the metadata was set), so a value that got into the side file another way is
/// refused here, never copied into the configuration.
struct NginxRoute {
    /// The location prefix, ending in `/` (`/shop/api/`; `/NAME/` by default).
    prefix: String,
    /// `127.0.0.1`, `backend.internal`, `[::1]`.
    host: String,
    /// `/health` by default.
    health: String,
}

impl NginxRoute {
    /// The locations this service's blocks declare, as nginx compares them: the redirect
    /// (`= /shop/api`, none for `/`), the health check (`= /shop/api/health`) and the
    /// prefix (`/shop/api/`). Two services sharing one would fail `nginx -t`.
    fn locations(&self) -> Vec<String> {
        let mut v = Vec::with_capacity(3);
        if self.prefix != "/" {
            v.push(format!("= {}", self.prefix.trim_end_matches('/')));
        }
        v.push(format!("= {}health", self.prefix));
        v.push(self.prefix.clone());
        v
    }
}

fn nginx_route(s: &Service, name: &str) -> Result<NginxRoute> {
    let what = |e: Error| match e {
        Error::InvalidArgument(m) => Error::invalid(format!("service {name:?}: {m}")),
        other => other,
    };
    let prefix = match s.metadata.get(ROUTE_KEY) {
        Some(r) => {
            validate_route(r).map_err(what)?;
            route_prefix(r)
        }
        None => format!("/{name}/"),
    };
    let host = match s.metadata.get(UPSTREAM_HOST_KEY) {
        Some(h) => {
            validate_upstream_host(h).map_err(what)?;
            upstream_url_host(h)
        }
        None => DEFAULT_UPSTREAM_HOST.to_string(),
    };
    let health = s.metadata.get(HEALTH_PATH_KEY).map(String::as_str).unwrap_or("/health");
    validate_health_path(health).map_err(what)?;
    Ok(NginxRoute { prefix, host, health: health.to_string() })
}

fn proxy_common(out: &mut String, prefix: &str, connect: &str, read: &str) {
    let _ = write!(
        out,
        "    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Forwarded-Prefix \"{prefix}\";
    # WebSocket: pass the upgrade handshake through.
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $http_connection;
    # A development proxy streams both ways: server-sent events, long polls and uploads
    # reach the other side as they come, not once nginx has buffered them whole.
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_connect_timeout {connect};
    proxy_send_timeout 60s;
    proxy_read_timeout {read};
    add_header X-Content-Type-Options \"nosniff\" always;
    add_header X-Frame-Options \"SAMEORIGIN\" always;
    add_header Referrer-Policy \"strict-origin-when-cross-origin\" always;
"
    );
}

fn render(s: &Service, name: &str, r: &NginxRoute) -> String {
    let (port, prefix, host, health) = (s.port, r.prefix.as_str(), r.host.as_str(), r.health.as_str());
    // X-Forwarded-Prefix: the route without its trailing slash (empty for `/`).
    let fwd = prefix.trim_end_matches('/');
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# portmgr service {name:?}{}, port {port}, route {prefix} -> {host}. Generated by portmgr: do not edit.",
        // Escaped: a type read from a damaged side file must not add lines to the config.
        s.service_type.as_deref().map(|t| format!(" (type {})", t.escape_debug())).unwrap_or_default()
    );
    if prefix != "/" {
        let _ = writeln!(out, "location = {fwd} {{\n    return 308 {prefix};\n}}");
    }
    let _ = writeln!(out, "location = {prefix}health {{\n    proxy_pass http://{host}:{port}{health};");
    proxy_common(&mut out, fwd, "2s", "10s");
    let _ = writeln!(out, "    access_log off;\n}}");
    let _ = writeln!(out, "location {prefix} {{\n    proxy_pass http://{host}:{port}/;");
    proxy_common(&mut out, fwd, "5s", "300s");
    let _ = writeln!(out, "}}");
    out
}

/// The nginx `location` blocks of one service (for inclusion inside a `server { }`):
///
/// * `location ROUTE` proxies to `http://HOST:PORT/` (the route prefix stripped), where
///   ROUTE is the service's `route` metadata (default `/NAME/`; always ending in `/`) and
///   HOST its `upstream_host` metadata (default `127.0.0.1`), with HTTP/1.1, `Host`,
///   `X-Real-IP`, `X-Forwarded-{For,Proto,Host,Port,Prefix}`, the WebSocket
///   `Upgrade`/`Connection` headers, no buffering either way (`proxy_buffering off`,
///   `proxy_request_buffering off`: streaming responses and uploads pass as they come),
///   timeouts (connect 5 s, send 60 s, read 300 s) and security headers
///   (`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`);
/// * `location = ROUTEhealth` proxies to the backend's `/health` (or the path in the
///   service's `health_path` metadata) with short timeouts and no access log;
/// * `location = ROUTE-without-its-slash` redirects to `ROUTE` (not for the route `/`).
///
/// Errors for a name nginx cannot use as a file name (only `A-Z a-z 0-9 . _ -`, not
/// starting with `.`), an unnamed lease, a UDP-only service, or a `route`,
/// `upstream_host` or `health_path` that fails its check (see [`super::validate_route`]).
pub fn nginx_location(s: &Service) -> Result<String> {
    let name = s.name.as_deref().ok_or_else(|| Error::invalid("an unnamed lease has no nginx location"))?;
    if !nginx_safe(name) {
        return Err(Error::invalid(format!(
            "service name {} cannot be an nginx location: use only A-Z a-z 0-9 . _ - (not starting with .)",
            crate::registry::shown_name(name)
        )));
    }
    if s.protocols == "udp" {
        return Err(Error::invalid(format!("service {name:?} is UDP only: nginx cannot proxy HTTP to it")));
    }
    let r = nginx_route(s, name)?;
    Ok(render(s, name, &r))
}

/// The named services sorted by name, each with its [`nginx_location`] blocks or the
/// reason it is left out. A service whose locations clash with an earlier one's (two
/// services with one route) is left out too: nginx would refuse the whole configuration.
/// The one choice of what the nginx exports (text and directory) contain.
pub(crate) fn nginx_blocks(services: &[Service]) -> Vec<(String, std::result::Result<String, String>)> {
    let mut named: Vec<&Service> = services.iter().filter(|s| s.name.is_some()).collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    let mut taken: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Vec::with_capacity(named.len());
    for s in named {
        let name = s.name.as_deref().unwrap_or_default();
        let block = nginx_location(s).map_err(|e| e.to_string()).and_then(|text| {
            // nginx_location succeeded, so the route is valid.
            let r = nginx_route(s, name).map_err(|e| e.to_string())?;
            let locs = r.locations();
            if let Some((loc, other)) = locs.iter().find_map(|l| taken.get(l).map(|o| (l, *o))) {
                return Err(format!(
                    "invalid argument: service {name:?}: its location {loc} is already service {other:?}'s: give one of them another {ROUTE_KEY}"
                ));
            }
            for l in locs {
                taken.insert(l, name);
            }
            Ok(text)
        });
        out.push((name.to_string(), block));
    }
    out
}

/// Every named service's [`nginx_location`] blocks, one after the other, for inclusion in
/// a `server { }` block. A service that cannot be routed (or whose route another service
/// already has) is left out, with a comment saying why.
pub fn export_nginx(services: &[Service]) -> String {
    let mut out = String::from("# Generated by portmgr export --format nginx: include inside a server { } block.\n");
    for (_, block) in nginx_blocks(services) {
        match block {
            Ok(block) => {
                out.push('\n');
                out.push_str(&block);
            }
            Err(e) => {
                // Error texts show values escaped ({:?}); one line whatever they hold.
                let _ = writeln!(out, "\n# skipped: {}", e.replace(['\n', '\r'], " "));
            }
        }
    }
    out
}
