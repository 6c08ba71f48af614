//! Edits of a JSON document at dotted paths (`card.number`, `items[0].sku`,
//! `items[*].cost`), as `type: transform` applies them: remove, rename, set, and add
//! (set only where absent). A path that leads nowhere in a document edits nothing.
//!
//! The document is not built as a tree of values: one parse checks it and keeps each
//! member of the top level as the bytes it came in ([`RawValue`]); only the objects and
//! arrays on an edited path are opened, one level at a time, and everything else is
//! written back as it was (a 10 KiB body: about a tenth of the cost of a value tree).
//! A name an object repeats (RFC 8259 leaves its meaning open) is edited everywhere it
//! appears, so a removed or set member cannot survive in a second copy.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
    /// Every element of an array.
    All,
}

/// A parsed path: dotted keys, each followed by any number of `[n]` or `[*]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Seg>);

impl JsonPath {
    /// Parses `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut segs = Vec::new();
        for (i, part) in text.split('.').enumerate() {
            let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            // Only the first part may start with an index (`[0].a`).
            if key.is_empty() && (i != 0 || rest.is_empty()) {
                return Err(format!("{text:?} has an empty key"));
            }
            if key.contains(']') {
                return Err(format!("{text:?} has a `]` without its `[`"));
            }
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let Some(close) = rest.find(']').filter(|_| rest.starts_with('[')) else {
                    return Err(format!("{text:?}: expected `[n]` or `[*]` after {key:?}"));
                };
                let inner = &rest[1..close];
                segs.push(match inner {
                    "*" => Seg::All,
                    n => {
                        Seg::Index(n.parse().map_err(|_| {
                            format!("{text:?}: `[{n}]` is neither an index nor `[*]`")
                        })?)
                    }
                });
                rest = &rest[close + 1..];
            }
        }
        Ok(Self(segs))
    }

    /// Whether the path ends in an object key (what `rename` needs).
    pub fn ends_in_key(&self) -> bool {
        matches!(self.0.last(), Some(Seg::Key(_)))
    }

    /// Removes what the path names.
    pub fn remove(&self, doc: &mut Node<'_>) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        each_at(doc, parents, &mut |v| match (last, v.open()) {
            (Seg::Key(k), Node::Object(m)) => m.retain(|(name, _)| name != k),
            (Seg::Index(i), Node::Array(a)) if *i < a.len() => {
                a.remove(*i);
            }
            (Seg::All, Node::Array(a)) => a.clear(),
            _ => {}
        });
    }

    /// Renames the key the path ends in to `to`, in the same object: the value takes the
    /// place of a member already named `to`, or goes last.
    pub fn rename(&self, doc: &mut Node<'_>, to: &str) {
        let Some((Seg::Key(from), parents)) = self.0.split_last() else {
            return;
        };
        each_at(doc, parents, &mut |v| {
            if let Node::Object(m) = v.open()
                && let Some(moved) = take_last(m, from)
            {
                put(m, to, moved, false);
            }
        });
    }

    /// Puts `value` where the path names, creating missing objects on the way; with
    /// `only_if_absent`, a member or element already there is kept.
    pub fn set(&self, doc: &mut Node<'_>, value: &Value, only_if_absent: bool) {
        set_at(doc, &self.0, value, only_if_absent);
    }
}

/// The objects and arrays of a document a set of paths reaches (every step but each
/// path's last): the parse opens these as it goes and keeps the rest as text, so the
/// document is read once.
#[derive(Debug, Default, Clone)]
pub struct Reach {
    /// Members opened, by name.
    keys: Vec<(String, Reach)>,
    /// Elements opened (every one, for `[n]` as for `[*]`).
    elements: Option<Box<Reach>>,
}

impl Reach {
    /// What `paths` reach.
    pub fn of<'p>(paths: impl IntoIterator<Item = &'p JsonPath>) -> Self {
        let mut root = Self::default();
        for path in paths {
            let Some((_, parents)) = path.0.split_last() else {
                continue;
            };
            let mut at = &mut root;
            for seg in parents {
                at = match seg {
                    Seg::Key(k) => {
                        let i = match at.keys.iter().position(|(n, _)| n == k) {
                            Some(i) => i,
                            None => {
                                at.keys.push((k.clone(), Self::default()));
                                at.keys.len() - 1
                            }
                        };
                        &mut at.keys[i].1
                    }
                    Seg::Index(_) | Seg::All => at.elements.get_or_insert_default(),
                };
            }
        }
        root
    }
}

