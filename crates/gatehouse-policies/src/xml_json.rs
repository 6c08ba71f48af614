//! XML to JSON and back, as `type: transform` converts bodies. XML to JSON: the root
//! element is the top key, attributes become `@name`, text beside attributes or child
//! elements `#text`, repeated siblings an array, leaves strings. JSON to XML: the
//! object's keys become children of a root element, `@name` keys attributes, `#text`
//! text, arrays repeated elements. DTDs are refused (no entity expansion, no XXE).

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// Deepest nesting converted; deeper documents are refused rather than recursed into.
pub const MAX_DEPTH: usize = 100;

/// Why a document could not be converted, and where (1-based; 0 when not positional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// What is wrong.
    pub message: String,
    /// Line of the fault.
    pub line: usize,
    /// Column of the fault (in characters).
    pub column: usize,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            return f.write_str(&self.message);
        }
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

/// An element being read: its attributes and children in document order, its text.
struct Open {
    name: String,
    attrs: Vec<(String, Value)>,
    children: Vec<(String, Value)>,
    text: String,
}

impl Open {
    fn new(e: &BytesStart<'_>) -> Result<Self, String> {
        let name = utf8(e.name().as_ref())?;
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let value = a.unescape_value().map_err(|e| e.to_string())?;
            attrs.push((
                format!("@{}", utf8(a.key.as_ref())?),
                Value::String(value.into_owned()),
            ));
        }
        Ok(Self {
            name,
            attrs,
            children: Vec::new(),
            text: String::new(),
        })
    }

    /// The element's JSON value: a string for a leaf, else an object of attributes,
    /// `#text` and children (repeated names grouped into arrays, first seen first).
    fn close(self) -> (String, Value) {
        if self.attrs.is_empty() && self.children.is_empty() {
            return (self.name, Value::String(self.text));
        }
        let mut m = Map::new();
        for (k, v) in self.attrs {
            m.insert(k, v);
        }
        let text = self.text.trim();
        if !text.is_empty() {
            m.insert("#text".into(), Value::String(text.to_string()));
        }
        for (k, v) in self.children {
            match m.get_mut(&k) {
                // Children are strings or objects: an array here is a group.
                Some(Value::Array(a)) => a.push(v),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, v]);
                }
                None => {
                    m.insert(k, v);
                }
            }
        }
        (self.name, Value::Object(m))
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| "a name is not UTF-8".to_string())
}

/// Converts an XML document to JSON.
pub fn xml_to_json(xml: &[u8]) -> Result<Value, ConvertError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let at = |pos: u64, message: String| {
        let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(xml.len());
        let before = &xml[..pos];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        ConvertError {
            message,
            line,
            column,
        }
    };
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| at(reader.error_position(), format!("malformed XML: {e}")))?;
        let pos = reader.buffer_position();
        let mut closed = None;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(at(pos, "a second root element".into()));
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(at(pos, format!("nested deeper than {MAX_DEPTH} elements")));
                }
                stack.push(Open::new(&e).map_err(|m| at(pos, m))?);
            }
            Event::Empty(e) => closed = Some(Open::new(&e).map_err(|m| at(pos, m))?.close()),
            Event::End(_) => closed = stack.pop().map(Open::close),
            Event::Text(t) => {
                let text = t.decode().map_err(|e| at(pos, e.to_string()))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(at(pos, "text outside the root element".into())),
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| at(pos, e.to_string()))?;
                let Some(top) = stack.last_mut() else {
                    return Err(at(pos, "CDATA outside the root element".into()));
                };
                top.text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| at(pos, e.to_string()))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_string(),
                            None => return Err(at(pos, format!("undefined entity &{name};"))),
                        }
                    }
                    Err(e) => return Err(at(pos, e.to_string())),
                };
                let Some(top) = stack.last_mut() else {
                    return Err(at(pos, "a reference outside the root element".into()));
                };
                top.text.push_str(&resolved);
            }
            Event::DocType(_) => {
                return Err(at(pos, "a DTD (DOCTYPE) is not accepted".into()));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
        if let Some(element) = closed {
            match stack.last_mut() {
                Some(parent) => parent.children.push(element),
                None => root = Some(element),
            }
        }
    }
    if !stack.is_empty() {
        return Err(at(
            xml.len() as u64,
            "the document ends inside an element".into(),
        ));
    }
    let Some((name, value)) = root else {
        return Err(at(0, "no root element".into()));
    };
    let mut m = Map::new();
    m.insert(name, value);
    Ok(Value::Object(m))
}

