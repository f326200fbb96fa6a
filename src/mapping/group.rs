//! Groups: a named layout of members at offsets from one base port, allocated all or
//! none at a base where every member port is free.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::range::PortRange;
use crate::registry::{Lease, NAME_MAX, Request};
use crate::strategy::{self, Strategy};

use super::{Metadata, ServiceSpec, Services, TypeTable};

/// One member of a group layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMember {
    /// The member's name (`"postgres"`); its service is named `GROUP.MEMBER`.
    #[serde(deserialize_with = "de_member_name")]
    pub name: String,
    /// Its port is `base + offset`.
    #[serde(deserialize_with = "de_offset")]
    pub offset: u16,
    /// Its service type (recorded; the port comes from the layout, not the type's range).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none", deserialize_with = "de_type")]
    pub service_type: Option<String>,
}

/// A group layout: members with offsets from a base.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLayout {
    /// The members, in the order given.
    pub members: Vec<GroupMember>,
}

/// What separates the group name from the member name in the members' service names.
pub const GROUP_SEPARATOR: char = '.';

impl GroupLayout {
    /// An empty layout (add members with [`GroupLayout::member`]).
    pub fn new() -> GroupLayout {
        GroupLayout::default()
    }

    /// Add a member at `offset` from the base.
    pub fn member(mut self, name: impl Into<String>, offset: u16, service_type: Option<&str>) -> GroupLayout {
        self.members.push(GroupMember { name: name.into(), offset, service_type: service_type.map(str::to_string) });
        self
    }

    /// The built-in `stack` layout: postgres +0, redis +100, clickhouse_http +200,
    /// clickhouse_tcp +300, backend +400, auth +401, frontend +500.
    pub fn stack() -> GroupLayout {
        GroupLayout::new()
            .member("postgres", 0, Some("database"))
            .member("redis", 100, Some("cache"))
            .member("clickhouse_http", 200, Some("analytics"))
            .member("clickhouse_tcp", 300, Some("analytics"))
            .member("backend", 400, Some("rest-api"))
            .member("auth", 401, Some("security"))
            .member("frontend", 500, Some("frontend"))
    }

    /// Parse `"postgres=0,redis=+100,backend:400"` (also `NAME=OFFSET/TYPE`): members
    /// separated by commas or whitespace, each `NAME=OFFSET` or `NAME:OFFSET`.
    pub fn parse(spec: &str) -> Result<GroupLayout> {
        let mut layout = GroupLayout::new();
        for item in spec.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
            let (name, rest) = item
                .split_once('=')
                .or_else(|| item.split_once(':'))
                .ok_or_else(|| Error::invalid(format!("group member {item:?} must be NAME=OFFSET (e.g. redis=100)")))?;
            let (off, ty) = match rest.split_once('/') {
                Some((o, t)) => (o, Some(t)),
                None => (rest, None),
            };
            let offset: u16 = off.trim_start_matches('+').parse().map_err(|_| {
                Error::invalid(format!("group member {item:?}: offset {off:?} must be a number from 0 to 65534"))
            })?;
            layout = layout.member(name, offset, ty);
        }
        layout.validate()?;
        Ok(layout)
    }

    /// Check the layout: at least one member, member names valid and distinct, offsets
    /// distinct.
    pub fn validate(&self) -> Result<()> {
        if self.members.is_empty() {
            return Err(Error::invalid("a group layout needs at least one member"));
        }
        for (i, m) in self.members.iter().enumerate() {
            check_member_name(&m.name)?;
            if let Some(t) = &m.service_type {
                super::types::validate_type_name(t)?;
            }
            for o in &self.members[..i] {
                if o.name == m.name {
                    return Err(Error::invalid(format!("group member {:?} appears twice", m.name)));
                }
                if o.offset == m.offset {
                    return Err(Error::invalid(format!(
                        "group members {:?} and {:?} have the same offset +{}",
                        o.name, m.name, m.offset
                    )));
                }
            }
        }
        Ok(())
    }

    /// The largest offset.
    pub fn span(&self) -> u16 {
        self.members.iter().map(|m| m.offset).max().unwrap_or(0)
    }
}

