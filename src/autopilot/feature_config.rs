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

use std::{collections::HashSet, fmt, sync::Arc};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::privacy::flags::NAMES as PRIVACY_FLAG_NAMES;

/// How deep arrays and objects may nest (the top-level object is level 1). Feature configs are
/// shallow; the bound keeps hostile input from exhausting the stack, and stays below
/// serde_json's own limit (128) so the refusal names the path.
pub const MAX_DEPTH: usize = 64;

// litd's obfuscator bounds (`firewall/privacy_mapper.go`): a channel ID is 13 (block 1) to 20
// characters, a pubkey 66 hex characters, a txid 64 characters.
const MIN_CHAN_ID_LEN: usize = 13;
const MAX_CHAN_ID_LEN: usize = 20;
const PUBKEY_HEX_LEN: usize = 66;
const TXID_LEN: usize = 64;

/// The smallest 13-digit number: a channel ID in block 1 is about 1.1e12.
const MIN_CHAN_ID: u64 = 1_000_000_000_000;

/// Key names longer than this are shortened in paths (messages stay bounded).
const MAX_KEY_SHOWN: usize = 40;

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

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member.
    Key {
        /// The key as decoded.
        name: Arc<str>,
        /// Its position among the object's keys, from 0 (how a withheld key is shown).
        position: usize,
        /// The key holds an identifier, so its text is never shown.
        withheld: bool,
    },
    /// An array element, from 0.
    Index(usize),
}

/// Where a value sits in the config, printed JSONPath-style: `$.targets[0].peer`, `$["a b"]`.
/// A key that holds an identifier is printed by position instead of text (`$.peers[<key 2>]`);
/// a long key is shortened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonPath(Vec<Segment>);

impl JsonPath {
    /// The steps from the top-level object.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.0 {
            match segment {
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Key {
                    withheld: true,
                    position,
                    ..
                } => write!(f, "[<key {position}>]")?,
                Segment::Key { name, .. } if is_plain_name(name) => write!(f, ".{name}")?,
                Segment::Key { name, .. } => {
                    f.write_str("[\"")?;
                    let mut shown = name.chars();
                    for c in shown.by_ref().take(MAX_KEY_SHOWN) {
                        match c {
                            '"' => f.write_str("\\\"")?,
                            '\\' => f.write_str("\\\\")?,
                            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
                            c => write!(f, "{c}")?,
                        }
                    }
                    if shown.next().is_some() {
                        f.write_str("…")?;
                    }
                    f.write_str("\"]")?;
                }
            }
        }
        Ok(())
    }
}

fn is_plain_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_KEY_SHOWN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
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

/// A refusal naming the feature whose config it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature {feature:?}: {reason}")]
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

/// litd's obfuscator rules for one string of a top-level string list, in its order: it trims
/// (Go's `strings.TrimSpace`, the same Unicode White_Space set as `str::trim`), then tries a
/// channel point (exactly one `:`, 64 bytes before it, a Go `ParseInt` after it), a pubkey
/// (66 hex characters, any case, any prefix), a channel ID (13–20 bytes that parse as an
/// int64, sign allowed). Rust's `i64::from_str` accepts exactly what Go's `ParseInt(s, 10, 64)`
/// does.
fn litd_rule(s: &str) -> Option<Kind> {
    let v = s.trim();
    let chan_point = v.split_once(':').is_some_and(|(txid, index)| {
        txid.len() == TXID_LEN && !index.contains(':') && index.parse::<i64>().is_ok()
    });
    if chan_point {
        Some(Kind::ChannelPoint)
    } else if v.len() == PUBKEY_HEX_LEN && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(Kind::Pubkey)
    } else if (MIN_CHAN_ID_LEN..=MAX_CHAN_ID_LEN).contains(&v.len()) && v.parse::<i64>().is_ok() {
        Some(Kind::ChannelId)
    } else {
        None
    }
}

