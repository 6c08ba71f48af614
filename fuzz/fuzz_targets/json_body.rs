//! JSON bodies as `type: transform` edits them and `type: json_schema` parses them:
//! every document serde_json reads is edited and parsed, never a panic or a stack
//! overflow; what the edits write is one JSON document, the same value whether the
//! parse opened the paths or the edits opened them as they went.
#![no_main]

use gatehouse_policies::json_edit::{JsonPath, Reach, edit};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const PATHS: [&str; 6] = ["a", "a.b", "items[*].c", "[0].x", "a[1]", "n.m.o"];

fuzz_target!(|data: &[u8]| {
    let paths: Vec<JsonPath> = PATHS.iter().map(|p| JsonPath::parse(p).unwrap()).collect();
    let edits = |doc: &mut gatehouse_policies::json_edit::Node<'_>| {
        paths[2].remove(doc);
        paths[1].rename(doc, "renamed");
        paths[3].set(doc, &json!({"set": [1, "two"]}), false);
        paths[4].remove(doc);
        paths[5].set(doc, &json!("added"), true);
        paths[0].set(doc, &json!(null), true);
    };
    let opened = edit(data, &Reach::of(&paths), edits);
    let lazy = edit(data, &Reach::default(), edits);
    // Opening reads a reached number as a value (1e400 is out of range): never laxer.
    assert!(lazy.is_ok() || opened.is_err());
    // The schema policy's parse: never a crash however deep, and whatever serde_json
    // reads, it reads.
    let instance = gatehouse_policies::json_instance::parse(data);
    if serde_json::from_slice::<Value>(data).is_ok() {
        assert!(opened.is_ok(), "a document serde_json reads was refused");
        assert!(instance.is_ok(), "json_schema refused a document serde_json reads");
    }
    if let (Ok(a), Ok(b)) = (opened, lazy) {
        serde_json::from_slice::<&serde_json::value::RawValue>(&a).expect("one JSON document");
        if let (Ok(x), Ok(y)) = (serde_json::from_slice::<Value>(&a), serde_json::from_slice::<Value>(&b)) {
            assert_eq!(x, y);
        }
    }
});
