//! The length-prefixed frame every gRPC protocol carries: one flag byte, a 4-byte big-endian
//! length, the payload. gRPC and grpc-web share it (and grpc-web-text once base64 is decoded,
//! see [`super::web_text`]); grpc-web adds the trailer frame (flag bit `0x80`) whose payload is a
//! header block ([`super::status::parse_block`]). This is the only frame parser in litgate:
//! [`FrameReader`] walks frames across chunks as they stream, [`frames`] and [`single_message`]
//! are the same walk over a body read whole, and [`encode`] writes one.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Flag bit of a compressed message.
pub const COMPRESSED: u8 = 0x01;
/// Flag bit of grpc-web's trailer frame (and of the header frames grpc-websockets adds).
pub const TRAILERS: u8 = 0x80;
/// Bytes before the payload: flag and length.
pub const PREFIX_LEN: usize = 5;

/// One frame, prefix included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The flag byte.
    pub fn flag(&self) -> u8 {
        self.raw[0]
    }

    /// Whether it is grpc-web's trailer frame (a header block, not a message).
    pub fn is_trailers(&self) -> bool {
        self.flag() & TRAILERS != 0
    }

    /// The payload: a message, or a header block.
    pub fn payload(&self) -> Bytes {
        self.raw.slice(PREFIX_LEN..)
    }

    /// The frame as it was on the wire, prefix included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// Why a body is not what a unary call carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than five bytes.
    #[error("malformed gRPC frame: shorter than the 5-byte header")]
    Short,
    /// The frame ends before its length says.
    #[error("malformed gRPC frame: header says {said} bytes, body has {has}")]
    Truncated {
        /// The length in the prefix.
        said: usize,
        /// The bytes after the prefix.
        has: usize,
    },
    /// A compressed message (litgate must read what it inspects).
    #[error("compressed message")]
    Compressed,
    /// A flag byte that is neither 0 nor compressed.
    #[error("malformed gRPC frame: unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// More than the one message of a unary call.
    #[error("more than one message in a unary call")]
    MoreThanOne,
}

/// Walks frames across chunks as a body streams past. Whole frames are kept until taken
/// ([`FrameReader::whole`]), or message payloads are skipped without being kept and only
/// trailer frames up to a size are kept ([`FrameReader::trailers_only`]).
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    /// Message bytes still to drop (trailers-only mode).
    skip: usize,
    /// `None`: keep every frame; `Some(max)`: keep trailer frames up to `max` bytes only.
    trailers_only: Option<usize>,
}

/// What a [`FrameReader`] found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole frame.
    Frame(Frame),
    /// More bytes are needed.
    Pending,
    /// A trailer frame longer than the reader keeps (trailers-only mode).
    Oversized,
}

impl FrameReader {
    /// A reader keeping every frame whole.
    pub fn whole() -> Self {
        FrameReader {
            buf: BytesMut::new(),
            skip: 0,
            trailers_only: None,
        }
    }

    /// A reader that drops messages as they pass and keeps trailer frames of at most `max`
    /// bytes: what watching a stream for its status needs, without buffering the stream.
    pub fn trailers_only(max: usize) -> Self {
        FrameReader {
            buf: BytesMut::new(),
            skip: 0,
            trailers_only: Some(max),
        }
    }

    /// Adds a chunk. In trailers-only mode message bytes are dropped as they arrive.
    pub fn push(&mut self, mut chunk: Bytes) {
        let Some(_) = self.trailers_only else {
            self.buf.put(chunk);
            return;
        };
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len());
                chunk.advance(n);
                self.skip -= n;
                continue;
            }
            // Up to a whole prefix, to see what comes next.
            if self.buf.len() < PREFIX_LEN {
                let n = (PREFIX_LEN - self.buf.len()).min(chunk.len());
                self.buf.put(chunk.split_to(n));
                continue;
            }
            if self.buf[0] & TRAILERS == 0 {
                // A message: drop its prefix and its payload.
                self.skip = declared_len(&self.buf);
                self.buf.clear();
                continue;
            }
            // A trailer frame: keep it (its size is checked by `next`).
            self.buf.put(chunk);
            return;
        }
    }

    /// The next whole frame, if the bytes so far complete one.
    pub fn next_frame(&mut self) -> Next {
        if self.buf.len() < PREFIX_LEN {
            return Next::Pending;
        }
        let len = declared_len(&self.buf);
        if let Some(max) = self.trailers_only {
            if self.buf[0] & TRAILERS == 0 {
                // Only after `push` stopped mid-prefix; the payload is skipped on the next push.
                return Next::Pending;
            }
            if len > max {
                return Next::Oversized;
            }
        }
        if self.buf.len() < PREFIX_LEN + len {
            return Next::Pending;
        }
        Next::Frame(Frame {
            raw: self.buf.split_to(PREFIX_LEN + len).freeze(),
        })
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the bytes so far end exactly where a frame ends (nothing held, nothing to skip):
    /// where a stream can be closed without cutting a frame.
    pub fn at_boundary(&self) -> bool {
        self.buf.is_empty() && self.skip == 0
    }
}

