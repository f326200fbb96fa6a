//! The side file `services.json` in the registry directory: per-lease service type,
//! group and metadata, keyed by lease id.
//!
//! * Read and written only under the registry lock ([`Registry::locked`]); written whole,
//!   to a fresh temp file (`O_EXCL`, mode 0600) then renamed over the old one, so a reader
//!   or a crash sees the old file or the new one, never half of one.
//! * Opened with `O_NOFOLLOW` and checked (regular file, ours, one link): a symlink or
//!   other planted file is refused, never followed.
//! * An entry names its lease by (lease id, first port, creation time): a lease id reused
//!   after the registry file was replaced cannot inherit stale metadata. Entries of leases
//!   that are no longer live are ignored by readers and dropped by the next writer.
//!   Dropping uses a sequence number so that an entry written by another process after
//!   this writer looked at the live table is never dropped by mistake.
//! * A damaged file is moved aside (`services.json.damaged-<ms>`) by the next writer, with
//!   a message on stderr; the registry itself (the ports) is unaffected.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys;
use crate::error::{Error, Result};
use crate::registry::{LeaseInfo, Registry};

use super::Metadata;

/// The side file's name inside the registry directory.
pub const SERVICES_FILE: &str = "services.json";
const MAX_FILE: u64 = 64 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StoreFile {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub leases: BTreeMap<u64, Entry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub port: u16,
    pub created_ms: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    /// A module's internal ports, in the order of the lease's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub internal_ports: Vec<u16>,
    #[serde(default)]
    pub seq: u64,
}

impl Entry {
    /// Whether this entry belongs to a live lease in `live`.
    pub fn matches(&self, id: u64, live: &[LeaseInfo]) -> bool {
        live.iter().any(|i| i.lease_id == id && i.port == self.port && i.created_ms == self.created_ms)
    }
}

impl StoreFile {
    /// Insert or replace the entry of lease `id`, stamped with this write's sequence number.
    pub fn put(&mut self, id: u64, mut e: Entry) {
        e.seq = self.seq;
        self.leases.insert(id, e);
    }
    /// The entry of the live lease `info` belongs to.
    pub fn entry_for(&self, info: &LeaseInfo, live: &[LeaseInfo]) -> Option<&Entry> {
        self.leases.get(&info.lease_id).filter(|e| e.matches(info.lease_id, live))
    }
}

fn open_nofollow(path: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn insecure(path: &Path, reason: &str) -> Error {
    Error::InsecureDirectory { path: path.to_path_buf(), reason: reason.into() }
}

/// Read the file: `Ok(None)` when it is missing, `Err` when unsafe, and the parse error
/// separately when damaged.
fn read_raw(dir: &Path) -> Result<Option<std::result::Result<StoreFile, String>>> {
    let path = dir.join(SERVICES_FILE);
    let f = open_nofollow(&path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => insecure(&path, "it is a symbolic link: remove it (portmgr recreates it)"),
        _ => Error::os(format!("opening {}", path.display()), e),
    })?;
    let Some(mut f) = f else { return Ok(None) };
    crate::registry::check_file(&path, &f)?;
    let md = f.metadata().map_err(|e| Error::os(format!("fstat of {}", path.display()), e))?;
    if md.len() > MAX_FILE {
        return Ok(Some(Err(format!("it is {} bytes, more than the {MAX_FILE} allowed", md.len()))));
    }
    let mut text = String::new();
    if let Err(e) = f.read_to_string(&mut text) {
        return Ok(Some(Err(format!("it cannot be read as UTF-8 text: {e}"))));
    }
    Ok(Some(serde_json::from_str::<StoreFile>(&text).map_err(|e| e.to_string())))
}

/// Read for a view: a damaged file reads as empty (with a notice for the registry's
/// notices, pushed by the caller once the lock is released).
fn read_lenient(dir: &Path, notice: &mut Option<String>) -> Result<StoreFile> {
    match read_raw(dir)? {
        None => Ok(StoreFile::default()),
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => {
            *notice = Some(format!(
                "portmgr: {} is damaged ({e}); service types and metadata are not shown until the next change replaces it",
                dir.join(SERVICES_FILE).display()
            ));
            Ok(StoreFile::default())
        }
    }
}

/// Read for a change: a damaged file is moved aside first (and a notice made).
fn read_for_write(dir: &Path, notice: &mut Option<String>) -> Result<StoreFile> {
    match read_raw(dir)? {
        None => Ok(StoreFile::default()),
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => {
            let from = dir.join(SERVICES_FILE);
            let to = dir.join(format!("{SERVICES_FILE}.damaged-{}", sys::wall_ms()));
            std::fs::rename(&from, &to).map_err(|err| Error::os(format!("moving {} aside", from.display()), err))?;
            *notice = Some(format!(
                "portmgr: {} was damaged ({e}); moved to {} and started afresh (the ports themselves are unaffected)",
                from.display(),
                to.display()
            ));
            Ok(StoreFile::default())
        }
    }
}


/// Write the file atomically: a new temp file (never an existing one), fsync, rename.
fn write(dir: &Path, file: &StoreFile) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(file).map_err(|e| Error::Internal(format!("serializing services: {e}")))?;
    text.push('\n');
    let tmp_name = format!(".{SERVICES_FILE}.tmp.{}", std::process::id());
    let tmp = dir.join(&tmp_name);
    // A temp file left by a crashed writer of this pid (pids recycle): remove it. We hold
    // the lock, so no live writer uses this name.
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| Error::os(format!("creating {}", tmp.display()), e))?;
    let res = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_data())
        .and_then(|()| std::fs::rename(&tmp, dir.join(SERVICES_FILE)));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::os(format!("writing {}", dir.join(SERVICES_FILE).display()), e));
    }
    Ok(())
}

/// The side file and the live table, for views.
pub(crate) fn snapshot(reg: &Registry) -> Result<(StoreFile, Vec<LeaseInfo>)> {
    let live = reg.list()?;
    let dir = reg.dir().to_path_buf();
    let mut notice = None;
    let file = reg.locked(|| read_lenient(&dir, &mut notice))?;
    if let Some(n) = notice {
        reg.add_notice(n);
    }
    Ok((file, live))
}

/// Change the side file under the registry lock. `f` gets the file (entries of dead
/// leases already dropped) and the live table; its changes are written atomically.
pub(crate) fn update<R>(reg: &Registry, f: impl FnOnce(&mut StoreFile, &[LeaseInfo]) -> Result<R>) -> Result<R> {
    let dir = reg.dir().to_path_buf();
    let mut notice = None;
    let seen_seq = reg.locked(|| Ok(read_lenient(&dir, &mut notice)?.seq))?;
    let live = reg.list()?;
    let out = reg.locked(|| {
        let mut file = read_for_write(&dir, &mut notice)?;
        // Drop entries of leases gone from the live table — only those written before we
        // read `live` (a later entry may belong to a lease allocated since).
        file.leases.retain(|id, e| e.seq > seen_seq || e.matches(*id, &live));
        file.version = 1;
        file.seq += 1;
        let r = f(&mut file, &live)?;
        write(&dir, &file)?;
        Ok(r)
    });
    if let Some(n) = notice {
        reg.add_notice(n);
    }
    out
}
