//! Values a policy keeps from its request phase to its response or finish phase, in the
//! request's extensions, one list per value type: each entry is tagged with the keeping
//! policy's name (compared by identity), so several policies of one kind on a route each
//! find their own. A request whose policies keep nothing allocates nothing.

use gatehouse_core::RequestCtx;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Notes<V>(Vec<(Arc<str>, V)>);

/// Keeps `value` for `owner`.
pub fn keep<V: Clone + Send + Sync + 'static>(ctx: &mut RequestCtx, owner: &Arc<str>, value: V) {
    match ctx.extensions.get_mut::<Notes<V>>() {
        Some(n) => n.0.push((owner.clone(), value)),
        None => {
            ctx.extensions.insert(Notes(vec![(owner.clone(), value)]));
        }
    }
}

/// What `owner` kept, in the order it kept it.
pub fn kept<'c, V: Clone + Send + Sync + 'static>(
    ctx: &'c RequestCtx,
    owner: &'c Arc<str>,
) -> impl Iterator<Item = &'c V> + 'c {
    ctx.extensions
        .get::<Notes<V>>()
        .into_iter()
        .flat_map(|n| n.0.iter())
        .filter(move |(o, _)| Arc::ptr_eq(o, owner))
        .map(|(_, v)| v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_finds_its_own_values() {
        let mut ctx = RequestCtx::detached("id", "127.0.0.1:1".parse().unwrap());
        let (a, b): (Arc<str>, Arc<str>) = ("same".into(), "same".into());
        assert_eq!(kept::<u64>(&ctx, &a).count(), 0);
        keep(&mut ctx, &a, 1u64);
        keep(&mut ctx, &b, 2u64);
        keep(&mut ctx, &a, 3u64);
        assert_eq!(kept::<u64>(&ctx, &a).copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(kept::<u64>(&ctx, &b).copied().collect::<Vec<_>>(), [2]);
        assert_eq!(
            kept::<u32>(&ctx, &a).count(),
            0,
            "another type, another list"
        );
    }
}
