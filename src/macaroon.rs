//! Reading a macaroon as litd's clients send it: hex of the V2 binary format (libmacaroons and
//! go-macaroon's). litgate never verifies a macaroon: only litd holds the root keys.
//! It reads the **identifier** (names a caller for rate limits; attenuation never changes it)
//! and first-party `time-before` caveats (bounds how long a cached answer may be served).
//! Encoding is here too so the demo litd and the tests can bake and attenuate real macaroons.
//! Nothing in this module may log or format a signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

const VERSION: u8 = 0x02;
const FIELD_EOS: u64 = 0;
const FIELD_LOCATION: u64 = 1;
const FIELD_IDENTIFIER: u64 = 2;
const FIELD_VID: u64 = 4;
const FIELD_SIGNATURE: u64 = 6;

/// Why a credential could not be read as a V2 macaroon. Carries no credential bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not hex.
    #[error("macaroon is not hex")]
    NotHex,
    /// The bytes are not the V2 binary format.
    #[error("macaroon is not in the V2 binary format: {0}")]
    Format(&'static str),
}

/// One caveat. First-party caveats have no verification id.
#[derive(Clone, PartialEq, Eq)]
pub struct Caveat {
    /// Optional location hint.
    pub location: Option<Bytes>,
    /// The caveat identifier; for first-party caveats, the condition text.
    pub id: Bytes,
    /// Verification id, third-party caveats only.
    pub vid: Option<Bytes>,
}

/// A decoded V2 macaroon.
#[derive(Clone, PartialEq, Eq)]
pub struct Macaroon {
    /// Location hint (`lnd`, `litd`).
    pub location: Option<Bytes>,
    /// The identifier: the same for every attenuated copy of one macaroon.
    pub identifier: Bytes,
    /// Caveats in order.
    pub caveats: Vec<Caveat>,
    /// The 32-byte signature. Secret-equivalent: never log it.
    pub signature: Bytes,
}

impl std::fmt::Debug for Macaroon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Macaroon")
            .field("identifier_len", &self.identifier.len())
            .field("caveats", &self.caveats.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Caveat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caveat")
            .field("third_party", &self.vid.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads a macaroon file as litgate's operators have them: the hex text (as `litcli` prints
/// it) or the binary `.macaroon` litd writes. Returns the hex text, checked to be a macaroon;
/// the error says why not and never carries the file's content.
pub fn read_file_hex(path: &std::path::Path) -> Result<String, String> {
    let raw = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&raw).ok().map(str::trim);
    let hex_text = match text {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()) => t.to_string(),
        _ => hex::encode(&raw),
    };
    match Macaroon::from_hex(&hex_text) {
        Ok(_) => Ok(hex_text),
        Err(_) => Err("not a macaroon (expected hex text or litd's binary .macaroon file)".into()),
    }
}

impl Macaroon {
    /// Decodes the hex text carried in `macaroon` metadata.
    pub fn from_hex(text: &str) -> Result<Self, ParseError> {
        let raw = hex::decode(text.trim()).map_err(|_| ParseError::NotHex)?;
        Self::decode(&raw)
    }

    /// Decodes the V2 binary format.
    pub fn decode(raw: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader { buf: raw, pos: 0 };
        if r.byte()? != VERSION {
            return Err(ParseError::Format("version byte is not 2"));
        }
        // Header section: [location] identifier EOS.
        let mut location = None;
        let mut identifier = None;
        loop {
            let (ty, payload) = r.field()?;
            match ty {
                FIELD_EOS => break,
                FIELD_LOCATION if location.is_none() && identifier.is_none() => {
                    location = Some(payload)
                }
                FIELD_IDENTIFIER if identifier.is_none() => identifier = Some(payload),
                _ => return Err(ParseError::Format("unexpected field in header")),
            }
        }
        let identifier = identifier.ok_or(ParseError::Format("no identifier"))?;
        // Caveat sections until an empty section.
        let mut caveats = Vec::new();
        loop {
            let (ty, payload) = r.field()?;
            if ty == FIELD_EOS {
                break;
            }
            let mut cav = Caveat {
                location: None,
                id: Bytes::new(),
                vid: None,
            };
            let mut ty = ty;
            let mut payload = payload;
            let mut have_id = false;
            loop {
                match ty {
                    FIELD_LOCATION if !have_id && cav.location.is_none() => {
                        cav.location = Some(payload)
                    }
                    FIELD_IDENTIFIER if !have_id => {
                        cav.id = payload;
                        have_id = true;
                    }
                    FIELD_VID if have_id && cav.vid.is_none() => cav.vid = Some(payload),
                    _ => return Err(ParseError::Format("unexpected field in caveat")),
                }
                let (t, p) = r.field()?;
                if t == FIELD_EOS {
                    break;
                }
                ty = t;
                payload = p;
            }
            if !have_id {
                return Err(ParseError::Format("caveat without identifier"));
            }
            caveats.push(cav);
        }
        let (ty, signature) = r.field()?;
        if ty != FIELD_SIGNATURE || signature.len() != 32 {
            return Err(ParseError::Format("missing 32-byte signature"));
        }
        if r.pos != raw.len() {
            return Err(ParseError::Format("trailing bytes after signature"));
        }
        Ok(Macaroon {
            location,
            identifier,
            caveats,
            signature,
        })
    }

