//! Import: re-create leases from a JSON export or a `.env` file, each name asking for
//! its previous port first.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::range::{PortRange, Protocols};
use crate::registry::{Lease, MAX_COUNT, Request, validate_name};
use crate::strategy::Strategy;

use super::export::{JsonExport, env_key};
use super::group::{check_member_name, member_service_name, validate_group_name};
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
    /// The (first) port it had.
    pub port: u16,
    /// Every port of its lease, ascending (`port` among them); empty means `[port]`. A
    /// lease of several ports is re-created whole: the same count, each asking for its
    /// previous port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `"tcp"`, `"udp"` or `"both"`.
    pub protocols: String,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// The group it belonged to (kept so that group look-ups work after an import). With
    /// `member`, and then `name` must be `GROUP.MEMBER`.
    #[serde(default)]
    pub group: Option<String>,
    /// Its member name in that group.
    #[serde(default)]
    pub member: Option<String>,
    /// A module's internal port → external port map (see [`Service::port_map`]): re-made
    /// with the lease, internal ports in the order of their external ports.
    #[serde(default)]
    pub port_map: Option<std::collections::BTreeMap<u16, u16>>,
}

impl ImportEntry {
    /// Every port it had, ascending: [`ImportEntry::ports`], or `[port]` when that is empty.
    pub fn all_ports(&self) -> Vec<u16> {
        if self.ports.is_empty() {
            return vec![self.port];
        }
        let mut v = self.ports.clone();
        v.sort_unstable();
        v
    }