/// How a skin names a group's layout; [`TypeTable::resolve_layout`] turns it into a
/// [`GroupLayout`] by one set of rules for every skin (CLI `--layout`/`--spec`, C
/// `portmgr_group_allocate`, Python `allocate_group(layout=...)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    /// A layout name (`"stack"`, or one of the types config file) or a spec
    /// (`"pg=0,redis=+100,api=400/rest-api"`, see [`GroupLayout::parse`]).
    Text(String),
    /// Members as (name, offset from the base, service type), in order; an offset out
    /// of 0 to 65534 is an invalid argument (the skin's integer type may be wider).
    Members(Vec<(String, i64, Option<String>)>),
}

impl TypeTable {
    /// The layout `source` names. The rules, the same in every skin:
    ///
    /// 1. a text that is the name of a layout in this table is that layout (names are
    ///    looked up first, exactly as written);
    /// 2. else a text containing `=` or `:` is a spec, parsed by [`GroupLayout::parse`];
    /// 3. else it is an unknown layout name: an invalid argument listing the known
    ///    layouts;
    /// 4. members are taken in order, each offset checked to be 0 to 65534.
    ///
    /// The result is validated ([`GroupLayout::validate`]: at least one member, member
    /// names valid and distinct, offsets distinct).
    pub fn resolve_layout(&self, source: &LayoutSource) -> Result<GroupLayout> {
        let layout = match source {
            LayoutSource::Text(t) => match self.group(t) {
                Some(l) => l.clone(),
                None if t.contains(['=', ':']) => GroupLayout::parse(t)?,
                None => {
                    return Err(Error::invalid(format!(
                        "no group layout named {}; known layouts: {} (or give members as a spec, e.g. \"pg=0,redis=+100/cache\")",
                        crate::registry::shown_name(t),
                        self.group_names().join(", ")
                    )));
                }
            },
            LayoutSource::Members(members) => {
                let mut l = GroupLayout::new();
                for (name, offset, ty) in members {
                    let off = u16::try_from(*offset).ok().filter(|&o| o < u16::MAX).ok_or_else(|| {
                        Error::invalid(format!(
                            "group member {name:?}: offset {offset} must be a number from 0 to 65534"
                        ))
                    })?;
                    l = l.member(name.clone(), off, ty.as_deref());
                }
                l
            }
        };
        layout.validate()?;
        Ok(layout)
    }
}

/// Check a group name: what a service name may be (1 to [`NAME_MAX`] bytes of UTF-8, no
/// control characters), without [`GROUP_SEPARATOR`].
pub(crate) fn validate_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > NAME_MAX || group.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "group name {group:?} must be 1 to {NAME_MAX} bytes of UTF-8 without control characters"
        )));
    }
    if group.contains(GROUP_SEPARATOR) {
        return Err(Error::invalid(format!("group name {group:?} must not contain {GROUP_SEPARATOR:?}")));
    }
    Ok(())
}

/// Check a member name: 1 to 40 of `A-Z a-z 0-9 _ -`.
pub(crate) fn check_member_name(n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 40 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(Error::invalid(format!(
            "group member name {n:?} must be 1 to 40 characters of A-Z, a-z, 0-9, '_' and '-'"
        )));
    }
    Ok(())
}

/// The service name of member `member` of group `group`: `GROUP.MEMBER`.
pub fn member_service_name(group: &str, member: &str) -> String {
    format!("{group}{GROUP_SEPARATOR}{member}")
}

