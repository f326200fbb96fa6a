//! Service types (each with a default range) and group layouts, built in or read from a
//! JSON config file.
//!
//! # Config file schema
//!
//! ```json
//! {
//!   "types": {
//!     "rest-api": { "range": "9000-9099", "description": "our REST services" },
//!     "ml-model": { "range": [7000, 7099] },
//!     "scratch":  { "range": "pool" }
//!   },
//!   "groups": {
//!     "stack": [
//!       { "name": "postgres", "offset": 0,   "type": "database" },
//!       { "name": "redis",    "offset": 100, "type": "cache" }
//!     ]
//!   }
//! }
//! ```
//!
//! Both keys are optional. A type named like a built-in one replaces its range; a new
//! name adds a type. `"range"` is `"START-END"`, `[START, END]`, or `"pool"` (the
//! registry's default pool). Type names: 1 to 32 of `a-z 0-9 - _`. A group is a list of
//! members (name, offset from the group's base, optional type). Unknown fields are
//! errors; every error names the file, the line and column, and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::range::PortRange;
use crate::registry::Registry;

use super::group::{GroupLayout, GroupMember};

/// The environment variable naming a types config file (read by [`TypeTable::load_default`]).
pub const TYPES_ENV: &str = "PORTMGR_TYPES";

/// One built-in type: name, range (`None` = the default pool), description.
pub type BuiltinType = (&'static str, Option<(u16, u16)>, &'static str);

/// The built-in types.
pub const BUILTIN_TYPES: &[BuiltinType] = &[
    ("rest-api", Some((8080, 8099)), "HTTP/REST APIs"),
    ("grpc", Some((50050, 50099)), "gRPC services"),
    ("websocket", Some((8100, 8199)), "WebSocket servers"),
    ("database", Some((5400, 5499)), "databases"),
    ("cache", Some((6300, 6399)), "caches (redis, memcached...)"),
    ("analytics", Some((8200, 8299)), "analytics and metrics"),
    ("security", Some((8300, 8399)), "auth and security services"),
    ("frontend", Some((3000, 3099)), "frontend dev servers"),
    ("custom", None, "anything else: the default pool"),
];

/// A service type: a name and the range its services are drawn from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceType {
    /// The type's name (`"rest-api"`).
    pub name: String,
    /// Its range; `None` means the registry's default pool. Serialized as `"A-B"` or `"pool"`.
    #[serde(serialize_with = "ser_range")]
    pub range: Option<PortRange>,
    /// What it is for.
    pub description: String,
    /// `"builtin"` or the config file it came from.
    pub source: String,
}

fn ser_range<S: Serializer>(r: &Option<PortRange>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(&format!("{}-{}", r.start(), r.end())),
        None => s.serialize_str("pool"),
    }
}

/// The table of service types and named group layouts in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeTable {
    types: BTreeMap<String, ServiceType>,
    groups: BTreeMap<String, GroupLayout>,
}

impl Default for TypeTable {
    fn default() -> Self {
        TypeTable::builtin()
    }
}

