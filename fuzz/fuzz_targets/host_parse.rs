//! Host parsing: never panics; an accepted host is lower case, carries no port, path,
//! list or user info, and its raw value is kept verbatim.
#![no_main]

use gatehouse_proxy::head::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let Ok(a) = parse(raw.clone()) else {
        return;
    };
    assert_eq!(a.raw, raw);
    assert!(!a.host.is_empty());
    assert_eq!(a.host, a.host.to_ascii_lowercase());
    assert!(!a.host.ends_with('.'));
    for bad in ['/', ',', ' ', '@', '\\', '?', '#'] {
        assert!(!a.host.contains(bad), "{:?} accepted as {:?}", raw, a.host);
    }
    if a.host.contains(':') {
        assert!(a.host.parse::<std::net::Ipv6Addr>().is_ok(), "{:?}", a.host);
    }
});
