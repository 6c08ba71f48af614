//! The request-head checks on whatever hyper's parser (httparse) accepts: they never
//! panic, and what they let through has one Host and at most one chunked coding.
#![no_main]

use gatehouse_proxy::head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    let version = if version == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    let mut map = http::HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        map.append(name, value);
    }
    let _ = head::is_guarded_method(&method);
    if head::check_transfer_encoding(&map).is_ok() {
        // Accepted framing: nothing but at most one `chunked`.
        let codings: Vec<String> = map
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(',').map(|c| c.trim().to_ascii_lowercase()))
            .filter(|c| !c.is_empty())
            .collect();
        assert!(codings.len() <= 1 && codings.iter().all(|c| c == "chunked"), "{codings:?}");
    }
    if let Ok(Some(a)) = head::authority(&uri, &map, version) {
        assert!(map.get_all(http::header::HOST).iter().count() <= 1);
        assert!(!a.host.contains('/'));
    }
    if let Ok(path) = gatehouse_router::normalize::normalize(uri.path(), Default::default()) {
        let _ = gatehouse_router::normalize::routing_path(&path, true);
    }
});