/// Check a type name: 1 to 32 of `a-z 0-9 - _`.
pub fn validate_type_name(n: &str) -> Result<()> {
    if n.is_empty()
        || n.len() > 32
        || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(format!(
            "service type name {n:?} must be 1 to 32 characters of a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

impl TypeTable {
    /// The built-in types (see [`BUILTIN_TYPES`]) and the built-in `stack` group layout.
    pub fn builtin() -> TypeTable {
        let types = BUILTIN_TYPES
            .iter()
            .map(|&(name, range, desc)| {
                let range = range.map(|(a, b)| PortRange::new(a, b).expect("built-in ranges are valid"));
                (
                    name.to_string(),
                    ServiceType { name: name.into(), range, description: desc.into(), source: "builtin".into() },
                )
            })
            .collect();
        let mut groups = BTreeMap::new();
        groups.insert("stack".to_string(), GroupLayout::stack());
        TypeTable { types, groups }
    }

    /// The built-in table with the config in `text` laid over it. `origin` names the text
    /// in errors and in [`ServiceType::source`] (usually the file's path).
    pub fn from_json_str(text: &str, origin: &str) -> Result<TypeTable> {
        let text = super::textfile::strip_bom(text);
        let cfg: ConfigFile = serde_json::from_str(text).map_err(|e| config_error(origin, &e))?;
        let mut t = TypeTable::builtin();
        for (name, def) in cfg.types {
            validate_type_name(&name)
                .map_err(|e| Error::invalid(format!("service types config {origin}: in \"types\": {}", bare(e))))?;
            let description = def
                .description
                .unwrap_or_else(|| t.types.get(&name).map(|x| x.description.clone()).unwrap_or_default());
            t.types.insert(name.clone(), ServiceType { name, range: def.range.0, description, source: origin.into() });
        }
        for (name, members) in cfg.groups {
            let layout = GroupLayout { members };
            layout.validate().map_err(|e| {
                Error::invalid(format!("service types config {origin}: in group {name:?}: {}", bare(e)))
            })?;
            for m in &layout.members {
                if let Some(ty) = &m.service_type
                    && !t.types.contains_key(ty)
                {
                    return Err(Error::invalid(format!(
                        "service types config {origin}: in group {name:?}, member {:?}: unknown type {ty:?} (known: {})",
                        m.name,
                        t.names().join(", ")
                    )));
                }
            }
            t.groups.insert(name, layout);
        }
        Ok(t)
    }

    /// The built-in table with the config file at `path` laid over it. The file must be a
    /// regular file of at most [`TEXT_FILE_MAX`](super::TEXT_FILE_MAX) bytes of UTF-8 (see
    /// [`read_text_file`](super::read_text_file)).
    pub fn load(path: impl AsRef<Path>) -> Result<TypeTable> {
        let path = path.as_ref();
        let text = super::textfile::read_text_file(path, "service types config")?;
        TypeTable::from_json_str(&text, &path.display().to_string())
    }

    /// The config file in force: `$PORTMGR_TYPES` if set (it must exist), else
    /// `$XDG_CONFIG_HOME/portmgr/types.json` (or `~/.config/portmgr/types.json`) if it
    /// exists, else `None` (built-in table only).
    pub fn default_config_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(TYPES_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config")))?;
        let p = base.join("portmgr").join("types.json");
        p.exists().then_some(p)
    }

    /// The table in force: [`TypeTable::default_config_path`] laid over the built-ins.
    pub fn load_default() -> Result<TypeTable> {
        match TypeTable::default_config_path() {
            Some(p) => TypeTable::load(p),
            None => Ok(TypeTable::builtin()),
        }
    }

    /// The type called `name`.
    pub fn get(&self, name: &str) -> Option<&ServiceType> {
        self.types.get(name)
    }

    /// The type called `name`, or an error listing the known ones.
    pub fn require(&self, name: &str) -> Result<&ServiceType> {
        self.types.get(name).ok_or_else(|| {
            Error::invalid(format!("unknown service type {name:?}; known types: {}", self.names().join(", ")))
        })
    }

    /// Type names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }

    /// Every type, sorted by name.
    pub fn types(&self) -> Vec<ServiceType> {
        self.types.values().cloned().collect()
    }

    /// The range services of type `name` are drawn from (the registry's default pool for
    /// a type without one, such as `custom`).
    pub fn range_for(&self, name: &str, reg: &Registry) -> Result<PortRange> {
        match &self.require(name)?.range {
            Some(r) => Ok(r.clone()),
            None => reg.default_pool(),
        }
    }

    /// The group layout called `name` (built in: `stack`).
    pub fn group(&self, name: &str) -> Option<&GroupLayout> {
        self.groups.get(name)
    }

    /// Group layout names, sorted.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}

/// An error's message without its kind prefix (for nesting inside another message).
pub(crate) fn bare(e: Error) -> String {
    match e {
        Error::InvalidArgument(m) => m,
        other => other.to_string(),
    }
}

/// "file: line L, column C: message" from a serde_json error.
fn config_error(origin: &str, e: &serde_json::Error) -> Error {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; we give the position up front instead.
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    Error::invalid(format!("service types config {origin}: line {}, column {}: {msg}", e.line(), e.column()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    types: BTreeMap<String, TypeDef>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<GroupMember>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeDef {
    range: RangeField,
    #[serde(default, deserialize_with = "de_description")]
    description: Option<String>,
}

/// A type's `range`: `"A-B"`, `[A, B]` or `"pool"`.
struct RangeField(Option<PortRange>);

impl<'de> Deserialize<'de> for RangeField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RangeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field `range` to be \"START-END\", [START, END] or \"pool\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<RangeField, E> {
                if s.trim() == "pool" {
                    return Ok(RangeField(None));
                }
                s.parse::<PortRange>()
                    .map(|r| RangeField(Some(r)))
                    .map_err(|e| E::custom(format!("field `range`: {}", bare(e))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<RangeField, A::Error> {
                let a: u16 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("field `range`: [START, END] needs two ports"))?;
                let b: u16 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("field `range`: [START, END] needs two ports"))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("field `range`: [START, END] has exactly two ports"));
                }
                PortRange::new(a, b)
                    .map(|r| RangeField(Some(r)))
                    .map_err(|e| de::Error::custom(format!("field `range`: {}", bare(e))))
            }
        }
        d.deserialize_any(V)
    }
}

pub(crate) fn de_description<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field `description` to be a string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Option<String>, E> {
            Ok(Some(s.to_string()))
        }
    }
    d.deserialize_str(V)
}