/// A part of a document under edit.
#[derive(Debug)]
pub enum Node<'a> {
    /// Not opened: written back as it came in.
    Raw(&'a RawValue),
    /// An opened object, members in their order.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    /// An opened array.
    Array(Vec<Node<'a>>),
    /// A value an edit put (boxed: nodes stay small, most are `Raw`).
    Value(Box<Value>),
}

impl<'a> Node<'a> {
    /// Checks `body` is one JSON document, opening what `reach` names.
    fn parse(body: &'a [u8], reach: &Reach) -> Result<Self, serde_json::Error> {
        // UTF-8 checked once over the whole body (an ASCII run is checked a word at a
        // time) spares every string and every kept value its own check; a body that is
        // not UTF-8 is read as bytes, so the error says where.
        match std::str::from_utf8(body) {
            Ok(text) => Self::read(serde_json::Deserializer::from_str(text), reach),
            Err(_) => Self::read(serde_json::Deserializer::from_slice(body), reach),
        }
    }

    fn read<R: serde_json::de::Read<'a>>(
        mut de: serde_json::Deserializer<R>,
        reach: &Reach,
    ) -> Result<Self, serde_json::Error> {
        use serde::de::DeserializeSeed;
        let doc = Opening(reach).deserialize(&mut de)?;
        de.end()?;
        Ok(doc)
    }

    /// A node for a value an edit put.
    fn value(v: Value) -> Self {
        Node::Value(Box::new(v))
    }

    /// This node with an object or array opened into members or elements (a scalar stays
    /// as it is).
    fn open(&mut self) -> &mut Self {
        let opened = match self {
            Node::Raw(raw) => {
                let text: &'a str = raw.get();
                // The text was checked by the parse that produced it: these cannot fail.
                match text.trim_start().as_bytes().first() {
                    Some(b'{' | b'[') => Node::parse(text.as_bytes(), &Reach::default()).ok(),
                    _ => None,
                }
            }
            Node::Value(v) if matches!(**v, Value::Object(_) | Value::Array(_)) => {
                match std::mem::take(&mut **v) {
                    Value::Object(m) => Some(Node::Object(
                        m.into_iter()
                            .map(|(k, v)| (Cow::Owned(k), Node::value(v)))
                            .collect(),
                    )),
                    Value::Array(a) => Some(Node::Array(a.into_iter().map(Node::value).collect())),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(n) = opened {
            *self = n;
        }
        self
    }

    /// Appends the document's JSON text to `out`.
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Node::Object(members) => {
                out.push(b'{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match name {
                        // A name borrowed from the body had no escapes, so needs none.
                        Cow::Borrowed(n) => {
                            out.push(b'"');
                            out.extend_from_slice(n.as_bytes());
                            out.push(b'"');
                        }
                        Cow::Owned(n) => write_value(out, n),
                    }
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
            Node::Array(elements) => {
                out.push(b'[');
                for (i, value) in elements.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    value.write(out);
                }
                out.push(b']');
            }
            Node::Value(v) => write_value(out, v),
        }
    }
}

fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing a string or a `Value` into a Vec cannot fail (its keys are strings).
    let _ = serde_json::to_writer(out, v);
}

/// The last value of the members named `name`, all of them removed.
fn take_last<'a>(m: &mut Vec<(Cow<'a, str>, Node<'a>)>, name: &str) -> Option<Node<'a>> {
    let mut last = None;
    let mut i = 0;
    while i < m.len() {
        if m[i].0 == name {
            last = Some(m.remove(i).1);
        } else {
            i += 1;
        }
    }
    last
}

