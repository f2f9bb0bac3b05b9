//! One handler per endpoint of spec.md "Endpoints" (end-1 … end-14) plus `/v2/_catalog`.

mod redirect;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use oci::{Algorithm, Digest};
use serde_json::json;

use super::body::{read_limited, request_stream};
use super::route::Route;
use super::AppState;
use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::names::{validate_repository, Reference};
use crate::proxy::Intercept;
use crate::service::{ChunkRange, Page, UploadState};
use crate::storage::StorageDriver;

type Params = Vec<(String, String)>;

pub(super) async fn handle<S: StorageDriver>(
    app: &Arc<AppState<S>>,
    req: Request,
) -> RegistryResult<Response> {
    // Mirrored repositories go to the pull-through mirror first (proxy/mod.rs).
    let Some(mirror) = &app.mirror else {
        return handle_local(app, req).await;
    };
    match mirror.intercept(req).await? {
        Intercept::Answer(resp) => Ok(resp),
        Intercept::Local(req, cache) => {
            let mut resp = handle_local(app, req).await?;
            if let Some(status) = cache {
                crate::proxy::mark(&mut resp, status);
            }
            Ok(resp)
        }
    }
}

async fn handle_local<S: StorageDriver>(
    app: &Arc<AppState<S>>,
    req: Request,
) -> RegistryResult<Response> {
    let route = Route::parse(req.uri().path()).ok_or_else(|| {
        RegistryError::not_found(
            ErrorCode::Unsupported,
            format!("no API endpoint at {}", req.uri().path()),
        )
    })?;
    let params: Params = Query::<Params>::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| {
            RegistryError::bad_request(ErrorCode::Unsupported, format!("invalid query string: {e}"))
        })?;
    if let Some(name) = route.name() {
        check_name(name, req.headers())?;
    }
    let method = req.method().clone();
    let h = Handler { app, params };
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(json_response(StatusCode::OK, &json!({}))),
        (Route::Catalog, Method::GET) => h.catalog().await,
        (Route::Tags { name }, Method::GET) => h.tags(&name).await,
        (Route::Manifest { name, reference }, m @ (Method::GET | Method::HEAD)) => {
            h.get_manifest(&name, &reference, m == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            h.put_manifest(&name, &reference, req).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            h.delete_manifest(&name, &reference).await
        }
        (Route::Blob { name, digest }, Method::GET) => {
            h.get_blob(&name, &digest, req.headers()).await
        }
        (Route::Blob { name, digest }, Method::HEAD) => h.head_blob(&name, &digest).await,
        (Route::Blob { name, digest }, Method::DELETE) => h.delete_blob(&name, &digest).await,
        (Route::Uploads { name }, Method::POST) => h.post_upload(&name, req).await,
        (Route::Upload { name, id }, Method::GET) => h.upload_status(&name, &id).await,
        (Route::Upload { name, id }, Method::PATCH) => h.patch_upload(&name, &id, req).await,
        (Route::Upload { name, id }, Method::PUT) => h.put_upload(&name, &id, req).await,
        (Route::Upload { name, id }, Method::DELETE) => h.cancel_upload(&name, &id).await,
        (Route::Referrers { name, digest }, Method::GET) => h.referrers(&name, &digest).await,
        (_, m) => Err(RegistryError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("method {m} is not allowed here"),
        )),
    }
}

fn check_name(name: &str, headers: &HeaderMap) -> RegistryResult<()> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    validate_repository(name, host)
        .map_err(|e| RegistryError::bad_request(ErrorCode::NameInvalid, e.to_string()))
}

fn parse_digest(text: &str) -> RegistryResult<Digest> {
    text.parse().map_err(|e: oci::DigestError| {
        RegistryError::bad_request(ErrorCode::DigestInvalid, e.to_string())
    })
}

fn content_length(headers: &HeaderMap) -> RegistryResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                RegistryError::bad_request(ErrorCode::SizeInvalid, "Content-Length is not a number")
            }),
    }
}

