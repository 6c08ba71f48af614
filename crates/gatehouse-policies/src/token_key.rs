//! A bearer token as the key of a cache of verdicts (`jwt`, `oauth2_introspection`):
//! hashed by its last [`TAIL`] bytes only and compared whole. The end of a JWT is its
//! signature and an opaque token is random, so the tail spreads keys as well as the
//! whole token would, at a fraction of the cost for a kilobyte-long JWT, which every
//! request otherwise hashes in full. Only tokens that were checked are stored, so a
//! client cannot fill one bucket with look-alikes.

use quick_cache::Equivalent;
use std::hash::{Hash, Hasher};

/// How many trailing bytes are hashed.
pub const TAIL: usize = 32;

fn tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(TAIL)..]
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey(Box<[u8]>);

impl TokenKey {
    /// The key of `token`.
    pub fn new(token: &str) -> Self {
        Self(token.as_bytes().into())
    }
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        tail(&self.0).hash(h);
    }
}

/// A token looked up without copying it.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a>(pub &'a str);

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        tail(self.0.as_bytes()).hash(h);
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        *key.0 == *self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_with_the_same_tail_are_still_told_apart() {
        let c = quick_cache::sync::Cache::<TokenKey, u8>::new(8);
        let a = format!("a.{}", "x".repeat(40));
        let b = format!("b.{}", "x".repeat(40));
        c.insert(TokenKey::new(&a), 1);
        assert_eq!(c.get(&TokenRef(&a)), Some(1));
        assert_eq!(c.get(&TokenRef(&b)), None, "same tail, another token");
        c.insert(TokenKey::new("short"), 2);
        assert_eq!(c.get(&TokenRef("short")), Some(2));
    }
}