/// How to place a group.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Where bases may lie; `None`: the registry's default pool. Every member port
    /// (`base + offset`) must also lie in it.
    pub range: Option<PortRange>,
    /// The order bases are tried in (random by default, which spreads parallel jobs
    /// apart; `Hash(None)` hashes the group name).
    pub strategy: Strategy,
    /// How many bases to try before giving up.
    pub max_attempts: usize,
    /// A template for every member's request (TTL, watched pid, protocols); its range,
    /// name, count and preferred port are replaced.
    pub request: Request,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions { range: None, strategy: Strategy::Random, max_attempts: 2000, request: Request::new() }
    }
}

/// One allocated member.
#[derive(Debug)]
pub struct GroupMemberLease {
    /// The member's name in the layout (`"redis"`).
    pub member: String,
    /// Its service name (`"ci-17.redis"`).
    pub name: String,
    /// Its port.
    pub port: u16,
    /// Its type.
    pub service_type: Option<String>,
    /// The lease (released on drop unless kept).
    pub lease: Lease,
}

/// An allocated group. Dropping it releases every member, unless kept.
#[derive(Debug)]
pub struct GroupLease {
    /// The group's name.
    pub group: String,
    /// The base port.
    pub base: u16,
    /// The members, in layout order.
    pub members: Vec<GroupMemberLease>,
}

/// A group as the views and the CLI show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group's name.
    pub group: String,
    /// The base port.
    pub base: u16,
    /// The members.
    pub members: Vec<GroupMemberInfo>,
}

/// One member, as [`GroupInfo`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberInfo {
    /// The member's name in the layout.
    pub member: String,
    /// Its service name.
    pub name: String,
    /// Its offset.
    pub offset: u16,
    /// Its port.
    pub port: u16,
    /// Its type.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
}

impl GroupLease {
    /// The port of member `member`.
    pub fn port(&self, member: &str) -> Option<u16> {
        self.members.iter().find(|m| m.member == member).map(|m| m.port)
    }

    /// The serializable view.
    pub fn info(&self) -> GroupInfo {
        GroupInfo {
            group: self.group.clone(),
            base: self.base,
            members: self
                .members
                .iter()
                .map(|m| GroupMemberInfo {
                    member: m.member.clone(),
                    name: m.name.clone(),
                    offset: m.port - self.base,
                    port: m.port,
                    service_type: m.service_type.clone(),
                })
                .collect(),
        }
    }

    /// Keep every member's lease (see [`Lease::keep`]); returns the view.
    pub fn keep(self) -> Result<GroupInfo> {
        let info = self.info();
        for m in self.members {
            m.lease.keep()?;
        }
        Ok(info)
    }

