//! Import: re-create leases from a JSON export or a `.env` file, each name asking for
//! its previous port first.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::range::{PortRange, Protocols};
use crate::registry::{Lease, Request, validate_name};

use super::export::{JsonExport, env_key};
use super::{Metadata, ServiceSpec, Services, validate_metadata};

/// The format of an import file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// The JSON export (`{"portmgr_export": 1, "services": [...]}`).
    Json,
    /// `.env` lines `NAME_PORT=1234` (with or without portmgr's `# portmgr {...}` comments).
    Env,
}

impl FromStr for ImportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImportFormat> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(ImportFormat::Json),
            "env" | "dotenv" | ".env" => Ok(ImportFormat::Env),
            other => Err(Error::invalid(format!("unknown import format {other:?}: use json or env"))),
        }
    }
}

/// One service to re-create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportEntry {
    /// Its name.
    pub name: String,
    /// The port it had (asked for first).
    pub port: u16,
    /// `"tcp"`, `"udp"` or `"both"`.
    pub protocols: String,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// The group it belonged to (kept so that group look-ups work after an import).
    #[serde(default)]
    pub group: Option<String>,
    /// Its member name in that group.
    #[serde(default)]
    pub member: Option<String>,
}

/// Parse an import file. `format`: `None` guesses (JSON when the text starts with `{`).
/// Errors name the line (and, for JSON, the column).
pub fn parse_import(text: &str, format: Option<ImportFormat>) -> Result<Vec<ImportEntry>> {
    let format =
        format.unwrap_or(if text.trim_start().starts_with('{') { ImportFormat::Json } else { ImportFormat::Env });
    let entries = match format {
        ImportFormat::Json => parse_json(text)?,
        ImportFormat::Env => parse_env(text)?,
    };
    for (i, e) in entries.iter().enumerate() {
        validate_name(&e.name)?;
        if e.port == 0 {
            return Err(Error::invalid(format!("service {:?}: port 0 is not a port", e.name)));
        }
        Protocols::from_str(&e.protocols)?;
        validate_metadata(&e.metadata)?;
        if entries[..i].iter().any(|o| o.name == e.name) {
            return Err(Error::invalid(format!("service {:?} appears twice in the import", e.name)));
        }
    }
    Ok(entries)
}

fn parse_json(text: &str) -> Result<Vec<ImportEntry>> {
    let doc: JsonExport = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.rfind(" at line ").map_or(msg.clone(), |i| msg[..i].to_string());
        Error::invalid(format!("import file: line {}, column {}: {msg}", e.line(), e.column()))
    })?;
    if doc.portmgr_export != super::JSON_EXPORT_VERSION {
        return Err(Error::invalid(format!(
            "import file: portmgr_export {} is not a version this portmgr reads ({})",
            doc.portmgr_export,
            super::JSON_EXPORT_VERSION
        )));
    }
    Ok(doc
        .services
        .into_iter()
        .map(|s| ImportEntry {
            name: s.name,
            port: s.port,
            protocols: s.protocols,
            service_type: s.service_type,
            metadata: s.metadata,
            group: s.group,
            member: s.member,
        })
        .collect())
}

#[derive(Deserialize, Default)]
struct EnvComment {
    name: String,
    #[serde(default, rename = "type")]
    service_type: Option<String>,
    #[serde(default)]
    protocols: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    member: Option<String>,
}

/// A value without its quotes, or (unquoted) without a trailing ` # comment`.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    if !v.starts_with(['"', '\'']) {
        return v.split(" #").next().unwrap_or(v).trim();
    }
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

fn parse_env(text: &str) -> Result<Vec<ImportEntry>> {
    let mut out = Vec::new();
    let mut pending: Option<EnvComment> = None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            if let Some(json) = c.trim_start().strip_prefix("portmgr ") {
                pending = Some(serde_json::from_str(json.trim()).map_err(|e| {
                    Error::invalid(format!("import file: line {lineno}: the portmgr comment is not valid: {e}"))
                })?);
            }
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::invalid(format!("import file: line {lineno}: expected NAME_PORT=PORT, got {line:?}"))
        })?;
        let key = key.trim();
        let comment = pending.take();
        let Some(stem) = key.strip_suffix("_PORT") else { continue };
        let value = unquote(value);
        let port: u16 = value.parse().ok().filter(|&p| p != 0).ok_or_else(|| {
            Error::invalid(format!("import file: line {lineno}: {key}={value:?} is not a port (1 to 65535)"))
        })?;
        let entry = match comment.filter(|c| env_key(&c.name) == key) {
            Some(c) => ImportEntry {
                name: c.name,
                port,
                protocols: c.protocols.unwrap_or_else(|| "tcp".into()),
                service_type: c.service_type,
                metadata: c.metadata,
                group: c.group,
                member: c.member,
            },
            None if !stem.is_empty() => ImportEntry {
                name: stem.to_ascii_lowercase(),
                port,
                protocols: "tcp".into(),
                service_type: None,
                metadata: Metadata::new(),
                group: None,
                member: None,
            },
            None => continue,
        };
        out.push(entry);
    }
    Ok(out)
}

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The range to fall back to when a previous port is taken. `None`: the service's
    /// type's range, else the default pool.
    pub range: Option<PortRange>,
    /// A template for every request (TTL, watched pid); its name, range, protocols and
    /// preferred port are replaced.
    pub request: Option<Request>,
}

