//! A real macaroon baker and verifier for the demo litd: lnd-style V3 identifiers
//! (`0x03 || MacaroonId`), the standard HMAC-SHA256 signature chain, first-party caveat checks
//! (`time-before`, `ipaddr`, `lnd-custom`) and the identifier's ops as permissions.
//!
//! It exists so that demos and tests exercise real credentials end to end (attenuated copies,
//! expired ones, forged signatures). It is a fake: litgate itself never verifies a macaroon.
//! Nothing here logs or formats a root key or a signature.

use std::time::SystemTime;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::macaroon::{Caveat, Macaroon};

type HmacSha256 = Hmac<Sha256>;

/// Every entity litd's permission map names (LiT's `perms/permissions.go`).
pub const LITD_ENTITIES: &[&str] = &[
    "sessions",
    "autopilot",
    "account",
    "actions",
    "privacymap",
    "proxy",
    "supermacaroon",
];

/// The location litd bakes into its macaroons.
pub const LOCATION: &str = "litd";

/// lnd's identifier version byte (macaroon-bakery v3).
const ID_VERSION: u8 = 0x03;

/// One permission op inside an identifier: an entity and the actions allowed on it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Op {
    /// `sessions`, `autopilot`, ...
    #[prost(string, tag = "1")]
    pub entity: String,
    /// `read`, `write`.
    #[prost(string, repeated, tag = "2")]
    pub actions: Vec<String>,
}

/// macaroon-bakery's `MacaroonId`, the protobuf after the version byte.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MacaroonId {
    /// Random nonce.
    #[prost(bytes = "vec", tag = "1")]
    pub nonce: Vec<u8>,
    /// Root key id (decimal text).
    #[prost(bytes = "vec", tag = "2")]
    pub storage_id: Vec<u8>,
    /// The operations the macaroon grants.
    #[prost(message, repeated, tag = "3")]
    pub ops: Vec<Op>,
}

/// Decodes an lnd identifier (`0x03 || MacaroonId`).
pub fn decode_identifier(id: &[u8]) -> Option<MacaroonId> {
    match id.split_first() {
        Some((&ID_VERSION, rest)) => prost::Message::decode(rest).ok(),
        _ => None,
    }
}

/// Why litd refused a macaroon. The texts mimic lnd's; none contains credential bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature chain does not match the root key.
    #[error("verification failed: signature mismatch after caveat verification")]
    SignatureMismatch,
    /// A first-party caveat is not satisfied (expired, unsupported condition, ...).
    #[error("verification failed: caveat {condition:?} not satisfied: {reason}")]
    Caveat {
        /// The caveat condition text.
        condition: String,
        /// Why it failed.
        reason: &'static str,
    },
    /// A third-party caveat: litd cannot discharge those.
    #[error("verification failed: cannot verify third party caveat")]
    ThirdParty,
    /// The identifier does not grant the operation the method needs.
    #[error("permission denied")]
    PermissionDenied,
}

/// Advances a signature by one caveat: `HMAC-SHA256(key = sig, data = caveat)`.
fn chain(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds a first-party caveat to a copy of `mac` and advances its signature. Needs no root key:
/// this is what any holder of a macaroon can do to restrict it.
pub fn attenuate(mac: &Macaroon, condition: &str) -> Macaroon {
    let mut out = mac.clone();
    out.signature = Bytes::copy_from_slice(&chain(&mac.signature, condition.as_bytes()));
    out.caveats.push(Caveat {
        location: None,
        id: Bytes::copy_from_slice(condition.as_bytes()),
        vid: None,
    });
    out
}

/// Bakes and verifies macaroons with one random root key, as litd's macaroon service does.
pub struct MacaroonBaker {
    root_key: [u8; 32],
}

impl std::fmt::Debug for MacaroonBaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacaroonBaker").finish_non_exhaustive()
    }
}

impl Default for MacaroonBaker {
    fn default() -> Self {
        Self::new()
    }
}

impl MacaroonBaker {
    /// A baker with a fresh random 32-byte root key.
    pub fn new() -> Self {
        let mut root_key = [0u8; 32];
        rand::rng().fill_bytes(&mut root_key);
        Self { root_key }
    }

    /// libmacaroons/go-macaroon derive the signing key from the root key first.
    fn derived_key(&self) -> [u8; 32] {
        chain(b"macaroons-key-generator", &self.root_key)
    }

