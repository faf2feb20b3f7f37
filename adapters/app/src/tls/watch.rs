//! Watching `[server.tls]`'s files: a thread polls their metadata once a second and builds
//! a new configuration when any of it changed. Polling rather than inotify: it sees a file
//! rewritten in place, one renamed over it and a symlink swapped (as Kubernetes updates a
//! mounted secret) alike, with no dependency. A configuration that cannot be built (a file
//! half written, a key that is not the new certificate's) leaves the current one serving
//! and is logged once; the next change is tried again.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use super::load::Files;

const POLL: Duration = Duration::from_secs(1);

/// What changes when a file is written, replaced or removed. The inode change time covers
/// a file copied with its old modification time kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp(Option<[i64; 7]>);

pub fn stamps(files: &Files) -> Vec<Stamp> {
    files
        .paths()
        .map(|path| {
            Stamp(std::fs::metadata(path).ok().map(|m| {
                [
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.size() as i64,
                    m.ino() as i64,
                    m.dev() as i64,
                ]
            }))
        })
        .collect()
}

/// Starts the thread; it ends once `current` has no other owner.
pub fn spawn(
    files: Files,
    mut seen: Vec<Stamp>,
    current: Weak<ArcSwap<ServerConfig>>,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("stowage-tls-watch".into())
        .spawn(move || {
            loop {
                thread::sleep(POLL);
                let Some(current) = current.upgrade() else {
                    return;
                };
                // Stamped before reading: a write that lands while reading is seen next time.
                let now = stamps(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                match files.load() {
                    Ok(config) => {
                        current.store(Arc::new(config));
                        tracing::info!("TLS files reloaded: new connections use them");
                    }
                    Err(e) => tracing::error!(
                        "TLS files changed but cannot be used; still serving the previous \
                         ones: {e}"
                    ),
                }
            }
        })?;
    Ok(())
}