fn content_range(headers: &HeaderMap) -> RegistryResult<Option<ChunkRange>> {
    match headers.get(header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(ChunkRange::parse)
            .map(Some)
            .ok_or_else(|| {
                RegistryError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    ErrorCode::BlobUploadInvalid,
                    "Content-Range must be <start>-<end>",
                )
            }),
    }
}

struct ResponseBuilder(Response);

impl ResponseBuilder {
    fn new(status: StatusCode, body: Body) -> Self {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        ResponseBuilder(resp)
    }

    fn empty(status: StatusCode) -> Self {
        Self::new(status, Body::empty()).header(header::CONTENT_LENGTH.as_str(), "0")
    }

    fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            self.0.headers_mut().append(n, v);
        }
        self
    }

    fn build(self) -> Response {
        self.0
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    ResponseBuilder::new(status, Body::from(bytes.clone()))
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len().to_string())
        .build()
}

fn upload_response(status: StatusCode, name: &str, state: &UploadState) -> Response {
    ResponseBuilder::empty(status)
        .header("Location", format!("/v2/{name}/blobs/uploads/{}", state.id))
        .header("Range", crate::service::range_header(state.offset))
        .header("Docker-Upload-UUID", &state.id)
        .build()
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    ResponseBuilder::empty(StatusCode::CREATED)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.as_str())
        .build()
}

/// A single byte range of RFC 9110 section 14: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
/// `Ok(None)` means "serve the whole blob" (no header, or a form we choose to ignore).
pub(crate) fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multipart ranges are optional; the whole blob is a valid answer.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().map_err(|_| ())?
        };
        (start, end.min(size.saturating_sub(1)))
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The answer to a blob GET or HEAD (end-2, end-3), whatever carries its bytes: the stored
/// file, or a mirror's download on its way. `size` is the blob's, when known; with `range`,
/// the answer is that part of it (206).
pub(crate) fn blob_answer(
    digest: &Digest,
    size: Option<u64>,
    range: Option<(u64, u64)>,
    body: Body,
) -> Response {
    let status = match range {
        Some(_) => StatusCode::PARTIAL_CONTENT,
        None => StatusCode::OK,
    };
    let mut resp = ResponseBuilder::new(status, body)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest.as_str())
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{digest}\""));
    match (range, size) {
        (Some((start, end)), Some(size)) => {
            resp = resp
                .header("Content-Length", (end - start + 1).to_string())
                .header("Content-Range", format!("bytes {start}-{end}/{size}"));
        }
        (None, Some(size)) => resp = resp.header("Content-Length", size.to_string()),
        _ => {}
    }
    resp.build()
}

/// 416 for a Range outside a blob of `size` bytes.
pub(crate) fn range_not_satisfiable(size: u64) -> Response {
    ResponseBuilder::empty(StatusCode::RANGE_NOT_SATISFIABLE)
        .header("Content-Range", format!("bytes */{size}"))
        .build()
}

fn page_link(path: &str, n: Option<usize>, page: &Page) -> Option<String> {
    let last = page.next_last.as_ref()?;
    let n = n.map(|n| format!("n={n}&")).unwrap_or_default();
    Some(format!("<{path}?{n}last={last}>; rel=\"next\""))
}

struct Handler<'a, S: StorageDriver> {
    app: &'a AppState<S>,
    params: Params,
}

