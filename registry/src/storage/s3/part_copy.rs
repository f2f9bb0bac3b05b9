//! Server-side copies in parts (S3's UploadPartCopy), for objects too large for one
//! CopyObject.
//!
//! AWS refuses CopyObject for a source over 5 GiB, and an upload becomes its blob through a
//! copy (`rename`): without this, no layer over 5 GiB could be pushed to a registry on AWS.
//! As distribution's s3 driver does (`multipartcopythresholdsize`, `multipartcopychunksize`,
//! `multipartcopymaxconcurrency`), an object over the threshold is copied as a multipart
//! upload whose parts are byte ranges of the source, several at a time; for large objects that
//! is also faster than one copy. Completing the upload is atomic, as CopyObject is: the
//! destination is the old object or the whole new one. A failed copy aborts its upload.
//!
//! object_store has no UploadPartCopy, so the requests are made here, signed by object_store's
//! own SigV4 (`AwsAuthorizer`) with the store's credentials, through an HTTP client made with
//! the store's client options (TLS, timeouts).

use std::time::Duration;

use axum::http::{Method, Request};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::path::Path;
use object_store::signer::Signer;

/// AWS's largest source for one CopyObject.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;

/// How large objects are copied, from `storage.s3.multipartcopy*`.
#[derive(Debug, Clone)]
pub(super) struct PartCopier {
    pub http: HttpClient,
    pub region: String,
    pub threshold: u64,
    pub part_size: u64,
    pub concurrency: usize,
    pub retries: usize,
    /// Server-side encryption headers for the new object, as the store's own writes send.
    pub encryption: Vec<(&'static str, String)>,
}

impl PartCopier {
    /// Whether an object of `size` bytes is copied in parts.
    pub fn in_parts(&self, size: u64) -> bool {
        size > self.threshold.min(MAX_SINGLE_COPY)
    }

    /// Copies `from` to `to` (keys of `store`'s `bucket`), `size` bytes, in parts.
    pub async fn copy(
        &self,
        store: &AmazonS3,
        bucket: &str,
        from: &Path,
        to: &Path,
        size: u64,
    ) -> Result<(), String> {
        // The object's URL as object_store addresses it (endpoint, path or virtual-host style).
        let presigned = store
            .signed_url(Method::PUT, to, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let mut object_url = presigned;
        object_url.set_query(None);
        let created = self
            .send(
                store,
                Method::POST,
                &object_url,
                "uploads",
                &self.encryption,
                Bytes::new(),
            )
            .await?;
        let upload_id = xml_text(&created, "UploadId")
            .ok_or_else(|| {
                format!("CreateMultipartUpload answered without an UploadId: {created}")
            })?
            .to_string();
        let copied = self
            .copy_parts(store, bucket, from, &object_url, &upload_id, size)
            .await;
        let completed = match copied {
            Ok(etags) => {
                let mut body = String::from("<CompleteMultipartUpload>");
                for (n, etag) in etags.iter().enumerate() {
                    body.push_str(&format!(
                        "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
                        n + 1
                    ));
                }
                body.push_str("</CompleteMultipartUpload>");
                let query = format!("uploadId={}", encode(&upload_id));
                self.send(store, Method::POST, &object_url, &query, &[], body.into())
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Best effort: an upload left behind holds storage until a lifecycle rule ends it.
            let query = format!("uploadId={}", encode(&upload_id));
            let _ = self
                .send(
                    store,
                    Method::DELETE,
                    &object_url,
                    &query,
                    &[],
                    Bytes::new(),
                )
                .await;
        }
        completed
    }

    /// UploadPartCopy of each range, `concurrency` at a time; the parts' ETags in order.
    async fn copy_parts(
        &self,
        store: &AmazonS3,
        bucket: &str,
        from: &Path,
        object_url: &reqwest::Url,
        upload_id: &str,
        size: u64,
    ) -> Result<Vec<String>, String> {
        let source = format!("/{bucket}/{}", encode_path(from.as_ref()));
        let ranges: Vec<(usize, u64, u64)> = (0..size.div_ceil(self.part_size))
            .map(|i| {
                let start = i * self.part_size;
                (
                    i as usize + 1,
                    start,
                    (start + self.part_size).min(size) - 1,
                )
            })
            .collect();
        let mut etags: Vec<(usize, String)> = futures_util::stream::iter(ranges)
            .map(|(number, first, last)| {
                let headers = vec![
                    ("x-amz-copy-source", source.clone()),
                    ("x-amz-copy-source-range", format!("bytes={first}-{last}")),
                ];
                let query = format!("partNumber={number}&uploadId={}", encode(upload_id));
                async move {
                    let answer = self
                        .send(
                            store,
                            Method::PUT,
                            object_url,
                            &query,
                            &headers,
                            Bytes::new(),
                        )
                        .await?;
                    let etag = xml_text(&answer, "ETag").ok_or_else(|| {
                        format!("UploadPartCopy answered without an ETag: {answer}")
                    })?;
                    Ok::<_, String>((number, etag.to_string()))
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        etags.sort_unstable_by_key(|(number, _)| *number);
        Ok(etags.into_iter().map(|(_, etag)| etag).collect())
    }

    /// One signed request, retried with backoff on a 5xx, a 200 with an error document (S3's
    /// answer to a copy or a completion that failed inside) or a broken connection; the body
    /// of its answer.
    async fn send(
        &self,
        store: &AmazonS3,
        method: Method,
        object_url: &reqwest::Url,
        query: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<String, String> {
        let mut url = object_url.clone();
        url.set_query(Some(query));
        let mut attempt = 0;
        loop {
            let credential = store
                .credentials()
                .get_credential()
                .await
                .map_err(|e| e.to_string())?;
            let mut request = Request::builder().method(method.clone()).uri(url.as_str());
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let mut request = request
                .body(HttpRequestBody::from(body.clone()))
                .map_err(|e| e.to_string())?;
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
            let outcome = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let text = response
                        .into_body()
                        .bytes()
                        .await
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    match text {
                        Ok(text) if status.is_success() && !text.contains("<Error>") => {
                            return Ok(text)
                        }
                        // A 200 carrying an error document is S3's way of reporting an internal
                        // error during a copy: retried, as a 5xx is.
                        Ok(text) => (
                            status.is_server_error() || status.is_success(),
                            format!("{status}: {text}"),
                        ),
                        Err(e) => (true, e.to_string()),
                    }
                }
                Err(e) => (true, e.to_string()),
            };
            let (retryable, message) = outcome;
            if !retryable || attempt >= self.retries {
                return Err(format!(
                    "S3 {method} {}?{query}: {message}",
                    object_url.path()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
            attempt += 1;
        }
    }
}

/// The text of the first `<tag>` element of an S3 answer.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

/// Percent-encoding of a query value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A key for `x-amz-copy-source`: each segment encoded, the slashes kept.
fn encode_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_keys() {
        let created = "<?xml version=\"1.0\"?><InitiateMultipartUploadResult><Bucket>b</Bucket>\
                       <UploadId>a+b/c=</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(xml_text(created, "UploadId"), Some("a+b/c="));
        assert_eq!(xml_text(created, "ETag"), None);
        assert_eq!(encode("a+b/c="), "a%2Bb%2Fc%3D");
        assert_eq!(
            encode_path("docker/registry/v2/_uploads/x y/data"),
            "docker/registry/v2/_uploads/x%20y/data"
        );
    }
}