    /// Bakes a macaroon granting `ops` (entity, actions), storage id `0`, location `litd`.
    pub fn bake(&self, ops: &[(&str, &[&str])]) -> Macaroon {
        let mut nonce = vec![0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let id = MacaroonId {
            nonce,
            storage_id: b"0".to_vec(),
            ops: ops
                .iter()
                .map(|(e, a)| Op {
                    entity: (*e).to_string(),
                    actions: a.iter().map(|s| (*s).to_string()).collect(),
                })
                .collect(),
        };
        let mut identifier = vec![ID_VERSION];
        identifier.extend_from_slice(&prost::Message::encode_to_vec(&id));
        let signature = chain(&self.derived_key(), &identifier);
        Macaroon {
            location: Some(Bytes::from_static(LOCATION.as_bytes())),
            identifier: identifier.into(),
            caveats: Vec::new(),
            signature: Bytes::copy_from_slice(&signature),
        }
    }

    /// litd's default `lit.macaroon`: read and write on every litd entity.
    pub fn bake_admin(&self) -> Macaroon {
        let ops: Vec<(&str, &[&str])> = LITD_ENTITIES
            .iter()
            .map(|e| (*e, &["read", "write"][..]))
            .collect();
        self.bake(&ops)
    }

    /// Read-only on every litd entity (like a `readonly` macaroon).
    pub fn bake_readonly(&self) -> Macaroon {
        let ops: Vec<(&str, &[&str])> = LITD_ENTITIES.iter().map(|e| (*e, &["read"][..])).collect();
        self.bake(&ops)
    }

    /// Verifies `mac` at time `now`: every first-party caveat satisfied, then the signature chain
    /// (constant-time compare), then, if `required` is given, that the identifier grants that
    /// (entity, action).
    pub fn verify(
        &self,
        mac: &Macaroon,
        required: Option<(&str, &str)>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let mut sig = chain(&self.derived_key(), &mac.identifier);
        for c in &mac.caveats {
            if c.vid.is_some() {
                return Err(VerifyError::ThirdParty);
            }
            check_condition(&c.id, now)?;
            sig = chain(&sig, &c.id);
        }
        if !ct_eq(&sig, &mac.signature) {
            return Err(VerifyError::SignatureMismatch);
        }
        if let Some((entity, action)) = required {
            let id = decode_identifier(&mac.identifier).ok_or(VerifyError::PermissionDenied)?;
            let granted = id
                .ops
                .iter()
                .any(|op| op.entity == entity && op.actions.iter().any(|a| a == action));
            if !granted {
                return Err(VerifyError::PermissionDenied);
            }
        }
        Ok(())
    }
}

fn check_condition(raw: &[u8], now: SystemTime) -> Result<(), VerifyError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let fail = |reason| {
        Err(VerifyError::Caveat {
            condition: text.clone(),
            reason,
        })
    };
    let (name, arg) = text.split_once(' ').unwrap_or((text.as_str(), ""));
    match name {
        "time-before" => match crate::macaroon::parse_rfc3339(arg.trim()) {
            Some(t) if now < t => Ok(()),
            Some(_) => fail("macaroon has expired"),
            None => fail("invalid time-before caveat"),
        },
        // The demo does not know the caller's address; refusing is the safe reading.
        "ipaddr" => fail("ipaddr caveats are not supported by the demo litd"),
        // RPC middleware caveats: enforced by lnd's interceptors, not by the macaroon service.
        "lnd-custom" => Ok(()),
        _ => fail("caveat not recognized"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::macaroon::format_rfc3339;

    #[test]
    fn baked_macaroon_round_trips_and_verifies() {
        let baker = MacaroonBaker::new();
        let mac = baker.bake_admin();
        let back = Macaroon::from_hex(&mac.to_hex()).unwrap();
        assert_eq!(back, mac);
        assert_eq!(
            baker.verify(&back, Some(("sessions", "write")), SystemTime::now()),
            Ok(())
        );
        let id = decode_identifier(&mac.identifier).unwrap();
        assert_eq!(id.storage_id, b"0");
        assert_eq!(id.ops.len(), LITD_ENTITIES.len());
    }

    #[test]
    fn attenuation_keeps_identifier_and_checks_time() {
        let baker = MacaroonBaker::new();
        let mac = baker.bake_admin();
        let now = SystemTime::now();
        let future = attenuate(
            &mac,
            &format!(
                "time-before {}",
                format_rfc3339(now + Duration::from_secs(3600))
            ),
        );
        assert_eq!(future.identifier, mac.identifier);
        assert_eq!(baker.verify(&future, None, now), Ok(()));
        let past = attenuate(
            &mac,
            &format!(
                "time-before {}",
                format_rfc3339(now - Duration::from_secs(3600))
            ),
        );
        assert!(matches!(
            baker.verify(&past, None, now),
            Err(VerifyError::Caveat {
                reason: "macaroon has expired",
                ..
            })
        ));
        let custom = attenuate(&mac, "lnd-custom privacy");
        assert_eq!(baker.verify(&custom, None, now), Ok(()));
        let ip = attenuate(&mac, "ipaddr 127.0.0.1");
        assert!(baker.verify(&ip, None, now).is_err());
    }

    #[test]
    fn forged_and_foreign_macaroons_fail() {
        let baker = MacaroonBaker::new();
        let mut mac = baker.bake_admin();
        // Dropping a caveat must not verify.
        let att = attenuate(&mac, "lnd-custom privacy");
        let mut stripped = att.clone();
        stripped.caveats.clear();
        assert_eq!(
            baker.verify(&stripped, None, SystemTime::now()),
            Err(VerifyError::SignatureMismatch)
        );
        let other = MacaroonBaker::new();
        assert_eq!(
            other.verify(&mac, None, SystemTime::now()),
            Err(VerifyError::SignatureMismatch)
        );
        mac.signature = Bytes::from_static(&[0u8; 32]);
        assert_eq!(
            baker.verify(&mac, None, SystemTime::now()),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn readonly_macaroon_cannot_write() {
        let baker = MacaroonBaker::new();
        let ro = baker.bake_readonly();
        assert_eq!(
            baker.verify(&ro, Some(("sessions", "read")), SystemTime::now()),
            Ok(())
        );
        assert_eq!(
            baker.verify(&ro, Some(("sessions", "write")), SystemTime::now()),
            Err(VerifyError::PermissionDenied)
        );
    }
}