    /// Check everything that can be checked without the registry.
    fn validate(&self) -> Result<()> {
        let name = &self.name;
        validate_name(name)?;
        let what = |e: Error| Error::invalid(format!("service {name:?}: {}", super::types::bare(e)));
        if self.port == 0 {
            return Err(Error::invalid(format!("service {name:?}: port 0 is not a port")));
        }
        if !self.ports.is_empty() {
            let all = self.all_ports();
            if all.len() > MAX_COUNT || all.contains(&0) || all.windows(2).any(|w| w[0] == w[1]) {
                return Err(Error::invalid(format!(
                    "service {name:?}: ports {} must be 1 to {MAX_COUNT} distinct ports from 1 to 65535",
                    join_ports(&all)
                )));
            }
            if !all.contains(&self.port) {
                return Err(Error::invalid(format!(
                    "service {name:?}: port {} is not one of its ports {}",
                    self.port,
                    join_ports(&all)
                )));
            }
        }
        Protocols::from_str(&self.protocols).map_err(what)?;
        if let Some(map) = &self.port_map {
            let mut external: Vec<u16> = map.values().copied().collect();
            external.sort_unstable();
            if external != self.all_ports() {
                return Err(Error::invalid(format!(
                    "service {name:?}: its port_map's external ports {} are not its ports {}: make them agree (or drop port_map)",
                    join_ports(&external),
                    join_ports(&self.all_ports())
                )));
            }
            let internal: Vec<u16> = map.keys().copied().collect();
            super::validate_internal_ports(&internal).map_err(what)?;
        }
        if let Some(t) = &self.service_type {
            super::types::validate_type_name(t).map_err(what)?;
        }
        validate_metadata(&self.metadata).map_err(what)?;
        match (&self.group, &self.member) {
            (None, None) => {}
            (Some(g), Some(m)) => {
                validate_group_name(g).map_err(what)?;
                check_member_name(m).map_err(what)?;
                let want = member_service_name(g, m);
                if *name != want {
                    return Err(Error::invalid(format!(
                        "service {name:?}: group {g:?} and member {m:?} belong to the service named {want:?}, not to {name:?}: a group member is named GROUP.MEMBER; fix the name, or drop group and member"
                    )));
                }
            }
            _ => {
                return Err(Error::invalid(format!(
                    "service {name:?}: group and member go together: give both (the name is GROUP.MEMBER) or neither"
                )));
            }
        }
        Ok(())
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// Parse an import file. `format`: `None` guesses (JSON when the text starts with `{`).
/// A leading byte order mark is dropped. Errors name the line (and, for JSON, the
/// column); every entry is checked (name, ports, protocols, type name, metadata, and
/// group and member: valid names, both or neither, the name `GROUP.MEMBER`), so a file
/// is imported whole or not at all.
pub fn parse_import(text: &str, format: Option<ImportFormat>) -> Result<Vec<ImportEntry>> {
    // A byte order mark (some editors write one) is not part of the first name or `{`.
    let text = super::textfile::strip_bom(text);
    let format =
        format.unwrap_or(if text.trim_start().starts_with('{') { ImportFormat::Json } else { ImportFormat::Env });
    let entries = match format {
        ImportFormat::Json => parse_json(text)?,
        ImportFormat::Env => parse_env(text)?,
    };
    for (i, e) in entries.iter().enumerate() {
        e.validate()?;
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
            ports: s.ports,
            protocols: s.protocols,
            service_type: s.service_type,
            metadata: s.metadata,
            group: s.group,
            member: s.member,
            port_map: s.port_map,
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
    ports: Vec<u16>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    port_map: Option<std::collections::BTreeMap<u16, u16>>,
}

/// Whether `key` is a shell identifier: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(key: &str) -> bool {
    let mut b = key.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The variable a physical `.env` line assigns (`KEY=...`, `export KEY=...`), if any.
fn assigned_key(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let t = t.strip_prefix("export").filter(|r| r.starts_with([' ', '\t'])).map_or(t, str::trim_start);
    let end = t.find(|c: char| c == '=' || c.is_whitespace())?;
    t[end..].trim_start().starts_with('=').then(|| &t[..end])
}

/// The physical lines of a `.env` text, walked alongside dotenvy's parse to give line
/// numbers and the `# portmgr {...}` comment that precedes each assignment.
struct EnvLines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> EnvLines<'a> {
    /// Find the assignment of `key` from the current position: its line number (1-based)
    /// and the portmgr comment right above it (with that comment's line number).
    fn find(&mut self, key: &str) -> (Option<usize>, Option<(usize, &'a str)>) {
        let mut comment = None;
        for i in self.next..self.lines.len() {
            let t = self.lines[i].trim();
            if let Some(c) = t.strip_prefix('#') {
                if let Some(json) = c.trim_start().strip_prefix("portmgr ") {
                    comment = Some((i + 1, json.trim()));
                }
                continue;
            }
            if t.is_empty() {
                continue;
            }
            if assigned_key(t) == Some(key) {
                self.next = i + 1;
                return (Some(i + 1), comment);
            }
            // Another line (the rest of a multi-line value): a comment above it is not ours.
            comment = None;
        }
        (None, None)
    }

    /// The line number of the logical line `text` (as dotenvy reports it), from the
    /// current position.
    fn line_of(&self, text: &str) -> Option<usize> {
        let first = text.lines().next().unwrap_or("").trim_end();
        (self.next..self.lines.len()).find(|&i| self.lines[i].trim_end() == first).map(|i| i + 1)
    }
}

fn at_line(n: Option<usize>) -> String {
    n.map(|n| format!("line {n}: ")).unwrap_or_default()
}

/// `.env` text, parsed with dotenvy (quotes, `export`, comments, multi-line values and
/// `$VAR` substitution as dotenv tools do), on top of which every variable name must be an
/// identifier; `NAME_PORT` variables become services (named by the `# portmgr {...}`
/// comment above them when there is one), other variables are ignored.
fn parse_env(text: &str) -> Result<Vec<ImportEntry>> {
    let mut lines = EnvLines { lines: text.lines().collect(), next: 0 };
    let mut out: Vec<ImportEntry> = Vec::new();
    // The variables of the modules' internal ports seen so far (`SHOP_8080_PORT`).
    let mut map_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        let (key, value) = match item {
            Ok(kv) => kv,
            Err(dotenvy::Error::LineParse(line, at)) => {
                let shown: String = line.lines().next().unwrap_or("").chars().take(80).collect();
                return Err(Error::invalid(format!(
                    "import file: {}cannot read {shown:?} as a NAME=VALUE line (at character {}): names are letters, digits and '_', and quotes must be closed",
                    at_line(lines.line_of(&line)),
                    at + 1
                )));
            }
            Err(e) => return Err(Error::invalid(format!("import file: {e}"))),
        };
        let (lineno, comment) = lines.find(&key);
        let at = at_line(lineno);
        if !is_identifier(&key) {
            return Err(Error::invalid(format!(
                "import file: {at}{key:?} is not a variable name: use letters, digits and '_', not starting with a digit"
            )));
        }
        let Some(stem) = key.strip_suffix("_PORT") else { continue };
        if map_keys.contains(&key) {
            // A module's internal-port variable: part of the service above it.
            continue;
        }
        let port: u16 =
            value.trim().parse().ok().filter(|&p| p != 0).ok_or_else(|| {
                Error::invalid(format!("import file: {at}{key}={value:?} is not a port (1 to 65535)"))
            })?;
        let comment = match comment {
            Some((n, json)) => Some(serde_json::from_str::<EnvComment>(json).map_err(|e| {
                Error::invalid(format!("import file: line {n}: the portmgr comment is not valid: {e}"))
            })?),
            None => None,
        };
        let entry = match comment.filter(|c| env_key(&c.name) == key) {
            Some(c) => {
                if !c.ports.is_empty() && !c.ports.contains(&port) {
                    return Err(Error::invalid(format!(
                        "import file: {at}{key}={port}, but the portmgr comment above it lists the ports {}: make them agree (or remove the comment)",
                        join_ports(&c.ports)
                    )));
                }
                ImportEntry {
                    name: c.name,
                    port,
                    ports: c.ports,
                    protocols: c.protocols.unwrap_or_else(|| "tcp".into()),
                    service_type: c.service_type,
                    metadata: c.metadata,
                    group: c.group,
                    member: c.member,
                    port_map: c.port_map,
                }
            }
            None if !stem.is_empty() => ImportEntry {
                name: stem.to_ascii_lowercase(),
                port,
                ports: Vec::new(),
                protocols: "tcp".into(),
                service_type: None,
                metadata: Metadata::new(),
                group: None,
                member: None,
                port_map: None,
            },
            None => continue,
        };
        for &internal in entry.port_map.iter().flat_map(|m| m.keys()) {
            map_keys.insert(super::export::env_map_key(&entry.name, internal));
        }
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
    /// The (first) port it had in the file.
    pub previous_port: u16,
    /// The (first) port it has now (`None` when it failed).
    pub port: Option<u16>,
    /// Every port it had in the file, ascending.
    #[serde(default)]
    pub previous_ports: Vec<u16>,
    /// Every port it has now, ascending (empty when it failed).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `"same"` (got its previous ports), `"moved"` (a previous port was taken: new ones
    /// from the range), `"existing"` (the name was already live: left as it is) or
    /// `"failed"`.
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
    /// Re-create `entries`: each asks for its previous ports (all of them: a lease of
    /// several ports comes back with the same count and protocols); when one is taken the
    /// service falls back to the range (see [`ImportOptions::range`]) and is reported as
    /// `"moved"`. Services whose previous ports are free are placed first, and fallbacks
    /// avoid every port named in the file, so one moved service does not push another. A
    /// block of consecutive ports stays consecutive when it moves. A name already live is
    /// left as it is (`"existing"`). One failure does not stop the others (`"failed"`,
    /// with the reason).
    pub fn import(&self, entries: &[ImportEntry], opts: &ImportOptions) -> Result<ImportOutcome> {
        let mut reports: Vec<ImportedService> = Vec::with_capacity(entries.len());
        let mut leases = Vec::new();
        let mut deferred = Vec::new();
        // Pass 1: every service whose previous ports are all free gets them.
        for (i, e) in entries.iter().enumerate() {
            let previous = e.all_ports();
            let mut rep = ImportedService {
                name: e.name.clone(),
                previous_port: e.port,
                port: None,
                previous_ports: previous.clone(),
                ports: Vec::new(),
                status: "failed".into(),
                reason: None,
                service_type: e.service_type.clone(),
            };
            if let Some(s) = self.by_name(&e.name)? {
                rep.port = Some(s.port);
                rep.status = "existing".into();
                if s.ports != previous {
                    rep.reason = Some(format!("already live on {}", ports_phrase(&s.ports)));
                }
                rep.ports = s.ports;
            } else {
                let res = import_request(e, opts).and_then(|req| {
                    if previous.len() == 1 {
                        return Ok(req.preferred(e.port, true));
                    }
                    // Exactly these ports: a range that holds them and nothing else.
                    let mut req = req.range(exact_range(&previous)?);
                    req.strategy = Strategy::Sequential;
                    Ok(req)
                });
                match res.and_then(|req| self.allocate(&req, &import_spec(e))) {
                    Ok(lease) => {
                        rep.ports = sorted(lease.ports());
                        rep.port = rep.ports.first().copied();
                        rep.status = "same".into();
                        leases.push(lease);
                    }
                    Err(Error::PortInUse { .. }) | Err(Error::Exhausted { .. }) => deferred.push(i),
                    Err(err) => rep.reason = Some(err.to_string()),
                }
            }
            reports.push(rep);
        }
        // Pass 2: the others fall back to the range, avoiding every port the file names
        // (so a moved service does not take a port another entry may want next time).
        let wanted: Vec<u16> = entries.iter().flat_map(ImportEntry::all_ports).collect();
        for i in deferred {
            let (e, rep) = (&entries[i], &mut reports[i]);
            let previous = rep.previous_ports.clone();
            let spec = import_spec(e);
            let res = import_request(e, opts).and_then(|req| self.typed_request(&req, &spec)).and_then(|mut req| {
                let range = match req.range.take() {
                    Some(r) => r,
                    None => self.registry().default_pool()?,
                };
                req.range = Some(range.clone().excluding(wanted.iter().copied()).unwrap_or(range));
                let req = if previous.len() == 1 {
                    req.preferred(e.port, false)
                } else if previous.windows(2).all(|w| w[1] == w[0] + 1) {
                    req.contiguous(true).preferred(previous[0], false)
                } else {
                    req
                };
                self.allocate(&req, &spec)
            });
            let taken = if previous.len() == 1 {
                format!("port {} is taken", e.port)
            } else {
                format!("ports {} are not all free", join_ports(&previous))
            };
            match res {
                Ok(lease) => {
                    rep.ports = sorted(lease.ports());
                    rep.port = rep.ports.first().copied();
                    if rep.ports == previous {
                        rep.status = "same".into();
                    } else {
                        rep.status = "moved".into();
                        rep.reason = Some(format!("{taken}; got {} from the range", join_ports(&rep.ports)));
                    }
                    leases.push(lease);
                }
                Err(err) => rep.reason = Some(format!("{taken}, and {err}")),
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

fn sorted(ports: &[u16]) -> Vec<u16> {
    let mut v = ports.to_vec();
    v.sort_unstable();
    v
}

/// "port 8080" or "ports 8080,8081".
fn ports_phrase(ports: &[u16]) -> String {
    format!("port{} {}", if ports.len() == 1 { "" } else { "s" }, join_ports(ports))
}

/// The range holding exactly `ports` (ascending, not empty).
fn exact_range(ports: &[u16]) -> Result<PortRange> {
    let (Some(&lo), Some(&hi)) = (ports.first(), ports.last()) else {
        return Err(Error::Internal("an import entry without ports".into()));
    };
    PortRange::new(lo, hi)?.excluding((lo..=hi).filter(|p| ports.binary_search(p).is_err()))
}

fn import_request(e: &ImportEntry, opts: &ImportOptions) -> Result<Request> {
    let count = e.all_ports().len();
    let mut req = opts.request.clone().unwrap_or_default().count(count).contiguous(false);
    req = req.name(&e.name).protocols(Protocols::from_str(&e.protocols)?);
    req.range = opts.range.clone();
    (req.preferred, req.required) = (None, false);
    Ok(req)
}

fn import_spec(e: &ImportEntry) -> ServiceSpec {
    // Internal ports in the order of their external ports (how the map is kept).
    let mut map: Vec<(u16, u16)> = e.port_map.iter().flatten().map(|(&i, &x)| (x, i)).collect();
    map.sort_unstable();
    ServiceSpec {
        service_type: e.service_type.clone(),
        metadata: e.metadata.clone(),
        group: e.group.clone(),
        member: e.member.clone(),
        internal_ports: map.into_iter().map(|(_, i)| i).collect(),
    }
}
