//! Config loading never panics, whatever the text: it yields a config or located errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match gatehouse_config::load_str(text, "fuzz.yaml") {
        Ok(loaded) => {
            // What the admin API shows must parse back.
            assert!(gatehouse_config::load::document_json(loaded.text()).is_ok());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "unlocated error: {e}");
            }
        }
    }
});
