//! Header blocks: `name: value` lines, as grpc-web's trailer frame carries its status and as
//! grpc-websockets carries a call's metadata and its answer's headers. One parser, read two
//! ways: [`parse_strict`] as Go's `textproto` reads a client's block (a malformed line is an
//! error naming the line, never its value), and [`parse`] for an answer's trailers (a line that
//! is not a header is skipped). Names are lower-cased, as grpc-web asks.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::frame;

/// What is wrong with a line of a header block (never its value: blocks carry macaroons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// An empty line before the end.
    #[error("blank line inside the block")]
    Blank,
    /// A line starting with white space (an obsolete folded value).
    #[error("continuation lines are not accepted")]
    Continuation,
    /// No `:`.
    #[error("no colon")]
    NoColon,
    /// Not a token before the `:`.
    #[error("invalid header name")]
    Name,
    /// A byte no header value may hold.
    #[error("invalid header value")]
    Value,
}

/// A malformed header block: which line, and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed header block, line {line}: {reason}")]
pub struct BlockError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: LineError,
}

/// How a block is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every line must be a header (a client's block).
    Strict,
    /// Lines that are not headers are skipped; names are trimmed (an answer's trailers).
    Lenient,
}

/// Parses a client's header block as Go's `textproto` reads it: `name: value` lines ending in
/// CRLF (or LF), values trimmed, names case-insensitive; continuation lines and blank lines
/// inside the block are refused rather than guessed at.
pub fn parse_strict(block: &[u8]) -> Result<HeaderMap, BlockError> {
    read(block, Mode::Strict)
}

/// Parses a trailer block (`name: value` lines, CRLF or LF); lines that are not headers are
/// skipped.
pub fn parse(block: &[u8]) -> HeaderMap {
    read(block, Mode::Lenient).unwrap_or_default()
}

fn read(block: &[u8], mode: Mode) -> Result<HeaderMap, BlockError> {
    let mut out = HeaderMap::new();
    let body = block
        .strip_suffix(b"\r\n")
        .or_else(|| block.strip_suffix(b"\n"))
        .unwrap_or(block);
    if body.is_empty() {
        return Ok(out);
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match (line(raw, mode), mode) {
            (Ok((name, value)), _) => {
                out.append(name, value);
            }
            (Err(reason), Mode::Strict) => {
                return Err(BlockError {
                    line: i + 1,
                    reason,
                })
            }
            (Err(_), Mode::Lenient) => {}
        }
    }
    Ok(out)
}

fn line(raw: &[u8], mode: Mode) -> Result<(HeaderName, HeaderValue), LineError> {
    match raw.first() {
        None => return Err(LineError::Blank),
        Some(b' ' | b'\t') if mode == Mode::Strict => return Err(LineError::Continuation),
        _ => {}
    }
    let colon = raw
        .iter()
        .position(|&b| b == b':')
        .ok_or(LineError::NoColon)?;
    let name = match mode {
        Mode::Strict => &raw[..colon],
        Mode::Lenient => raw[..colon].trim_ascii(),
    };
    let name = HeaderName::from_bytes(&name.to_ascii_lowercase()).map_err(|_| LineError::Name)?;
    let value =
        HeaderValue::from_bytes(raw[colon + 1..].trim_ascii()).map_err(|_| LineError::Value)?;
    Ok((name, value))
}

/// Encodes headers as a header block (`name: value\r\n` lines), as improbable's client sends
/// them and as header and trailer frames carry them.
pub fn encode(headers: &HeaderMap) -> Bytes {
    let mut b = BytesMut::new();
    for (name, value) in headers {
        b.put_slice(name.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(value.as_bytes());
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

/// A header (or trailer) frame: the trailer flag, the block's length, the block.
pub fn frame(headers: &HeaderMap) -> Bytes {
    frame::encode(frame::TRAILERS, &encode(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_round_trip_and_refusals() {
        // As improbable's client writes it: `key: v1, v2\r\n` per key.
        let block =
            b"content-type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nmacaroon:  0201ab \r\n";
        let h = parse_strict(block).unwrap();
        assert_eq!(h["content-type"], "application/grpc-web+proto");
        assert_eq!(h["x-grpc-web"], "1");
        assert_eq!(h["macaroon"], "0201ab");
        assert_eq!(parse_strict(&encode(&h)).unwrap(), h);
        assert!(parse_strict(b"").unwrap().is_empty());

        for (bad, line, what) in [
            (&b"a: 1\r\nno colon\r\n"[..], 2, "no colon"),
            (b"a: 1\r\n folded\r\n", 2, "continuation"),
            (b"a: 1\r\n\r\nb: 2\r\n", 2, "blank line"),
            (b"bad name: 1\r\n", 1, "invalid header name"),
            (b"a: \x01\r\n", 1, "invalid header value"),
        ] {
            let e = parse_strict(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("line {line}")) && e.contains(what),
                "{e}"
            );
        }
        let secret = parse_strict(b"macaroon: 0201\x01ff\r\n").unwrap_err();
        assert!(
            !secret.to_string().contains("0201"),
            "values never in errors"
        );
    }

    #[test]
    fn lenient_skips_what_is_not_a_header() {
        let h = parse(b"grpc-status : 5\r\n\r\nnonsense\ngrpc-message: not%20here\r\n");
        assert_eq!(h["grpc-status"], "5");
        assert_eq!(h["grpc-message"], "not%20here");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn header_frame_is_prefixed_like_a_grpc_web_trailer_frame() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("0"));
        let f = frame(&h);
        assert_eq!(&f[..5], &[0x80, 0, 0, 0, 16]);
        assert_eq!(&f[5..], b"grpc-status: 0\r\n");
    }
}
