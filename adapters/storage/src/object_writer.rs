//! Writing one object, whole or not at all: on the filesystem through [`FsWriter`], elsewhere
//! through OpenDAL's writer (a multipart upload on S3).

use bytes::Bytes;

use crate::fs_writer::FsWriter;

/// How a commit ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    Done,
    /// The write's condition did not hold: nothing changed.
    ConditionFailed,
}

pub(crate) enum ObjectWriter {
    Fs(FsWriter),
    OpenDal(opendal::Writer),
}

fn io(e: opendal::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl ObjectWriter {
    pub(crate) async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        match self {
            ObjectWriter::Fs(w) => w.write(chunk).await,
            ObjectWriter::OpenDal(w) => w.write(chunk).await.map_err(io),
        }
    }

    /// Makes the object appear, whole, if the writer's condition holds.
    pub(crate) async fn commit(self) -> std::io::Result<Committed> {
        match self {
            ObjectWriter::Fs(w) => w.commit().await,
            ObjectWriter::OpenDal(mut w) => match w.close().await {
                Ok(_) => Ok(Committed::Done),
                Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => {
                    Ok(Committed::ConditionFailed)
                }
                Err(e) => Err(io(e)),
            },
        }
    }

    /// Drops what was written; nothing appears.
    pub(crate) async fn abort(self, key: &str) {
        match self {
            ObjectWriter::Fs(w) => w.abort().await,
            ObjectWriter::OpenDal(mut w) => {
                if let Err(e) = w.abort().await {
                    tracing::warn!(key, error = %e, "aborting a write failed");
                }
            }
        }
    }
}
