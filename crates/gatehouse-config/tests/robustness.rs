//! Whatever text arrives as a config, loading answers with a config or located errors:
//! it never panics (a reload must not take the process down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_config::load_str;
use proptest::prelude::*;

const VALID: &str = include_str!("../../../examples/resilience.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = load_str(&text, "fuzz.yaml");
    }

    #[test]
    fn mutated_valid_configs_never_panic(
        cut in 0..VALID.len(),
        insert in prop::sample::select(vec![
            "", ":", "-", "{", "}", "[", "]", "\"", "'", "\n  ", "\n", "0", "-1", "1e309",
            "${X}", "${", "999999999999999999999s", "null", "~", "*a", "&a", "!!str",
            "\t", "0x10", "true", "\u{0}", "é",
        ]),
        drop in 0usize..8,
    ) {
        let mut text = VALID.to_string();
        let at = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + drop..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text.replace_range(at..end, insert);
        match load_str(&text, "fuzz.yaml") {
            Ok(_) => {}
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert_eq!(&e.file, "fuzz.yaml");
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}
