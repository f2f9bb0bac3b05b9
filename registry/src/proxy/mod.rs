//! The pull-through mirror (issue #8): repositories mirrored from one or more upstream
//! registries, beside local repositories that accept pushes, on the same server.
//!
//! ```text
//! config     the `proxy:` section: distribution's single upstream, our several upstreams
//! routing    request → upstream + upstream repository + cache repository (`?ns=`, prefixes,
//!            the default upstream for dockerd's registry-mirrors)
//! upstream   async client for one upstream: Basic or Bearer auth, tokens cached per scope
//! manifests  digests from the cache; tags revalidated after a freshness window, served
//!            stale when the upstream fails; indexes kept byte for byte, children prefetched
//! fill       cold blobs: one download per digest, spooled to a temporary file that every
//!            waiting client and the verified upload path read
//! cache      the size index (LRU) and the counters
//! sweep      tag ttl, size-limit eviction, the index rebuilt at start
//! ```
//!
//! The HTTP layer hands every request to [`Mirror::intercept`] first. A request for a mirrored
//! repository is either answered here (cold blobs, tag lists and referrers passed through,
//! pushes refused) or, once the content is in the cache, rewritten to name the cache
//! repository and served by the ordinary handlers: cached content is ordinary content, in the
//! ordinary storage, through the `StorageDriver` trait.

mod cache;
pub mod config;
mod fill;
mod manifests;
mod routing;
mod sweep;
mod upstream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use oci::Digest;

use cache::CacheIndex;
pub use cache::MirrorMetrics;
use config::MirrorSettings;
use routing::{Resolution, Routes, Target};
use upstream::{Upstream, UpstreamError};

use crate::error::{ErrorCode, RegistryError, RegistryResult};
use crate::gc::GcGate;
use crate::http::route::Route;
use crate::names::{validate_repository, Reference};
use crate::service::Registry;
use crate::storage::StorageDriver;

/// The response header that says how the mirror answered (`HIT`, `MISS`, `REVALIDATED`,
/// `STALE`); a stale answer also carries `Warning: 110` (RFC 9111 obsoleted it, but clients
/// and people still read it).
pub const CACHE_HEADER: &str = "X-Rregistry-Cache";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Revalidated,
    Stale,
}

impl CacheStatus {
    fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Stale => "STALE",
        }
    }
}

/// What the HTTP layer does with a request after the mirror saw it.
pub enum Intercept {
    /// Answered by the mirror.
    Answer(Response),
    /// Served by the ordinary handlers (possibly rewritten to a cache repository); the
    /// response is then marked with the status, if any.
    Local(Request, Option<CacheStatus>),
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("proxy: {0}")]
    Config(String),
    #[error("proxy upstream {name}: HTTP client: {source}")]
    Client {
        name: String,
        #[source]
        source: reqwest::Error,
    },
}

pub struct Mirror<S: StorageDriver> {
    registry: Arc<Registry<S>>,
    settings: MirrorSettings,
    routes: Routes,
    inflight: fill::InflightMap,
    cache: CacheIndex,
    pub metrics: Arc<MirrorMetrics>,
    evict_wanted: tokio::sync::Notify,
}

impl<S: StorageDriver> Mirror<S> {
    /// The mirror the `proxy:` section asks for, or `None` when it names no upstream.
    pub fn from_config(
        proxy: &config::ProxyConfig,
        registry: Arc<Registry<S>>,
    ) -> Result<Option<Arc<Mirror<S>>>, MirrorError> {
        let Some(settings) = proxy.settings().map_err(MirrorError::Config)? else {
            return Ok(None);
        };
        // A spool location that does not take files is a configuration error, said at start.
        fill::new_spool(settings.spool_dir.as_deref(), registry.driver()).map_err(|e| {
            MirrorError::Config(format!(
                "proxy.spooldirectory: cannot create a spool file: {e}"
            ))
        })?;
        let mut upstreams = Vec::new();
        for u in &settings.upstreams {
            let upstream = Upstream::new(u.clone()).map_err(|source| MirrorError::Client {
                name: u.name.clone(),
                source,
            })?;
            tracing::info!(name = %u.name, remote = %u.remoteurl, default = settings.default.as_deref() == Some(u.name.as_str()), "mirror upstream");
            upstreams.push(Arc::new(upstream));
        }
        let metrics = Arc::new(MirrorMetrics::default());
        Ok(Some(Arc::new(Mirror {
            registry,
            routes: Routes::new(&settings, upstreams),
            settings,
            inflight: Default::default(),
            cache: CacheIndex::new(metrics.clone()),
            metrics,
            evict_wanted: tokio::sync::Notify::new(),
        })))
    }