/// Gives the member `name` the value `v`, in the place of the first member of that name
/// (any others removed) or last; with `only_if_absent` an existing member is kept.
fn put<'a>(m: &mut Vec<(Cow<'a, str>, Node<'a>)>, name: &str, v: Node<'a>, only_if_absent: bool) {
    match m.iter().position(|(n, _)| n == name) {
        Some(_) if only_if_absent => {}
        Some(first) => {
            m[first].1 = v;
            let mut i = first + 1;
            while i < m.len() {
                if m[i].0 == name {
                    m.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        None => m.push((Cow::Owned(name.to_string()), v)),
    }
}

/// Calls `f` on every node `segs` leads to from `v` (several through `[*]` or a name
/// an object repeats).
fn each_at(v: &mut Node<'_>, segs: &[Seg], f: &mut dyn FnMut(&mut Node<'_>)) {
    let Some((first, rest)) = segs.split_first() else {
        f(v);
        return;
    };
    match (first, v.open()) {
        (Seg::Key(k), Node::Object(m)) => {
            for (_, child) in m.iter_mut().filter(|(n, _)| n == k) {
                each_at(child, rest, f);
            }
        }
        (Seg::Index(i), Node::Array(a)) => {
            if let Some(child) = a.get_mut(*i) {
                each_at(child, rest, f);
            }
        }
        (Seg::All, Node::Array(a)) => {
            for child in a {
                each_at(child, rest, f);
            }
        }
        _ => {}
    }
}

fn set_at(v: &mut Node<'_>, segs: &[Seg], value: &Value, only_if_absent: bool) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match (first, v.open()) {
        (Seg::Key(k), Node::Object(m)) => {
            if last {
                put(m, k, Node::value(value.clone()), only_if_absent);
                return;
            }
            // Objects on the way are created, so `meta.route` works on a body without
            // `meta`; a member of another type is not replaced by one.
            if !m.iter().any(|(n, _)| n == k) {
                m.push((Cow::Owned(k.clone()), Node::Object(Vec::new())));
            }
            for (_, child) in m.iter_mut().filter(|(n, _)| n == k) {
                set_at(child, rest, value, only_if_absent);
            }
        }
        (Seg::Index(i), Node::Array(a)) => {
            if let Some(child) = a.get_mut(*i) {
                if !last {
                    set_at(child, rest, value, only_if_absent);
                } else if !only_if_absent {
                    *child = Node::value(value.clone());
                }
            }
        }
        (Seg::All, Node::Array(a)) => {
            for child in a {
                if !last {
                    set_at(child, rest, value, only_if_absent);
                } else if !only_if_absent {
                    *child = Node::value(value.clone());
                }
            }
        }
        _ => {}
    }
}

/// Reads a value, opening it (and what `Reach` names within it) when it is an object or
/// an array; other members and elements are kept as their text.
struct Opening<'r>(&'r Reach);

