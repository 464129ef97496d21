//! The feature-config corpus: configs of every shape litd's obfuscator treats differently,
//! each kind of identifier, each flag combination, no privacy mapper, malformed JSON, mixed
//! lists, deep nesting and large configs, each with the findings `inspect` must report and the
//! decision `check` must take. The inspector's tests (`tests.rs`) and the AddAutopilotSession
//! policy's tests run the same table, so the public face is held to the same answers.

use super::*;
pub(crate) use Fate::{ClearByFlag, ClearNoMapper, Leaked, Replaced};
pub(crate) use Kind::{ChannelId, ChannelPoint, Pubkey, ShortChannelId};
pub(crate) use Shape::{Inside, Number, Whole};

// Identifiers used by the corpus, spliced into configs in place of `@PK@` etc.
pub(crate) const PK: &str = "024a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a";
pub(crate) const PK3: &str = "03c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7";
pub(crate) const TXID: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3";
pub(crate) const CID: &str = "812345678901234567";
pub(crate) const SCID: &str = "738824x1234x1";
pub(crate) const SECRETS: [&str; 5] = [PK, PK3, TXID, CID, SCID];

// Flag bits written out, so the table also checks the flag lookup against litd's numbering.
pub(crate) const CLEAR_PUBKEYS_BIT: u64 = 0x01;
pub(crate) const CLEAR_CHAN_IDS_BIT: u64 = 0x04;

pub(crate) const FULL: Privacy = Privacy::Mapper { flags: 0 };
pub(crate) const PUBKEYS_CLEAR: Privacy = Privacy::Mapper {
    flags: CLEAR_PUBKEYS_BIT,
};
pub(crate) const CHANS_CLEAR: Privacy = Privacy::Mapper {
    flags: CLEAR_CHAN_IDS_BIT,
};
pub(crate) const BOTH_CLEAR: Privacy = Privacy::Mapper {
    flags: CLEAR_PUBKEYS_BIT | CLEAR_CHAN_IDS_BIT,
};
/// Every other flag: none of them lets an identifier through.
pub(crate) const OTHERS_CLEAR: Privacy = Privacy::Mapper {
    flags: 0xff & !(CLEAR_PUBKEYS_BIT | CLEAR_CHAN_IDS_BIT),
};
pub(crate) const NO_MAPPER: Privacy = Privacy::NoMapper;

pub(crate) const FEATURE: &str = "peer-watcher";
pub(crate) const LITD_ARRAY: &str =
    "json: cannot unmarshal array into Go value of type map[string]interface {}";

pub(crate) fn expand(config: &str) -> Vec<u8> {
    config
        .replace("@PK@", PK)
        .replace("@PK3@", PK3)
        .replace("@CP@", &format!("{TXID}:1"))
        .replace("@TXID@", TXID)
        .replace("@CID@", CID)
        .replace("@SCID@", SCID)
        .into_bytes()
}

