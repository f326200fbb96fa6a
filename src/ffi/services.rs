//! Named services on a registry: the views, export (JSON, `.env`, nginx), import and
//! groups. Thin calls into [`crate::mapping`].

use std::ffi::{OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::guard::{c_bytes, c_str, copy_out, guard, need, portmgr_status, put};
use super::handles;
use super::registry::{json_out, portmgr_registry, request_of};
use super::request::portmgr_request;
use crate::error::{Error, Result};
use crate::mapping::{ExportFormat, GroupOptions, ImportOptions, LayoutSource, NginxDeploy, ServiceSpec, Services};

/// The mapping layer on the registry behind `reg`, with the service types config in force.
fn services(reg: *const portmgr_registry) -> Result<Services> {
    Services::new(handles::registry(reg, "reg", false)?)
}

/// Copy `text` out snprintf-style, as `json_out` does.
///
/// # Safety
/// `buf` NULL or writable for `len` bytes; `out_len` NULL or writable.
unsafe fn text_out(text: &str, buf: *mut c_char, len: usize, out_len: *mut usize) -> Result<()> {
    if buf.is_null() && len > 0 {
        return Err(Error::invalid("`buf` is NULL but `len` is not 0"));
    }
    // SAFETY: `buf` is NULL (then len is 0) or writable for `len` bytes; `out_len` is NULL
    // or writable (caller's contract).
    unsafe {
        let n = copy_out(text.as_bytes(), buf, len);
        put(out_len, n);
    }
    Ok(())
}

/// Every live lease of the registry as a service, by first port, as a JSON array of
/// objects: `name` (or null), `port`, `ports`, `protocols`, `type` (or null), `group`,
/// `member` (or null), `metadata` (an object of strings), `lease_id`, `owner_pid`,
/// `expires_ms` (or null), `state`. With `service_type` not NULL, only the services of
/// that type. New keys may be added.
///
/// Copied into `buf` and sized as `portmgr_registry_list_json` (snprintf-style; on
/// `PORTMGR_OK`, `*out_len` is the full length without the NUL).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL `out_len`, NULL `buf` with
/// `len > 0`, an unknown type, a broken types config file), `PORTMGR_TIMEOUT`.
/// Thread-safe.
///
/// # Safety
/// `service_type` is NULL or a NUL-terminated string; `buf` is NULL or valid for writing `len`
/// bytes; `out_len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_services_json(
    reg: *const portmgr_registry,
    service_type: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        need(out_len, "out_len")?;
        let list = if service_type.is_null() {
            svc.list()?
        } else {
            // SAFETY: `service_type` is non-NULL and NUL-terminated (contract).
            svc.by_type(unsafe { c_str(service_type, "service_type") }?)?
        };
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { json_out(&list, buf, len, out_len) }
    })
}

/// Export the live named services in `format`: `"json"` (`{"portmgr_export": 1,
/// "services": [{"name", "port", "ports", "protocols", "type", "group", "member",
/// "metadata", "port_map" (a module's only)}]}`), `"env"` (`NAME_PORT=1234` lines, each
/// after a `# portmgr {...}` comment, and a module's `NAME_8080_PORT=...` lines) or `"nginx"` (`location` blocks for inclusion inside a `server { }`). See
/// docs/mapping.md for the formats.
///
/// Copied into `buf` snprintf-style: at most `len - 1` bytes and a NUL. On `PORTMGR_OK`,
/// `*out_len` is the full length without the NUL; if it is `>= len` the text was
/// truncated: call again with `*out_len + 1` bytes (`buf` NULL and `len` 0 asks for the
/// size only).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL or unknown `format`, NULL
/// `out_len`, NULL `buf` with `len > 0`, two names that map to one `.env` variable, a
/// broken types config file), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `format` is NULL or a NUL-terminated string; `buf` is NULL or valid for writing `len`
/// bytes; `out_len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_export(
    reg: *const portmgr_registry,
    format: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        // SAFETY: `format` is NULL or NUL-terminated (contract).
        let format: ExportFormat = unsafe { c_str(format, "format") }?.parse()?;
        need(out_len, "out_len")?;
        let text = svc.export(format)?;
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { text_out(&text, buf, len, out_len) }
    })
}

