//! The macaroon reader (`crate::macaroon`): the V2 binary format in hex, as every caller's
//! credential arrives, and the RFC 3339 times of `time-before` caveats, which bound how long a
//! cached answer is served; and the identity layer that reads the credential out of a request's
//! headers (`layers::identity`). All of it reads bytes any client chooses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::{collection, prelude::*};

use super::{bytes, config, mutation};
use crate::{
    layers::identity::{Caller, CredentialKind},
    macaroon::{format_rfc3339, parse_rfc3339, Caveat, Macaroon},
};

/// The latest second a four-digit year can write (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

fn opt_bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(bytes(max).prop_map(Bytes::from))
}

fn time_before() -> impl Strategy<Value = Bytes> {
    (0..LAST_SECOND).prop_map(|s| {
        Bytes::from(format!(
            "time-before {}",
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(s))
        ))
    })
}

fn caveat() -> impl Strategy<Value = Caveat> {
    (
        opt_bytes(8),
        prop_oneof![time_before(), bytes(24).prop_map(Bytes::from)],
        opt_bytes(16),
    )
        .prop_map(|(location, id, vid)| Caveat { location, id, vid })
}

fn macaroon() -> impl Strategy<Value = Macaroon> {
    (
        opt_bytes(8),
        bytes(40),
        collection::vec(caveat(), 0..4),
        any::<[u8; 32]>(),
    )
        .prop_map(|(location, identifier, caveats, signature)| Macaroon {
            location,
            identifier: Bytes::from(identifier),
            caveats,
            signature: Bytes::copy_from_slice(&signature),
        })
}

