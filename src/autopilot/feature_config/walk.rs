//! One pass over a config's JSON with serde, recording every identifier with its path and
//! refusing what cannot be vouched for (depth, repeated keys, mixed top-level lists) as it goes.
//! Recursion is bounded by [`MAX_DEPTH`].

use std::{collections::HashSet, fmt, sync::Arc};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{
    identify::{classify, number_is_chan_id_f64, number_is_chan_id_i64, number_is_chan_id_u64},
    ConfigRefusal, JsonPath, Kind, Privacy, Segment, Shape, MAX_DEPTH,
};

/// A finding before its fate is known.
pub(super) struct Raw {
    pub(super) path: JsonPath,
    pub(super) kind: Kind,
    pub(super) shape: Shape,
    /// A direct string item of a top-level array that turned out to hold only strings.
    pub(super) in_string_list: bool,
}

pub(super) struct Walk {
    pub(super) privacy: Privacy,
    pub(super) path: Vec<Segment>,
    pub(super) found: Vec<Raw>,
    /// Set before a visitor fails on purpose, so the parser's generic error can be replaced.
    pub(super) refusal: Option<ConfigRefusal>,
}

impl Walk {
    fn record(&mut self, kinds: Vec<(Kind, Shape)>) {
        for (kind, shape) in kinds {
            self.found.push(Raw {
                path: self.here(),
                kind,
                shape,
                in_string_list: false,
            });
        }
    }

    fn here(&self) -> JsonPath {
        JsonPath(self.path.clone())
    }

    fn refuse<E: de::Error>(&mut self, refusal: ConfigRefusal) -> E {
        self.refusal = Some(refusal);
        E::custom("refused")
    }
}

/// Where a value sits, as far as litd's obfuscator cares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Root,
    /// The value of a top-level key.
    TopValue,
    Nested,
}

impl Place {
    /// The place of a value directly inside a container at this place.
    fn inside(self, container: Container) -> Place {
        match (self, container) {
            (Place::Root, Container::Object) => Place::TopValue,
            _ => Place::Nested,
        }
    }
}

#[derive(Clone, Copy)]
enum Container {
    Array,
    Object,
}

/// What a value was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// One value to walk. Recursion is bounded by [`MAX_DEPTH`].
pub(super) struct Node<'w> {
    pub(super) walk: &'w mut Walk,
    pub(super) place: Place,
    /// Containers around this value.
    pub(super) depth: usize,
}

impl Node<'_> {
    fn enter<E: de::Error>(&mut self) -> Result<usize, E> {
        let level = self.depth + 1;
        if level > MAX_DEPTH {
            let path = self.walk.here();
            return Err(self.walk.refuse(ConfigRefusal::TooDeep { path }));
        }
        Ok(level)
    }

    /// The node for a value inside this one, at `level`.
    fn child(&mut self, container: Container, level: usize) -> Node<'_> {
        Node {
            walk: &mut *self.walk,
            place: self.place.inside(container),
            depth: level,
        }
    }

    fn number(self, is_chan_id: bool) -> Seen {
        if is_chan_id {
            self.walk.record(vec![(Kind::ChannelId, Shape::Number)]);
        }
        Seen::Number
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Seen;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Seen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Seen, E> {
        Ok(Seen::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
        Ok(Seen::Bool)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_u64(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_i64(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Seen, E> {
        Ok(self.number(number_is_chan_id_f64(v)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Seen, E> {
        let mut kinds = Vec::new();
        classify(s, Shape::Whole, Shape::Inside, &mut kinds);
        self.walk.record(kinds);
        Ok(Seen::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Seen, A::Error> {
        let level = self.enter()?;
        let top_list = self.place == Place::TopValue;
        let first_finding = self.walk.found.len();
        let (mut any_string, mut all_strings) = (false, true);
        let mut index = 0;
        loop {
            self.walk.path.push(Segment::Index(index));
            let item = seq.next_element_seed(self.child(Container::Array, level))?;
            self.walk.path.pop();
            let Some(item) = item else { break };
            any_string |= item == Seen::String;
            all_strings &= item == Seen::String;
            index += 1;
        }
        if top_list && any_string {
            if !all_strings {
                if let Privacy::Mapper { .. } = self.walk.privacy {
                    let path = self.walk.here();
                    return Err(self.walk.refuse(ConfigRefusal::MixedList { path }));
                }
            } else {
                // Every item is a string, so every finding in this list is a direct item.
                for raw in &mut self.walk.found[first_finding..] {
                    raw.in_string_list = true;
                }
            }
        }
        Ok(Seen::Array)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Seen, A::Error> {
        let level = self.enter()?;
        let mut seen: HashSet<Arc<str>> = HashSet::new();
        let mut position = 0;
        while let Some(key) = map.next_key::<String>()? {
            let mut kinds = Vec::new();
            classify(&key, Shape::Key, Shape::Key, &mut kinds);
            let name: Arc<str> = key.into();
            self.walk.path.push(Segment::Key {
                name: Arc::clone(&name),
                position,
                withheld: !kinds.is_empty(),
            });
            if !seen.insert(name) {
                let path = self.walk.here();
                return Err(self.walk.refuse(ConfigRefusal::DuplicateKey { path }));
            }
            self.walk.record(kinds);
            map.next_value_seed(self.child(Container::Object, level))?;
            self.walk.path.pop();
            position += 1;
        }
        Ok(Seen::Object)
    }
}