/// Write the nginx export into directory `dir` (a path of any bytes): one `NAME.conf`
/// per service, each file atomically; files of services gone since the last export are
/// removed, files portmgr did not write stay. With `reload`, then run `nginx -t` and,
/// only when it passes, `nginx -s reload` (nginx found in `PATH`); when either fails
/// portmgr's files are put back as they were and the last error carries nginx's output.
///
/// On `PORTMGR_OK`, `*out_files` (if not NULL) is the number of files written.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL or empty `dir`, `dir` a
/// symbolic link or not a directory, the nginx test or reload failed), `PORTMGR_OS`,
/// `PORTMGR_TIMEOUT`. Thread-safe; calls on one directory take turns.
///
/// # Safety
/// `dir` is NULL or a NUL-terminated string; `out_files` is NULL or valid for writing a
/// `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_export_nginx_dir(
    reg: *const portmgr_registry,
    dir: *const c_char,
    reload: bool,
    out_files: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        // SAFETY: `dir` is NULL or NUL-terminated (contract).
        let bytes = unsafe { c_bytes(dir, "dir") }?;
        if bytes.is_empty() {
            return Err(Error::invalid("`dir` is an empty path"));
        }
        let dir = Path::new(OsStr::from_bytes(bytes));
        let list = svc.list_named()?;
        let applied =
            if reload { NginxDeploy::new(dir).apply(&list)? } else { crate::mapping::write_nginx_dir(dir, &list)? };
        // SAFETY: NULL or writable (contract).
        unsafe { put(out_files, applied.files.len()) };
        Ok(())
    })
}

/// Re-create services from `text` (`text_len` bytes of UTF-8, not necessarily
/// NUL-terminated): a JSON export or `.env` lines (JSON when it starts with `{`), for
/// example a file saved by `portmgr_export`. Each service asks for its previous port;
/// when that is taken it moves to a free port of the request's range (else its type's
/// range, else the pool). A name that is live already is left as it is.
///
/// `req` (NULL: the defaults) is the template of every lease: range (for moved
/// services), TTL, watched process, strategy. The new leases are kept, as by
/// `portmgr_lease_keep`: held until this process exits (or the TTL or watched process
/// ends), released with `portmgr_release_name` / `portmgr_release_port`.
///
/// The report goes into `buf` snprintf-style (on `PORTMGR_OK`, `*out_len` is its full
/// length): `{"services": [{"name", "previous_port", "port" (or null), "status": "same"
/// | "moved" | "existing" | "failed", "reason" (or null), "type"}]}`, one per service in
/// file order. One service failing does not stop the others and is no error status:
/// read the report. The import is done even when the report is truncated (asking again
/// reports the services as "existing"), so give a generous buffer.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handles, NULL `text` with `text_len >
/// 0`, text that is not UTF-8 or not a valid export or `.env` (the message names the
/// line), a request with a service type or metadata (those come from the text), NULL
/// `out_len`, NULL `buf` with `len > 0`), `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `text` is NULL or valid for reading `text_len` bytes; `buf` is NULL or valid for
/// writing `len` bytes; `out_len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_import(
    reg: *mut portmgr_registry,
    text: *const c_char,
    text_len: usize,
    req: *const portmgr_request,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        let template = request_of(req)?;
        need(out_len, "out_len")?;
        if buf.is_null() && len > 0 {
            return Err(Error::invalid("`buf` is NULL but `len` is not 0"));
        }
        if template.spec != ServiceSpec::default() {
            return Err(Error::invalid(
                "portmgr_import takes types and metadata from the text: the request must not set them",
            ));
        }
        let bytes: &[u8] = if text_len == 0 {
            &[]
        } else if text.is_null() {
            return Err(Error::invalid("`text` is NULL"));
        } else {
            // SAFETY: non-NULL and valid for reading `text_len` bytes (contract).
            unsafe { std::slice::from_raw_parts(text.cast::<u8>(), text_len) }
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::invalid(format!("`text` is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()))
        })?;
        let opts = ImportOptions { range: template.req.range.clone(), request: Some(template.req) };
        let outcome = svc.import_text(text, None, &opts)?;
        for lease in outcome.leases {
            lease.keep()?;
        }
        let report = serde_json::json!({ "services": outcome.services });
        // SAFETY: forwarded contract; `out_len` checked non-NULL.
        unsafe { json_out(&report, buf, len, out_len) }
    })
}

