//! `portmgr reserved add|remove|list`: the registry's reserved ports.

use super::args::{Cli, Format, ReservedCmd, Spans, flat};
use super::output::{describe, emit, emit_json, no_env, shown};
use super::{EXIT_OK, R, open_registry};
use crate::registry::ReservedRange;

pub(super) fn reserved(cli: &Cli, fmt: Format, cmd: &ReservedCmd) -> R<i32> {
    no_env(fmt, "reserved")?;
    let reg = open_registry(cli)?;
    match cmd {
        ReservedCmd::Add { spans, reason } => {
            let kept = reg.reserve(&flat(spans), reason.as_deref())?;
            // Still held: a person should know those ports are not blocked yet.
            for i in &kept {
                eprintln!("portmgr: port {} stays leased ({}) and is blocked once released", i.port, describe(i));
            }
            let list = reg.reserved()?;
            let added: Vec<&ReservedRange> = list.iter().filter(|r| asked(spans, r)).collect();
            render(fmt, &added)
        }
        ReservedCmd::Remove { spans } => {
            let freed = reg.unreserve(&flat(spans))?;
            render(fmt, &freed.iter().collect::<Vec<_>>())
        }
        ReservedCmd::List => render(fmt, &reg.reserved()?.iter().collect::<Vec<_>>()),
    }
}

/// Whether `r` is one of the spans asked for.
fn asked(spans: &[Spans], r: &ReservedRange) -> bool {
    flat(spans).contains(&(r.start, r.end))
}

/// One line per reservation (`9200-9299  monitoring`), or a JSON array.
fn render(fmt: Format, list: &[&ReservedRange]) -> R<i32> {
    if fmt == Format::Json {
        emit_json(&serde_json::to_value(list).unwrap_or_default())?;
    } else {
        let text: String = list
            .iter()
            .map(|r| match &r.reason {
                Some(why) => format!("{:<12} {}\n", r.span(), shown(why)),
                None => format!("{}\n", r.span()),
            })
            .collect();
        emit(&text)?;
    }
    Ok(EXIT_OK)
}
