//! Feature-config inspection: what a feature's `config` bytes reveal to the Autopilot server.
//!
//! litd forwards each feature's config to the Autopilot server in `RegisterSession`. With the
//! privacy mapper on it first runs the config through its obfuscator, which only rewrites the
//! strings of **top-level arrays whose items are all strings**: each is trimmed, then a channel
//! point (`<64 chars>:<int>`), a 66-character hex string (pubkey) or a 13–20 character decimal
//! int64 (channel ID) is replaced with a pseudonym, unless the session's privacy flags clear
//! that kind (`ClearPubkeys` for pubkeys, `ClearChanIDs` for channel points and IDs). Anything
//! else reaches the server as written: a scalar or nested string, an object key, an identifier
//! inside a longer string, a short channel ID in `BLOCKxTXxOUT` form, and every JSON number. A
//! number is also decoded to a 64-bit float and encoded again, so a channel ID above 2^53
//! arrives altered. With `no_privacy_mapper` litd sends the bytes untouched.
//!
//! This module owns that knowledge and nothing else. It is pure (no I/O, no async, no logging)
//! and sits beside the AddAutopilotSession policy (public face) and the relay: both call it
//! with a feature's config bytes and the session's [`Privacy`].
//!
//! - [`inspect`] parses the bytes as litd does (empty = no config; otherwise a JSON object)
//!   and walks every key and value, returning an [`Inspection`]: one [`Finding`] per
//!   identifier, with its JSON path, [`Kind`], [`Shape`] and [`Fate`] (replaced by litd, or
//!   sent in clear and why). It refuses what cannot be inspected or what litd itself would
//!   refuse after writing a Reserved session row ([`ConfigRefusal`]).
//! - [`Inspection::check`] decides: a value litd sends in clear although the session's flags
//!   keep its kind private is refused, and so is a JSON number that looks like a channel ID
//!   (leaked and mangled); otherwise it returns the [`Disclosure`] for the ledger.
//! - [`check_feature`] does both and names the feature in its refusal.
//!
//! With the mapper off every identifier is sent in clear, so every finding is reported with
//! [`Fate::ClearNoMapper`], but none is refused: the flags then protect nothing, and running a
//! session without the mapper is the operator's decision, taken (or refused) by the policy
//! before this module is asked. Numbers are not refused either: litd does not re-encode them.
//!
//! Errors and paths never contain an identifier's value: an object key that holds one is shown
//! by position (`$.peers[<key 0>]`), and long keys are shortened. This module must never log,
//! and never hold on to the config bytes.

mod identify;
mod path;
mod walk;

use std::fmt;

use serde::de::DeserializeSeed;

pub use self::path::{JsonPath, Segment};
use self::walk::{Node, Place, Seen, Walk};
use super::privacy::flags::NAMES as PRIVACY_FLAG_NAMES;

/// How deep arrays and objects may nest (the top-level object is level 1). Feature configs are
/// shallow; the bound keeps hostile input from exhausting the stack, and stays below
/// serde_json's own limit (128) so the refusal names the path.
pub const MAX_DEPTH: usize = 64;

/// litd's type name for the config map, as its JSON decoder prints it.
const GO_MAP_TYPE: &str = "map[string]interface {}";

/// The bit of a privacy flag, looked up by name in litgate's flag table at compile time.
const fn flag_bit(name: &str) -> u64 {
    let mut bit = 0;
    while bit < PRIVACY_FLAG_NAMES.len() {
        let known = PRIVACY_FLAG_NAMES[bit].as_bytes();
        let wanted = name.as_bytes();
        if known.len() == wanted.len() {
            let mut i = 0;
            while i < known.len() && known[i] == wanted[i] {
                i += 1;
            }
            if i == known.len() {
                return 1 << bit;
            }
        }
        bit += 1;
    }
    panic!("not a privacy flag name in privacy::flags::NAMES");
}

const CLEAR_PUBKEYS_NAME: &str = "ClearPubkeys";
const CLEAR_CHAN_IDS_NAME: &str = "ClearChanIDs";
const CLEAR_PUBKEYS: u64 = flag_bit(CLEAR_PUBKEYS_NAME);
const CLEAR_CHAN_IDS: u64 = flag_bit(CLEAR_CHAN_IDS_NAME);

/// How litd will register the session, as far as its feature configs are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// The privacy mapper is on; `flags` is the session's privacy-flag bitmask (a set bit turns
    /// one kind of obfuscation off).
    Mapper {
        /// The bitmask litd will store for the session.
        flags: u64,
    },
    /// `no_privacy_mapper`: litd sends every config as written.
    NoMapper,
}

