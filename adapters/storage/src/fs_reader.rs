//! Reading a stored object for a response on the filesystem: the file is mapped a window at
//! a time and each window goes to the socket as it is, so its bytes are copied once (page
//! cache to socket) instead of twice through a buffer, and no buffer of ours is filled or
//! kept. Mapped windows are unmapped as soon as they have been sent.

use std::fs::File;
use std::path::PathBuf;
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

/// The `len` bytes of the file at `path` from `start`.
pub(crate) async fn read_span(
    path: PathBuf,
    start: u64,
    len: u64,
) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
    let file = joined(
        spawn_blocking(move || {
            let file = File::open(&path)?;
            let size = file.metadata()?.len();
            if start.saturating_add(len) > size {
                // Mapping past the end would fault on access instead of failing here.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} has {size} bytes, {len} asked from {start}",
                        path.display()
                    ),
                ));
            }
            Ok(file)
        })
        .await,
    )?;
    let file = Arc::new(file);
    let windows = (0..len.div_ceil(WINDOW)).map(move |i| {
        let offset = i * WINDOW;
        (start + offset, WINDOW.min(len - offset) as usize)
    });
    Ok(futures_util::stream::iter(windows)
        .map(move |(offset, len)| {
            let file = file.clone();
            async move { joined(spawn_blocking(move || map(&file, offset, len)).await) }
        })
        .buffered(WINDOWS_AHEAD))
}

fn map(file: &File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    // SAFETY: a mapping is only unsound if the file changes underneath it. Stored objects
    // never do: every write goes to a temporary file that is renamed into place, and a
    // delete unlinks the name while the mapped inode stays intact. (An upload's data file is
    // written in place, but it becomes a blob only after its end offset was claimed, when
    // no request can write to it any more: see `stowage_core::upload::Part`.) The window
    // lies within the file's size, checked when it was opened. (A file truncated in place by
    // something other than Stowage would fault the process.)
    let map = unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}
