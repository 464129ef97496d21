//! Where a value sits in a feature config, printed JSONPath-style without ever showing an
//! identifier a key holds.

use std::{fmt, sync::Arc};

/// Key names longer than this are shortened in paths (messages stay bounded).
const MAX_KEY_SHOWN: usize = 40;

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member.
    Key {
        /// The key as decoded.
        name: Arc<str>,
        /// Its position among the object's keys, from 0 (how a withheld key is shown).
        position: usize,
        /// The key holds an identifier, so its text is never shown.
        withheld: bool,
    },
    /// An array element, from 0.
    Index(usize),
}

/// Where a value sits in the config, printed JSONPath-style: `$.targets[0].peer`, `$["a b"]`.
/// A key that holds an identifier is printed by position instead of text (`$.peers[<key 2>]`);
/// a long key is shortened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonPath(pub(super) Vec<Segment>);

impl JsonPath {
    /// The steps from the top-level object.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.0 {
            match segment {
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Key {
                    withheld: true,
                    position,
                    ..
                } => write!(f, "[<key {position}>]")?,
                Segment::Key { name, .. } if is_plain_name(name) => write!(f, ".{name}")?,
                Segment::Key { name, .. } => {
                    f.write_str("[\"")?;
                    let mut shown = name.chars();
                    for c in shown.by_ref().take(MAX_KEY_SHOWN) {
                        match c {
                            '"' => f.write_str("\\\"")?,
                            '\\' => f.write_str("\\\\")?,
                            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
                            c => write!(f, "{c}")?,
                        }
                    }
                    if shown.next().is_some() {
                        f.write_str("…")?;
                    }
                    f.write_str("\"]")?;
                }
            }
        }
        Ok(())
    }
}

fn is_plain_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_KEY_SHOWN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
