//! Accept-Encoding negotiation: never panics; what it picks is one of the offered codings,
//! and only when the header names it (or `*`, or `x-gzip` for gzip).
#![no_main]

use gatehouse_policies::compress::{Algorithm, negotiate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = http::HeaderMap::new();
    h.insert(http::header::ACCEPT_ENCODING, v);
    for offered in [
        &[Algorithm::Zstd, Algorithm::Br, Algorithm::Gzip][..],
        &[Algorithm::Gzip][..],
    ] {
        if let Some(a) = negotiate(&h, offered) {
            assert!(offered.contains(&a));
            let text = String::from_utf8_lossy(data).to_ascii_lowercase();
            assert!(
                text.contains(a.token()) || text.contains('*') || text.contains("x-gzip"),
                "{text:?} gave {a:?}"
            );
        }
    }
});