pub(crate) enum Found {
    /// Exactly these, in document order: (path as printed, kind, shape, fate).
    List(Vec<(&'static str, Kind, Shape, Fate)>),
    /// `n` findings, all alike (large generated configs).
    Many(usize, Kind, Shape, Fate),
}

pub(crate) fn none() -> Found {
    Found::List(vec![])
}

pub(crate) fn found(list: &[(&'static str, Kind, Shape, Fate)]) -> Found {
    Found::List(list.to_vec())
}

pub(crate) enum Outcome {
    Accept,
    /// Refused by `inspect` (the config cannot be inspected, or litd would refuse it).
    Unparsed(Why),
    /// Parsed (findings are checked), then refused by `check`.
    Refused(Why),
}

pub(crate) enum Why {
    Malformed,
    NotAnObject(JsonType, &'static str),
    TooDeep(&'static str),
    Duplicate(&'static str),
    Mixed(&'static str),
    Revealed(&'static str, Kind, Shape),
    Number(&'static str),
}

impl Why {
    /// The path the refusal names (a prefix of it for `TooDeep`), if it names one.
    pub(crate) fn path(&self) -> Option<&'static str> {
        match self {
            Why::Malformed | Why::NotAnObject(..) => None,
            Why::TooDeep(p)
            | Why::Duplicate(p)
            | Why::Mixed(p)
            | Why::Revealed(p, ..)
            | Why::Number(p) => Some(p),
        }
    }

    /// The metric label of the refusal (`ConfigRefusal::reason`), written out.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Why::Malformed => "config_malformed",
            Why::NotAnObject(..) => "config_not_an_object",
            Why::TooDeep(_) => "config_too_deep",
            Why::Duplicate(_) => "config_duplicate_key",
            Why::Mixed(_) => "config_mixed_list",
            Why::Revealed(..) => "config_reveals_identifier",
            Why::Number(_) => "config_numeric_channel_id",
        }
    }
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) config: Vec<u8>,
    pub(crate) privacy: Privacy,
    pub(crate) found: Found,
    pub(crate) outcome: Outcome,
}

pub(crate) fn case(
    name: &'static str,
    config: &str,
    privacy: Privacy,
    found: Found,
    outcome: Outcome,
) -> Case {
    raw(name, expand(config), privacy, found, outcome)
}

pub(crate) fn raw(
    name: &'static str,
    config: Vec<u8>,
    privacy: Privacy,
    found: Found,
    outcome: Outcome,
) -> Case {
    Case {
        name,
        config,
        privacy,
        found,
        outcome,
    }
}

pub(crate) use Outcome::{Accept, Refused, Unparsed};

pub(crate) fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    let mut s = String::from("{\"a\":");
    s.push_str(&open.repeat(depth));
    s.push_str(&close.repeat(depth));
    s.push('}');
    s.into_bytes()
}

/// `{"peers": [PK, PK, ...]}` (top-level) or `{"x": {"peers": [...]}}`, about 1 MiB.
pub(crate) fn big_list(n: usize, top_level: bool) -> Vec<u8> {
    let items = vec![format!("\"{PK}\""); n].join(",");
    let list = format!("{{\"peers\":[{items}]}}");
    if top_level {
        list.into_bytes()
    } else {
        format!("{{\"x\":{list}}}").into_bytes()
    }
}

pub(crate) const MIB_OF_PUBKEYS: usize = (1 << 20) / 69;

pub(crate) fn corpus() -> Vec<Case> {
    let long_key = "k".repeat(100);
    vec![
        // --- what litd parses, and what it refuses ---
        case("empty bytes: no config", "", FULL, none(), Accept),
        case("empty object", "{}", FULL, none(), Accept),
        case(
            "null: litd decodes it to an empty map",
            "null",
            FULL,
            none(),
            Accept,
        ),
        case(
            "top-level array",
            "[\"@PK@\"]",
            FULL,
            none(),
            Unparsed(Why::NotAnObject(JsonType::Array, LITD_ARRAY)),
        ),
        case(
            "top-level string",
            "\"@PK@\"",
            FULL,
            none(),
            Unparsed(Why::NotAnObject(
                JsonType::String,
                "json: cannot unmarshal string into Go value of type map[string]interface {}",
            )),
        ),
        case(
            "top-level number",
            "@CID@",
            FULL,
            none(),
            Unparsed(Why::NotAnObject(
                JsonType::Number,
                "json: cannot unmarshal number into Go value of type map[string]interface {}",
            )),
        ),
        case(
            "top-level bool",
            " true ",
            FULL,
            none(),
            Unparsed(Why::NotAnObject(
                JsonType::Bool,
                "json: cannot unmarshal bool into Go value of type map[string]interface {}",
            )),
        ),
        case(
            "non-object refused without the mapper too: nothing to inspect",
            "[1]",
            NO_MAPPER,
            none(),
            Unparsed(Why::NotAnObject(JsonType::Array, LITD_ARRAY)),
        ),
        case(
            "truncated",
            "{\"peer\": ",
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "trailing comma",
            "{\"a\":1,}",
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "trailing data",
            "{} {}",
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "whitespace only",
            "  \n",
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "comment",
            "{/* x */}",
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        raw(
            "invalid UTF-8 inside a string",
            b"{\"peer\":\"\xff\xfe\"}".to_vec(),
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "lone surrogate escape",
            r#"{"a":"\ud800"}"#,
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "number beyond float range (litd refuses it too)",
            r#"{"a":1e400}"#,
            FULL,
            none(),
            Unparsed(Why::Malformed),
        ),
        case(
            "duplicate top-level key",
            r#"{"a":1,"b":2,"a":3}"#,
            FULL,
            none(),
            Unparsed(Why::Duplicate("$.a")),
        ),
        case(
            "duplicate nested key, also without the mapper",
            r#"{"x":{"peer":"a","peer":"b"}}"#,
            NO_MAPPER,
            none(),
            Unparsed(Why::Duplicate("$.x.peer")),
        ),
        case(
            "duplicate key that is a pubkey: shown by position",
            r#"{"@PK@":1,"@PK@":2}"#,
            BOTH_CLEAR,
            none(),
            Unparsed(Why::Duplicate("$[<key 1>]")),
        ),
        raw(
            "10,000 nested arrays",
            nested(10_000, "[", "]"),
            FULL,
            none(),
            Unparsed(Why::TooDeep("$.a[0][0][0]")),
        ),
        raw(
            "10,000 nested objects",
            nested(10_000, "{\"b\":", "}"),
            FULL,
            none(),
            Unparsed(Why::TooDeep("$.a.b.b.b")),
        ),
        raw(
            "10,000 nested arrays at the top level",
            b"[".repeat(10_000),
            FULL,
            none(),
            Unparsed(Why::TooDeep("$[0][0]")),
        ),
        raw(
            "nesting exactly at the limit",
            nested(MAX_DEPTH - 1, "[", "]"),
            FULL,
            none(),
            Accept,
        ),
        // --- strings, by shape ---
        case(
            "scalar pubkey",
            r#"{"peer":"@PK@"}"#,
            FULL,
            found(&[("$.peer", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$.peer", Pubkey, Whole)),
        ),
        case(
            "top-level list of pubkeys",
            r#"{"peers":["@PK@","@PK3@"],"n":3}"#,
            FULL,
            found(&[
                ("$.peers[0]", Pubkey, Whole, Replaced),
                ("$.peers[1]", Pubkey, Whole, Replaced),
            ]),
            Accept,
        ),
        case(
            "pubkey in an object inside a list",
            r#"{"targets":[{"peer":"@PK@"}]}"#,
            FULL,
            found(&[("$.targets[0].peer", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$.targets[0].peer", Pubkey, Whole)),
        ),
        case(
            "list of strings nested in an object",
            r#"{"a":{"peers":["@PK@"]}}"#,
            FULL,
            found(&[("$.a.peers[0]", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$.a.peers[0]", Pubkey, Whole)),
        ),
        case(
            "list of lists",
            r#"{"a":[["@PK@"]]}"#,
            FULL,
            found(&[("$.a[0][0]", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$.a[0][0]", Pubkey, Whole)),
        ),
        case(
            "top-level list mixing strings and numbers",
            r#"{"peers":["@PK@",1]}"#,
            FULL,
            none(),
            Unparsed(Why::Mixed("$.peers")),
        ),
        case(
            "mixed list with a null, even with every flag set",
            r#"{"peers":[null,"x"]}"#,
            BOTH_CLEAR,
            none(),
            Unparsed(Why::Mixed("$.peers")),
        ),
        case(
            "mixed list without the mapper: litd never parses it",
            r#"{"peers":["@PK@",1]}"#,
            NO_MAPPER,
            found(&[("$.peers[0]", Pubkey, Whole, ClearNoMapper)]),
            Accept,
        ),
        case(
            "empty top-level list and a list of objects are left alone",
            r#"{"a":[],"b":[{"c":1}],"d":"plain text"}"#,
            FULL,
            none(),
            Accept,
        ),
        case(
            "uppercase pubkey in a top-level list",
            &format!(r#"{{"peers":["{}"]}}"#, PK.to_uppercase()),
            FULL,
            found(&[("$.peers[0]", Pubkey, Whole, Replaced)]),
            Accept,
        ),
        case(
            "66 hex characters without 02/03: litd still treats them as a pubkey",
            r#"{"peers":["ff@TXID@"],"hash":"ff@TXID@"}"#,
            FULL,
            found(&[
                ("$.peers[0]", Pubkey, Whole, Replaced),
                ("$.hash", Pubkey, Whole, Leaked),
            ]),
            Refused(Why::Revealed("$.hash", Pubkey, Whole)),
        ),
        case(
            "pubkey padded with whitespace: litd trims, in a list and as a scalar",
            "{\"peers\":[\" @PK@\\n\"],\"peer\":\"\\t@PK3@\\u00a0\"}",
            FULL,
            found(&[
                ("$.peers[0]", Pubkey, Whole, Replaced),
                ("$.peer", Pubkey, Whole, Leaked),
            ]),
            Refused(Why::Revealed("$.peer", Pubkey, Whole)),
        ),
        case(
            "pubkey@host inside a top-level list: not a whole pubkey, so not replaced",
            r#"{"peers":["@PK@@127.0.0.1:9735"]}"#,
            FULL,
            found(&[("$.peers[0]", Pubkey, Inside, Leaked)]),
            Refused(Why::Revealed("$.peers[0]", Pubkey, Inside)),
        ),
        case(
            "pubkey inside a URI",
            r#"{"uri":"lightning://@PK@?amp=1"}"#,
            FULL,
            found(&[("$.uri", Pubkey, Inside, Leaked)]),
            Refused(Why::Revealed("$.uri", Pubkey, Inside)),
        ),
        case(
            "66 hex characters inside a longer string without 02/03, and a 68-character run",
            r#"{"a":"x:ff@TXID@@h","b":"0202@TXID@"}"#,
            FULL,
            none(),
            Accept,
        ),
        case(
            "pubkey as an object key: shown by position",
            r#"{"fees":{"base":1,"@PK@":{"ppm":5}}}"#,
            FULL,
            found(&[("$.fees[<key 1>]", Pubkey, Shape::Key, Leaked)]),
            Refused(Why::Revealed("$.fees[<key 1>]", Pubkey, Shape::Key)),
        ),
        case(
            "pubkey under a unicode key",
            r#"{"节点 peer":"@PK@"}"#,
            FULL,
            found(&[("$[\"节点 peer\"]", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$[\"节点 peer\"]", Pubkey, Whole)),
        ),
        case(
            "keys needing quotes and escapes",
            r#"{"a b":{"q\"\\":{"9lives":{"ok_1":"@PK@"}}}}"#,
            FULL,
            found(&[(
                "$[\"a b\"][\"q\\\"\\\\\"][\"9lives\"].ok_1",
                Pubkey,
                Whole,
                Leaked,
            )]),
            Refused(Why::Revealed(
                "$[\"a b\"][\"q\\\"\\\\\"][\"9lives\"].ok_1",
                Pubkey,
                Whole,
            )),
        ),
        case(
            "a long key is shortened in the path",
            &format!(r#"{{"{long_key}":"@PK@"}}"#),
            FULL,
            found(&[(
                "$[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…\"]",
                Pubkey,
                Whole,
                Leaked,
            )]),
            Refused(Why::Revealed(
                "$[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…\"]",
                Pubkey,
                Whole,
            )),
        ),
        // --- channel points ---
        case(
            "channel points in a top-level list, one padded",
            "{\"chans\":[\"@CP@\",\"  @TXID@:0\\r\\n\"]}",
            FULL,
            found(&[
                ("$.chans[0]", ChannelPoint, Whole, Replaced),
                ("$.chans[1]", ChannelPoint, Whole, Replaced),
            ]),
            Accept,
        ),
        case(
            "scalar channel point with whitespace",
            "{\"chan\":\" @CP@ \"}",
            FULL,
            found(&[("$.chan", ChannelPoint, Whole, Leaked)]),
            Refused(Why::Revealed("$.chan", ChannelPoint, Whole)),
        ),
        case(
            "channel point inside a sentence",
            r#"{"note":"close @CP@ today"}"#,
            FULL,
            found(&[("$.note", ChannelPoint, Inside, Leaked)]),
            Refused(Why::Revealed("$.note", ChannelPoint, Inside)),
        ),
        case(
            "litd's channel-point rule: one colon, any 64 bytes, a signed int",
            &format!(
                r#"{{"l":["{}:-1","@TXID@:1:2","@TXID@:x"]}}"#,
                "z".repeat(64)
            ),
            FULL,
            found(&[
                ("$.l[0]", ChannelPoint, Whole, Replaced),
                ("$.l[1]", ChannelPoint, Inside, Leaked),
            ]),
            Refused(Why::Revealed("$.l[1]", ChannelPoint, Inside)),
        ),
        // --- channel IDs as strings ---
        case(
            "channel ID strings in a top-level list",
            r#"{"chans":["@CID@"," 1000000000000 "]}"#,
            FULL,
            found(&[
                ("$.chans[0]", ChannelId, Whole, Replaced),
                ("$.chans[1]", ChannelId, Whole, Replaced),
            ]),
            Accept,
        ),
        case(
            "decimal strings litd does not take for channel IDs",
            r#"{"l":["999999999999","123456789012345678901","9223372036854775808"]}"#,
            FULL,
            none(),
            Accept,
        ),
        case(
            "signed and zero-padded channel IDs (Go's ParseInt accepts them)",
            r#"{"l":["+000000000001","-812345678901234567"]}"#,
            FULL,
            found(&[
                ("$.l[0]", ChannelId, Whole, Replaced),
                ("$.l[1]", ChannelId, Whole, Replaced),
            ]),
            Accept,
        ),
        case(
            "scalar channel ID string",
            r#"{"chan":"@CID@"}"#,
            FULL,
            found(&[("$.chan", ChannelId, Whole, Leaked)]),
            Refused(Why::Revealed("$.chan", ChannelId, Whole)),
        ),
        // --- channel IDs as JSON numbers ---
        case(
            "channel ID as a scalar number",
            r#"{"chan":@CID@}"#,
            FULL,
            found(&[("$.chan", ChannelId, Number, Leaked)]),
            Refused(Why::Number("$.chan")),
        ),
        case(
            "channel IDs in a top-level list of numbers: litd leaves the list alone",
            r#"{"chans":[@CID@,1]}"#,
            FULL,
            found(&[("$.chans[0]", ChannelId, Number, Leaked)]),
            Refused(Why::Number("$.chans[0]")),
        ),
        case(
            "number channel ID with ClearChanIDs: still mangled, still refused",
            r#"{"x":{"chan":@CID@}}"#,
            CHANS_CLEAR,
            found(&[("$.x.chan", ChannelId, Number, ClearByFlag)]),
            Refused(Why::Number("$.x.chan")),
        ),
        case(
            "numbers too short, beyond uint64, and not integers",
            r#"{"a":999999999999,"b":18446744073709551616,"c":123456789012345678901,"d":1.5,"e":-999999999999}"#,
            FULL,
            none(),
            Accept,
        ),
        case(
            "numbers at the edges: 13 digits, uint64 max, negative int64, float notation",
            r#"{"a":1000000000000,"b":18446744073709551615,"c":-9223372036854775808,"d":8.12345678901234567e17,"e":812345678901234567.0}"#,
            FULL,
            found(&[
                ("$.a", ChannelId, Number, Leaked),
                ("$.b", ChannelId, Number, Leaked),
                ("$.c", ChannelId, Number, Leaked),
                ("$.d", ChannelId, Number, Leaked),
                ("$.e", ChannelId, Number, Leaked),
            ]),
            Refused(Why::Number("$.a")),
        ),
        case(
            "number channel ID without the mapper: sent as written, not refused",
            r#"{"chan":@CID@}"#,
            NO_MAPPER,
            found(&[("$.chan", ChannelId, Number, ClearNoMapper)]),
            Accept,
        ),
        // --- short channel IDs ---
        case(
            "scalar BLOCKxTXxOUT",
            r#"{"scid":"@SCID@"}"#,
            FULL,
            found(&[("$.scid", ShortChannelId, Inside, Leaked)]),
            Refused(Why::Revealed("$.scid", ShortChannelId, Inside)),
        ),
        case(
            "BLOCKxTXxOUT in a top-level list: litd has no rule for it",
            r#"{"scids":["@SCID@","scid=@SCID@;"]}"#,
            FULL,
            found(&[
                ("$.scids[0]", ShortChannelId, Inside, Leaked),
                ("$.scids[1]", ShortChannelId, Inside, Leaked),
            ]),
            Refused(Why::Revealed("$.scids[0]", ShortChannelId, Inside)),
        ),
        case(
            "BLOCKxTXxOUT with ClearChanIDs",
            r#"{"scid":"@SCID@"}"#,
            CHANS_CLEAR,
            found(&[("$.scid", ShortChannelId, Inside, ClearByFlag)]),
            Accept,
        ),
        case(
            "not short channel IDs: out of range, two parts, glued to letters",
            r#"{"a":"16777216x1x1","b":"1920x1080","c":"a738824x1234x1","d":"1x1x65536","e":"1x2x3y"}"#,
            FULL,
            none(),
            Accept,
        ),
        // --- flags ---
        case(
            "scalar pubkey with ClearPubkeys",
            r#"{"peer":"@PK@"}"#,
            PUBKEYS_CLEAR,
            found(&[("$.peer", Pubkey, Whole, ClearByFlag)]),
            Accept,
        ),
        case(
            "scalar pubkey with ClearChanIDs only",
            r#"{"peer":"@PK@"}"#,
            CHANS_CLEAR,
            found(&[("$.peer", Pubkey, Whole, Leaked)]),
            Refused(Why::Revealed("$.peer", Pubkey, Whole)),
        ),
        case(
            "scalar channel point with ClearChanIDs",
            r#"{"chan":"@CP@"}"#,
            CHANS_CLEAR,
            found(&[("$.chan", ChannelPoint, Whole, ClearByFlag)]),
            Accept,
        ),
        case(
            "scalar channel point with ClearPubkeys only",
            r#"{"chan":"@CP@"}"#,
            PUBKEYS_CLEAR,
            found(&[("$.chan", ChannelPoint, Whole, Leaked)]),
            Refused(Why::Revealed("$.chan", ChannelPoint, Whole)),
        ),
        case(
            "list with ClearPubkeys: litd leaves pubkeys, replaces channel IDs",
            r#"{"l":["@PK@","@CID@"]}"#,
            PUBKEYS_CLEAR,
            found(&[
                ("$.l[0]", Pubkey, Whole, ClearByFlag),
                ("$.l[1]", ChannelId, Whole, Replaced),
            ]),
            Accept,
        ),
        case(
            "both flags: every string in clear, accepted",
            r#"{"peer":"@PK@","x":{"chan":"@CP@"},"l":["@CID@"],"u":"@PK3@@h:1"}"#,
            BOTH_CLEAR,
            found(&[
                ("$.peer", Pubkey, Whole, ClearByFlag),
                ("$.x.chan", ChannelPoint, Whole, ClearByFlag),
                ("$.l[0]", ChannelId, Whole, ClearByFlag),
                ("$.u", Pubkey, Inside, ClearByFlag),
            ]),
            Accept,
        ),
        case(
            "every other flag set: none of them clears an identifier",
            r#"{"peer":"@PK@","chan":"@CP@"}"#,
            OTHERS_CLEAR,
            found(&[
                ("$.peer", Pubkey, Whole, Leaked),
                ("$.chan", ChannelPoint, Whole, Leaked),
            ]),
            Refused(Why::Revealed("$.peer", Pubkey, Whole)),
        ),
        case(
            "first refusable value is named, whatever its kind",
            r#"{"l":["@PK@"],"chan":@CID@,"peer":"@PK3@"}"#,
            FULL,
            found(&[
                ("$.l[0]", Pubkey, Whole, Replaced),
                ("$.chan", ChannelId, Number, Leaked),
                ("$.peer", Pubkey, Whole, Leaked),
            ]),
            Refused(Why::Number("$.chan")),
        ),
        // --- no privacy mapper ---
        case(
            "no mapper: every identifier in clear, none refused",
            r#"{"peers":["@PK@"],"peer":"@PK3@","k":{"@CP@":"@SCID@"}}"#,
            NO_MAPPER,
            found(&[
                ("$.peers[0]", Pubkey, Whole, ClearNoMapper),
                ("$.peer", Pubkey, Whole, ClearNoMapper),
                ("$.k[<key 0>]", ChannelPoint, Shape::Key, ClearNoMapper),
                ("$.k[<key 0>]", ShortChannelId, Inside, ClearNoMapper),
            ]),
            Accept,
        ),
        // --- size ---
        raw(
            "1 MiB top-level list of pubkeys",
            big_list(MIB_OF_PUBKEYS, true),
            FULL,
            Found::Many(MIB_OF_PUBKEYS, Pubkey, Whole, Replaced),
            Accept,
        ),
        raw(
            "1 MiB nested list of pubkeys",
            big_list(MIB_OF_PUBKEYS, false),
            FULL,
            Found::Many(MIB_OF_PUBKEYS, Pubkey, Whole, Leaked),
            Refused(Why::Revealed("$.x.peers[0]", Pubkey, Whole)),
        ),
        raw(
            "1 MiB string of short-channel-ID look-alikes",
            format!("{{\"s\":\"{}\"}}", "1x".repeat(1 << 19)).into_bytes(),
            FULL,
            none(),
            Accept,
        ),
        raw(
            "1 MiB hex string and 1 MiB of digits",
            format!(
                "{{\"h\":\"{}\",\"d\":\"{}\"}}",
                "02".repeat(1 << 19),
                "7".repeat(1 << 20)
            )
            .into_bytes(),
            FULL,
            none(),
            Accept,
        ),
        raw(
            "1 MiB key over many pubkeys (paths share the key)",
            format!(
                "{{\"{}\":{{\"l\":[{}]}}}}",
                "k".repeat(1 << 20),
                vec![format!("\"{PK}\""); 2000].join(",")
            )
            .into_bytes(),
            NO_MAPPER,
            Found::Many(2000, Pubkey, Whole, ClearNoMapper),
            Accept,
        ),
        raw(
            "object with 50,000 keys",
            format!(
                "{{{}}}",
                (0..50_000)
                    .map(|i| format!("\"k{i}\":{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into_bytes(),
            FULL,
            none(),
            Accept,
        ),
    ]
}