/// litgate's rules for identifiers litd does not recognise, in a string no litd rule matched:
/// a maximal run of exactly 66 hex characters starting `02`/`03` (a compressed pubkey, e.g. in
/// `02…@host:9735` or a URI), a maximal run of 64 hex characters followed by `:` and digits (a
/// channel point), and `BLOCKxTXxOUT` with each part in range (block and tx below 2^24, output
/// below 2^16) and no letter or digit on either side. One pass over the bytes.
fn litgate_rules(s: &str, out: &mut Vec<Kind>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() {
            let end = run_end(b, i, u8::is_ascii_hexdigit);
            let run = &b[i..end];
            if run.len() == PUBKEY_HEX_LEN && (run.starts_with(b"02") || run.starts_with(b"03")) {
                out.push(Kind::Pubkey);
            } else if run.len() == TXID_LEN
                && b.get(end) == Some(&b':')
                && b.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                out.push(Kind::ChannelPoint);
            }
            if let Some(scid_end) = scid_at(b, i) {
                out.push(Kind::ShortChannelId);
                i = scid_end;
            } else {
                i = end;
            }
        } else {
            i += 1;
        }
    }
}

fn run_end(b: &[u8], start: usize, class: fn(&u8) -> bool) -> usize {
    start + b[start..].iter().take_while(|c| class(c)).count()
}

/// A `BLOCKxTXxOUT` starting at `start`, returning where it ends.
fn scid_at(b: &[u8], start: usize) -> Option<usize> {
    if start > 0 && b[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    const LIMITS: [u64; 3] = [1 << 24, 1 << 24, 1 << 16];
    let mut at = start;
    for (n, limit) in LIMITS.into_iter().enumerate() {
        if n > 0 {
            if b.get(at) != Some(&b'x') {
                return None;
            }
            at += 1;
        }
        let end = run_end(b, at, u8::is_ascii_digit);
        // At most 8 digits: any in-range part fits, and parsing stays bounded.
        if end == at || end - at > 8 {
            return None;
        }
        let value = b[at..end]
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        if value >= limit {
            return None;
        }
        at = end;
    }
    match b.get(at) {
        Some(c) if c.is_ascii_alphanumeric() => None,
        _ => Some(at),
    }
}

/// Every identifier in one string: litd's rule if one matches the whole (trimmed) string,
/// otherwise litgate's.
fn classify(s: &str, whole: Shape, inside: Shape, out: &mut Vec<(Kind, Shape)>) {
    if let Some(kind) = litd_rule(s) {
        out.push((kind, whole));
        return;
    }
    let mut kinds = Vec::new();
    litgate_rules(s, &mut kinds);
    out.extend(kinds.into_iter().map(|k| (k, inside)));
}

/// A 13–20 digit integer that fits an int64 or a uint64 (serde_json hands integer literals
/// that fit over exactly; anything else arrives as an f64).
fn number_is_chan_id_u64(v: u64) -> bool {
    v >= MIN_CHAN_ID
}

fn number_is_chan_id_i64(v: i64) -> bool {
    v.unsigned_abs() >= MIN_CHAN_ID
}

/// A number written with a fraction or an exponent, or an integer beyond uint64: a channel ID
/// if its value is an integer of 13–20 digits within int64/uint64 range (what litd's float
/// decoding would turn it into).
fn number_is_chan_id_f64(v: f64) -> bool {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    v.is_finite()
        && v.fract() == 0.0
        && v.abs() >= MIN_CHAN_ID as f64
        && (-TWO_63..TWO_64).contains(&v)
}

/// A finding before its fate is known.
struct Raw {
    path: JsonPath,
    kind: Kind,
    shape: Shape,
    /// A direct string item of a top-level array that turned out to hold only strings.
    in_string_list: bool,
}

struct Walk {
    privacy: Privacy,
    path: Vec<Segment>,
    found: Vec<Raw>,
    /// Set before a visitor fails on purpose, so the parser's generic error can be replaced.
    refusal: Option<ConfigRefusal>,
}

impl Walk {
    fn record(&mut self, kinds: Vec<(Kind, Shape)>) {
        for (kind, shape) in kinds {
            self.found.push(Raw {
                path: self.here(),
                kind,
                shape,
                in_string_list: false,
            });
        }
    }

    fn here(&self) -> JsonPath {
        JsonPath(self.path.clone())
    }

    fn refuse<E: de::Error>(&mut self, refusal: ConfigRefusal) -> E {
        self.refusal = Some(refusal);
        E::custom("refused")
    }
}

/// Where a value sits, as far as litd's obfuscator cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    /// The value of a top-level key.
    TopValue,
    Nested,
}

