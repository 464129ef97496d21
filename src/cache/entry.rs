//! The stored entry: a clear header (layout version, cache generation, freshness bounds), then
//! the answer sealed under the credential's key with the key and the clear header as
//! associated data. The sealed plaintext is the answer as bytes: status, headers, body,
//! trailers. An entry that does not parse or open is a miss, never an error. Opening goes
//! through the replay budget ([`Replays`]): a hit joins the plaintext already being replayed
//! for the same sealed value, or opens its own copy (one copy out of sled, decrypted in place)
//! if the budget can hold it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use zeroize::Zeroizing;

use super::{
    crypto::{CredentialKeys, NONCE_LEN, TAG_LEN},
    replay::Replays,
};
use crate::grpc::status::Answer;

/// Entry layout version (first byte of every stored value). Version 1 sealed with
/// ChaCha20-Poly1305; its entries are dropped as misses (not counted as tampered).
const ENTRY_VERSION: u8 = 2;
/// The layout before this one.
const PREVIOUS_VERSION: u8 = 1;
/// version (1) ‖ generation (8) ‖ fresh_until ms (8) ‖ hard_until ms (8).
const HEADER_LEN: usize = 25;
/// The clear prefix of a value: its header and nonce.
const SEALED_BY_LEN: usize = HEADER_LEN + NONCE_LEN;

/// The clear header of a stored entry (authenticated as associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryHeader {
    pub(super) generation: u64,
    /// Unix ms until which the entry is fresh.
    pub(super) fresh_until: u64,
    /// Unix ms after which it may not be served at all (the credential's `time-before`).
    pub(super) hard_until: u64,
}

impl EntryHeader {
    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = ENTRY_VERSION;
        h[1..9].copy_from_slice(&self.generation.to_be_bytes());
        h[9..17].copy_from_slice(&self.fresh_until.to_be_bytes());
        h[17..25].copy_from_slice(&self.hard_until.to_be_bytes());
        h
    }

    pub(super) fn parse(v: &[u8]) -> Option<Self> {
        if v.len() < HEADER_LEN || v[0] != ENTRY_VERSION {
            return None;
        }
        let u = |r: std::ops::Range<usize>| <[u8; 8]>::try_from(&v[r]).ok().map(u64::from_be_bytes);
        Some(EntryHeader {
            generation: u(1..9)?,
            fresh_until: u(9..17)?,
            hard_until: u(17..25)?,
        })
    }

    pub(super) fn stale_until(&self, max_stale: Duration) -> u64 {
        self.fresh_until
            .saturating_add(max_stale.as_millis() as u64)
            .min(self.hard_until)
    }
}

/// Whether `v` is an entry of the layout before this one (written by an older litgate).
pub(super) fn is_previous_layout(v: &[u8]) -> bool {
    v.first() == Some(&PREVIOUS_VERSION)
}

/// Why a stored value gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unopened {
    /// It did not authenticate or parse (tampered, truncated, another credential's).
    Undecryptable,
    /// The replay budget cannot hold its plaintext now.
    OverBudget,
}

/// Seals `answer` (stored at `stored_at` ms) under `keys` for `key`: the clear header, the
/// nonce, then the ciphertext and tag, built in one buffer and encrypted in place.
pub(super) fn seal(
    keys: &CredentialKeys,
    key: &[u8],
    header: &EntryHeader,
    stored_at: u64,
    answer: &Answer,
) -> Vec<u8> {
    let header = header.encode();
    let mut value = Vec::with_capacity(SEALED_BY_LEN + encoded_len(answer) + TAG_LEN);
    value.extend_from_slice(&header);
    value.extend_from_slice(&[0u8; NONCE_LEN]);
    encode_answer(&mut value, stored_at, answer);
    keys.seal_in_place(&aad(key, &header), &mut value, HEADER_LEN);
    value
}

/// The answer a stored `value` seals for `key`: the plaintext another replay of the same
/// sealed value holds, else opened under `keys` if `replays` can hold it.
pub(super) fn open(
    keys: &CredentialKeys,
    key: &[u8],
    value: &[u8],
    replays: &std::sync::Arc<Replays>,
) -> Result<Answer, Unopened> {
    if value.len() < SEALED_BY_LEN + TAG_LEN {
        return Err(Unopened::Undecryptable);
    }
    // One sealing is named by its header, nonce and tag: a value rewritten or tampered with
    // in any of them is opened afresh.
    let sealed_by = [&value[..SEALED_BY_LEN], &value[value.len() - TAG_LEN..]].concat();
    if let Some(plain) = replays.shared(key, &sealed_by) {
        return decode_answer(plain).ok_or(Unopened::Undecryptable);
    }
    let sealed = &value[SEALED_BY_LEN..];
    let charge = replays
        .charge(sealed.len().saturating_sub(TAG_LEN))
        .ok_or(Unopened::OverBudget)?;
    // The one copy: sled's buffer is shared and immutable, the decryption is in place.
    let mut plain = Zeroizing::new(sealed.to_vec());
    let (header, nonce) = value[..SEALED_BY_LEN].split_at(HEADER_LEN);
    let len = keys
        .open_in_place(&aad(key, header), nonce, &mut plain)
        .map_err(|_| Unopened::Undecryptable)?
        .len();
    plain.truncate(len);
    decode_answer(replays.publish(key, &sealed_by, plain, charge)).ok_or(Unopened::Undecryptable)
}