/// A timestamp as lnd writes it, then perhaps with a fraction and an offset, then with some
/// characters replaced (multi-byte ones included).
fn near_timestamp() -> impl Strategy<Value = String> {
    (
        0..LAST_SECOND,
        proptest::option::of("\\.[0-9]{1,10}"),
        prop_oneof![Just("Z".to_string()), "[+-][0-9]{2}:[0-9]{2}", "\\PC{0,7}"],
        collection::vec(
            (
                any::<usize>(),
                prop_oneof![
                    proptest::char::range('0', '9'),
                    proptest::sample::select(vec!['+', '-', ':', '.', 'T', 'Z', ' ']),
                    any::<char>(),
                ],
            ),
            0..3,
        ),
    )
        .prop_map(|(secs, frac, zone, edits)| {
            let base = format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
            let mut chars: Vec<char> = format!("{}{}{zone}", &base[..19], frac.unwrap_or_default())
                .chars()
                .collect();
            for (i, c) in edits {
                let n = chars.len();
                chars[i % n] = c;
            }
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(config())]

    /// A macaroon written and read back is the macaroon written, in binary and in hex (with
    /// the white space a header value may carry).
    #[test]
    fn macaroons_round_trip(m in macaroon()) {
        prop_assert_eq!(Macaroon::decode(&m.encode()).unwrap(), m.clone());
        prop_assert_eq!(Macaroon::from_hex(&format!(" {}\t", m.to_hex())).unwrap(), m);
    }

    /// Attenuation (appending caveats) never changes the identifier litgate names a caller by.
    #[test]
    fn attenuation_keeps_the_identifier(m in macaroon(), extra in collection::vec(caveat(), 1..3)) {
        let mut attenuated = m.clone();
        attenuated.caveats.extend(extra);
        let read = Macaroon::decode(&attenuated.encode()).unwrap();
        prop_assert_eq!(read.identifier, m.identifier);
    }

    /// Any bytes, and any mutation of a valid macaroon, are read or refused (never a panic,
    /// never a read past the end); what is read is what its own encoding reads as.
    #[test]
    fn any_bytes_are_read_or_refused(
        input in prop_oneof![
            (macaroon(), mutation()).prop_map(|(m, mu)| mu.apply(&m.encode())),
            bytes(96),
        ],
    ) {
        if let Ok(m) = Macaroon::decode(&input) {
            prop_assert_eq!(Macaroon::decode(&m.encode()).unwrap(), m.clone());
            prop_assert!(m.encode().len() <= input.len(), "read more than was there");
            let _ = m.time_before();
        }
        let _ = Macaroon::from_hex(&hex::encode(&input));
        let _ = Macaroon::from_hex(&String::from_utf8_lossy(&input));
    }

    /// Times lnd writes read back as the time written; an offset moves the time by itself.
    #[test]
    fn rfc3339_round_trips(secs in 0..LAST_SECOND, offset_min in -(23 * 60 + 59)..=(23i64 * 60 + 59)) {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        let text = format_rfc3339(t);
        prop_assert_eq!(parse_rfc3339(&text), Some(t));
        let sign = if offset_min < 0 { '-' } else { '+' };
        let shifted = format!(
            "{}{sign}{:02}:{:02}",
            &text[..19],
            offset_min.abs() / 60,
            offset_min.abs() % 60
        );
        let expected = (secs as i64 - offset_min * 60).max(0) as u64;
        prop_assert_eq!(
            parse_rfc3339(&shifted),
            Some(UNIX_EPOCH + Duration::from_secs(expected))
        );
    }

    /// Any text in a `time-before` caveat is a time or nothing, never a panic; a time read
    /// from it is at most a second's fraction off the whole seconds it names.
    #[test]
    fn rfc3339_any_text_is_a_time_or_nothing(text in prop_oneof![near_timestamp(), "\\PC{0,32}"]) {
        if let Some(t) = parse_rfc3339(&text) {
            prop_assert!(t <= UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 2 * 86_400));
            let _: SystemTime = t;
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The identity layer reads a credential from whichever header carries it, keeps the
    /// bytes exactly as sent, parses a macaroon exactly when the reader accepts it, and never
    /// shows the credential in its `Debug` output (what a log line would print).
    #[test]
    fn credentials_are_read_as_sent_and_never_shown(
        carrier in prop_oneof![
            Just("macaroon"),
            Just("grpc-metadata-macaroon"),
            Just("authorization"),
        ],
        value in prop_oneof![
            macaroon().prop_map(|m| m.to_hex()),
            (macaroon(), mutation()).prop_map(|(m, mu)| hex::encode(mu.apply(&m.encode()))),
            "[Bb][Aa][Ss][Ii][Cc] [A-Za-z0-9+/=]{1,24}",
            "[ -~]{0,40}",
        ],
    ) {
        let Ok(header) = http::HeaderValue::from_str(&value) else { return Ok(()) };
        let mut headers = http::HeaderMap::new();
        headers.insert(carrier, header);
        let caller = Caller::from_parts(&headers, None);
        let basic = value.len() > 6 && value[..6].eq_ignore_ascii_case("basic ");
        match (carrier, caller.credential.as_ref()) {
            ("authorization", None) => prop_assert!(!basic),
            ("authorization", Some(c)) => {
                prop_assert!(basic && c.kind == CredentialKind::Basic && c.macaroon.is_none());
                prop_assert_eq!(&c.raw[..], value.as_bytes());
            }
            (_, Some(c)) => {
                prop_assert_eq!(c.kind, CredentialKind::Macaroon);
                prop_assert_eq!(&c.raw[..], value.as_bytes());
                prop_assert_eq!(c.macaroon.clone(), Macaroon::from_hex(&value).ok());
                prop_assert_eq!(c.identifier(), c.macaroon.as_ref().map(|m| &m.identifier));
                let _ = c.time_before();
            }
            (_, None) => prop_assert!(false, "a macaroon header always gives a credential"),
        }
        let shown = format!("{caller:?}");
        if value.len() >= 12 {
            prop_assert!(!shown.contains(&value), "{}", shown);
        }
    }
}

/// Found by `rfc3339_any_text_is_a_time_or_nothing` (20,000 cases; the first case below is
/// its shrunk input): an offset holding a multi-byte character made the reader slice inside it
/// and panic, and any client can put one in a `time-before` caveat of its macaroon.
#[test]
fn regression_multibyte_offset_is_refused() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00-\u{102a0} "), None);
    assert_eq!(parse_rfc3339("2030-01-01T00:00:00+0\u{e9}12"), None);
    assert_eq!(parse_rfc3339("2030-01-01T00:00:00+\u{e9}:12"), None);
    assert_eq!(parse_rfc3339("2030-01-01T00:00:00\u{e9}0:12"), None);
}