/// Converts a JSON document to XML under a root element named `root`.
pub fn json_to_xml(doc: &Value, root: &str) -> Result<Vec<u8>, ConvertError> {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    element(&mut out, root, doc, 0).map_err(|message| ConvertError {
        message,
        line: 0,
        column: 0,
    })?;
    Ok(out.into_bytes())
}

/// Whether `name` is an XML name (letters, digits, `_ - . :`, not starting with a digit,
/// `-` or `.`); non-ASCII letters are taken as they are.
pub fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start = |c: char| c.is_alphabetic() || c == '_' || c == ':';
    start(first) && chars.all(|c| start(c) || c.is_alphanumeric() || c == '-' || c == '.')
}

fn text(out: &mut String, s: &str) -> Result<(), String> {
    // XML 1.0 cannot carry most control characters, escaped or not.
    if s.chars().any(|c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
    }) {
        return Err("a string holds a character XML cannot carry".into());
    }
    out.push_str(&quick_xml::escape::escape(s));
    Ok(())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn element(out: &mut String, name: &str, v: &Value, depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    if !is_xml_name(name) {
        return Err(format!("the key {name:?} is not an XML element name"));
    }
    out.push('<');
    out.push_str(name);
    match v {
        Value::Object(m) => {
            for (k, a) in m.iter().filter(|(k, _)| k.starts_with('@')) {
                let attr = &k[1..];
                if !is_xml_name(attr) {
                    return Err(format!("the key {k:?} is not an XML attribute name"));
                }
                let Some(value) = scalar(a) else {
                    return Err(format!(
                        "the attribute {k:?} is not a string, number or boolean"
                    ));
                };
                out.push(' ');
                out.push_str(attr);
                out.push_str("=\"");
                text(out, &value)?;
                out.push('"');
            }
            let mut body = m.iter().filter(|(k, _)| !k.starts_with('@')).peekable();
            if body.peek().is_none() {
                out.push_str("/>");
                return Ok(());
            }
            out.push('>');
            for (k, child) in body {
                if k == "#text" {
                    let Some(t) = scalar(child) else {
                        return Err("`#text` is not a string, number or boolean".into());
                    };
                    text(out, &t)?;
                    continue;
                }
                match child {
                    Value::Array(items) => {
                        for item in items {
                            element(out, k, item, depth + 1)?;
                        }
                    }
                    _ => element(out, k, child, depth + 1)?,
                }
            }
        }
        // An array not under a key (the whole document, or inside another array) holds
        // `item` elements.
        Value::Array(items) => {
            out.push('>');
            for item in items {
                element(out, "item", item, depth + 1)?;
            }
        }
        Value::Null => {
            out.push_str("/>");
            return Ok(());
        }
        scalar_value => {
            out.push('>');
            text(out, &scalar(scalar_value).unwrap_or_default())?;
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_becomes_json_by_the_documented_rules() {
        let xml = br#"<?xml version="1.0"?>
<!-- an order -->
<order id="7" xmlns:x="urn:x">
  <item sku="a">two &amp; more</item>
  <item sku="b"/>
  <note>caf&#xE9; <![CDATA[<raw>]]></note>
  <empty/>
  <x:tag>ns</x:tag>
  mixed
</order>"#;
        assert_eq!(
            xml_to_json(xml).unwrap(),
            json!({"order": {
                "@id": "7", "@xmlns:x": "urn:x", "#text": "mixed",
                "item": [{"@sku": "a", "#text": "two & more"}, {"@sku": "b"}],
                "note": "café <raw>", "empty": "", "x:tag": "ns"
            }})
        );
    }

    #[test]
    fn bad_xml_says_where() {
        let e = xml_to_json(b"<a>\n  <b></c>\n</a>").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6), "{e}");
        for (doc, words) in [
            (
                &b"<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>"[..],
                "DTD",
            ),
            (b"<a>&x;</a>", "undefined entity"),
            (b"<a/><b/>", "second root"),
            (b"<a><b>", "ends inside"),
            (b"text", "outside the root"),
            (b"", "no root"),
        ] {
            let e = xml_to_json(doc).unwrap_err();
            assert!(e.message.contains(words), "{e}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(
            xml_to_json(deep.as_bytes())
                .unwrap_err()
                .message
                .contains("deeper")
        );
    }

    #[test]
    fn json_becomes_xml_and_back() {
        let doc = json!({"@version": 2, "customer": {"name": "Ann & Bob", "vip": true},
                         "item": [{"@sku": "a", "#text": "x"}, {"@sku": "b", "#text": "y"}],
                         "note": null, "tags": [["p", "q"]]});
        let xml = String::from_utf8(json_to_xml(&doc, "order").unwrap()).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order version=\"2\"><customer><name>Ann &amp; Bob</name><vip>true</vip></customer><item sku=\"a\">x</item><item sku=\"b\">y</item><note/><tags><item>p</item><item>q</item></tags></order>"
        );
        let back = xml_to_json(xml.as_bytes()).unwrap();
        assert_eq!(back["order"]["item"], doc["item"]);
        assert_eq!(back["order"]["customer"]["name"], "Ann & Bob");
        let top = json_to_xml(&json!([1, "a"]), "root").unwrap();
        assert!(
            String::from_utf8(top)
                .unwrap()
                .ends_with("<root><item>1</item><item>a</item></root>")
        );
    }

    /// JSON documents the mapping carries both ways: objects (not empty) of XML-named
    /// keys, string leaves, arrays of two or more under a key (one element reads back
    /// as a single child).
    fn documents() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = "[a-z_][a-z0-9_.-]{0,6}";
        let leaf = "[ -~\u{e9}\u{4e2d}]{0,12}".prop_map(Value::String);
        leaf.prop_recursive(4, 32, 4, move |inner| {
            let member = prop_oneof![
                inner.clone(),
                proptest::collection::vec(inner, 2..4).prop_map(Value::Array),
            ];
            proptest::collection::vec((key, member), 1..4).prop_map(|pairs| {
                let mut m = Map::new();
                for (k, v) in pairs {
                    m.insert(k, v);
                }
                Value::Object(m)
            })
        })
    }

    proptest::proptest! {
        #[test]
        fn json_to_xml_and_back_is_the_same_document(doc in documents()) {
            let xml = json_to_xml(&doc, "root").unwrap();
            let back = xml_to_json(&xml).unwrap();
            let mut want = Map::new();
            want.insert("root".into(), doc);
            proptest::prop_assert_eq!(back, Value::Object(want));
        }
    }

    #[test]
    fn json_that_xml_cannot_carry_is_refused() {
        for (doc, words) in [
            (json!({"a b": 1}), "not an XML element name"),
            (json!({"1a": 1}), "not an XML element name"),
            (json!({"@x y": 1}), "attribute name"),
            (json!({"@x": {"y": 1}}), "not a string"),
            (json!({"a": "\u{0001}"}), "cannot carry"),
        ] {
            assert!(
                json_to_xml(&doc, "root")
                    .unwrap_err()
                    .message
                    .contains(words),
                "{doc}"
            );
        }
    }
}
