//! What counts as an identifier: litd's obfuscator rules for a whole string, litgate's rules
//! for identifiers inside strings or in forms litd has no rule for, and which JSON numbers are
//! channel IDs.

use super::{Kind, Shape};

// litd's obfuscator bounds (`firewall/privacy_mapper.go`): a channel ID is 13 (block 1) to 20
// characters, a pubkey 66 hex characters, a txid 64 characters.
const MIN_CHAN_ID_LEN: usize = 13;
const MAX_CHAN_ID_LEN: usize = 20;
const PUBKEY_HEX_LEN: usize = 66;
const TXID_LEN: usize = 64;

/// The smallest 13-digit number: a channel ID in block 1 is about 1.1e12.
const MIN_CHAN_ID: u64 = 1_000_000_000_000;

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
pub(super) fn classify(s: &str, whole: Shape, inside: Shape, out: &mut Vec<(Kind, Shape)>) {
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
pub(super) fn number_is_chan_id_u64(v: u64) -> bool {
    v >= MIN_CHAN_ID
}

pub(super) fn number_is_chan_id_i64(v: i64) -> bool {
    v.unsigned_abs() >= MIN_CHAN_ID
}

/// A number written with a fraction or an exponent, or an integer beyond uint64: a channel ID
/// if its value is an integer of 13–20 digits within int64/uint64 range (what litd's float
/// decoding would turn it into).
pub(super) fn number_is_chan_id_f64(v: f64) -> bool {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    v.is_finite()
        && v.fract() == 0.0
        && v.abs() >= MIN_CHAN_ID as f64
        && (-TWO_63..TWO_64).contains(&v)
}