impl Place {
    /// The place of a value directly inside a container at this place.
    fn inside(self, container: Container) -> Place {
        match (self, container) {
            (Place::Root, Container::Object) => Place::TopValue,
            _ => Place::Nested,
        }
    }
}

#[derive(Clone, Copy)]
enum Container {
    Array,
    Object,
}

/// What a value was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// One value to walk. Recursion is bounded by [`MAX_DEPTH`].
struct Node<'w> {
    walk: &'w mut Walk,
    place: Place,
    /// Containers around this value.
    depth: usize,
}

impl Node<'_> {
    fn enter<E: de::Error>(&mut self) -> Result<usize, E> {
        let level = self.depth + 1;
        if level > MAX_DEPTH {
            let path = self.walk.here();
            return Err(self.walk.refuse(ConfigRefusal::TooDeep { path }));
        }
        Ok(level)
    }

    /// The node for a value inside this one, at `level`.
    fn child(&mut self, container: Container, level: usize) -> Node<'_> {
        Node {
            walk: &mut *self.walk,
            place: self.place.inside(container),
            depth: level,
        }
    }

    fn number(self, is_chan_id: bool) -> Seen {
        if is_chan_id {
            self.walk.record(vec![(Kind::ChannelId, Shape::Number)]);
        }
        Seen::Number
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Seen;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Seen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Seen, E> {
        Ok(Seen::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
        Ok(Seen::Bool)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_u64(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_i64(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_f64(v)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Seen, E> {
        let mut kinds = Vec::new();
        classify(s, Shape::Whole, Shape::Inside, &mut kinds);
        self.walk.record(kinds);
        Ok(Seen::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Seen, A::Error> {
        let level = self.enter()?;
        let top_list = self.place == Place::TopValue;
        let first_finding = self.walk.found.len();
        let (mut any_string, mut all_strings) = (false, true);
        let mut index = 0;
        loop {
            self.walk.path.push(Segment::Index(index));
            let item = seq.next_element_seed(self.child(Container::Array, level))?;
            self.walk.path.pop();
            let Some(item) = item else { break };
            any_string |= item == Seen::String;
            all_strings &= item == Seen::String;
            index += 1;
        }
        if top_list && any_string {
            if !all_strings {
                if let Privacy::Mapper { .. } = self.walk.privacy {
                    let path = self.walk.here();
                    return Err(self.walk.refuse(ConfigRefusal::MixedList { path }));
                }
            } else {
                // Every item is a string, so every finding in this list is a direct item.
                for raw in &mut self.walk.found[first_finding..] {
                    raw.in_string_list = true;
                }
            }
        }
        Ok(Seen::Array)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Seen, A::Error> {
        let level = self.enter()?;
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        let mut position = 0;
        while let Some(key) = map.next_key::<String>()? {
            let mut kinds = Vec::new();
            classify(&key, Shape::Key, Shape::Key, &mut kinds);
            let name: Arc<str> = key.into();
            self.walk.path.push(Segment::Key {
                name: Arc::clone(&name),
                position,
                withheld: !kinds.is_empty(),
            });
            if !seen.insert(name) {
                let path = self.walk.here();
                return Err(self.walk.refuse(ConfigRefusal::DuplicateKey { path }));
            }
            self.walk.record(kinds);
            map.next_value_seed(self.child(Container::Object, level))?;
            self.walk.path.pop();
            position += 1;
        }
        Ok(Seen::Object)
    }
}

#[cfg(test)]
mod tests;
