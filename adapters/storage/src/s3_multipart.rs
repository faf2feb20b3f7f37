//! Abandoned S3 multipart uploads, listed and aborted with signed requests of our own.
//!
//! OpenDAL hides multipart upload ids: it aborts the uploads its writers start, but a process
//! that dies mid-upload leaves parts behind that OpenDAL can neither list nor abort (it has no
//! ListMultipartUploads or AbortMultipartUpload). This module is the only S3 traffic that does
//! not go through OpenDAL; it signs with OpenDAL's own signer (`reqsign`) and sends with
//! reqwest, the client under OpenDAL's transport.

use std::time::Duration;

use bytes::Bytes;
use reqsign_aws_v4::{Credential, EMPTY_STRING_SHA256, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};
use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use stowage_core::time::Millis;

use crate::s3;
use crate::settings::{AccessKey, S3Settings};

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("S3 endpoint {url:?} is not an http(s) URL")]
    Endpoint { url: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{action}: cannot build the request: {source}")]
    Build {
        action: &'static str,
        source: http::Error,
    },
    #[error("{action}: cannot sign the request: {source}")]
    Sign {
        action: &'static str,
        source: reqsign_core::Error,
    },
    #[error("{action}: {source}")]
    Send {
        action: &'static str,
        source: reqwest::Error,
    },
    #[error("{action}: S3 answered {status}: {body}")]
    Status {
        action: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("ListMultipartUploads: unreadable answer: {0}")]
    Parse(#[from] quick_xml::DeError),
    #[error("ListMultipartUploads: upload {key:?} has a bad Initiated time {initiated:?}")]
    Initiated { key: String, initiated: String },
}

/// One incomplete multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingUpload {
    key: String,
    upload_id: String,
    initiated: Millis,
}

/// `ListMultipartUploadsResult`, the fields we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default)]
    upload: Vec<ListedUpload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

impl ListedUpload {
    fn pending(self) -> Result<PendingUpload, MultipartError> {
        match self.initiated.parse::<jiff::Timestamp>() {
            Ok(at) => Ok(PendingUpload {
                initiated: Millis(u64::try_from(at.as_millisecond()).unwrap_or(0)),
                key: self.key,
                upload_id: self.upload_id,
            }),
            Err(_) => Err(MultipartError::Initiated {
                key: self.key,
                initiated: self.initiated,
            }),
        }
    }
}

/// The multipart uploads of one bucket below one key prefix.
#[derive(Clone, Debug)]
pub(crate) struct MultipartUploads {
    client: Client,
    signer: Signer<Credential>,
    /// `<endpoint>/<bucket>/`: path-style addressing, as OpenDAL's s3 service uses by default.
    bucket_url: Url,
    /// Keys of this store start with it (`team-a/`, or empty for the whole bucket).
    prefix: String,
}

