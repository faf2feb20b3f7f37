//! The targets the suite runs on: the in-memory model, and a real backend (filesystem or S3)
//! behind the same `Stores` the driver performs requests with.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use stowage_core::range::Span;
use stowage_core::step::{Outcome, StorageRequest, StoreRole};
use stowage_core::time::Millis;
use stowage_proofs::store::ObjectStore;
use stowage_storage::{
    ConditionalWrites, FsSettings, InlineCalls, S3Settings, StoreSettings, Stores,
};

use crate::{Capabilities, S3Endpoint, Target, TestBody};

/// The model the simulation runs on, in one of its two profiles.
pub struct Model(ObjectStore);

impl Model {
    /// As S3: versions, no writes in place.
    pub fn as_s3() -> Self {
        Model(ObjectStore::default())
    }

    /// As the filesystem: no versions, writes in place.
    pub fn as_fs() -> Self {
        Model(ObjectStore::without_versions())
    }
}

impl Target for Model {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            versions: self.0.versioned,
            in_place: self.0.writes_in_place(),
            lists_emptied_folders: !self.0.versioned,
            create_new_moves: true,
        }
    }

    async fn perform(&mut self, request: StorageRequest, body: TestBody) -> Outcome {
        // The model's writes are stamped with this machine's clock, as a backend's are.
        let now = Millis(crate::cases::wall_clock());
        self.0.perform(request, &mut body.for_model(), now)
    }

    async fn read_span(&mut self, key: &str, span: Span) -> Result<Bytes, String> {
        self.0
            .read_span(StoreRole::Blobs, key, span)
            .ok_or_else(|| format!("{key} does not hold bytes {span:?}"))
    }
}

/// A real backend, with a scratch folder of its own on the filesystem (removed when done).
pub struct RealStore {
    stores: Stores,
    capabilities: Capabilities,
    scratch: Option<PathBuf>,
}

impl RealStore {
    /// The filesystem backend on a fresh folder named after `case`.
    pub fn fs(case: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("stowage-contract-{}-{case}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let settings = FsSettings {
            root_dir: root.to_string_lossy().into_owned(),
            sync_to_disk: false,
            inline_calls: InlineCalls::Auto,
        };
        RealStore {
            stores: open(&StoreSettings::Fs(settings)),
            capabilities: Capabilities {
                versions: false,
                in_place: true,
                lists_emptied_folders: true,
                create_new_moves: true,
            },
            scratch: Some(root),
        }
    }

    /// The S3 backend at `endpoint`, below a key prefix of its own for `case`, with the
    /// write conditions probed as the servers do at startup.
    pub async fn s3(endpoint: &S3Endpoint, case: &str) -> Self {
        let settings = S3Settings {
            access_key_id: Some(endpoint.access_key_id.clone()),
            secret_key: Some(endpoint.secret_key.clone()),
            endpoint: endpoint.url.clone(),
            bucket: endpoint.bucket.clone(),
            region: endpoint.region.clone(),
            key_prefix: format!("contract-{}/{case}", std::process::id()),
            // S3's smallest part, so a few MiB exercise the multipart paths.
            multipart_part_size: "5MiB".parse().expect("a byte size"),
            multipart_copy_threshold: "5GB".parse().expect("a byte size"),
            multipart_copy_chunk_size: "100MB".parse().expect("a byte size"),
            multipart_copy_jobs: 4,
            max_attempts: 2,
            operation_timeout_secs: 60,
            operation_attempt_timeout_secs: 30,
            conditional_writes: ConditionalWrites::Auto,
        };
        let stores = open(&StoreSettings::S3(settings));
        stores.prepare().await.expect("the S3 store prepared");
        RealStore {
            stores,
            capabilities: Capabilities {
                versions: true,
                in_place: false,
                lists_emptied_folders: false,
                create_new_moves: endpoint.honours_conditional_copy,
            },
            scratch: None,
        }
    }
}

fn open(settings: &StoreSettings) -> Stores {
    Stores::open(settings, None).unwrap_or_else(|e| panic!("cannot open {settings:?}: {e}"))
}

impl Drop for RealStore {
    fn drop(&mut self) {
        if let Some(root) = &self.scratch {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

impl Target for RealStore {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn perform(&mut self, request: StorageRequest, mut body: TestBody) -> Outcome {
        self.stores.perform(request, &mut body).await
    }

    async fn read_span(&mut self, key: &str, span: Span) -> Result<Bytes, String> {
        let stream = self
            .stores
            .read_span(StoreRole::Blobs, key, span)
            .await
            .map_err(|e| format!("opening {key}: {e}"))?;
        let data: BytesMut = stream
            .try_fold(BytesMut::new(), |mut data, chunk| async move {
                data.extend_from_slice(&chunk);
                Ok(data)
            })
            .await
            .map_err(|e| format!("reading {key}: {e}"))?;
        Ok(data.freeze())
    }
}