/// What kind of identifier a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A node public key (66 hex characters).
    Pubkey,
    /// A channel point, `<txid>:<output index>`.
    ChannelPoint,
    /// A channel ID in decimal (string or JSON number).
    ChannelId,
    /// A short channel ID in `BLOCKxTXxOUT` form.
    ShortChannelId,
}

impl Kind {
    /// The privacy-flag bit that lets this kind go to the Autopilot server in clear.
    pub fn clear_flag(self) -> u64 {
        match self {
            Kind::Pubkey => CLEAR_PUBKEYS,
            Kind::ChannelPoint | Kind::ChannelId | Kind::ShortChannelId => CLEAR_CHAN_IDS,
        }
    }

    /// That flag's name, as litcli and litgate's config spell it.
    pub fn clear_flag_name(self) -> &'static str {
        match self {
            Kind::Pubkey => CLEAR_PUBKEYS_NAME,
            Kind::ChannelPoint | Kind::ChannelId | Kind::ShortChannelId => CLEAR_CHAN_IDS_NAME,
        }
    }

    /// A stable label for metrics and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pubkey => "pubkey",
            Kind::ChannelPoint => "channel_point",
            Kind::ChannelId => "channel_id",
            Kind::ShortChannelId => "short_channel_id",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pubkey => "node pubkey",
            Kind::ChannelPoint => "channel point",
            Kind::ChannelId => "channel ID",
            Kind::ShortChannelId => "short channel ID",
        })
    }
}

/// Where and how an identifier is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A whole string value that litd's obfuscator recognises (after trimming). litd replaces
    /// it only inside a top-level array of strings.
    Whole,
    /// Found by litgate's own rules in a string value litd's rules do not match: part of a
    /// longer string (`02…@host:9735`), or a form litd has no rule for (`BLOCKxTXxOUT`). Never
    /// replaced.
    Inside,
    /// In an object key. litd never rewrites keys.
    Key,
    /// A JSON number. litd never replaces numbers, and with the mapper on re-encodes them as
    /// 64-bit floats.
    Number,
}

/// What happens to an identifier on its way to the Autopilot server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// litd replaces it with a pseudonym.
    Replaced,
    /// Sent in clear because the session's flags clear this kind.
    ClearByFlag,
    /// Sent in clear because the session has no privacy mapper.
    ClearNoMapper,
    /// Sent in clear although the session's flags keep this kind private: the gap litgate
    /// closes.
    Leaked,
}

impl Fate {
    /// Whether the server sees the real value.
    pub fn in_clear(self) -> bool {
        self != Fate::Replaced
    }
}

/// One identifier found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where it is.
    pub path: JsonPath,
    /// What it is.
    pub kind: Kind,
    /// How it is written.
    pub shape: Shape,
    /// What litd does with it.
    pub fate: Fate,
}

/// The JSON type of a config that is not an object, named as litd's decoder names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `[...]`
    Array,
    /// `"..."`
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonType::Array => "array",
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Bool => "bool",
        })
    }
}

/// Why a feature config is refused. Always the caller's fault: the config is theirs. Messages
/// name the JSON path and the kind, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRefusal {
    /// Not JSON (syntax, invalid UTF-8, a lone surrogate escape, a number beyond float range,
    /// trailing data). litd refuses most of these too; invalid UTF-8 and lone surrogates it
    /// would replace with U+FFFD, changing what the server is sent.
    #[error("config is not valid JSON: {reason}")]
    Malformed {
        /// The parser's message: a position, never content.
        reason: String,
    },
    /// A config that is not a JSON object: litd's own text (its decoder's).
    #[error("json: cannot unmarshal {found} into Go value of type {GO_MAP_TYPE}")]
    NotAnObject {
        /// What it was instead.
        found: JsonType,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error("config nests arrays and objects deeper than {MAX_DEPTH} levels at {path}")]
    TooDeep {
        /// The container that goes one level too deep.
        path: JsonPath,
    },
    /// An object repeats a key: litd keeps the last value, another parser may keep the first,
    /// so what the server acts on cannot be vouched for.
    #[error("config repeats the key at {path}; each key may appear once per object")]
    DuplicateKey {
        /// The repeated key.
        path: JsonPath,
    },
    /// A top-level array mixing strings with other values, which litd's obfuscator refuses
    /// ("invalid config, expected list of only strings") after writing a Reserved session.
    #[error(
        "{path}: a top-level list must hold only strings or no strings (litd refuses the \
         config: invalid config, expected list of only strings)"
    )]
    MixedList {
        /// The list.
        path: JsonPath,
    },
    /// An identifier litd would send in clear although the session's flags keep its kind
    /// private.
    #[error("{path}: {}", revealed_text(*.kind, *.shape, *.others))]
    Revealed {
        /// Where the first such identifier is.
        path: JsonPath,
        /// What it is.
        kind: Kind,
        /// How it is written.
        shape: Shape,
        /// How many more refusable values follow it in the config.
        others: usize,
    },
    /// A JSON number that looks like a channel ID, which litd never replaces and re-encodes
    /// as a 64-bit float.
    #[error(
        "{path}: a channel ID written as a JSON number: litd never replaces numbers and \
         re-encodes them as 64-bit floats, so the Autopilot server sees the channel and an ID \
         above 2^53 arrives altered; send it as a string in a top-level list of strings{}",
        and_more(*.others)
    )]
    NumericChannelId {
        /// Where the first such number is.
        path: JsonPath,
        /// How many more refusable values follow it in the config.
        others: usize,
    },
}

