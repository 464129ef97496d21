//! grpc-web-text: the frames of grpc-web, base64-encoded. A sender may encode (and pad) every
//! write on its own, as improbable's server does, so padding can appear mid-stream; the
//! decoder takes the text in arbitrary pieces.

use base64::Engine;
use bytes::Bytes;

/// Why text is not grpc-web-text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Not base64.
    #[error("not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Ends inside a 4-character group.
    #[error("not valid base64: truncated")]
    Truncated,
}

/// Incremental grpc-web-text decoding. Whitespace is ignored; an incomplete 4-character group
/// waits for the next piece.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// Decodes what `piece` completes.
    pub fn feed(&mut self, piece: &[u8]) -> Result<Bytes, TextError> {
        self.pending
            .extend(piece.iter().copied().filter(|c| !c.is_ascii_whitespace()));
        let complete = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(complete / 4 * 3);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut rest = &self.pending[..complete];
        while !rest.is_empty() {
            // A run ends with the first group that carries padding, or at the end.
            let end = rest
                .chunks(4)
                .position(|g| g.contains(&b'='))
                .map_or(rest.len(), |i| (i + 1) * 4);
            b64.decode_vec(&rest[..end], &mut out)?;
            rest = &rest[end..];
        }
        self.pending.drain(..complete);
        Ok(Bytes::from(out))
    }
}

impl Decoder {
    /// Whether the text so far ends on a whole 4-character group: where another separately
    /// padded piece may follow.
    pub fn aligned(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Decodes a whole grpc-web-text body.
pub fn decode(body: &[u8]) -> Result<Bytes, TextError> {
    let mut dec = Decoder::default();
    let out = dec.feed(body)?;
    if !dec.pending.is_empty() {
        return Err(TextError::Truncated);
    }
    Ok(out)
}

/// Encodes a grpc-web-text body.
pub fn encode(body: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separately_padded_pieces_decode_in_any_chunking() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let a = super::super::frame::message(b"a");
        let text = format!("{}{}", b64.encode(&a), b64.encode(b"\x80\x00\x00\x00\x00"));
        let decoded = decode(text.as_bytes()).unwrap();
        assert_eq!(&decoded[..6], &a[..]);
        for size in [1, 3, 5] {
            let mut dec = Decoder::default();
            let mut out = Vec::new();
            for c in text.as_bytes().chunks(size) {
                out.extend_from_slice(&dec.feed(c).unwrap());
            }
            assert_eq!(out, decoded.to_vec(), "chunk {size}");
        }
        assert!(matches!(decode(b"!!!!"), Err(TextError::Base64(_))));
        assert_eq!(decode(b"AAA"), Err(TextError::Truncated));
    }
}