impl MultipartUploads {
    pub(crate) fn new(settings: &S3Settings, key: &AccessKey) -> Result<Self, MultipartError> {
        let bucket_url = format!(
            "{}/{}/",
            settings.endpoint.trim_end_matches('/'),
            settings.bucket
        );
        let bucket_url = Url::parse(&bucket_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or(MultipartError::Endpoint { url: bucket_url })?;
        s3::install_transport();
        let client = Client::builder()
            .timeout(Duration::from_secs(settings.operation_attempt_timeout_secs))
            .build()
            .map_err(MultipartError::Client)?;
        let credentials = StaticCredentialProvider::new(&key.id, &key.secret);
        let signer = Signer::new(
            Context::new(),
            credentials,
            RequestSigner::new("s3", &settings.region),
        );
        let prefix = match settings.key_prefix.trim_matches('/') {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        Ok(MultipartUploads {
            client,
            signer,
            bucket_url,
            prefix,
        })
    }

    /// Where this store's keys live, to tell stores apart.
    pub(crate) fn location(&self) -> String {
        format!("{}{}", self.bucket_url, self.prefix)
    }

    /// Counts every upload below the prefix initiated before `cutoff` and, with `abort`,
    /// aborts it; returns how many.
    pub(crate) async fn stale(&self, cutoff: Millis, abort: bool) -> Result<usize, MultipartError> {
        let mut stale = 0;
        for upload in self.list().await? {
            if upload.initiated < cutoff {
                if abort {
                    self.abort(&upload).await?;
                }
                stale += 1;
            }
        }
        Ok(stale)
    }

    async fn list(&self) -> Result<Vec<PendingUpload>, MultipartError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.bucket_url.clone();
            url.query_pairs_mut()
                .append_key_only("uploads")
                .append_pair("prefix", &self.prefix);
            if let Some((key, upload_id)) = &markers {
                url.query_pairs_mut()
                    .append_pair("key-marker", key)
                    .append_pair("upload-id-marker", upload_id);
            }
            let body = self
                .send("ListMultipartUploads", Method::GET, url, &[])
                .await?;
            let page: ListPage = quick_xml::de::from_reader(body.as_ref())?;
            for upload in page.upload {
                uploads.push(upload.pending()?);
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(upload_id)) => markers = Some((key, upload_id)),
                _ => return Ok(uploads),
            }
        }
    }

    async fn abort(&self, upload: &PendingUpload) -> Result<(), MultipartError> {
        let mut url = self.bucket_url.clone();
        // The key's segments as they are (`Url::join` would resolve `..` and read `?`).
        url.path_segments_mut()
            .map_err(|()| MultipartError::Endpoint {
                url: self.bucket_url.to_string(),
            })?
            .pop_if_empty()
            .extend(upload.key.split('/'));
        url.query_pairs_mut()
            .append_pair("uploadId", &upload.upload_id);
        // NoSuchUpload: completed or aborted meanwhile, which is what we wanted.
        self.send(
            "AbortMultipartUpload",
            Method::DELETE,
            url,
            &[StatusCode::NOT_FOUND],
        )
        .await?;
        tracing::info!(key = upload.key, "aborted an abandoned multipart upload");
        Ok(())
    }

    /// Sends one signed request with an empty body; `also_fine` lists error statuses that
    /// count as success.
    async fn send(
        &self,
        action: &'static str,
        method: Method,
        url: Url,
        also_fine: &[StatusCode],
    ) -> Result<Bytes, MultipartError> {
        let request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("x-amz-content-sha256", EMPTY_STRING_SHA256)
            .body(())
            .map_err(|source| MultipartError::Build { action, source })?;
        let (mut head, ()) = request.into_parts();
        self.signer
            .sign(&mut head, None)
            .await
            .map_err(|source| MultipartError::Sign { action, source })?;
        let request = reqwest::Request::try_from(http::Request::from_parts(head, Vec::<u8>::new()))
            .map_err(|source| MultipartError::Send { action, source })?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|source| MultipartError::Send { action, source })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| MultipartError::Send { action, source })?;
        if status.is_success() || also_fine.contains(&status) {
            return Ok(body);
        }
        Err(MultipartError::Status {
            action,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/v2/b</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/v2/a</Key><UploadId>id-1</UploadId>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated><StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>p/v2/b</Key><UploadId>id-2</UploadId>
    <Initiated>2024-01-02T03:04:05.678Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;

    #[test]
    fn reads_a_listing_page() {
        let page: ListPage = quick_xml::de::from_str(PAGE).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("p/v2/b"));
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id-2"));
        let uploads: Vec<PendingUpload> = page
            .upload
            .into_iter()
            .map(|u| u.pending().unwrap())
            .collect();
        assert_eq!(uploads[0].key, "p/v2/a");
        assert_eq!(uploads[0].initiated, Millis(1_289_422_113_000));
        assert_eq!(uploads[1].upload_id, "id-2");
        assert_eq!(uploads[1].initiated, Millis(1_704_164_645_678));
    }

    #[test]
    fn reads_an_empty_listing() {
        let page: ListPage = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(page.upload.is_empty() && !page.is_truncated);
    }

    #[test]
    fn refuses_a_bad_initiated_time() {
        let upload = ListedUpload {
            key: "k".into(),
            upload_id: "i".into(),
            initiated: "yesterday".into(),
        };
        assert!(matches!(
            upload.pending(),
            Err(MultipartError::Initiated { .. })
        ));
    }

    fn key() -> AccessKey {
        AccessKey {
            id: "a".into(),
            secret: "b".into(),
        }
    }

    fn settings(prefix: &str) -> S3Settings {
        serde_json::from_value(serde_json::json!({
            "access_key_id": "a",
            "secret_key": "b",
            "endpoint": "http://127.0.0.1:9000/",
            "bucket": "bucket",
            "region": "us-east-1",
            "key_prefix": prefix,
        }))
        .unwrap()
    }

    #[test]
    fn refuses_an_endpoint_that_is_not_http() {
        let mut bad = settings("");
        bad.endpoint = "s3.example.com".into();
        assert!(matches!(
            MultipartUploads::new(&bad, &key()),
            Err(MultipartError::Endpoint { .. })
        ));
    }

    #[test]
    fn scopes_to_the_key_prefix() {
        let all = MultipartUploads::new(&settings(""), &key()).unwrap();
        assert_eq!(all.location(), "http://127.0.0.1:9000/bucket/");
        let team = MultipartUploads::new(&settings("/team-a/"), &key()).unwrap();
        assert_eq!(team.location(), "http://127.0.0.1:9000/bucket/team-a/");
    }
}
