//! glibc malloc settings for a server that streams large bodies through short-lived
//! buffers. By default glibc gives every thread that allocates an arena of its own (up to
//! eight per core: tokio's blocking pool has many threads) and raises its mmap and trim
//! thresholds each time a large block is freed, so memory freed after a push stays in the
//! process for good. Fixed thresholds keep the resident set near what is in use; a bounded
//! number of arenas keeps the blocking threads from adding one each.

/// Blocks of this size or more are mapped on their own and returned to the system when freed.
const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Free memory at the top of an arena above this is returned to the system.
const TRIM_THRESHOLD: i32 = 1024 * 1024;

/// Enough arenas that the threads started before the runtime's (the log writer, the
/// metrics upkeep, the trace exporter) and each runtime thread get one of their own: with
/// two, the runtime threads shared one and waited for its lock in a good share of their
/// `malloc`s and `free`s (seen as `futex` calls in a profile of manifest GETs). The
/// thresholds, not the arena count, bound what a push leaves behind (the resident set
/// after four concurrent 256 MiB pushes was the same with two arenas).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn arenas() -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    i32::try_from(2 * cores + 4).unwrap_or(i32::MAX)
}

/// Applies the settings; call before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    // SAFETY: mallopt only changes allocator parameters, and runs before other threads exist.
    let applied = unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas()) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !applied {
        tracing::warn!("malloc settings were not applied; memory use may be higher");
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn tune() {}
