//! Edits of a JSON document at dotted paths (`card.number`, `items[0].sku`,
//! `items[*].cost`), as `type: transform` applies them: remove, rename, set, and add
//! (set only where absent). A path that leads nowhere in a document edits nothing.

use serde_json::{Map, Value};

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
    pub fn remove(&self, doc: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        each_at(doc, parents, &mut |v| match (last, v) {
            (Seg::Key(k), Value::Object(m)) => {
                m.shift_remove(k);
            }
            (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
                a.remove(*i);
            }
            (Seg::All, Value::Array(a)) => a.clear(),
            _ => {}
        });
    }

    /// Renames the key the path ends in to `to`, in the same object (replacing a member
    /// of that name).
    pub fn rename(&self, doc: &mut Value, to: &str) {
        let Some((Seg::Key(from), parents)) = self.0.split_last() else {
            return;
        };
        each_at(doc, parents, &mut |v| {
            if let Value::Object(m) = v
                && let Some(moved) = m.shift_remove(from)
            {
                m.insert(to.to_string(), moved);
            }
        });
    }

    /// Puts `value` where the path names, creating missing objects on the way; with
    /// `only_if_absent`, a member or element already there is kept.
    pub fn set(&self, doc: &mut Value, value: &Value, only_if_absent: bool) {
        set_at(doc, &self.0, value, only_if_absent);
    }
}

/// Calls `f` on every value `segs` leads to from `v` (several through `[*]`).
fn each_at(v: &mut Value, segs: &[Seg], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = segs.split_first() else {
        f(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(child) = m.get_mut(k) {
                each_at(child, rest, f);
            }
        }
        (Seg::Index(i), Value::Array(a)) => {
            if let Some(child) = a.get_mut(*i) {
                each_at(child, rest, f);
            }
        }
        (Seg::All, Value::Array(a)) => {
            for child in a {
                each_at(child, rest, f);
            }
        }
        _ => {}
    }
}

fn set_at(v: &mut Value, segs: &[Seg], value: &Value, only_if_absent: bool) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if rest.is_empty() {
                if !(only_if_absent && m.contains_key(k)) {
                    m.insert(k.clone(), value.clone());
                }
                return;
            }
            // Objects on the way are created, so `meta.route` works on a body without
            // `meta`; a member of another type is not replaced by one.
            let child = m
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            set_at(child, rest, value, only_if_absent);
        }
        (Seg::Index(i), Value::Array(a)) => {
            if let Some(child) = a.get_mut(*i) {
                if rest.is_empty() {
                    if !only_if_absent {
                        *child = value.clone();
                    }
                } else {
                    set_at(child, rest, value, only_if_absent);
                }
            }
        }
        (Seg::All, Value::Array(a)) => {
            for child in a {
                if rest.is_empty() {
                    if !only_if_absent {
                        *child = value.clone();
                    }
                } else {
                    set_at(child, rest, value, only_if_absent);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> JsonPath {
        JsonPath::parse(s).unwrap()
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
        let mut d = json!({"password": "x", "card": {"number": "4111", "exp": "12/30"},
                           "items": [{"cost": 1, "sku": "a"}, {"cost": 2, "sku": "b"}, 7]});
        for path in [
            "password",
            "card.number",
            "items[*].cost",
            "nowhere.deep",
            "items[9]",
        ] {
            p(path).remove(&mut d);
        }
        assert_eq!(
            d,
            json!({"card": {"exp": "12/30"}, "items": [{"sku": "a"}, {"sku": "b"}, 7]})
        );
        p("items[1]").remove(&mut d);
        assert_eq!(d["items"], json!([{"sku": "a"}, 7]));
    }

    #[test]
    fn rename_keeps_the_value_in_the_same_object() {
        let mut d = json!({"userName": "ann", "items": [{"qty": 1}, {"n": 2}]});
        p("userName").rename(&mut d, "user_name");
        p("items[*].qty").rename(&mut d, "quantity");
        p("absent").rename(&mut d, "x");
        assert_eq!(
            d,
            json!({"user_name": "ann", "items": [{"quantity": 1}, {"n": 2}]})
        );
    }

    #[test]
    fn set_creates_objects_and_add_keeps_what_is_there() {
        let mut d = json!({"source": "client", "items": [{"a": 1}, {"a": 2}], "s": "str"});
        p("source").set(&mut d, &json!("gateway"), false);
        p("meta.route").set(&mut d, &json!("orders"), true);
        p("items[*].b").set(&mut d, &json!(true), false);
        p("items[0].a").set(&mut d, &json!(9), true);
        p("s.inner").set(&mut d, &json!(1), false);
        assert_eq!(
            d,
            json!({"source": "gateway", "items": [{"a": 1, "b": true}, {"a": 2, "b": true}],
                   "s": "str", "meta": {"route": "orders"}})
        );
        // Keys keep their place when replaced.
        let keys: Vec<_> = d.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["source", "items", "s", "meta"]);
    }
}
