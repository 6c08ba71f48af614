//! The structured body types the body-editing policies read, by `Content-Type`: JSON
//! (`application/json`, `*/*+json`) and XML (`application/xml`, `text/xml`, `*/*+xml`).

use http::{HeaderMap, header};

/// A body type the gateway can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// JSON.
    Json,
    /// XML.
    Xml,
}

impl BodyType {
    /// The type `headers` declare, if one of these (parameters and case ignored).
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = v.split(';').next()?.trim().to_ascii_lowercase();
        let (kind, sub) = essence.split_once('/')?;
        match (kind, sub) {
            ("application", "json") => Some(Self::Json),
            ("application" | "text", "xml") => Some(Self::Xml),
            (_, s) if s.ends_with("+json") => Some(Self::Json),
            (_, s) if s.ends_with("+xml") => Some(Self::Xml),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Xml => "XML",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_essence_and_suffix() {
        let of = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            BodyType::of(&h)
        };
        assert_eq!(BodyType::of(&HeaderMap::new()), None);
        assert_eq!(of("application/json"), Some(BodyType::Json));
        assert_eq!(of("Application/JSON; charset=utf-8"), Some(BodyType::Json));
        assert_eq!(of("application/problem+json"), Some(BodyType::Json));
        assert_eq!(of("text/xml; charset=utf-8"), Some(BodyType::Xml));
        assert_eq!(of("application/soap+xml"), Some(BodyType::Xml));
        assert_eq!(of("text/plain"), None);
        assert_eq!(of("json"), None);
    }
}