    /// Release every member now.
    pub fn release(&mut self) -> Result<()> {
        let mut first_err = None;
        for m in &mut self.members {
            if let Err(e) = m.lease.release() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Services {
    /// Allocate group `group` with `layout`: find a base where every member port is free
    /// and take them all, or none. Members are named `GROUP.MEMBER` and recorded with the
    /// group, member and type; `metadata` is given to every member.
    ///
    /// Each candidate base (from `opts.strategy` over `opts.range`) is tried by taking
    /// each member's port as a *required* preferred port; the first member that cannot be
    /// had rolls back the members taken so far and the next base is tried. Two processes
    /// placing groups at once therefore get disjoint ports: the registry gives each port
    /// to one of them.
    pub fn allocate_group(
        &self,
        group: &str,
        layout: &GroupLayout,
        metadata: &Metadata,
        opts: &GroupOptions,
    ) -> Result<GroupLease> {
        layout.validate()?;
        validate_group_name(group)?;
        super::validate_metadata(metadata)?;
        for m in &layout.members {
            let n = member_service_name(group, &m.name);
            if n.len() > NAME_MAX {
                return Err(Error::invalid(format!(
                    "member service name {n:?} is longer than {NAME_MAX} bytes: use a shorter group name"
                )));
            }
            if let Some(t) = &m.service_type {
                self.types().require(t)?;
            }
            if let Some(existing) = self.registry().get_by_name(&n)?.first() {
                return Err(Error::NameInUse { name: n, ports: vec![existing.port] });
            }
        }
        let pool = match &opts.range {
            Some(r) => r.clone(),
            None => self.registry().default_pool()?,
        };
        let span = layout.span();
        if pool.span() <= usize::from(span) {
            return Err(Error::invalid(format!(
                "range {}-{} is too small for a group spanning {} ports",
                pool.start(),
                pool.end(),
                usize::from(span) + 1
            )));
        }
        let bases = PortRange::new(pool.start(), pool.end() - span)?;
        let mut tried = 0usize;
        for base in strategy::candidates(&opts.strategy, &bases, Some(group)) {
            if tried >= opts.max_attempts {
                break;
            }
            tried += 1;
            if !layout.members.iter().all(|m| pool.contains(base + m.offset)) {
                continue;
            }
            match self.try_base(group, layout, metadata, opts, base)? {
                Some(members) => return Ok(GroupLease { group: group.to_string(), base, members }),
                None => continue,
            }
        }
        Err(Error::Exhausted {
            what: format!(
                "no base in {}-{} has every port of group {group:?} free (tried {tried} bases; layout spans {} ports)",
                pool.start(),
                pool.end(),
                usize::from(span) + 1
            ),
        })
    }

    /// Take every member at `base`; `Ok(None)` (all rolled back) when one port is taken.
    fn try_base(
        &self,
        group: &str,
        layout: &GroupLayout,
        metadata: &Metadata,
        opts: &GroupOptions,
        base: u16,
    ) -> Result<Option<Vec<GroupMemberLease>>> {
        let mut got: Vec<GroupMemberLease> = Vec::with_capacity(layout.members.len());
        for m in &layout.members {
            let port = base + m.offset;
            let name = member_service_name(group, &m.name);
            let mut req = opts.request.clone().name(&name).count(1).contiguous(false).preferred(port, true);
            req.range = Some(PortRange::new(port, port)?);
            req.strategy = Strategy::Sequential;
            match self.allocate_raw(&req) {
                Ok(lease) => got.push(GroupMemberLease {
                    member: m.name.clone(),
                    name,
                    port: lease.port(),
                    service_type: m.service_type.clone(),
                    lease,
                }),
                Err(Error::PortInUse { .. }) | Err(Error::Exhausted { .. }) => {
                    // Dropping `got` releases what was taken at this base.
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        let specs: Vec<ServiceSpec> = layout
            .members
            .iter()
            .map(|m| ServiceSpec {
                service_type: m.service_type.clone(),
                metadata: metadata.clone(),
                group: Some(group.to_string()),
                member: Some(m.name.clone()),
                internal_ports: Vec::new(),
            })
            .collect();
        let leases: Vec<&Lease> = got.iter().map(|g| &g.lease).collect();
        self.record_many(&leases, &specs)?;
        Ok(Some(got))
    }
}

fn de_member_name<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field `name` to be a member name (A-Z, a-z, 0-9, '_', '-')")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<String, E> {
            check_member_name(s).map_err(|e| E::custom(format!("field `name`: {}", super::types::bare(e))))?;
            Ok(s.to_string())
        }
    }
    d.deserialize_str(V)
}

fn de_offset<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u16, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field `offset` to be a number from 0 to 65534")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u16, E> {
            u16::try_from(v)
                .ok()
                .filter(|&v| v < u16::MAX)
                .ok_or_else(|| E::custom(format!("field `offset`: {v} is not a number from 0 to 65534")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u16, E> {
            Err(E::custom(format!("field `offset`: {v} is not a number from 0 to 65534")))
        }
    }
    d.deserialize_u64(V)
}

fn de_type<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field `type` to be a service type name")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Option<String>, E> {
            super::types::validate_type_name(s)
                .map_err(|e| E::custom(format!("field `type`: {}", super::types::bare(e))))?;
            Ok(Some(s.to_string()))
        }
    }
    d.deserialize_str(V)
}
