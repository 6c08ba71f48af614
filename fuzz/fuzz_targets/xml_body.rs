//! XML bodies as `type: transform` converts them: any bytes give a JSON document or a
//! positioned error, never a panic; whatever JSON to XML writes, XML to JSON reads back.
#![no_main]

use gatehouse_policies::xml_json::{json_to_xml, xml_to_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match xml_to_json(data) {
        Ok(v) => {
            if let Ok(xml) = json_to_xml(&v, "root") {
                let back = xml_to_json(&xml).expect("what json_to_xml writes is XML");
                assert!(back.get("root").is_some());
            }
        }
        Err(e) => assert!(e.line >= 1 && e.column >= 1, "{e}"),
    }
});