/// The associated data: the entry's key and its clear header.
fn aad(key: &[u8], header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key.len() + header.len());
    aad.extend_from_slice(key);
    aad.extend_from_slice(header);
    aad
}

fn put_headers(out: &mut Vec<u8>, h: Option<&HeaderMap>) {
    let Some(h) = h else {
        out.put_u8(0);
        return;
    };
    out.put_u8(1);
    out.put_u16(h.len() as u16);
    for (k, v) in h {
        out.put_u16(k.as_str().len() as u16);
        out.put_slice(k.as_str().as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
}

fn get_headers(b: &mut Bytes) -> Option<Option<HeaderMap>> {
    if !b.has_remaining() {
        return None;
    }
    if b.get_u8() == 0 {
        return Some(None);
    }
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16();
    // The count comes from disk: reserve no more than the bytes left can hold (a header takes
    // at least 7), and a count past what a HeaderMap can hold is a miss, not a panic.
    let mut h = HeaderMap::try_with_capacity(usize::from(n).min(b.remaining() / 7)).ok()?;
    for _ in 0..n {
        if b.remaining() < 2 {
            return None;
        }
        let kl = b.get_u16() as usize;
        if b.remaining() < kl + 4 {
            return None;
        }
        let k = HeaderName::from_bytes(&b.split_to(kl)).ok()?;
        let vl = b.get_u32() as usize;
        if b.remaining() < vl {
            return None;
        }
        let v = HeaderValue::from_maybe_shared(b.split_to(vl)).ok()?;
        h.append(k, v);
    }
    Some(Some(h))
}

/// The encoded size of `c` (see [`encode_answer`]), to allocate once.
fn encoded_len(c: &Answer) -> usize {
    let headers = |h: Option<&HeaderMap>| {
        1 + h.map_or(0, |h| {
            2 + h
                .iter()
                .map(|(k, v)| 6 + k.as_str().len() + v.len())
                .sum::<usize>()
        })
    };
    8 + 2 + headers(Some(&c.headers)) + 4 + c.body.len() + headers(c.trailers.as_ref())
}

/// stored_at ms ‖ status ‖ headers ‖ body length ‖ body ‖ trailers (the sealed plaintext),
/// appended to `out`.
fn encode_answer(out: &mut Vec<u8>, stored_at: u64, c: &Answer) {
    out.put_u64(stored_at);
    out.put_u16(c.status.as_u16());
    put_headers(out, Some(&c.headers));
    out.put_u32(c.body.len() as u32);
    out.put_slice(&c.body);
    put_headers(out, c.trailers.as_ref());
}

fn decode_answer(mut b: Bytes) -> Option<Answer> {
    if b.remaining() < 10 {
        return None;
    }
    let _stored_at = b.get_u64();
    let status = StatusCode::from_u16(b.get_u16()).ok()?;
    let headers = get_headers(&mut b)??;
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_u32() as usize;
    if b.remaining() < len {
        return None;
    }
    // A slice of the decrypted buffer: the body is not copied again (and the buffer stays
    // charged to the replay budget while any slice of it lives).
    let body = b.split_to(len);
    let trailers = get_headers(&mut b)?;
    b.is_empty().then_some(Answer {
        status,
        headers,
        body,
        trailers,
    })
}

// Property-based fuzz tests of the entry reader (a child module: the reader is private).
#[cfg(test)]
#[path = "../fuzz/cache_entry.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use http::header;

    use super::*;

    #[test]
    fn answers_round_trip_and_truncation_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let c = Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"body"),
            trailers: Some(trailers),
        };
        let mut enc = Vec::new();
        encode_answer(&mut enc, 1, &c);
        assert_eq!(enc.len(), encoded_len(&c));
        assert_eq!(decode_answer(Bytes::from(enc.clone())), Some(c));
        for cut in 0..enc.len() {
            assert_eq!(
                decode_answer(Bytes::from(enc[..cut].to_vec())),
                None,
                "cut at {cut}"
            );
        }
    }
}
