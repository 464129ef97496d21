//! Just enough of the protobuf wire format to rewrite a message without losing what litgate
//! does not understand: scan the fields of an encoded message, and read the raw value bytes of
//! `map<string, Message>` entries. Rewrites append a patch to the original bytes (protobuf
//! merge: last value wins for scalars, messages merge, a map entry with the same key replaces
//! the old one), so unknown fields a newer client added are forwarded untouched.

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use prost::encoding::{decode_key, decode_varint, WireType};

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf: {0}")]
pub struct WireError(pub String);

/// One field occurrence: number, and its raw payload for length-delimited fields.
#[derive(Debug, Clone)]
pub struct Field {
    /// Field number.
    pub number: u32,
    /// Wire type.
    pub wire_type: WireType,
    /// Payload of a length-delimited field (empty for other wire types).
    pub payload: Bytes,
}

/// Every field occurrence of `msg`, in order.
pub fn fields(msg: &Bytes) -> Result<Vec<Field>, WireError> {
    let mut buf = msg.clone();
    let mut out = Vec::new();
    while buf.has_remaining() {
        let (number, wire_type) = decode_key(&mut buf).map_err(|e| WireError(e.to_string()))?;
        let mut payload = Bytes::new();
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|e| WireError(e.to_string()))?;
            }
            WireType::SixtyFourBit => skip(&mut buf, 8)?,
            WireType::ThirtyTwoBit => skip(&mut buf, 4)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| WireError(e.to_string()))?;
                let len = usize::try_from(len).map_err(|_| WireError("length overflows".into()))?;
                if buf.remaining() < len {
                    return Err(WireError(format!("field {number} is truncated")));
                }
                payload = buf.split_to(len);
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError(format!("field {number} uses deprecated groups")))
            }
        }
        out.push(Field {
            number,
            wire_type,
            payload,
        });
    }
    Ok(out)
}

fn skip(buf: &mut Bytes, n: usize) -> Result<(), WireError> {
    if buf.remaining() < n {
        return Err(WireError("truncated fixed-width field".into()));
    }
    buf.advance(n);
    Ok(())
}

/// The raw value bytes of each entry of the `map<string, _>` field `number`; for a key that
/// occurs more than once, the last entry (as every decoder keeps).
pub fn map_values(msg: &Bytes, number: u32) -> Result<HashMap<String, Bytes>, WireError> {
    let mut out = HashMap::new();
    for f in fields(msg)?
        .into_iter()
        .filter(|f| f.number == number && f.wire_type == WireType::LengthDelimited)
    {
        let mut key = String::new();
        let mut value = Bytes::new();
        for e in fields(&f.payload)? {
            match (e.number, e.wire_type) {
                (1, WireType::LengthDelimited) => {
                    key = String::from_utf8(e.payload.to_vec())
                        .map_err(|_| WireError("map key is not UTF-8".into()))?
                }
                (2, WireType::LengthDelimited) => value = e.payload,
                _ => {}
            }
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// Encodes one `map<string, bytes-like>` entry for field `number`: tag, length, key, value.
pub fn map_entry(number: u32, key: &str, value: &[u8]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint};
    let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
    encode_key(1, WireType::LengthDelimited, &mut entry);
    encode_varint(key.len() as u64, &mut entry);
    entry.extend_from_slice(key.as_bytes());
    encode_key(2, WireType::LengthDelimited, &mut entry);
    encode_varint(value.len() as u64, &mut entry);
    entry.extend_from_slice(value);
    let mut out = Vec::with_capacity(entry.len() + encoded_len_varint(entry.len() as u64) + 2);
    encode_key(number, WireType::LengthDelimited, &mut out);
    encode_varint(entry.len() as u64, &mut out);
    out.extend_from_slice(&entry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::litrpc::{AddAutopilotSessionRequest, FeatureConfig};
    use prost::Message;

    #[test]
    fn map_values_returns_the_last_entry_per_key() {
        let mut req = AddAutopilotSessionRequest::default();
        req.features.insert(
            "A".into(),
            FeatureConfig {
                rules: None,
                config: b"{\"x\":1}".to_vec(),
            },
        );
        let mut bytes = req.encode_to_vec();
        let later = FeatureConfig {
            rules: None,
            config: b"{}".to_vec(),
        }
        .encode_to_vec();
        bytes.extend(map_entry(5, "A", &later));
        let vals = map_values(&Bytes::from(bytes.clone()), 5).unwrap();
        assert_eq!(vals["A"], Bytes::from(later));
        // prost agrees: the last entry wins.
        let decoded = AddAutopilotSessionRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.features["A"].config, b"{}");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(fields(&Bytes::from_static(&[0x2a, 0x05, 0x01])).is_err());
    }
}
