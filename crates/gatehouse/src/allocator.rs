//! The process allocator: mimalloc, told to give memory back after a burst.

/// mimalloc: fast thread-local allocation on the request path.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives back to the OS what this thread's heap freed, at once.
///
/// mimalloc delays a purge (10 ms by default) so memory freed and soon reused is not
/// returned and faulted in again: purging at once (the option set to 0) made each
/// 10 KiB JSON transform cost 40 us instead of 23, page faults and `madvise` on every
/// request. But it only purges a delayed page on a later allocation in the same heap,
/// so after a burst (1,000 requests in flight, then quiet) the freed memory stayed
/// resident until traffic came back. Each runtime thread runs this every 250 ms
/// (`housekeeping`): under load it costs nothing measurable, and after a burst the
/// memory is back with the OS within that time.
// The one unsafe call in the workspace: a C function with no Rust wrapper.
#[allow(unsafe_code)]
pub fn collect() {
    // SAFETY: collects the calling thread's own heap; no pointer is passed or returned.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
