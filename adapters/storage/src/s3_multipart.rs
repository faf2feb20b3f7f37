//! S3 multipart uploads through signed requests of our own: housekeeping lists and aborts
//! abandoned ones, and a body of known length is uploaded part by part as it arrives
//! (`s3_streamed_writer.rs`).
//!
//! OpenDAL hides multipart upload ids: it aborts the uploads its writers start, but a process
//! that dies mid-upload leaves parts behind that OpenDAL can neither list nor abort (it has no
//! ListMultipartUploads or AbortMultipartUpload), and its writer takes a part only whole, in
//! memory. This module is the only S3 traffic that does not go through OpenDAL; it signs with
//! OpenDAL's own signer (`reqsign`) and sends with reqwest, the client under OpenDAL's
//! transport.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, ETAG};
use reqsign_aws_v4::{Credential, EMPTY_STRING_SHA256, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};
use reqwest::{Body, Client, Method, StatusCode, Url};
use serde::Deserialize;
use stowage_core::time::Millis;

use crate::causes::WithCauses;
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
    #[error("{action}: unreadable answer: {source}")]
    Parse {
        action: &'static str,
        source: quick_xml::DeError,
    },
    #[error("{action}: S3 answered 200 with an error: {body}")]
    ErrorBody { action: &'static str, body: String },
    #[error("UploadPart: S3 answered without an ETag")]
    NoEtag,
    #[error("ListMultipartUploads: upload {key:?} has a bad Initiated time {initiated:?}")]
    Initiated { key: String, initiated: String },
}

impl MultipartError {
    /// Whether sending the same request again may succeed: S3 was not reached, did not
    /// answer in time, or answered with a server error or throttling.
    fn worth_retrying(&self) -> bool {
        match self {
            MultipartError::Send { .. } => true,
            MultipartError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
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

/// `InitiateMultipartUploadResult`, the field we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Initiated {
    upload_id: String,
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
    /// Bounds each request but a streamed part's, which lasts as long as its body comes.
    attempt_timeout: Duration,
    /// Attempts of a request without a streamed body (`max_attempts`).
    attempts: usize,
}

/// What a request carries.
pub(crate) enum Payload {
    Empty,
    /// Bytes in memory, in one piece or several.
    Whole(Vec<Bytes>),
    /// A body of this many bytes, sent as it comes, with no timeout.
    Streamed(u64, Body),
}

impl Payload {
    /// The same payload for another attempt; a streamed body is gone once sent.
    fn try_clone(&self) -> Option<Payload> {
        match self {
            Payload::Empty => Some(Payload::Empty),
            Payload::Whole(pieces) => Some(Payload::Whole(pieces.clone())),
            Payload::Streamed(..) => None,
        }
    }
}

/// Pieces in memory as one request body, without copying them together.
struct Pieces(std::vec::IntoIter<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.next().map(|piece| Ok(http_body::Frame::data(piece))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_slice().iter().map(|p| p.len() as u64).sum())
    }
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
        let client = Client::builder().build().map_err(MultipartError::Client)?;
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
            attempt_timeout: Duration::from_secs(settings.operation_attempt_timeout_secs),
            attempts: settings.max_attempts.max(1),
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
            let action = "ListMultipartUploads";
            let (_, body) = self
                .send(action, Method::GET, url, Payload::Empty, &[])
                .await?;
            let page: ListPage = parse(action, &body)?;
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
        self.abort_upload(&upload.key, &upload.upload_id).await?;
        tracing::info!(key = upload.key, "aborted an abandoned multipart upload");
        Ok(())
    }