impl ConfigRefusal {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigRefusal::Malformed { .. } => "config_malformed",
            ConfigRefusal::NotAnObject { .. } => "config_not_an_object",
            ConfigRefusal::TooDeep { .. } => "config_too_deep",
            ConfigRefusal::DuplicateKey { .. } => "config_duplicate_key",
            ConfigRefusal::MixedList { .. } => "config_mixed_list",
            ConfigRefusal::Revealed { .. } => "config_reveals_identifier",
            ConfigRefusal::NumericChannelId { .. } => "config_numeric_channel_id",
        }
    }

    /// The gRPC code: a policy refusal when the session's flags are what forbids the value
    /// (asking for the flag could change the answer), else a malformed request (no flag
    /// makes the config acceptable).
    pub fn code(&self) -> tonic::Code {
        match self {
            ConfigRefusal::Revealed { .. } => tonic::Code::FailedPrecondition,
            _ => tonic::Code::InvalidArgument,
        }
    }
}

fn revealed_text(kind: Kind, shape: Shape, others: usize) -> String {
    let (written, fix) = match (shape, kind) {
        (Shape::Key, _) => (
            "as an object key",
            "litd never rewrites keys: move it into a top-level list of strings",
        ),
        (Shape::Inside, Kind::ShortChannelId) => (
            "in BLOCKxTXxOUT form",
            "litd has no rule for that form: give the channel as its decimal channel ID, a \
             string in a top-level list of strings",
        ),
        (Shape::Inside, _) => (
            "inside a longer string",
            "litd only replaces a string that is exactly the identifier: put it on its own in \
             a top-level list of strings",
        ),
        _ => (
            "outside a top-level list of strings",
            "litd only replaces strings in a top-level list of strings: move it into one",
        ),
    };
    format!(
        "a {kind} {written}, which litd sends to the Autopilot server in clear; {fix}, or ask \
         for privacy flag {flag} if the feature needs the real value and the operator's policy \
         allows it{more}",
        flag = kind.clear_flag_name(),
        more = and_more(others),
    )
}

fn and_more(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (1 more such value follows)".to_owned(),
        n => format!(" ({n} more such values follow)"),
    }
}

/// A refusal naming the feature whose config it is, as the field of AddAutopilotSession the
/// caller has to change (both faces use these words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("features.{feature}.config: {reason}")]
pub struct FeatureConfigRefusal {
    /// The feature.
    pub feature: String,
    /// Why its config is refused.
    pub reason: ConfigRefusal,
}

/// What a config reveals, for a config that passes [`Inspection::check`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disclosure {
    /// Every identifier the Autopilot server sees in clear, in document order, with why.
    pub in_clear: Vec<Finding>,
    /// Where litd puts a pseudonym instead of the real value.
    pub replaced: Vec<JsonPath>,
    /// The kinds the server sees in clear, sorted, each once.
    pub kinds_in_clear: Vec<Kind>,
}

/// A parsed config: every identifier in it and what litd does with each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    privacy: Privacy,
    findings: Vec<Finding>,
}

impl Inspection {
    /// Every identifier, in document order (a key's own findings before its value's).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The privacy the config was inspected for.
    pub fn privacy(&self) -> Privacy {
        self.privacy
    }

