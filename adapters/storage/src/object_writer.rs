//! Writing one object, whole or not at all: on the filesystem through [`FsWriter`], on S3
//! through OpenDAL's writer (a multipart upload) or, for a request body that may need more
//! than one part, part by part as it arrives ([`StreamedWriter`]).
//!
//! Through OpenDAL the bytes are gathered into one buffer per part before OpenDAL sees them. Handed
//! the request body's own chunks (a slice of the connection's read buffer each), OpenDAL kept
//! a part as hundreds of small allocations; freed, they stayed in the allocator's arenas, and
//! the server held on to hundreds of MiB after a few large pushes. A part-sized buffer is one
//! allocation the allocator maps and unmaps whole, and its copy costs little next to the
//! upload itself.

use bytes::{Bytes, BytesMut};

use crate::committed::Committed;
use crate::fs_writer::FsWriter;
use crate::s3_streamed_writer::StreamedWriter;

pub(crate) enum ObjectWriter {
    Fs(FsWriter),
    OpenDal(PartWriter),
    /// Boxed: several times the others' size, and one allocation per large write.
    S3Streamed(Box<StreamedWriter>),
}

/// OpenDAL's writer, fed whole parts.
pub(crate) struct PartWriter {
    writer: opendal::Writer,
    part_size: usize,
    /// The part being gathered; allocated at the first byte.
    part: BytesMut,
}

impl PartWriter {
    /// Each gathered part of `part_size` bytes goes to `writer` (set without a chunk size) as
    /// is: one part of the multipart upload.
    pub(crate) fn new(writer: opendal::Writer, part_size: usize) -> Self {
        PartWriter {
            writer,
            part_size: part_size.max(1),
            part: BytesMut::new(),
        }
    }

    async fn write(&mut self, mut chunk: Bytes) -> opendal::Result<()> {
        while !chunk.is_empty() {
            if self.part.capacity() == 0 {
                self.part = BytesMut::with_capacity(self.part_size);
            }
            let room = self.part_size - self.part.len();
            let taken = chunk.split_to(room.min(chunk.len()));
            self.part.extend_from_slice(&taken);
            if self.part.len() == self.part_size {
                let part = std::mem::take(&mut self.part).freeze();
                self.writer.write(part).await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> opendal::Result<()> {
        if !self.part.is_empty() {
            let rest = std::mem::take(&mut self.part).freeze();
            self.writer.write(rest).await?;
        }
        self.writer.close().await.map(drop)
    }

    /// Drops the part being gathered and what was uploaded.
    async fn abort(self) -> opendal::Result<()> {
        let PartWriter { mut writer, .. } = self;
        writer.abort().await
    }
}

fn io(e: opendal::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl ObjectWriter {
    pub(crate) async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            ObjectWriter::Fs(w) => w.write(chunk).await,
            ObjectWriter::OpenDal(w) => w.write(chunk).await.map_err(io),
            ObjectWriter::S3Streamed(w) => w.write(chunk).await.map_err(std::io::Error::other),
        }
    }

    /// Makes the object appear, whole, if the writer's condition holds.
    pub(crate) async fn commit(self) -> std::io::Result<Committed> {
        match self {
            ObjectWriter::Fs(w) => w.commit().await,
            ObjectWriter::OpenDal(mut w) => match w.close().await {
                Ok(()) => Ok(Committed::Written),
                Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => {
                    Ok(Committed::ConditionFailed)
                }
                Err(e) => Err(io(e)),
            },
            ObjectWriter::S3Streamed(w) => w
                .commit()
                .await
                .map(|()| Committed::Written)
                .map_err(std::io::Error::other),
        }
    }

    /// Drops what was written; nothing appears.
    pub(crate) async fn abort(self, key: &str) {
        match self {
            ObjectWriter::Fs(w) => w.abort().await,
            ObjectWriter::OpenDal(w) => {
                if let Err(e) = w.abort().await {
                    tracing::warn!(key, error = %e, "aborting a write failed");
                }
            }
            ObjectWriter::S3Streamed(mut w) => w.abort().await,
        }
    }
}
