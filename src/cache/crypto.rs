//! Key derivation and authenticated encryption for the session cache. Owns the one secret
//! derivation from a caller's credential: HKDF-SHA256 over the **full** credential bytes, salted
//! with the store's random cache salt, expanded twice (different `info` labels) into a lookup id
//! (part of the cache key) and a ChaCha20-Poly1305 key. Neither output reveals the credential,
//! and neither can be computed from the sled file alone: without the credential an entry can be
//! neither found nor read. This module never logs, formats or returns key material in errors.

use chacha20poly1305::{
    aead::{Aead, Payload},
    ChaCha20Poly1305, KeyInit, Nonce,
};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

/// Length of the lookup id derived from a credential.
pub const ID_LEN: usize = 32;
/// Length of the per-entry random nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

const INFO_ID: &[u8] = b"litgate session cache v1: lookup id";
const INFO_KEY: &[u8] = b"litgate session cache v1: chacha20poly1305 key";

/// What one credential derives: the id that names its entries and the key that seals them.
/// Secret: `Debug` shows nothing of either.
pub struct CredentialKeys {
    id: [u8; ID_LEN],
    cipher: ChaCha20Poly1305,
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
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255 * 32 limit, so expand cannot fail.
        let _ = hk.expand(INFO_ID, &mut id);
        let _ = hk.expand(INFO_KEY, &mut key);
        let cipher = ChaCha20Poly1305::new(&key.into());
        key.fill(0);
        CredentialKeys { id, cipher }
    }

    /// The lookup id: a keyed digest of the credential, the first part of every cache key.
    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.id
    }

    /// Encrypts `plaintext` with a fresh random nonce, binding `aad`; returns `nonce || ct || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let nonce_arr = Nonce::from(nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        // ChaCha20-Poly1305 refuses only messages beyond 256 GiB; a list answer is bounded far
        // below that by the body limit, so this branch cannot be taken.
        if let Ok(ct) = self.cipher.encrypt(
            &nonce_arr,
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Decrypts `nonce || ct || tag` sealed by [`seal`](Self::seal) with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Undecryptable> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Undecryptable);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| Undecryptable)?;
        self.cipher
            .decrypt(&nonce, Payload { msg: ct, aad })
            .map_err(|_| Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_kind_of_tampering_fails() {
        let k = CredentialKeys::derive(b"salt", b"0201cred");
        let sealed = k.seal(b"aad", b"pairing secret");
        assert_eq!(k.open(b"aad", &sealed).unwrap(), b"pairing secret");
        assert!(!sealed.windows(14).any(|w| w == b"pairing secret"));
        // Fresh nonce per entry.
        assert_ne!(k.seal(b"aad", b"pairing secret"), sealed);
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(k.open(b"aad", &t), Err(Undecryptable), "flip at {i}");
        }
        assert_eq!(k.open(b"other aad", &sealed), Err(Undecryptable));
        assert_eq!(k.open(b"aad", &sealed[..10]), Err(Undecryptable));
        // Another credential (e.g. an attenuated copy) or another store salt: another id and key.
        for other in [
            CredentialKeys::derive(b"salt", b"0201cre"),
            CredentialKeys::derive(b"salt2", b"0201cred"),
        ] {
            assert_ne!(other.id(), k.id());
            assert_eq!(other.open(b"aad", &sealed), Err(Undecryptable));
        }
        assert_eq!(CredentialKeys::derive(b"salt", b"0201cred").id(), k.id());
        assert_eq!(format!("{k:?}"), "CredentialKeys(..)");
    }
}