    /// Looks at a request before the ordinary handlers do (see the module comment).
    pub async fn intercept(self: &Arc<Self>, req: Request) -> RegistryResult<Intercept> {
        let Some(route) = Route::parse(req.uri().path()) else {
            return Ok(Intercept::Local(req, None));
        };
        let Some(name) = route.name() else {
            return Ok(Intercept::Local(req, None));
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        validate_repository(name, host)
            .map_err(|e| RegistryError::bad_request(ErrorCode::NameInvalid, e.to_string()))?;
        let params: Vec<(String, String)> = Query::try_from_uri(req.uri())
            .map(|q: Query<Vec<(String, String)>>| q.0)
            .unwrap_or_default();
        let ns = params
            .iter()
            .find(|(k, _)| k == "ns")
            .map(|(_, v)| v.as_str());
        let target = match self.routes.resolve(name, ns) {
            Resolution::Local => return Ok(Intercept::Local(req, None)),
            Resolution::UnknownNamespace(ns) => {
                return Err(RegistryError::not_found(
                    ErrorCode::NameUnknown,
                    format!("no upstream registry {ns:?} is configured (proxy.upstreams)"),
                ))
            }
            Resolution::Mirrored(t) => t,
        };
        let gate = req
            .extensions()
            .get::<Arc<GcGate>>()
            .cloned()
            .ok_or_else(|| RegistryError::internal("the GC gate is not installed (gc/gate.rs)"))?;
        let method = req.method().clone();
        match (&route, &method) {
            (Route::Manifest { reference, .. }, &Method::GET | &Method::HEAD) => {
                let parsed = Reference::parse(reference)
                    .ok_or_else(|| manifests::unknown_reference(reference))?;
                let status = self.ensure_manifest(&target, &parsed, &gate).await?;
                self.count(status);
                Ok(Intercept::Local(rewrite(req, name, &target.storage)?, Some(status)))
            }
            (Route::Blob { digest, .. }, &Method::GET | &Method::HEAD) => {
                let digest: Digest = digest.parse().map_err(|e: oci::DigestError| {
                    RegistryError::bad_request(ErrorCode::DigestInvalid, e.to_string())
                })?;
                if self.blob_cached(&target, &digest, &gate).await? {
                    self.cache.touch(&digest);
                    self.count(CacheStatus::Hit);
                    return Ok(Intercept::Local(
                        rewrite(req, name, &target.storage)?,
                        Some(CacheStatus::Hit),
                    ));
                }
                self.count(CacheStatus::Miss);
                if method == Method::HEAD {
                    return self.head_cold_blob(&target, &digest).await.map(Intercept::Answer);
                }
                if let Some(range) = req.headers().get(header::RANGE) {
                    if let Some((size, flight)) = self.sized_flight(&digest).await? {
                        return Ok(Intercept::Answer(range_of_flight(&digest, req.headers(), size, flight)));
                    }
                    return self.relay_range(&target, &digest, range).await.map(Intercept::Answer);
                }
                let (size, stream) = self.fetch_blob(&target, &digest, &gate).await?;
                Ok(Intercept::Answer(blob_response(&digest, size, Body::from_stream(stream))))
            }
            (Route::Tags { .. }, &Method::GET) => self.pass_through(req, name, &target, "tags/list").await,
            (Route::Referrers { digest, .. }, &Method::GET) => {
                let rest = format!("referrers/{digest}");
                self.pass_through(req, name, &target, &rest).await
            }
            _ => Err(RegistryError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!(
                    "{name} is mirrored from {}: it is read-only here (push to a local repository, see proxy.local)",
                    target.upstream.name()
                ),
            )),
        }
    }

