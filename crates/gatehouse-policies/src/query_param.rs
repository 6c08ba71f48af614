//! A credential carried in a query parameter (`?api_key=`, `?access_token=`): found by its
//! decoded name, as browsers encode forms, and removed before the request goes upstream
//! when the policy hides credentials.

/// The decoded value of the first `name` parameter of `query`.
pub fn value(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| {
            let spaced = v.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced).collect()
        })
    })
}

/// Removes every `name` parameter from the request's query, keeping the others in order.
pub fn remove(req: &mut http::request::Parts, name: &str) {
    let Some(q) = req.uri.query() else {
        return;
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| decode(pair.split('=').next().unwrap_or_default()) != name)
        .collect();
    let path = req.uri.path();
    let pq = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = req.uri.clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(u) = http::Uri::from_parts(parts) {
            req.uri = u;
        }
    }
}

fn decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_removal_keeps_the_rest() {
        assert_eq!(
            value("a=1&api%5Fkey=k%2By+z&b=2", "api_key").unwrap(),
            b"k+y z"
        );
        assert_eq!(value("a=1", "api_key"), None);
        let (mut req, ()) = http::Request::get("/p?a=1&api%5Fkey=k&b=2&api_key=x")
            .body(())
            .unwrap()
            .into_parts();
        remove(&mut req, "api_key");
        assert_eq!(req.uri, "/p?a=1&b=2");
        remove(&mut req, "a");
        remove(&mut req, "b");
        assert_eq!(req.uri, "/p");
    }
}
