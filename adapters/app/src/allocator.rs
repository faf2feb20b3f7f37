//! glibc malloc settings for a server that streams large bodies through short-lived
//! buffers. By default glibc gives every thread that allocates an arena of its own (up to
//! eight per core: tokio's blocking pool has many threads) and raises its mmap and trim
//! thresholds each time a large block is freed, so memory freed after a push stays in the
//! process for good. Fixed thresholds and two arenas keep the resident set near what is in
//! use, for about the same CPU.

/// Blocks of this size or more are mapped on their own and returned to the system when freed.
const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Free memory at the top of an arena above this is returned to the system.
const TRIM_THRESHOLD: i32 = 1024 * 1024;

const ARENAS: i32 = 2;

/// Applies the settings; call before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn tune() {
    // SAFETY: mallopt only changes allocator parameters, and runs before other threads exist.
    let applied = unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1
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