    fn count(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.metrics.hits,
            CacheStatus::Miss => &self.metrics.misses,
            // Counted where the upstream confirms the tag.
            CacheStatus::Revalidated => return,
            CacheStatus::Stale => &self.metrics.stale,
        };
        MirrorMetrics::add(counter, 1);
    }

    /// Whether the cache repository links the blob; a blob stored for another repository
    /// (content-addressed, so the same bytes) is linked on the way.
    async fn blob_cached(
        &self,
        target: &Target,
        digest: &Digest,
        gate: &GcGate,
    ) -> RegistryResult<bool> {
        match self.registry.blob_size(&target.storage, digest).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code == ErrorCode::BlobUnknown => {}
            Err(e) => return Err(e),
        }
        // A mount adds a reference, as a mounting POST does: under the GC gate.
        let mounted = {
            let _writing = gate.writer(&target.storage).await?;
            self.registry
                .mount_blob(&target.storage, digest, None)
                .await?
        };
        if mounted {
            let size = self.registry.blob_size(&target.storage, digest).await?;
            self.cache.record(digest, size, &target.storage);
            return Ok(true);
        }
        Ok(false)
    }

    /// A HEAD for a blob the cache lacks: the upstream's size, without fetching the bytes.
    /// Some upstreams refuse HEAD on blobs (405, 403, 501): then a GET tells the size, its
    /// body is dropped unread.
    async fn head_cold_blob(&self, target: &Target, digest: &Digest) -> RegistryResult<Response> {
        let rest = format!("blobs/{digest}");
        let head = target
            .upstream
            .send(Method::HEAD, &target.remote, &rest, &[], true)
            .await;
        let resp = match head {
            Err(UpstreamError::Status { status, .. })
                if [
                    StatusCode::METHOD_NOT_ALLOWED,
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_IMPLEMENTED,
                ]
                .contains(&status) =>
            {
                tracing::debug!(upstream = target.upstream.name(), %status, "mirror: the upstream refuses HEAD on blobs; asking with GET");
                target
                    .upstream
                    .send(Method::GET, &target.remote, &rest, &[], false)
                    .await
            }
            other => other,
        }
        .map_err(|e| upstream_failure(&e, ErrorCode::BlobUnknown))?;
        // The header, not `content_length()`: a HEAD response's body is empty.
        let size = upstream::header_text(resp.headers(), header::CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse().ok());
        Ok(blob_response(digest, size, Body::empty()))
    }

    /// A Range GET of a blob the cache lacks and no download is fetching: the Range goes to
    /// the upstream, and its answer (206, or 200 with the whole blob when it ignores Range) is
    /// relayed as it streams, without caching anything: a part cannot be checked against the
    /// digest. A later whole GET fills the cache.
    async fn relay_range(
        &self,
        target: &Target,
        digest: &Digest,
        range: &HeaderValue,
    ) -> RegistryResult<Response> {
        let range = range.to_str().map_err(|_| {
            RegistryError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUnknown,
                "the Range header is not text",
            )
        })?;
        let rest = format!("blobs/{digest}");
        let resp = target
            .upstream
            .send(
                Method::GET,
                &target.remote,
                &rest,
                &[(header::RANGE, range)],
                false,
            )
            .await
            .map_err(|e| upstream_failure(&e, ErrorCode::BlobUnknown))?;
        let status = resp.status();
        let size = resp.content_length();
        let content_range = upstream::header_text(resp.headers(), header::CONTENT_RANGE.as_str())
            .and_then(|v| HeaderValue::from_str(v).ok());
        let mut response = blob_response(digest, size, Body::from_stream(resp.bytes_stream()));
        *response.status_mut() = status;
        if let Some(v) = content_range {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        Ok(response)
    }

    /// Tag lists and referrers come from the upstream (the cache holds only what was pulled);
    /// when the upstream fails or lacks the API, the cache repository answers instead.
    async fn pass_through(
        &self,
        req: Request,
        name: &str,
        target: &Target,
        rest: &str,
    ) -> RegistryResult<Intercept> {
        let query: Vec<(String, String)> = Query::try_from_uri(req.uri())
            .map(|q: Query<Vec<(String, String)>>| q.0)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "ns")
            .collect();
        let query = encode_query(&query);
        let rest = if query.is_empty() {
            rest.to_string()
        } else {
            format!("{rest}?{query}")
        };
        let answer = target
            .upstream
            .send(Method::GET, &target.remote, &rest, &[], true)
            .await;
        let resp = match answer {
            Ok(r) => r,
            Err(e) if e.is_outage() || e.is_not_found() => {
                tracing::info!(upstream = target.upstream.name(), repository = %target.remote, error = %e, "mirror: answering {rest} from the cache");
                let status = e.is_outage().then_some(CacheStatus::Stale);
                if let Some(status) = status {
                    self.count(status);
                }
                return Ok(Intercept::Local(
                    rewrite(req, name, &target.storage)?,
                    status,
                ));
            }
            Err(e) => return Err(upstream_failure(&e, ErrorCode::NameUnknown)),
        };
        let content_type = upstream::header_text(resp.headers(), header::CONTENT_TYPE.as_str())
            .unwrap_or("application/json")
            .to_string();
        let link = upstream::header_text(resp.headers(), header::LINK.as_str()).map(str::to_string);
        let mut body = resp.bytes().await.map_err(|e| {
            upstream_failure(&target.upstream.unreachable(&e), ErrorCode::NameUnknown)
        })?;
        // A tag list names the repository: the client's name, not the upstream's.
        if rest.starts_with("tags/list") {
            if let Ok(mut list) = serde_json::from_slice::<serde_json::Value>(&body) {
                list["name"] = serde_json::Value::String(name.to_string());
                body = serde_json::to_vec(&list).unwrap_or_default().into();
            }
        }
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        // Pagination links name the upstream's repository; rewrite them onto this server's path.
        if let Some(link) = link {
            let ours = link.replace(&format!("/v2/{}/", target.remote), &format!("/v2/{name}/"));
            if let Ok(v) = HeaderValue::from_str(&ours) {
                headers.insert(header::LINK, v);
            }
        }
        mark(&mut response, CacheStatus::Miss);
        Ok(Intercept::Answer(response))
    }
}

