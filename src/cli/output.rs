//! Rendering for people and programs: escaping of control characters, one-line
//! messages, stdout writes, JSON, `.env` lines, durations, lease descriptions.

use std::borrow::Cow;
use std::io::{self, Write};

use super::args::Format;
use super::{EXIT_OTHER, EXIT_USAGE, R, fail};
use crate::mapping::env_stem;
use crate::registry::LeaseInfo;

/// A message on one line: its lines joined with `; `, other control characters escaped
/// (see [`shown`]).
pub(super) fn one_line(s: &str) -> String {
    let joined = s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    shown(&joined).into_owned()
}

/// Whether [`shown`] escapes `c`: control characters, and the invisible characters that
/// reorder or hide the text around them (bidirectional overrides and isolates, marks, the
/// byte order mark).
pub(super) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` for human output: control characters written as Rust escapes (`\n`, `\r`, `\t`,
/// `\u{1b}`, ...), everything else as it is. Every string field that plain output prints
/// (names, types, groups, members, states, paths, messages) goes through here, so a
/// damaged registry record or side file cannot move the cursor, recolour the terminal or
/// forge lines.
pub(super) fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Write `text` to stdout at once and flush it.
pub(super) fn emit(text: &str) -> R<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| fail(EXIT_OTHER, format!("cannot write to standard output: {e}")))
}

pub(super) fn emit_json(v: &serde_json::Value) -> R<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| fail(EXIT_OTHER, format!("encoding JSON: {e}")))?;
    emit(&format!("{s}\n"))
}

pub(super) fn no_env(fmt: Format, cmd: &str) -> R<()> {
    if fmt == Format::Env {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "--format env is for alloc, list, import, export and group alloc, not {cmd}; use --format plain or --format json"
            ),
        ));
    }
    Ok(())
}

/// `NAME_PORT=p` (and `NAME_PORTS="a b c"` for several ports); `PORT` without a name.
pub(super) fn env_lines(name: Option<&str>, ports: &[u16]) -> String {
    let prefix = name.map(|n| format!("{}_", env_stem(n))).unwrap_or_default();
    let mut s = format!("{prefix}PORT={}\n", ports[0]);
    if ports.len() > 1 {
        let all: Vec<String> = ports.iter().map(u16::to_string).collect();
        s.push_str(&format!("{prefix}PORTS=\"{}\"\n", all.join(" ")));
    }
    s
}

pub(super) fn now_ms() -> u64 {
    crate::sys::wall_ms()
}

pub(super) fn human_secs(ms: u64) -> String {
    if ms < 1000 && ms > 0 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) fn lease_json(i: &LeaseInfo) -> serde_json::Value {
    serde_json::to_value(i).unwrap_or(serde_json::Value::Null)
}

pub(super) fn describe(i: &LeaseInfo) -> String {
    let mut s = format!("pid {}", i.owner_pid);
    if let Some(n) = &i.name {
        s = format!("\"{}\", {s}", shown(n));
    }
    if let Some(w) = i.watch_pid {
        s.push_str(&format!(", watching pid {w}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_use_the_core_name_rule() {
        assert_eq!(env_lines(Some("db"), &[5, 6]), "DB_PORT=5\nDB_PORTS=\"5 6\"\n");
        assert_eq!(env_lines(None, &[7]), "PORT=7\n");
    }
}