/// What import did with one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedService {
    /// Its name.
    pub name: String,
    /// The port it had in the file.
    pub previous_port: u16,
    /// The port it has now (`None` when it failed).
    pub port: Option<u16>,
    /// `"same"` (got its previous port), `"moved"` (previous port taken: a new one from
    /// the range), `"existing"` (the name was already live: left as it is) or `"failed"`.
    pub status: String,
    /// Why it moved or failed.
    pub reason: Option<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
}

/// The result of an import: per-service report and the new leases (released on drop
/// unless kept).
#[derive(Debug)]
pub struct ImportOutcome {
    /// One per entry, in file order.
    pub services: Vec<ImportedService>,
    /// The leases created (not those that were already live).
    pub leases: Vec<Lease>,
}

impl ImportOutcome {
    /// The services that did not get their previous port.
    pub fn moved(&self) -> Vec<&ImportedService> {
        self.services.iter().filter(|s| s.status == "moved").collect()
    }
    /// The services that could not be re-created.
    pub fn failed(&self) -> Vec<&ImportedService> {
        self.services.iter().filter(|s| s.status == "failed").collect()
    }
}

impl Services {
    /// Re-create `entries`: each asks for its previous port as preferred (not required);
    /// a taken port falls back to the range (see [`ImportOptions::range`]) and is reported
    /// as `"moved"`. Services whose previous port is free are placed first, and fallbacks
    /// avoid every port named in the file, so one moved service does not push another. A name already live is left as it is (`"existing"`). One failure does
    /// not stop the others (`"failed"`, with the reason).
    pub fn import(&self, entries: &[ImportEntry], opts: &ImportOptions) -> Result<ImportOutcome> {
        let mut reports: Vec<ImportedService> = Vec::with_capacity(entries.len());
        let mut leases = Vec::new();
        let mut deferred = Vec::new();
        // Pass 1: every service whose previous port is free gets it.
        for (i, e) in entries.iter().enumerate() {
            let mut rep = ImportedService {
                name: e.name.clone(),
                previous_port: e.port,
                port: None,
                status: "failed".into(),
                reason: None,
                service_type: e.service_type.clone(),
            };
            if let Some(s) = self.by_name(&e.name)? {
                rep.port = Some(s.port);
                rep.status = "existing".into();
                rep.reason = (s.port != e.port).then(|| format!("already live on port {}", s.port));
            } else {
                let req = import_request(e, opts)?.preferred(e.port, true);
                match self.allocate(&req, &import_spec(e)) {
                    Ok(lease) => {
                        rep.port = Some(lease.port());
                        rep.status = "same".into();
                        leases.push(lease);
                    }
                    Err(Error::PortInUse { .. }) => deferred.push(i),
                    Err(err) => rep.reason = Some(err.to_string()),
                }
            }
            reports.push(rep);
        }
        // Pass 2: the others fall back to the range, avoiding every port the file names
        // (so a moved service does not take a port another entry may want next time).
        let wanted: Vec<u16> = entries.iter().map(|e| e.port).collect();
        for i in deferred {
            let (e, rep) = (&entries[i], &mut reports[i]);
            let spec = import_spec(e);
            let res = import_request(e, opts).and_then(|req| self.typed_request(&req, &spec)).and_then(|mut req| {
                let range = match req.range.take() {
                    Some(r) => r,
                    None => self.registry().default_pool()?,
                };
                req.range = Some(range.clone().excluding(wanted.iter().copied()).unwrap_or(range));
                self.allocate(&req.preferred(e.port, false), &spec)
            });
            match res {
                Ok(lease) => {
                    rep.port = Some(lease.port());
                    rep.status = if lease.port() == e.port { "same" } else { "moved" }.into();
                    if lease.port() != e.port {
                        rep.reason = Some(format!("port {} is taken; got {} from the range", e.port, lease.port()));
                    }
                    leases.push(lease);
                }
                Err(err) => rep.reason = Some(format!("port {} is taken, and {err}", e.port)),
            }
        }
        Ok(ImportOutcome { services: reports, leases })
    }

    /// [`parse_import`] then [`Services::import`].
    pub fn import_text(&self, text: &str, format: Option<ImportFormat>, opts: &ImportOptions) -> Result<ImportOutcome> {
        self.import(&parse_import(text, format)?, opts)
    }

    /// [`Services::import_text`] of the file at `path`, read with
    /// [`read_text_file`](super::read_text_file): a regular file of at most
    /// [`TEXT_FILE_MAX`](super::TEXT_FILE_MAX) bytes of UTF-8, or an invalid-argument error.
    pub fn import_file(
        &self,
        path: &std::path::Path,
        format: Option<ImportFormat>,
        opts: &ImportOptions,
    ) -> Result<ImportOutcome> {
        self.import_text(&super::textfile::read_text_file(path, "import file")?, format, opts)
    }
}

fn import_request(e: &ImportEntry, opts: &ImportOptions) -> Result<Request> {
    let mut req = opts.request.clone().unwrap_or_default().count(1).contiguous(false);
    req = req.name(&e.name).protocols(Protocols::from_str(&e.protocols)?);
    req.range = opts.range.clone();
    Ok(req)
}

fn import_spec(e: &ImportEntry) -> ServiceSpec {
    ServiceSpec {
        service_type: e.service_type.clone(),
        metadata: e.metadata.clone(),
        group: e.group.clone(),
        member: e.member.clone(),
    }
}
