//! Reading a stored object for a response on the filesystem: the file is mapped a window at
//! a time and each window goes to the socket as it is, so its bytes are copied once (page
//! cache to socket) instead of twice through a buffer, and no buffer of ours is filled or
//! kept. Mapped windows are unmapped as soon as they have been sent.
//!
//! Stowage never changes a stored file in place, but something else might truncate one (an
//! operator, another tool on the same tree). Touching a mapped page past a file's end
//! faults, so before mapping each window the open file is measured again (one `fstat` per
//! MiB, on the blocking thread that maps it), and a file that no longer reaches the
//! window's end ends the response with an error instead: that pull fails, nothing else.
//!
//! What is left: a truncation after a window was measured, while it waits for the socket
//! (for as long as a slow client takes to read a MiB). The window's bytes reach the socket
//! by the kernel's copy in `writev`, which catches the fault and fails that write with
//! `EFAULT`, so again only that response ends. A fault would kill the process only if our
//! own code read the window (a TLS layer encrypting it, or hyper copying body chunks into
//! its buffer, which it does only on connections without vectored writes; both servers'
//! connections have them). Reading each window into a buffer would close that too, at the
//! cost of a second copy of every byte pulled: not taken while nothing reads windows in
//! user space.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use memmap2::MmapOptions;
use tokio::task::spawn_blocking;

use crate::fs_calls::joined;

/// Bytes mapped at once.
const WINDOW: u64 = 1024 * 1024;

/// Windows mapped ahead of the socket.
const WINDOWS_AHEAD: usize = 2;

/// An error if the file at `path`, of `size` bytes, does not hold `len` bytes from `start`.
fn check_holds(path: &Path, size: u64, start: u64, len: u64) -> std::io::Result<()> {
    if start.saturating_add(len) <= size {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!(
            "{} has {size} bytes, {len} asked from {start}",
            path.display()
        ),
    ))
}

/// The `len` bytes of the file at `path` from `start`.
pub(crate) async fn read_span(
    path: PathBuf,
    start: u64,
    len: u64,
) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
    let (file, path) = joined(
        spawn_blocking(move || {
            let file = File::open(&path)?;
            check_holds(&path, file.metadata()?.len(), start, len)?;
            Ok((file, path))
        })
        .await,
    )?;
    let opened = Arc::new((file, path));
    let windows = (0..len.div_ceil(WINDOW)).map(move |i| {
        let offset = i * WINDOW;
        (start + offset, WINDOW.min(len - offset) as usize)
    });
    Ok(
        futures_util::stream::iter(windows)
            .map(move |(offset, len)| {
                let opened = opened.clone();
                async move {
                    joined(spawn_blocking(move || map(&opened.0, &opened.1, offset, len)).await)
                }
            })
            .buffered(WINDOWS_AHEAD),
    )
}

fn map(file: &File, path: &Path, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let size = file.metadata()?.len();
    if let Err(e) = check_holds(path, size, offset, len as u64) {
        tracing::warn!(error = %e, "a blob file shrank while it was read: this response ends");
        return Err(e);
    }
    // SAFETY: a mapping is only unsound if the file changes underneath it. Stored objects
    // never do: every write goes to a temporary file that is renamed into place, and a
    // delete unlinks the name while the mapped inode stays intact. (An upload's data file is
    // written in place, but it becomes a blob only after its end offset was claimed, when
    // no request can write to it any more: see `stowage_core::upload::Part`.) The window
    // lies within the file's size, measured just now; a truncation by something else after
    // that faults only the kernel's copy to the socket (see the module comment).
    let map = unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_shrinks_ends_the_stream_with_an_error() {
        let dir = std::env::temp_dir().join(format!("stowage-fs-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("blob");
        std::fs::write(&path, vec![7u8; 4 * WINDOW as usize]).expect("write");
        let stream = read_span(path.clone(), 0, 4 * WINDOW).await.expect("open");
        let mut stream = std::pin::pin!(stream);
        let first = stream.next().await.expect("a window").expect("read");
        assert_eq!(first.len(), WINDOW as usize);
        // The windows mapped ahead stay readable; the ones after them are refused.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(WINDOW + WINDOW / 2 + (WINDOWS_AHEAD as u64) * WINDOW))
            .expect("truncate");
        let mut ended = None;
        while let Some(window) = stream.next().await {
            if let Err(e) = window {
                ended = Some(e);
                break;
            }
        }
        let error = ended.expect("the stream ends with an error");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
