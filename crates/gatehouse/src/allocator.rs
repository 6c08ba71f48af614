//! The process allocator: mimalloc, told to give memory back after a burst.

/// mimalloc: fast thread-local allocation on the request path.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the 16th option); the
/// `libmimalloc-sys` bindings name the options around it but not this one.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Purge freed pages at once rather than after mimalloc's default 10 ms.
///
/// mimalloc only purges a delayed page on a later allocation in the same heap, so after a
/// burst (1,000 requests in flight, then quiet) the memory it freed stayed resident until
/// traffic came back: `bench/memory.sh 1000` measured 78 MiB after the burst with the
/// default and 46 MiB with this, for about one `madvise` per 75 requests under steady
/// load. `MIMALLOC_PURGE_DELAY` in the environment still wins.
// The one unsafe call in the workspace: a C option setter with no Rust wrapper.
#[allow(unsafe_code)]
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads it on each purge decision.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    }
}