    /// Encodes to the V2 binary format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        if let Some(l) = &self.location {
            put_field(&mut out, FIELD_LOCATION, l);
        }
        put_field(&mut out, FIELD_IDENTIFIER, &self.identifier);
        out.push(0);
        for c in &self.caveats {
            if let Some(l) = &c.location {
                put_field(&mut out, FIELD_LOCATION, l);
            }
            put_field(&mut out, FIELD_IDENTIFIER, &c.id);
            if let Some(v) = &c.vid {
                put_field(&mut out, FIELD_VID, v);
            }
            out.push(0);
        }
        out.push(0);
        put_field(&mut out, FIELD_SIGNATURE, &self.signature);
        out
    }

    /// Hex of [`Macaroon::encode`], as carried in metadata.
    pub fn to_hex(&self) -> String {
        hex::encode(self.encode())
    }

    /// First-party caveat conditions as text (invalid UTF-8 is skipped).
    pub fn first_party_conditions(&self) -> impl Iterator<Item = &str> {
        self.caveats
            .iter()
            .filter(|c| c.vid.is_none())
            .filter_map(|c| std::str::from_utf8(&c.id).ok())
    }

    /// The earliest `time-before` caveat, if any. A malformed time is ignored here (litd will
    /// refuse such a macaroon; litgate only needs a bound when one is readable).
    pub fn time_before(&self) -> Option<SystemTime> {
        self.first_party_conditions()
            .filter_map(|c| c.strip_prefix("time-before "))
            .filter_map(|t| parse_rfc3339(t.trim()))
            .min()
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ParseError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ParseError::Format("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, ParseError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ParseError::Format("varint too long"))
    }

    fn field(&mut self) -> Result<(u64, Bytes), ParseError> {
        let ty = self.varint()?;
        if ty == FIELD_EOS {
            return Ok((ty, Bytes::new()));
        }
        let len = usize::try_from(self.varint()?).map_err(|_| ParseError::Format("length"))?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(ParseError::Format("length"))?;
        let payload = self
            .buf
            .get(self.pos..end)
            .ok_or(ParseError::Format("truncated field"))?;
        self.pos = end;
        Ok((ty, Bytes::copy_from_slice(payload)))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_field(out: &mut Vec<u8>, ty: u64, payload: &[u8]) {
    put_varint(out, ty);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Parses the RFC 3339 times lnd writes in `time-before` caveats
/// (`2006-01-02T15:04:05.999999999Z07:00`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let v: u32 = frac[..digits].parse().ok()?;
        nanos = v * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        // Byte checks and `get`: the offset is client text and may hold multi-byte characters.
        o if o.len() == 6
            && (o.starts_with('+') || o.starts_with('-'))
            && o.as_bytes()[3] == b':' =>
        {
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    if secs < 0 {
        return Some(UNIX_EPOCH);
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

/// Formats a time as lnd writes it in `time-before` caveats (UTC, second precision).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A V2 macaroon as litd bakes them, with a fixed signature.
    fn example_hex() -> String {
        let mut s = String::from("02");
        s += "01036c6e64";
        s += "0206034944454e54";
        s += "00";
        s += "0220";
        s += &hex::encode("time-before 2099-01-01T00:00:00Z");
        s += "00";
        s += "0212";
        s += &hex::encode("lnd-custom privacy");
        s += "00";
        s += "00";
        s += "0620";
        s += &"a2".repeat(32);
        s
    }

    #[test]
    fn decodes_the_spec_example() {
        let m = Macaroon::from_hex(&example_hex()).unwrap();
        assert_eq!(m.location.as_deref().unwrap(), b"lnd");
        assert_eq!(&m.identifier[..], b"\x03IDENT");
        assert_eq!(m.caveats.len(), 2);
        assert_eq!(
            m.first_party_conditions().collect::<Vec<_>>(),
            ["time-before 2099-01-01T00:00:00Z", "lnd-custom privacy"]
        );
        assert_eq!(m.time_before(), parse_rfc3339("2099-01-01T00:00:00Z"));
        assert_eq!(m.to_hex(), example_hex());
    }

    #[test]
    fn earliest_time_before_wins() {
        let mut m = Macaroon::from_hex(&example_hex()).unwrap();
        m.caveats.push(Caveat {
            location: None,
            id: Bytes::from_static(b"time-before 2030-05-06T07:08:09.5+02:00"),
            vid: None,
        });
        let t = m.time_before().unwrap();
        assert_eq!(format_rfc3339(t), "2030-05-06T05:08:09Z");
    }

    #[test]
    fn rejects_garbage_without_echoing_it() {
        assert_eq!(Macaroon::from_hex("zz"), Err(ParseError::NotHex));
        assert!(Macaroon::from_hex("0300").is_err());
        let hex = example_hex();
        let truncated = &hex[..hex.len() - 4];
        let err = Macaroon::from_hex(truncated).unwrap_err().to_string();
        assert!(!err.contains("a2a2"), "{err}");
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-21T22:24:16Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-21T22:24:16Z");
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_none());
    }
}
