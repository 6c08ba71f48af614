//! The path normalizer: never panics, its output is a fixed point, starts with `/`, has no
//! dot segments, and routing it again changes nothing.
#![no_main]

use gatehouse_router::normalize::{normalize, routing_path};
use gatehouse_router::{EscapedSlashes, Normalization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let how = Normalization {
        merge_slashes: mode & 1 == 1,
        escaped_slashes: match mode >> 1 & 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Reject,
            _ => EscapedSlashes::Decode,
        },
    };
    let Ok(n) = normalize(path, how) else {
        return;
    };
    if !path.starts_with('/') {
        assert_eq!(n, path);
        return;
    }
    assert!(n.starts_with('/'), "{path:?} -> {n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "{path:?} -> {n:?}");
    }
    let again = normalize(&n, how).expect("a normalized path normalizes");
    assert_eq!(again, n, "not a fixed point: {path:?}");
    if how.merge_slashes {
        assert!(!n.contains("//"), "{path:?} -> {n:?}");
    }
    let r = routing_path(&n, how.merge_slashes);
    assert!(r.starts_with('/'));
    assert!(!r.contains(';'));
    assert_eq!(routing_path(&r, how.merge_slashes), r);
});