    /// How long a request may take, but a streamed part's.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// The key this store's `key` has in the bucket.
    pub(crate) fn bucket_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// The URL of `bucket_key`, its segments as they are (`Url::join` would resolve `..` and
    /// read `?`), with `query`.
    fn object_url(&self, bucket_key: &str, query: &[(&str, &str)]) -> Result<Url, MultipartError> {
        let mut url = self.bucket_url.clone();
        url.path_segments_mut()
            .map_err(|()| MultipartError::Endpoint {
                url: self.bucket_url.to_string(),
            })?
            .pop_if_empty()
            .extend(bucket_key.split('/'));
        for (name, value) in query {
            if value.is_empty() {
                url.query_pairs_mut().append_key_only(name);
            } else {
                url.query_pairs_mut().append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// Starts a multipart upload at `bucket_key`; its upload id.
    pub(crate) async fn create(&self, bucket_key: &str) -> Result<String, MultipartError> {
        let action = "CreateMultipartUpload";
        let url = self.object_url(bucket_key, &[("uploads", "")])?;
        let (_, body) = self
            .send(action, Method::POST, url, Payload::Empty, &[])
            .await?;
        Ok(parse::<Initiated>(action, &body)?.upload_id)
    }

    /// Uploads part `number` (from 1) of `payload`; its ETag.
    pub(crate) async fn upload_part(
        &self,
        bucket_key: &str,
        upload_id: &str,
        number: u32,
        payload: Payload,
    ) -> Result<String, MultipartError> {
        let number = number.to_string();
        let url = self.object_url(
            bucket_key,
            &[("partNumber", &number), ("uploadId", upload_id)],
        )?;
        let (headers, _) = self
            .send("UploadPart", Method::PUT, url, payload, &[])
            .await?;
        headers
            .get(ETAG)
            .and_then(|etag| etag.to_str().ok())
            .map(str::to_owned)
            .ok_or(MultipartError::NoEtag)
    }

    /// Makes the object of `parts` (number and ETag, in order) appear.
    pub(crate) async fn complete(
        &self,
        bucket_key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), MultipartError> {
        let action = "CompleteMultipartUpload";
        let url = self.object_url(bucket_key, &[("uploadId", upload_id)])?;
        let xml = completion(parts);
        let (_, body) = self
            .send(
                action,
                Method::POST,
                url,
                Payload::Whole(vec![xml.into()]),
                &[],
            )
            .await?;
        // S3 may answer 200 and report a failure in the body.
        if body.windows(7).any(|w| w == b"<Error>") {
            return Err(MultipartError::ErrorBody {
                action,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(())
    }

    /// Drops the parts of an upload; an upload completed or aborted meanwhile is fine.
    pub(crate) async fn abort_upload(
        &self,
        bucket_key: &str,
        upload_id: &str,
    ) -> Result<(), MultipartError> {
        let url = self.object_url(bucket_key, &[("uploadId", upload_id)])?;
        // NoSuchUpload: completed or aborted meanwhile, which is what we wanted.
        self.send(
            "AbortMultipartUpload",
            Method::DELETE,
            url,
            Payload::Empty,
            &[StatusCode::NOT_FOUND],
        )
        .await?;
        Ok(())
    }

    /// Sends one signed request, and sends it again after a failure that may pass
    /// ([`MultipartError::worth_retrying`]), as OpenDAL's retry layer does, unless its body
    /// was streamed; `also_fine` lists error statuses that count as success. The answer's
    /// headers and body.
    async fn send(
        &self,
        action: &'static str,
        method: Method,
        url: Url,
        mut payload: Payload,
        also_fine: &[StatusCode],
    ) -> Result<(HeaderMap, Bytes), MultipartError> {
        let mut attempt = 1;
        loop {
            let again = payload.try_clone();
            let result = self
                .send_once(action, method.clone(), url.clone(), payload, also_fine)
                .await;
            match (result, again) {
                (Err(e), Some(again)) if attempt < self.attempts && e.worth_retrying() => {
                    tracing::warn!(action, attempt, error = %WithCauses(&e), "retrying an S3 request");
                    metrics::counter!(s3::RETRIES, "reason" => "error").increment(1);
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                    payload = again;
                    attempt += 1;
                }
                (result, _) => return result,
            }
        }
    }

    async fn send_once(
        &self,
        action: &'static str,
        method: Method,
        url: Url,
        payload: Payload,
        also_fine: &[StatusCode],
    ) -> Result<(HeaderMap, Bytes), MultipartError> {
        let mut request = http::Request::builder().method(method).uri(url.as_str());
        // A body goes unsigned (`UNSIGNED-PAYLOAD`), as OpenDAL sends its parts.
        let (body, timeout) = match payload {
            Payload::Empty => {
                request = request.header("x-amz-content-sha256", EMPTY_STRING_SHA256);
                (Body::from(Vec::new()), Some(self.attempt_timeout))
            }
            Payload::Whole(pieces) => {
                let len: usize = pieces.iter().map(Bytes::len).sum();
                request = request.header(CONTENT_LENGTH, len);
                let body = Body::wrap(Pieces(pieces.into_iter()));
                (body, Some(self.attempt_timeout))
            }
            Payload::Streamed(len, body) => {
                request = request.header(CONTENT_LENGTH, len);
                (body, None)
            }
        };
        let (mut head, ()) = request
            .body(())
            .map_err(|source| MultipartError::Build { action, source })?
            .into_parts();
        self.signer
            .sign(&mut head, None)
            .await
            .map_err(|source| MultipartError::Sign { action, source })?;
        let mut request = reqwest::Request::try_from(http::Request::from_parts(head, body))
            .map_err(|source| MultipartError::Send { action, source })?;
        *request.timeout_mut() = timeout;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|source| MultipartError::Send { action, source })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|source| MultipartError::Send { action, source })?;
        if status.is_success() || also_fine.contains(&status) {
            return Ok((headers, body));
        }
        Err(MultipartError::Status {
            action,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// CompleteMultipartUpload's body.
fn completion(parts: &[(u32, String)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (number, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
            quick_xml::escape::escape(etag.as_str())
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

fn parse<T: serde::de::DeserializeOwned>(
    action: &'static str,
    body: &[u8],
) -> Result<T, MultipartError> {
    quick_xml::de::from_reader(body).map_err(|source| MultipartError::Parse { action, source })
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
        let page: ListPage = parse("list", PAGE.as_bytes()).unwrap();
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
    fn reads_a_new_upload_id() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Key>p/k</Key><UploadId>VXBsb2FkIElE</UploadId>
</InitiateMultipartUploadResult>"#;
        let initiated: Initiated = parse("create", body).unwrap();
        assert_eq!(initiated.upload_id, "VXBsb2FkIElE");
        assert!(matches!(
            parse::<Initiated>("create", b"<Error><Code>x</Code></Error>"),
            Err(MultipartError::Parse { .. })
        ));
    }

    #[test]
    fn lists_the_parts_to_complete_in_order() {
        let parts = [(1, "\"a1\"".to_owned()), (2, "\"b&2\"".to_owned())];
        assert_eq!(
            completion(&parts),
            "<CompleteMultipartUpload>\
             <Part><PartNumber>1</PartNumber><ETag>&quot;a1&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;b&amp;2&quot;</ETag></Part>\
             </CompleteMultipartUpload>"
        );
    }

    #[test]
    fn retries_only_what_s3_may_answer_otherwise() {
        let status = |status| MultipartError::Status {
            action: "UploadPart",
            status,
            body: String::new(),
        };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).worth_retrying());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).worth_retrying());
        assert!(!status(StatusCode::FORBIDDEN).worth_retrying());
        assert!(!MultipartError::NoEtag.worth_retrying());
    }

    #[test]
    fn addresses_an_object_and_its_upload() {
        let uploads = MultipartUploads::new(&settings("team-a"), &key()).unwrap();
        let key = uploads.bucket_key("docker/registry/v2/blobs/x y/data");
        let url = uploads
            .object_url(&key, &[("partNumber", "3"), ("uploadId", "id/+=")])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9000/bucket/team-a/docker/registry/v2/blobs/x%20y/data?partNumber=3&uploadId=id%2F%2B%3D"
        );
        let created = uploads.object_url(&key, &[("uploads", "")]).unwrap();
        assert_eq!(created.query(), Some("uploads"));
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
