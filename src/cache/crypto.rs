//! Key derivation and authenticated encryption for the session cache. Owns the one secret
//! derivation from a caller's credential: HKDF-SHA256 over the **full** credential bytes, salted
//! with the store's random cache salt, expanded twice (different `info` labels) into a lookup id
//! (part of the cache key) and an AEAD key. Neither output reveals the credential, and neither
//! can be computed from the sled file alone: without the credential an entry can be neither
//! found nor read. This module never logs, formats or returns key material in errors.
//!
//! The AEAD is ring's AES-256-GCM (assembly, AES-NI and carry-less multiply where the CPU has
//! them, constant-time fallbacks otherwise), sealing and opening in place: a cache hit costs
//! one copy of the ciphertext out of sled and the decryption, nothing else. On this project's
//! x86-64 machines it opens a 200 KB answer several times faster than the portable
//! ChaCha20-Poly1305 the cache used before (`benches/cache.rs`, group `aead`). Nonces are
//! random (96 bits) under a key per credential; AES-GCM's random-nonce bound (2^32 messages per
//! key) is far beyond the entries one credential can write.

use hkdf::Hkdf;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;

/// Length of the lookup id derived from a credential.
pub const ID_LEN: usize = 32;
/// Length of the per-entry random nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

const INFO_ID: &[u8] = b"litgate session cache v1: lookup id";
const INFO_KEY: &[u8] = b"litgate session cache v2: aes-256-gcm key";

/// What one credential derives: the id that names its entries and the key that seals them.
/// Secret: `Debug` shows nothing of either.
pub struct CredentialKeys {
    id: [u8; ID_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for CredentialKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKeys(..)")
    }
}

/// An entry that could not be opened: wrong key, tampered bytes, or truncated. Deliberately
/// carries no detail (the caller counts it and treats it as a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cache entry could not be authenticated")]
pub struct Undecryptable;

impl CredentialKeys {
    /// Derives the lookup id and the AEAD key of `credential` under the store's `salt`.
    pub fn derive(salt: &[u8], credential: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(salt), credential);
        let mut id = [0u8; ID_LEN];
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 255 * 32 limit, so expand cannot fail.
        let _ = hk.expand(INFO_ID, &mut id);
        let _ = hk.expand(INFO_KEY, key.as_mut());
        // A 32-byte key is exactly what AES-256-GCM takes, so this cannot fail.
        let key = UnboundKey::new(&AES_256_GCM, key.as_ref())
            .map(LessSafeKey::new)
            .expect("a 32-byte key is an AES-256-GCM key");
        CredentialKeys { id, key }
    }

    /// The lookup id: a keyed digest of the credential, the first part of every cache key.
    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// Seals `buf[at + NONCE_LEN..]` in place, binding `aad`: writes a fresh random nonce into
    /// `buf[at..at + NONCE_LEN]` and appends the tag, so `buf[at..]` becomes
    /// `nonce ‖ ciphertext ‖ tag`. `buf` must hold at least `at + NONCE_LEN` bytes.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, at: usize) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        buf[at..at + NONCE_LEN].copy_from_slice(&nonce);
        let plain = &mut buf[at + NONCE_LEN..];
        // AES-GCM refuses only messages beyond 64 GiB; a list answer is bounded far below that
        // by `cache.max_entry_bytes`, so this cannot fail.
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), plain)
            .expect("a cache entry is far below AES-GCM's message limit");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Opens `nonce ‖ ciphertext ‖ tag` sealed by [`seal_in_place`](Self::seal_in_place) with
    /// the same `aad`: `sealed` is the ciphertext and tag, decrypted in place; returns the
    /// plaintext, a prefix of `sealed`.
    pub fn open_in_place<'a>(
        &self,
        aad: &[u8],
        nonce: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], Undecryptable> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Undecryptable)?;
        self.key
            .open_in_place(nonce, Aad::from(aad), sealed)
            .map_err(|_| Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(k: &CredentialKeys, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(plain);
        k.seal_in_place(aad, &mut buf, 0);
        buf
    }

    fn open(k: &CredentialKeys, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Undecryptable> {
        if sealed.len() < NONCE_LEN {
            return Err(Undecryptable);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let mut rest = rest.to_vec();
        k.open_in_place(aad, nonce, &mut rest).map(|p| p.to_vec())
    }

    #[test]
    fn round_trip_and_every_kind_of_tampering_fails() {
        let k = CredentialKeys::derive(b"salt", b"0201cred");
        let sealed = seal(&k, b"aad", b"pairing secret");
        assert_eq!(sealed.len(), NONCE_LEN + 14 + TAG_LEN);
        assert_eq!(open(&k, b"aad", &sealed).unwrap(), b"pairing secret");
        assert!(!sealed.windows(14).any(|w| w == b"pairing secret"));
        // Fresh nonce per entry.
        assert_ne!(seal(&k, b"aad", b"pairing secret"), sealed);
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(open(&k, b"aad", &t), Err(Undecryptable), "flip at {i}");
        }
        assert_eq!(open(&k, b"other aad", &sealed), Err(Undecryptable));
        assert_eq!(open(&k, b"aad", &sealed[..10]), Err(Undecryptable));
        assert_eq!(open(&k, b"aad", &sealed[..20]), Err(Undecryptable));
        // Another credential (e.g. an attenuated copy) or another store salt: another id and key.
        for other in [
            CredentialKeys::derive(b"salt", b"0201cre"),
            CredentialKeys::derive(b"salt2", b"0201cred"),
        ] {
            assert_ne!(other.id(), k.id());
            assert_eq!(open(&other, b"aad", &sealed), Err(Undecryptable));
        }
        assert_eq!(CredentialKeys::derive(b"salt", b"0201cred").id(), k.id());
        assert_eq!(format!("{k:?}"), "CredentialKeys(..)");
    }
}