/// Marks a response with how the mirror answered it.
pub fn mark(response: &mut Response, status: CacheStatus) {
    let headers = response.headers_mut();
    headers.insert(CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    if status == CacheStatus::Stale {
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 rregistry \"Response is Stale\""),
        );
    }
}

/// A Range GET of a blob being downloaded, answered from the download's spool as the bytes
/// arrive (a client resuming a broken pull, or fetching parts in parallel, while another
/// fills the cache): no second upstream request.
fn range_of_flight(
    digest: &Digest,
    headers: &axum::http::HeaderMap,
    size: u64,
    flight: Arc<fill::Inflight>,
) -> Response {
    let (range, bytes) = match crate::http::byte_range(headers, size) {
        Err(()) => return crate::http::range_not_satisfiable(size),
        Ok(None) => (None, 0..size),
        Ok(Some((start, end))) => (Some((start, end)), start..end + 1),
    };
    let body = Body::from_stream(fill::read_flight(flight, bytes));
    let mut response = crate::http::blob_answer(digest, Some(size), range, body);
    mark(&mut response, CacheStatus::Miss);
    response
}

/// The response for a whole blob on its way from the upstream.
fn blob_response(digest: &Digest, size: Option<u64>, body: Body) -> Response {
    let mut response = crate::http::blob_answer(digest, size, None, body);
    mark(&mut response, CacheStatus::Miss);
    response
}

/// The spec error for an upstream that failed: its 404 stays a 404 with `unknown` (the
/// content is unknown there), a 429 stays a 429, anything else is a gateway failure.
fn upstream_failure(e: &UpstreamError, unknown: ErrorCode) -> RegistryError {
    if e.is_not_found() {
        return RegistryError::not_found(unknown, e.to_string());
    }
    let status = match e {
        UpstreamError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        UpstreamError::Status { status, .. }
            if *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::RANGE_NOT_SATISFIABLE =>
        {
            *status
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    RegistryError::new(status, ErrorCode::Unknown, e.to_string())
}

/// The request with its repository `name` replaced by the cache repository `storage`.
fn rewrite(mut req: Request, name: &str, storage: &str) -> RegistryResult<Request> {
    let uri = req.uri();
    let path = uri.path();
    let tail = path
        .strip_prefix("/v2/")
        .and_then(|p| p.strip_prefix(name))
        .ok_or_else(|| RegistryError::internal(format!("cannot rewrite {path}")))?;
    let rewritten = match uri.query() {
        Some(q) => format!("/v2/{storage}{tail}?{q}"),
        None => format!("/v2/{storage}{tail}"),
    };
    *req.uri_mut() = rewritten
        .parse::<Uri>()
        .map_err(|e| RegistryError::internal(format!("rewrite {path}: {e}")))?;
    Ok(req)
}

/// `k=v&k=v` with the values percent-encoded as a query needs.
fn encode_query(pairs: &[(String, String)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