impl<S: StorageDriver> Handler<'_, S> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn page_params(&self) -> RegistryResult<(Option<usize>, Option<&str>)> {
        let n = match self.param("n") {
            None | Some("") => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                RegistryError::bad_request(
                    ErrorCode::Unsupported,
                    format!("n={v:?} is not a non-negative integer"),
                )
            })?),
        };
        Ok((n, self.param("last").filter(|l| !l.is_empty())))
    }

    fn body_timeout(&self) -> std::time::Duration {
        self.app.limits.body_timeout
    }

    async fn catalog(&self) -> RegistryResult<Response> {
        let (n, last) = self.page_params()?;
        let page = self.app.registry.catalog(n, last).await?;
        let mut resp = json_response(StatusCode::OK, &json!({ "repositories": page.items }));
        if let Some(link) = page_link("/v2/_catalog", n, &page) {
            resp = ResponseBuilder(resp).header("Link", link).build();
        }
        Ok(resp)
    }

    async fn tags(&self, name: &str) -> RegistryResult<Response> {
        let (n, last) = self.page_params()?;
        let page = self.app.registry.tags(name, n, last).await?;
        let mut resp = json_response(StatusCode::OK, &json!({ "name": name, "tags": page.items }));
        if let Some(link) = page_link(&format!("/v2/{name}/tags/list"), n, &page) {
            resp = ResponseBuilder(resp).header("Link", link).build();
        }
        Ok(resp)
    }

    async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        head: bool,
    ) -> RegistryResult<Response> {
        // A reference that is neither a tag nor a digest cannot name anything stored.
        let reference = Reference::parse(reference).ok_or_else(|| {
            RegistryError::not_found(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference:?} unknown"),
            )
        })?;
        let m = self.app.registry.get_manifest(name, &reference).await?;
        let len = m.bytes.len();
        let body = if head {
            Body::empty()
        } else {
            Body::from(m.bytes)
        };
        Ok(ResponseBuilder::new(StatusCode::OK, body)
            .header("Content-Type", &m.media_type)
            .header("Content-Length", len.to_string())
            .header("Docker-Content-Digest", m.digest.as_str())
            .header("ETag", format!("\"{}\"", m.digest))
            .build())
    }

    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        req: Request,
    ) -> RegistryResult<Response> {
        let declared = content_length(req.headers())?;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let tags: Vec<String> = self
            .params
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.clone())
            .collect();
        let body = request_stream(req.into_body(), self.body_timeout());
        let bytes = read_limited(body, self.app.limits.manifest_max_bytes, declared).await?;
        let put = self
            .app
            .registry
            .put_manifest(name, reference, &tags, content_type.as_deref(), bytes)
            .await?;
        let mut resp = ResponseBuilder::empty(StatusCode::CREATED)
            .header("Location", format!("/v2/{name}/manifests/{}", put.digest))
            .header("Docker-Content-Digest", put.digest.as_str());
        if let Some(subject) = &put.subject {
            resp = resp.header("OCI-Subject", subject.as_str());
        }
        if !put.tags.is_empty() {
            resp = resp.header("OCI-Tag", put.tags.join(", "));
        }
        Ok(resp.build())
    }

    async fn delete_manifest(&self, name: &str, reference: &str) -> RegistryResult<Response> {
        let reference = match Reference::parse(reference) {
            Some(r) => r,
            None if reference.contains(':') => {
                return Err(RegistryError::bad_request(
                    ErrorCode::DigestInvalid,
                    format!("invalid digest {reference:?}"),
                ))
            }
            None => {
                return Err(RegistryError::not_found(
                    ErrorCode::ManifestUnknown,
                    format!("manifest {reference:?} unknown"),
                ))
            }
        };
        self.app.registry.delete_manifest(name, &reference).await?;
        Ok(ResponseBuilder::empty(StatusCode::ACCEPTED).build())
    }

    async fn get_blob(
        &self,
        name: &str,
        digest: &str,
        headers: &HeaderMap,
    ) -> RegistryResult<Response> {
        let digest = parse_digest(digest)?;
        if let Some(resp) = redirect::blob_redirect(self.app, name, &digest, Method::GET).await? {
            return Ok(resp);
        }
        let registry = &self.app.registry;
        let range = if headers.contains_key(header::RANGE) {
            let size = registry.blob_size(name, &digest).await?;
            match byte_range(headers, size) {
                Ok(r) => r,
                Err(()) => return Ok(range_not_satisfiable(size)),
            }
        } else {
            None
        };
        let (offset, len) = range.map_or((0, None), |(s, e)| (s, Some(e - s + 1)));
        let (size, stream) = registry.open_blob(name, &digest, offset, len).await?;
        Ok(blob_answer(
            &digest,
            Some(size),
            range,
            Body::from_stream(stream),
        ))
    }

    async fn head_blob(&self, name: &str, digest: &str) -> RegistryResult<Response> {
        let digest = parse_digest(digest)?;
        if let Some(resp) = redirect::blob_redirect(self.app, name, &digest, Method::HEAD).await? {
            return Ok(resp);
        }
        let size = self.app.registry.blob_size(name, &digest).await?;
        Ok(blob_answer(&digest, Some(size), None, Body::empty()))
    }

    async fn delete_blob(&self, name: &str, digest: &str) -> RegistryResult<Response> {
        let digest = parse_digest(digest)?;
        self.app.registry.delete_blob(name, &digest).await?;
        Ok(ResponseBuilder::empty(StatusCode::ACCEPTED).build())
    }

    /// end-4a/4b/4c and end-11.
    async fn post_upload(&self, name: &str, req: Request) -> RegistryResult<Response> {
        let registry = &self.app.registry;
        if let Some(mount) = self.param("mount") {
            let digest = parse_digest(mount)?;
            let from = self.param("from").filter(|f| !f.is_empty());
            if let Some(from) = from {
                check_name(from, req.headers())?;
            }
            if registry.mount_blob(name, &digest, from).await? {
                return Ok(blob_created(name, &digest));
            }
            // Not mountable: the spec says to start an ordinary upload session instead.
        }
        if let Some(digest) = self.param("digest") {
            let digest = parse_digest(digest)?;
            let declared = content_length(req.headers())?;
            let body = request_stream(req.into_body(), self.body_timeout());
            registry
                .upload_monolithic(name, &digest, declared, body)
                .await?;
            return Ok(blob_created(name, &digest));
        }
        let algorithm = match self.param("digest-algorithm") {
            None | Some("sha256") => Algorithm::Sha256,
            Some("sha512") => Algorithm::Sha512,
            Some(other) => {
                return Err(RegistryError::bad_request(
                    ErrorCode::DigestInvalid,
                    format!("unsupported digest algorithm {other:?}"),
                ))
            }
        };
        let state = registry.start_upload(name, algorithm).await?;
        Ok(upload_response(StatusCode::ACCEPTED, name, &state))
    }

    async fn upload_status(&self, name: &str, id: &str) -> RegistryResult<Response> {
        let state = self.app.registry.upload_status(name, id).await?;
        Ok(upload_response(StatusCode::NO_CONTENT, name, &state))
    }

    async fn patch_upload(&self, name: &str, id: &str, req: Request) -> RegistryResult<Response> {
        let range = content_range(req.headers())?;
        let declared = content_length(req.headers())?;
        let body = request_stream(req.into_body(), self.body_timeout());
        let state = self
            .app
            .registry
            .append_chunk(name, id, range, declared, body)
            .await?;
        Ok(upload_response(StatusCode::ACCEPTED, name, &state))
    }

    async fn put_upload(&self, name: &str, id: &str, req: Request) -> RegistryResult<Response> {
        let digest = self.param("digest").ok_or_else(|| {
            RegistryError::bad_request(
                ErrorCode::DigestInvalid,
                "the closing PUT needs ?digest=<digest>",
            )
        })?;
        let digest = parse_digest(digest)?;
        let range = content_range(req.headers())?;
        let declared = content_length(req.headers())?;
        let body = request_stream(req.into_body(), self.body_timeout());
        self.app
            .registry
            .complete_upload(name, id, &digest, range, declared, body)
            .await?;
        Ok(blob_created(name, &digest))
    }

    async fn cancel_upload(&self, name: &str, id: &str) -> RegistryResult<Response> {
        self.app.registry.cancel_upload(name, id).await?;
        Ok(ResponseBuilder::empty(StatusCode::NO_CONTENT).build())
    }

    async fn referrers(&self, name: &str, digest: &str) -> RegistryResult<Response> {
        let digest = parse_digest(digest)?;
        let filter = self.param("artifactType").filter(|a| !a.is_empty());
        let manifests = self.app.registry.referrers(name, &digest, filter).await?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": oci::media_type::OCI_INDEX,
            "manifests": manifests,
        });
        let mut resp = json_response(StatusCode::OK, &index);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(oci::media_type::OCI_INDEX),
        );
        if filter.is_some() {
            resp.headers_mut().insert(
                "OCI-Filters-Applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        byte_range(&h, size)
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=5-1", 100), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
    }
}