    /// Refuses a config that sends an identifier in clear which the session's flags keep
    /// private, or (mapper on) a channel ID written as a JSON number; the first in document
    /// order is named. Otherwise returns what the config discloses.
    pub fn check(&self) -> Result<Disclosure, ConfigRefusal> {
        let mapper = matches!(self.privacy, Privacy::Mapper { .. });
        let refusable =
            |f: &&Finding| mapper && (f.shape == Shape::Number || f.fate == Fate::Leaked);
        let mut refused = self.findings.iter().filter(refusable);
        if let Some(first) = refused.next() {
            let others = refused.count();
            let path = first.path.clone();
            return Err(match first.shape {
                Shape::Number => ConfigRefusal::NumericChannelId { path, others },
                shape => ConfigRefusal::Revealed {
                    path,
                    kind: first.kind,
                    shape,
                    others,
                },
            });
        }
        let (in_clear, replaced): (Vec<&Finding>, Vec<&Finding>) =
            self.findings.iter().partition(|f| f.fate.in_clear());
        let mut kinds_in_clear: Vec<Kind> = in_clear.iter().map(|f| f.kind).collect();
        kinds_in_clear.sort_unstable();
        kinds_in_clear.dedup();
        Ok(Disclosure {
            in_clear: in_clear.into_iter().cloned().collect(),
            replaced: replaced.into_iter().map(|f| f.path.clone()).collect(),
            kinds_in_clear,
        })
    }
}

/// Parses `config` as litd does and finds every identifier in it. Empty bytes (no config) and
/// a JSON `null` (which litd decodes to an empty map) have none. Refuses bytes that are not a
/// JSON object, nest deeper than [`MAX_DEPTH`], repeat a key, or (mapper on) hold a top-level
/// list mixing strings with other values. Linear in the size of `config`.
pub fn inspect(config: &[u8], privacy: Privacy) -> Result<Inspection, ConfigRefusal> {
    let mut walk = Walk {
        privacy,
        path: Vec::new(),
        found: Vec::new(),
        refusal: None,
    };
    if !config.is_empty() {
        let mut de = serde_json::Deserializer::from_slice(config);
        let root = Node {
            walk: &mut walk,
            place: Place::Root,
            depth: 0,
        }
        .deserialize(&mut de)
        .and_then(|root| de.end().map(|()| root));
        let not_an_object = match root {
            Err(e) => {
                return Err(walk
                    .refusal
                    .take()
                    .unwrap_or_else(|| ConfigRefusal::Malformed {
                        reason: e.to_string(),
                    }))
            }
            Ok(Seen::Object | Seen::Null) => None,
            Ok(Seen::Array) => Some(JsonType::Array),
            Ok(Seen::String) => Some(JsonType::String),
            Ok(Seen::Number) => Some(JsonType::Number),
            Ok(Seen::Bool) => Some(JsonType::Bool),
        };
        if let Some(found) = not_an_object {
            return Err(ConfigRefusal::NotAnObject { found });
        }
    }
    let findings = walk
        .found
        .into_iter()
        .map(|raw| Finding {
            fate: fate(raw.kind, raw.shape, raw.in_string_list, privacy),
            path: raw.path,
            kind: raw.kind,
            shape: raw.shape,
        })
        .collect();
    Ok(Inspection { privacy, findings })
}

/// [`inspect`] then [`Inspection::check`], naming `feature` in the refusal.
pub fn check_feature(
    feature: &str,
    config: &[u8],
    privacy: Privacy,
) -> Result<Disclosure, FeatureConfigRefusal> {
    inspect(config, privacy)
        .and_then(|inspection| inspection.check())
        .map_err(|reason| FeatureConfigRefusal {
            feature: feature.to_owned(),
            reason,
        })
}

fn fate(kind: Kind, shape: Shape, in_string_list: bool, privacy: Privacy) -> Fate {
    match privacy {
        Privacy::NoMapper => Fate::ClearNoMapper,
        Privacy::Mapper { flags } if flags & kind.clear_flag() != 0 => Fate::ClearByFlag,
        // Only `Whole` findings carry a kind litd has a rule for (see `litd_rule`).
        Privacy::Mapper { .. } if shape == Shape::Whole && in_string_list => Fate::Replaced,
        Privacy::Mapper { .. } => Fate::Leaked,
    }
}

#[cfg(test)]
pub(crate) mod corpus;
#[cfg(test)]
mod tests;