/// Allocate group `group` (a service name without `.`): every member of `layout` at one
/// base port, all or none. `layout` is a layout name (`"stack"`: postgres +0, redis +100,
/// clickhouse_http +200, clickhouse_tcp +300, backend +400, auth +401, frontend +500; or
/// one from the types config file) or a spec `"NAME=OFFSET[/TYPE],..."` such as
/// `"pg=0,redis=+100,api=400/rest-api"`, by the rules every skin shares: a layout name
/// is looked up first, else a text containing `=` or `:` is a spec, else it is an
/// unknown layout (the last error lists the known ones). Members are services named
/// `GROUP.MEMBER` (`portmgr_lookup_name(reg, "ci-17.redis", &port)`), recorded with the
/// group, member and type. Two processes placing groups at once always get disjoint ports.
///
/// `req` (NULL: the defaults) is the template: its range is where the members' ports
/// may lie (default: the pool), its strategy the order bases are tried in (random by
/// default), its TTL and watched process the members' lifetime, its metadata
/// (`portmgr_request_set_metadata`) given to every member. The members are kept, as by
/// `portmgr_lease_keep`: held until this process exits (or the TTL or watched process
/// ends); `portmgr_group_release` releases them all.
///
/// On `PORTMGR_OK`, `ports[0..n]` are the members' ports in layout order and
/// `*out_count` (if not NULL) is n. `ports` must have room for every member (checked
/// before anything is allocated).
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handles; NULL or invalid `group` or
/// `layout`; an unknown layout; `ports` NULL or too short; a request with a service type;
/// a range too small for the layout), `PORTMGR_EXHAUSTED` (no base has every member port
/// free: nothing is held), `PORTMGR_IN_USE` (a member's name is live already),
/// `PORTMGR_TIMEOUT`. Thread-safe.
///
/// # Safety
/// `group` and `layout` are NULL or NUL-terminated strings; `ports` is NULL or valid for
/// writing `ports_len` `uint16_t`s; `out_count` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_group_allocate(
    reg: *mut portmgr_registry,
    group: *const c_char,
    layout: *const c_char,
    req: *const portmgr_request,
    ports: *mut u16,
    ports_len: usize,
    out_count: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        // SAFETY: `group` and `layout` are NULL or NUL-terminated (contract).
        let (group, layout) = unsafe { (c_str(group, "group")?, c_str(layout, "layout")?) };
        let template = request_of(req)?;
        need(ports, "ports")?;
        if template.spec.service_type.is_some() {
            return Err(Error::invalid(
                "a group's member types come from its layout: the request must not set a service type",
            ));
        }
        let layout = svc.types().resolve_layout(&LayoutSource::Text(layout.to_owned()))?;
        if ports_len < layout.members.len() {
            return Err(Error::invalid(format!(
                "`ports` has room for {ports_len} ports; the layout has {} members",
                layout.members.len()
            )));
        }
        let opts = GroupOptions {
            range: template.req.range.clone(),
            strategy: template.req.strategy.clone(),
            request: template.req,
            ..GroupOptions::default()
        };
        let info = svc.allocate_group(group, &layout, &template.spec.metadata, &opts)?.keep()?;
        for (i, m) in info.members.iter().enumerate() {
            // SAFETY: `ports` is non-NULL (checked) and has room for `ports_len` >=
            // members u16s (checked above; contract).
            unsafe { ports.add(i).write(m.port) };
        }
        // SAFETY: NULL or writable (contract).
        unsafe { put(out_count, info.members.len()) };
        Ok(())
    })
}

/// Release every live member of group `group` (UTF-8), whoever allocated it (as
/// `portmgr_release_port`). On `PORTMGR_OK`, `*out_freed` (if not NULL) is the number of
/// ports freed.
///
/// Errors: `PORTMGR_INVALID_ARGUMENT` (invalid handle, NULL or non-UTF-8 `group`),
/// `PORTMGR_NOT_FOUND` (no live member), `PORTMGR_NOT_OWNER`, `PORTMGR_TIMEOUT`.
/// Thread-safe.
///
/// # Safety
/// `group` is NULL or a NUL-terminated string; `out_freed` is NULL or valid for writing a
/// `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn portmgr_group_release(
    reg: *mut portmgr_registry,
    group: *const c_char,
    out_freed: *mut usize,
) -> portmgr_status {
    guard(|| {
        let svc = services(reg)?;
        // SAFETY: `group` is NULL or NUL-terminated (contract).
        let group = unsafe { c_str(group, "group") }?;
        let freed = svc.release_group(group)?;
        // SAFETY: NULL or writable (contract).
        unsafe { put(out_freed, freed.len()) };
        Ok(())
    })
}