impl<'de> serde::de::DeserializeSeed<'de> for Opening<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Opening<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Name(name)) = map.next_key()? {
            let value = match self.0.keys.iter().find(|(n, _)| *n == name) {
                Some((_, inner)) => map.next_value_seed(Opening(inner))?,
                None => Node::Raw(map.next_value()?),
            };
            members.push((name, value));
        }
        Ok(Node::Object(members))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        match &self.0.elements {
            Some(inner) => {
                while let Some(v) = seq.next_element_seed(Opening(inner))? {
                    elements.push(v);
                }
            }
            None => {
                while let Some(v) = seq.next_element()? {
                    elements.push(Node::Raw(v));
                }
            }
        }
        Ok(Node::Array(elements))
    }

    // A scalar where a path expects an object or array: edits pass it by; it is written
    // back as the value it reads as (a number keeps its value, not always its spelling:
    // `1.50` is written `1.5`).
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::value(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::value(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::value(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::value(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::value(v.into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::value(Value::Null))
    }
}

/// A member name, borrowed from the body unless it had escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `body` with `edits` applied (`reach`: what they reach), or why it is not one JSON
/// document.
pub fn edit(
    body: &[u8],
    reach: &Reach,
    edits: impl FnOnce(&mut Node<'_>),
) -> Result<Vec<u8>, serde_json::Error> {
    let mut doc = Node::parse(body, reach)?;
    edits(&mut doc);
    let mut out = Vec::with_capacity(body.len() + 64);
    doc.write(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPath {
        JsonPath::parse(s).unwrap()
    }

    /// `body` with `f` applied, which edits at `paths`: the same whether the parse opened
    /// what they reach or the edits open it as they go.
    fn run(body: &[u8], paths: &[&str], f: impl Fn(&mut Node<'_>)) -> Vec<u8> {
        let parsed: Vec<_> = paths.iter().map(|t| p(t)).collect();
        let out = edit(body, &Reach::of(&parsed), &f).unwrap();
        assert_eq!(out, edit(body, &Reach::default(), &f).unwrap());
        out
    }

    /// `doc` as text with `f` applied to it, read back.
    fn edited(doc: &Value, paths: &[&str], f: impl Fn(&mut Node<'_>)) -> Value {
        serde_json::from_slice(&run(doc.to_string().as_bytes(), paths, f)).unwrap()
    }

    #[test]
    fn paths_parse_keys_indexes_and_wildcards() {
        assert_eq!(
            p("items[*].cost").0,
            vec![Seg::Key("items".into()), Seg::All, Seg::Key("cost".into())]
        );
        assert_eq!(
            p("[0][*].a").0,
            vec![Seg::Index(0), Seg::All, Seg::Key("a".into())]
        );
        for bad in ["", "a..b", "a.", "a[", "a[x]", "a]b", "a[1]b", ".a"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remove_reaches_nested_and_every_element() {
        let d = json!({"password": "x", "card": {"number": "4111", "exp": "12/30"},
                       "items": [{"cost": 1, "sku": "a"}, {"cost": 2, "sku": "b"}, 7]});
        let paths = [
            "password",
            "card.number",
            "items[*].cost",
            "nowhere.deep",
            "items[9]",
        ];
        let d = edited(&d, &paths, |d| {
            for path in paths {
                p(path).remove(d);
            }
        });
        assert_eq!(
            d,
            json!({"card": {"exp": "12/30"}, "items": [{"sku": "a"}, {"sku": "b"}, 7]})
        );
        let d = edited(&d, &["items[1]"], |d| p("items[1]").remove(d));
        assert_eq!(d["items"], json!([{"sku": "a"}, 7]));
    }

    #[test]
    fn rename_keeps_the_value_in_the_same_object() {
        let d = json!({"userName": "ann", "items": [{"qty": 1}, {"n": 2}]});
        let d = edited(&d, &["userName", "items[*].qty", "absent"], |d| {
            p("userName").rename(d, "user_name");
            p("items[*].qty").rename(d, "quantity");
            p("absent").rename(d, "x");
        });
        assert_eq!(
            d,
            json!({"user_name": "ann", "items": [{"quantity": 1}, {"n": 2}]})
        );
    }

    #[test]
    fn set_creates_objects_and_add_keeps_what_is_there() {
        let d = json!({"source": "client", "items": [{"a": 1}, {"a": 2}], "s": "str"});
        let paths = [
            "source",
            "meta.route",
            "items[*].b",
            "items[0].a",
            "s.inner",
            "meta.extra",
            "meta.extra.y",
        ];
        let d = edited(&d, &paths, |d| {
            p("source").set(d, &json!("gateway"), false);
            p("meta.route").set(d, &json!("orders"), true);
            p("items[*].b").set(d, &json!(true), false);
            p("items[0].a").set(d, &json!(9), true);
            p("s.inner").set(d, &json!(1), false);
            // A value an edit put is edited by the next one.
            p("meta.extra").set(d, &json!({"x": 1}), false);
            p("meta.extra.y").set(d, &json!(2), true);
        });
        assert_eq!(
            d,
            json!({"source": "gateway", "items": [{"a": 1, "b": true}, {"a": 2, "b": true}],
                   "s": "str", "meta": {"route": "orders", "extra": {"x": 1, "y": 2}}})
        );
        // Keys keep their place when replaced.
        let keys: Vec<_> = d.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["source", "items", "s", "meta"]);
    }

    #[test]
    fn untouched_parts_keep_their_bytes_and_repeated_names_are_all_edited() {
        let body = br#" {"a" : [1.50, 2e3],"pw":"x", "n\u0061me": {"pw": 1, "pw": 2}, "pw": "y"} "#;
        let out = run(body, &["pw", "name.pw"], |d| {
            p("pw").remove(d);
            p("name.pw").set(d, &json!(0), false);
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[1.50, 2e3],"name":{"pw":0}}"#
        );
        let out = run(
            br#"{"from": 1, "to": 2, "from": 3, "to": 4}"#,
            &["from"],
            |d| {
                p("from").rename(d, "to");
            },
        );
        assert_eq!(out, br#"{"to":3}"#);
    }

    #[test]
    fn bad_documents_are_refused_where_they_break() {
        for bad in [&b"{\"a\": ]"[..], b"[1,]", b"", b"{} {}", b"\"\xff\""] {
            assert!(edit(bad, &Reach::default(), |_| {}).is_err(), "{bad:?}");
        }
        let e = edit(b"{\n \"a\": ]", &Reach::default(), |_| {}).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 7));
        // Scalars and deep documents pass through unedited.
        assert_eq!(run(b" 7 ", &["a.b"], |d| p("a.b").remove(d)), b"7");
    }
}
