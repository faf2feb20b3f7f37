//! Where a streamed body is hashed: on the thread that receives and writes it, or, past the
//! first [`INLINE_BYTES`], on a blocking thread of its own, so that hashing (the one part of
//! a push that must be sequential) and receiving plus writing run on two cores at once.
//!
//! A thread of its own makes one push about 1.4x as fast for about 1.1x the CPU (the bytes
//! are read again on another core; docs/bench.md compares the designs). Where every core is
//! busy with pushes anyway, that CPU is taken from the others, so `auto` moves a body only
//! while fewer bodies are streaming than there are cores.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use bytes::Bytes;
use serde::Deserialize;
use stowage_core::step::{BodyTap, TapError};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_blocking};

/// Bytes hashed inline before a body may move to a thread of its own: a small body would
/// pay more for the hand-over than it saves.
const INLINE_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes handed to the hashing thread at once: each hand-over may wake a thread, and at
/// 256 KiB the wake-ups cost more than the thread saved (docs/bench.md).
const BATCH_BYTES: usize = 512 * 1024;

/// Batches received but not yet hashed, at most: each is memory a push holds. Four went as
/// fast as eight with less memory; two were slower (docs/bench.md).
const QUEUE_BATCHES: usize = 4;

/// `[server] hash_thread`: whether a large body is hashed on a thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashThread {
    /// While fewer bodies are streaming than there are cores.
    #[default]
    Auto,
    Always,
    Never,
}

static MODE: AtomicU8 = AtomicU8::new(HashThread::Auto as u8);

/// Bodies streaming now, in this process.
static STREAMING: AtomicUsize = AtomicUsize::new(0);

/// Sets how every store of this process hashes large bodies.
pub fn set_hash_thread(mode: HashThread) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

fn moves_now() -> bool {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match MODE.load(Ordering::Relaxed) {
        m if m == HashThread::Always as u8 => true,
        m if m == HashThread::Never as u8 => false,
        _ => STREAMING.load(Ordering::Relaxed) < cores,
    }
}

/// A body's hashing, inline or on its own thread.
pub(crate) struct Hashing {
    state: State,
    /// Whether the body may still move to a thread of its own.
    may_move: bool,
    _counted: Streaming,
}

/// One body counted in [`STREAMING`] while it lives.
struct Streaming;

impl Streaming {
    fn start() -> Self {
        STREAMING.fetch_add(1, Ordering::Relaxed);
        Streaming
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        STREAMING.fetch_sub(1, Ordering::Relaxed);
    }
}

enum State {
    Inline {
        tap: Box<BodyTap>,
        refused: Option<TapError>,
    },
    Thread {
        batches: mpsc::Sender<Vec<Bytes>>,
        batch: Vec<Bytes>,
        batched: usize,
        done: JoinHandle<(BodyTap, Option<TapError>)>,
    },
}

impl Hashing {
    pub(crate) fn new(tap: BodyTap) -> Self {
        Hashing {
            state: State::Inline {
                tap: Box::new(tap),
                refused: None,
            },
            may_move: true,
            _counted: Streaming::start(),
        }
    }

    /// Hashes `chunk`, or queues it for the hashing thread: `false` once the tap has
    /// refused the body ([`Hashing::finish`] tells why), and the body must not be kept.
    pub(crate) async fn feed(&mut self, chunk: &Bytes) -> bool {
        match &mut self.state {
            State::Inline { tap, refused } => {
                if let Err(e) = tap.feed(chunk) {
                    *refused = Some(e);
                    return false;
                }
                if self.may_move && tap.received() >= INLINE_BYTES {
                    self.may_move = false;
                    if moves_now() {
                        self.state = hash_on_a_thread(BodyTap::clone(tap));
                    }
                }
                true
            }
            State::Thread {
                batches,
                batch,
                batched,
                ..
            } => {
                batch.push(chunk.clone());
                *batched += chunk.len();
                if *batched < BATCH_BYTES {
                    return true;
                }
                *batched = 0;
                // Closed: the thread refused an earlier chunk and stopped.
                batches.send(std::mem::take(batch)).await.is_ok()
            }
        }
    }

    /// The tap once every chunk fed is hashed, and its refusal if it refused the body;
    /// `Err` if the hashing thread failed.
    pub(crate) async fn finish(self) -> Result<(BodyTap, Option<TapError>), String> {
        match self.state {
            State::Inline { tap, refused } => Ok((*tap, refused)),
            State::Thread {
                batches,
                batch,
                done,
                ..
            } => {
                // Refused or not, `done` says.
                let _ = batches.send(batch).await;
                drop(batches);
                done.await.map_err(|e| format!("hashing thread: {e}"))
            }
        }
    }
}

fn hash_on_a_thread(mut tap: BodyTap) -> State {
    let (batches, mut queued) = mpsc::channel::<Vec<Bytes>>(QUEUE_BATCHES);
    let done = spawn_blocking(move || {
        while let Some(batch) = queued.blocking_recv() {
            for chunk in batch {
                if let Err(refused) = tap.feed(&chunk) {
                    return (tap, Some(refused));
                }
            }
        }
        (tap, None)
    });
    State::Thread {
        batches,
        batch: Vec::new(),
        batched: 0,
        done,
    }
}

#[cfg(test)]
mod tests {
    use stowage_core::digest::{Algorithm, Digest, Hasher};

    use super::*;

    /// Past the inline bytes, in chunks of 100 KiB (not a multiple of a batch).
    const LEN: usize = 3 * INLINE_BYTES as usize + 12_345;

    fn body() -> Vec<Bytes> {
        let bytes: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        bytes
            .chunks(100 * 1024)
            .map(Bytes::copy_from_slice)
            .collect()
    }

    async fn hash(tap: BodyTap, chunks: &[Bytes]) -> (BodyTap, Option<TapError>, bool) {
        let mut hashing = Hashing::new(tap);
        let mut fed_all = true;
        for chunk in chunks {
            if !hashing.feed(chunk).await {
                fed_all = false;
                break;
            }
        }
        let moved = matches!(hashing.state, State::Thread { .. });
        let (tap, refused) = hashing.finish().await.expect("the thread ends");
        assert!(
            moved,
            "a body past INLINE_BYTES moves to a thread with `always`"
        );
        (tap, refused, fed_all)
    }

    #[tokio::test]
    async fn a_body_hashed_on_a_thread_has_the_digest_of_its_bytes() {
        set_hash_thread(HashThread::Always);
        let chunks = body();
        let expected = Digest::of(Algorithm::Sha256, &chunks.concat());
        let tap = BodyTap::new(
            Hasher::new(Algorithm::Sha256),
            Some(LEN as u64),
            Some(expected),
        );
        let (tap, refused, fed_all) = hash(tap, &chunks).await;
        assert!(fed_all && refused.is_none());
        assert_eq!(tap.received(), LEN as u64);
        assert_eq!(tap.finish(), Ok(()));
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_is_refused_on_the_thread() {
        set_hash_thread(HashThread::Always);
        let chunks = body();
        let announced = 2 * INLINE_BYTES;
        let tap = BodyTap::new(Hasher::new(Algorithm::Sha256), Some(announced), None);
        let (_, refused, fed_all) = hash(tap, &chunks).await;
        assert_eq!(
            refused,
            Some(TapError::TooLong {
                expected: announced
            })
        );
        assert!(
            !fed_all,
            "the refusal stops the feeding before the body ends"
        );
    }
}
