//! A JSON body as `type: json_schema` validates it: parsed by sonic-rs into one
//! arena-backed tree (a 10 KiB body in about 8 us, where a `serde_json::Value` with a
//! `String` per key and value takes 45-60), read by the validator through jsonschema's
//! `Json` representation trait. A name an object repeats is validated in every copy
//! (upstream parsers differ on which one they read); a lookup by name finds the last.

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonNumberTrait, JsonValueTrait};
use std::borrow::Cow;

/// The deepest nesting a body may have (serde_json's limit): the tree is built, dropped
/// and validated by recursion, so a deeper body could exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// `body` parsed, or why it is not one JSON document (serde_json's words, which say the
/// line and column).
pub fn parse(body: &[u8]) -> Result<sonic_rs::Value, String> {
    if nests_within(body, MAX_DEPTH)
        && let Ok(doc) = sonic_rs::from_slice(body)
    {
        return Ok(doc);
    }
    // The cold path: serde_json says where the body breaks (skimming it, no tree built
    // for a hostile body), then, for a body that is only too deep, how deep it went.
    Err(
        match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(e) => e.to_string(),
            Ok(_) => match serde_json::from_slice::<Value>(body) {
                Err(e) => e.to_string(),
                Ok(_) => "a value cannot be read".to_string(),
            },
        },
    )
}

/// Whether no array or object in `body` lies deeper than `max` (strings skipped; the
/// parse after this checks everything else). A byte loop: a SIMD search per string was
/// slower, API bodies' strings being short.
fn nests_within(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => loop {
                match bytes.next() {
                    Some(b'\\') => {
                        bytes.next();
                    }
                    Some(b'"') | None => break,
                    Some(_) => {}
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The sonic-rs representation.
#[derive(Debug)]
pub struct Sonic;

impl Json for Sonic {
    type Node<'a> = Instance<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // A lookup scans the object's members: one pass over them beats a few lookups.
    const KEYS_PER_LOOKUP: usize = 4;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(Instance<'_>) -> T) -> T {
        f(Instance::Name(string))
    }
}

/// A node of a parsed body, or a member name validated as a string (`propertyNames`).
#[derive(Debug, Clone, Copy)]
pub enum Instance<'a> {
    /// A value of the body.
    Value(&'a sonic_rs::Value),
    /// A member name.
    Name(&'a str),
}

impl<'a> Node<'a, Sonic> for Instance<'a> {
    type Object = Members<'a>;
    type Array = Elements<'a>;
    type Number = serde_json::Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match *self {
            Instance::Value(v) => v.as_object().map(Members),
            Instance::Name(_) => None,
        }
    }

    fn as_array(&self) -> Option<Elements<'a>> {
        match *self {
            Instance::Value(v) => v.as_array().map(Elements),
            Instance::Name(_) => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match *self {
            Instance::Value(v) => v.as_str().map(Cow::Borrowed),
            Instance::Name(s) => Some(Cow::Borrowed(s)),
        }
    }

    fn as_number(&self) -> Option<serde_json::Number> {
        let Instance::Value(v) = *self else {
            return None;
        };
        let n = v.as_number()?;
        match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u.into()),
            (None, Some(i)) => Some(i.into()),
            _ => n.as_f64().and_then(serde_json::Number::from_f64),
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match *self {
            Instance::Value(v) => v.as_bool(),
            Instance::Name(_) => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(*self, Instance::Value(v) if v.is_null())
    }

    fn json_type(&self) -> JsonType {
        match *self {
            Instance::Name(_) => JsonType::String,
            Instance::Value(v) => match v.get_type() {
                sonic_rs::JsonType::Null => JsonType::Null,
                sonic_rs::JsonType::Boolean => JsonType::Boolean,
                sonic_rs::JsonType::Number => JsonType::Number,
                sonic_rs::JsonType::String => JsonType::String,
                sonic_rs::JsonType::Object => JsonType::Object,
                sonic_rs::JsonType::Array => JsonType::Array,
            },
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match *self {
            // Only for violations and `const`/`enum`/`uniqueItems`: the cold path.
            Instance::Value(v) => serde_json::to_value(v).unwrap_or(Value::Null),
            Instance::Name(s) => Value::String(s.to_string()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match *self {
            Instance::Value(v) => Some(NodeIdentity::new(std::ptr::from_ref(v) as usize)),
            Instance::Name(_) => None,
        }
    }
}

/// An object's members.
#[derive(Debug, Clone, Copy)]
pub struct Members<'a>(&'a sonic_rs::Object);

impl<'a> Object<'a, Sonic> for Members<'a> {
    type Node = Instance<'a>;
    type MemberName = &'a str;
    type MembersIter = std::iter::Map<
        sonic_rs::value::object::Iter<'a>,
        fn((&'a str, &'a sonic_rs::Value)) -> (&'a str, Instance<'a>),
    >;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &String) -> Option<Instance<'a>> {
        // The last of a repeated name, as serde_json reads it.
        (self.0.iter())
            .filter(|(name, _)| name == key)
            .last()
            .map(|(_, v)| Instance::Value(v))
    }

    fn members(&self) -> Self::MembersIter {
        self.0.iter().map(|(name, v)| (name, Instance::Value(v)))
    }
}

/// An array's elements.
#[derive(Debug, Clone, Copy)]
pub struct Elements<'a>(&'a sonic_rs::Array);

impl<'a> Array<'a, Sonic> for Elements<'a> {
    type Node = Instance<'a>;
    type ElementsIter = std::iter::Map<
        std::slice::Iter<'a, sonic_rs::Value>,
        fn(&'a sonic_rs::Value) -> Instance<'a>,
    >;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        self.0.iter().map(Instance::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded_before_the_tree_is_built() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(parse(deep(MAX_DEPTH).as_bytes()).is_ok());
        for n in [MAX_DEPTH + 1, 500_000] {
            let e = parse(deep(n).as_bytes()).unwrap_err();
            assert!(e.contains("recursion limit"), "{e}");
        }
        // Brackets inside strings, escaped quotes among them, do not count.
        let body = format!(
            r#"{{"a": "{}\"{}", "b": [1]}}"#,
            "[".repeat(200),
            "{".repeat(200)
        );
        assert!(parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn malformed_bodies_say_where() {
        let e = parse(b"{\n  \"a\": ]").unwrap_err();
        assert!(e.ends_with("at line 2 column 8"), "{e}");
        assert!(parse(b"\"\xff\"").is_err());
        assert!(parse(b"{} {}").is_err());
    }
}
