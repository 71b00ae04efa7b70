//! The allocator setup shared by the `nmoco` binary and the benchmarks, so that both measure
//! the same thing.
//!
//! candle allocates a fresh buffer for every op output and gradient: tens to hundreds of MB per
//! training step. With glibc's allocator every large one is a fresh `mmap` whose page faults
//! cost more than the op. mimalloc reuses freed memory, but by default it gives unused memory
//! back to the OS some time after it is freed ("purge", and arenas are committed lazily), and
//! a training step then faults its buffers in again on every step: the kernel's `clear_page` was 57 % of a LIF
//! forward + backward through candle's autograd (docs/benchmarks.md). [`configure`] turns the
//! purge off and commits arenas eagerly. Peak RSS is unchanged (the memory is the step's peak
//! working set either way); what changes is that it is not returned between steps.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;
//!
//! fn main() {
//!     nmoco_alloc::configure();
//! }
//! ```

pub mod bench;

use std::ffi::{c_int, c_long};

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` (`mi_option_t` value in mimalloc v2 and v3).
const ARENA_EAGER_COMMIT: c_int = 4;
/// `mi_option_purge_delay` (`mi_option_t` value in mimalloc v2 and v3).
const PURGE_DELAY: c_int = 15;

// The mimalloc library linked by the `mimalloc` crate (libmimalloc-sys) exports these; the
// declarations match mimalloc.h.
unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Tells mimalloc to keep the memory it frees (no purge) and to commit arenas eagerly. Call it
/// first thing in `main`. Does nothing for an option that the user set through the
/// environment (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`), and nothing at all with
/// `NMOCO_ALLOC_KEEP=0`.
pub fn configure() {
    if std::env::var("NMOCO_ALLOC_KEEP").as_deref() == Ok("0") {
        return;
    }
    for (option, env, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", -1),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 1),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mimalloc's option setter takes any option number and value; options are
            // plain integers read by the allocator.
            unsafe { mi_option_set(option, value) };
        }
    }
}

/// The current values of the two options [`configure`] sets: `(purge_delay_ms, arena_eager_commit)`.
pub fn options() -> (c_long, c_long) {
    // SAFETY: reading an option has no preconditions.
    unsafe {
        (
            mi_option_get(PURGE_DELAY),
            mi_option_get(ARENA_EAGER_COMMIT),
        )
    }
}

#[cfg(test)]
mod tests {
    /// The option numbers are those of the linked mimalloc: before `configure`, they read the
    /// defaults (a positive purge delay: 10 ms in v2, 1000 ms in v3; arena eager commit 2);
    /// after it, -1 and 1.
    #[test]
    fn option_numbers_match_the_linked_mimalloc() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some()
            || std::env::var_os("NMOCO_ALLOC_KEEP").is_some()
        {
            return;
        }
        let (purge, eager) = super::options();
        assert!(purge == 10 || purge == 1000, "purge delay {purge}");
        assert_eq!(eager, 2);
        super::configure();
        assert_eq!(super::options(), (-1, 1));
    }
}
