//! Registry-wide reserved ports: ports and ranges that no strategy hands out, to any
//! process or language, stored in the registry file's reservation table (see `layout`).
//!
//! A reservation never takes a port from a live lease: a reserved port that is leased
//! stays leased, and is blocked once it is released. Allocation checks the table under
//! the lock, when it marks its candidates: a port is never marked for a lease while a
//! reservation covers it.

use super::*;
use layout::{REASON_MAX, RESERVED_OFF, RESERVED_SIZE, RESERVED_SLOTS, Reserved};

/// One reservation, as [`Registry::reserved`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReservedRange {
    /// The first reserved port.
    pub start: u16,
    /// The last reserved port (`start` for a single port).
    pub end: u16,
    /// Why, when a reason was given.
    pub reason: Option<String>,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl ReservedRange {
    /// `"9100"` or `"9200-9299"`.
    pub fn span(&self) -> String {
        if self.start == self.end { self.start.to_string() } else { format!("{}-{}", self.start, self.end) }
    }
    /// Whether it covers `port`.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
    /// Ports it covers.
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }
    /// Never true: a reservation covers at least one port (for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// How an error names it: `reservation 9100-9199 ("monitoring")`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!(
                "the registry's reservation {} ({r:?}; `portmgr reserved remove {}` frees it)",
                self.span(),
                self.span()
            ),
            None => format!(
                "the registry's reservation {} (`portmgr reserved remove {}` frees it)",
                self.span(),
                self.span()
            ),
        }
    }
}

/// Check a reservation reason: at most 232 bytes of UTF-8, no control characters and no
/// Unicode line or paragraph separator (it is shown in listings, JSON and error
/// messages, one line each).
pub fn validate_reason(reason: &str) -> Result<()> {
    if reason.len() > REASON_MAX {
        return Err(Error::invalid(format!(
            "a reservation reason is at most {REASON_MAX} bytes, this one is {}: shorten it",
            reason.len()
        )));
    }
    // Control characters and the Unicode line and paragraph separators: a reason is one
    // line wherever it is shown.
    if let Some(c) = reason.chars().find(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err(Error::invalid(format!(
            "a reservation reason may not contain control characters such as {c:?}: give one line of text"
        )));
    }
    Ok(())
}

impl Map {
    pub(super) fn reserved_entry(&self, i: usize) -> &Reserved {
        self.at(RESERVED_OFF + i % RESERVED_SLOTS * RESERVED_SIZE)
    }
    /// Entries in use (bounded by the table, whatever the header says).
    fn reserved_count(&self) -> usize {
        (self.header().reserved_count.load(Acquire) as usize).min(RESERVED_SLOTS)
    }
}

impl Ctx<'_> {
    /// The intact reservations (a damaged entry is dropped, with a notice: its span cannot
    /// be trusted, so it can neither block nor free anything).
    pub(super) fn reservations(&mut self) -> Vec<ReservedRange> {
        let n = self.map.reserved_count();
        if n == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n);
        let mut damaged = 0;
        for i in 0..n {
            let e = self.map.reserved_entry(i);
            if !e.intact() {
                damaged += 1;
                continue;
            }
            let (start, end) = e.span();
            let reason = e.reason();
            out.push(ReservedRange {
                start,
                end,
                reason: (!reason.is_empty()).then_some(reason),
                created_ms: e.created_ms.load(Relaxed),
            });
        }
        if damaged > 0 {
            // Rewrite the table without them, so the notice is given once.
            self.write_reservations(&out);
            self.notices.push(format!(
                "portmgr: {damaged} damaged entries of the registry's reservation table were dropped; `portmgr reserved list` shows what is left: add the lost ones again"
            ));
        }
        out
    }

    /// The reservation covering `port`, if any (from `list`, as `reservations` gives it).
    pub(super) fn reserved_in(list: &[ReservedRange], port: u16) -> Option<&ReservedRange> {
        list.iter().find(|r| r.contains(port))
    }

    fn write_reservations(&mut self, list: &[ReservedRange]) {
        // Under the lock, like every reader. A writer killed half-way leaves an entry
        // whose check does not match: dropped with a notice by the next reader.
        let h = self.map.header();
        h.reserved_count.store(h.reserved_count.load(Acquire).min(list.len() as u32), Release);
        for (i, r) in list.iter().enumerate() {
            self.map.reserved_entry(i).set(r.start, r.end, r.reason.as_deref().unwrap_or(""), r.created_ms);
        }
        h.reserved_count.store(list.len() as u32, Release);
    }
}