fn declared_len(prefix: &[u8]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

/// Every frame of a body read whole; `None` when it does not end on a frame boundary.
pub fn frames(body: &Bytes) -> Option<Vec<Frame>> {
    let mut reader = FrameReader::whole();
    reader.push(body.clone());
    let mut out = Vec::new();
    while let Next::Frame(f) = reader.next_frame() {
        out.push(f);
    }
    reader.pending().is_empty().then_some(out)
}

/// The one uncompressed message of a unary request body.
pub fn single_message(body: &Bytes) -> Result<Bytes, FrameError> {
    let mut reader = FrameReader::whole();
    reader.push(body.clone());
    let Next::Frame(frame) = reader.next_frame() else {
        return Err(match body.len() {
            n if n < PREFIX_LEN => FrameError::Short,
            n => FrameError::Truncated {
                said: declared_len(body),
                has: n - PREFIX_LEN,
            },
        });
    };
    match frame.flag() {
        0 => {}
        f if f & COMPRESSED != 0 => return Err(FrameError::Compressed),
        f => return Err(FrameError::UnknownFlags(f)),
    }
    if !reader.pending().is_empty() {
        return Err(FrameError::MoreThanOne);
    }
    Ok(frame.payload())
}

/// The one uncompressed message of a unary answer read whole (messages, then grpc-web's
/// trailer frame if the protocol has one); `None` for anything else.
pub fn answer_message(body: &Bytes) -> Option<Bytes> {
    let mut messages = frames(body)?.into_iter().filter(|f| !f.is_trailers());
    let only = messages.next()?;
    (only.flag() == 0 && messages.next().is_none()).then(|| only.payload())
}

/// One frame: `flag`, the payload's length, the payload.
pub fn encode(flag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(PREFIX_LEN + payload.len());
    b.put_u8(flag);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// One uncompressed message frame.
pub fn message(payload: &[u8]) -> Bytes {
    encode(0, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(block: &str) -> Bytes {
        encode(TRAILERS, block.as_bytes())
    }

    #[test]
    fn whole_frames_across_any_chunking() {
        let mut body = message(b"one").to_vec();
        body.extend_from_slice(&message(b""));
        body.extend_from_slice(&trailer("grpc-status: 0\r\n"));
        for size in [1, 2, 5, 7, body.len()] {
            let mut r = FrameReader::whole();
            let mut got = Vec::new();
            for c in body.chunks(size) {
                r.push(Bytes::copy_from_slice(c));
                while let Next::Frame(f) = r.next_frame() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "chunk {size}");
            assert_eq!(got[0].payload(), Bytes::from_static(b"one"));
            assert_eq!(got[0].raw(), &message(b"one"));
            assert!(got[2].is_trailers());
            assert!(r.pending().is_empty());
        }
    }

    #[test]
    fn trailers_only_drops_messages_and_bounds_trailers() {
        let mut body = message(&[7; 300]).to_vec();
        body.extend_from_slice(&trailer("grpc-status: 5\r\n"));
        for size in [1, 3, 64, body.len()] {
            let mut r = FrameReader::trailers_only(64);
            let mut got = None;
            for c in body.chunks(size) {
                r.push(Bytes::copy_from_slice(c));
                if let Next::Frame(f) = r.next_frame() {
                    got = Some(f);
                }
                assert!(
                    r.pending().len() <= PREFIX_LEN + 16,
                    "messages are not kept"
                );
            }
            assert_eq!(got.unwrap().payload(), "grpc-status: 5\r\n", "chunk {size}");
        }
        let mut r = FrameReader::trailers_only(8);
        r.push(trailer("grpc-status: 0\r\n"));
        assert_eq!(r.next_frame(), Next::Oversized);
    }

    #[test]
    fn single_message_and_its_refusals() {
        let f = message(b"hello");
        assert_eq!(single_message(&f).unwrap(), Bytes::from_static(b"hello"));
        let mut compressed = f.to_vec();
        compressed[0] = 1;
        assert_eq!(
            single_message(&Bytes::from(compressed)),
            Err(FrameError::Compressed)
        );
        let mut flagged = f.to_vec();
        flagged[0] = 2;
        assert_eq!(
            single_message(&Bytes::from(flagged)),
            Err(FrameError::UnknownFlags(2))
        );
        let mut two = f.to_vec();
        two.extend_from_slice(&f);
        assert_eq!(
            single_message(&Bytes::from(two)),
            Err(FrameError::MoreThanOne)
        );
        assert_eq!(
            single_message(&f.slice(..7)),
            Err(FrameError::Truncated { said: 5, has: 2 })
        );
        assert_eq!(single_message(&f.slice(..4)), Err(FrameError::Short));
    }

    #[test]
    fn answer_message_is_the_one_uncompressed_message() {
        let mut body = message(b"m").to_vec();
        body.extend_from_slice(&trailer("grpc-status: 0\r\n"));
        assert_eq!(
            answer_message(&Bytes::from(body.clone())),
            Some(Bytes::from_static(b"m"))
        );
        let mut two = message(b"a").to_vec();
        two.extend_from_slice(&message(b"b"));
        assert_eq!(answer_message(&Bytes::from(two)), None);
        assert_eq!(answer_message(&Bytes::from(encode(1, b"z").to_vec())), None);
        assert_eq!(
            answer_message(&Bytes::from(body[..body.len() - 1].to_vec())),
            None
        );
    }
}