impl Registry {
    /// Reserve `ranges` (inclusive `(start, end)` pairs) registry-wide, with an optional
    /// reason: no strategy of any process hands those ports out until they are unreserved.
    /// A span that is already reserved exactly gets the new reason. Ports leased right
    /// now keep their lease (returned, so a caller can say so) and are blocked once
    /// released.
    ///
    /// Errors: [`Error::InvalidArgument`] for port 0, a reversed range, a bad reason, or
    /// a full table (512 reservations).
    pub fn reserve(&self, ranges: &[(u16, u16)], reason: Option<&str>) -> Result<Vec<LeaseInfo>> {
        check_spans(ranges)?;
        let reason = reason.filter(|r| !r.is_empty());
        if let Some(r) = reason {
            validate_reason(r)?;
        }
        self.with_lock(false, |ctx| {
            let mut list = ctx.reservations();
            let now = sys::wall_ms();
            for &(start, end) in ranges {
                match list.iter_mut().find(|r| r.start == start && r.end == end) {
                    Some(r) => r.reason = reason.map(str::to_owned),
                    None => list.push(ReservedRange { start, end, reason: reason.map(str::to_owned), created_ms: now }),
                }
            }
            if list.len() > RESERVED_SLOTS {
                return Err(Error::invalid(format!(
                    "the registry holds at most {RESERVED_SLOTS} reservations: reserve ranges rather than single ports, or remove some (`portmgr reserved list`)"
                )));
            }
            ctx.write_reservations(&list);
            let mut kept = Vec::new();
            for p in ctx.map.marked() {
                if ranges.iter().any(|&(a, b)| (a..=b).contains(&p)) && ctx.live(p) {
                    kept.push(ctx.info(p));
                }
            }
            Ok(kept)
        })
    }

    /// Unreserve every reserved port in `ranges`: a reservation that only partly overlaps
    /// keeps its other ports (and its reason). Returns the parts that were freed.
    ///
    /// Errors: [`Error::NotFound`] when no reservation covers any of the ports;
    /// [`Error::InvalidArgument`] for port 0, a reversed range, or a split that would
    /// overflow the table.
    pub fn unreserve(&self, ranges: &[(u16, u16)]) -> Result<Vec<ReservedRange>> {
        check_spans(ranges)?;
        self.with_lock(false, |ctx| {
            let mut list = ctx.reservations();
            let mut freed = Vec::new();
            for &(a, b) in ranges {
                let mut next = Vec::with_capacity(list.len() + 1);
                for r in list {
                    if r.end < a || r.start > b {
                        next.push(r);
                        continue;
                    }
                    freed.push(ReservedRange { start: r.start.max(a), end: r.end.min(b), ..r.clone() });
                    if r.start < a {
                        next.push(ReservedRange { end: a - 1, ..r.clone() });
                    }
                    if r.end > b {
                        next.push(ReservedRange { start: b + 1, ..r });
                    }
                }
                list = next;
            }
            if freed.is_empty() {
                let asked: Vec<String> =
                    ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
                return Err(Error::NotFound(format!(
                    "no reservation covers {} (`portmgr reserved list` shows the reservations)",
                    asked.join(", ")
                )));
            }
            if list.len() > RESERVED_SLOTS {
                return Err(Error::invalid(format!(
                    "unreserving that splits reservations past the table's {RESERVED_SLOTS} entries: remove whole reservations"
                )));
            }
            ctx.write_reservations(&list);
            Ok(freed)
        })
    }

    /// Every reservation, in the order they were made.
    pub fn reserved(&self) -> Result<Vec<ReservedRange>> {
        self.with_lock(false, |ctx| Ok(ctx.reservations()))
    }
}

/// The distinct ports of `list`, ascending (reservations may overlap).
pub fn reserved_ports(list: &[ReservedRange]) -> Vec<u16> {
    let mut out: Vec<u16> = list.iter().flat_map(|r| r.start..=r.end).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn check_spans(ranges: &[(u16, u16)]) -> Result<()> {
    if ranges.is_empty() {
        return Err(Error::invalid("give at least one port or range, e.g. 9100 or 9200-9299"));
    }
    for &(a, b) in ranges {
        // The same rules as any range (port 0 and reversed ranges refused).
        PortRange::new(a, b)?;
    }
    Ok(())
}
