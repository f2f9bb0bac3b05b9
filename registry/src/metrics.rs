//! Prometheus metrics and the operational endpoints `GET /metrics` and `GET /healthz`.
//!
//! The text exposition format (version 0.0.4) is written by hand: a handful of counters and
//! histograms with fixed, low-cardinality labels do not need a client library. Names follow
//! Prometheus conventions (`_total` counters, `_seconds` and `_bytes` units). Sources: the HTTP
//! middleware [`track`] (requests, bytes in and out, upload sessions), the storage wrapper
//! `storage::instrumented` (latency per driver operation), and the GC task (`gc::run_periodically`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::body::{FrameObserver, ObservedBody};
use crate::http::route::Route;
use crate::paths;
use crate::service::Registry;
use crate::storage::instrumented::StorageOp;
use crate::storage::StorageDriver;

/// The `route` label: the API endpoint a path names (never the repository, which would make
/// the label unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteLabel {
    Base,
    Catalog,
    Tags,
    Manifests,
    Blobs,
    Uploads,
    Upload,
    Referrers,
    Metrics,
    Health,
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 11] = [
        RouteLabel::Base,
        RouteLabel::Catalog,
        RouteLabel::Tags,
        RouteLabel::Manifests,
        RouteLabel::Blobs,
        RouteLabel::Uploads,
        RouteLabel::Upload,
        RouteLabel::Referrers,
        RouteLabel::Metrics,
        RouteLabel::Health,
        RouteLabel::Other,
    ];

    pub fn of(path: &str) -> RouteLabel {
        match path {
            METRICS_PATH => return RouteLabel::Metrics,
            HEALTH_PATH => return RouteLabel::Health,
            _ => {}
        }
        match Route::parse(path) {
            Some(Route::Base) => RouteLabel::Base,
            Some(Route::Catalog) => RouteLabel::Catalog,
            Some(Route::Tags { .. }) => RouteLabel::Tags,
            Some(Route::Manifest { .. }) => RouteLabel::Manifests,
            Some(Route::Blob { .. }) => RouteLabel::Blobs,
            Some(Route::Uploads { .. }) => RouteLabel::Uploads,
            Some(Route::Upload { .. }) => RouteLabel::Upload,
            Some(Route::Referrers { .. }) => RouteLabel::Referrers,
            None => RouteLabel::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Base => "base",
            RouteLabel::Catalog => "catalog",
            RouteLabel::Tags => "tags",
            RouteLabel::Manifests => "manifests",
            RouteLabel::Blobs => "blobs",
            RouteLabel::Uploads => "uploads",
            RouteLabel::Upload => "upload",
            RouteLabel::Referrers => "referrers",
            RouteLabel::Metrics => "metrics",
            RouteLabel::Health => "healthz",
            RouteLabel::Other => "other",
        }
    }
}

pub const METRICS_PATH: &str = "/metrics";
pub const HEALTH_PATH: &str = "/healthz";

/// Methods outside the API's are folded into one label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Upper bounds of the storage latency buckets, in seconds: a page-cache stat is ~10 µs, an
/// object-store request tens of milliseconds, an fsync'd commit of a large blob seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is above every bound (+Inf).
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// What one finished GC pass adds to the GC metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcRun {
    pub reclaimed_bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    pub uploads: u64,
}

#[derive(Default)]
struct GcStats {
    succeeded: u64,
    failed: u64,
    totals: GcRun,
    last_duration: Option<Duration>,
    last_success: Option<SystemTime>,
}

/// Every metric rregistry exports. One instance per server, shared by the middleware, the
/// storage wrapper and the GC task.
pub struct Metrics {
    requests: Mutex<BTreeMap<(RouteLabel, &'static str, u16), u64>>,
    received_bytes: [AtomicU64; RouteLabel::ALL.len()],
    sent_bytes: [AtomicU64; RouteLabel::ALL.len()],
    uploads_started: AtomicU64,
    uploads_completed: AtomicU64,
    uploads_cancelled: AtomicU64,
    storage_latency: [Histogram; StorageOp::ALL.len()],
    storage_errors: [AtomicU64; StorageOp::ALL.len()],
    gc: Mutex<GcStats>,
    /// The pull-through mirror's counters (proxy/cache.rs), set when a mirror runs.
    pub mirror: std::sync::OnceLock<Arc<crate::proxy::MirrorMetrics>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            received_bytes: std::array::from_fn(|_| AtomicU64::new(0)),
            sent_bytes: std::array::from_fn(|_| AtomicU64::new(0)),
            uploads_started: AtomicU64::new(0),
            uploads_completed: AtomicU64::new(0),
            uploads_cancelled: AtomicU64::new(0),
            storage_latency: std::array::from_fn(|_| Histogram::new()),
            storage_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            gc: Mutex::new(GcStats::default()),
            mirror: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    pub fn observe_storage(&self, op: StorageOp, elapsed: Duration, failed: bool) {
        self.storage_latency[op.index()].observe(elapsed);
        if failed {
            self.storage_errors[op.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a GC pass: `Some` when it finished, `None` when it failed or was skipped.
    pub fn observe_gc(&self, run: Option<GcRun>, elapsed: Duration) {
        let mut gc = self.gc.lock().unwrap_or_else(|p| p.into_inner());
        gc.last_duration = Some(elapsed);
        match run {
            Some(run) => {
                gc.succeeded += 1;
                gc.last_success = Some(SystemTime::now());
                gc.totals.reclaimed_bytes += run.reclaimed_bytes;
                gc.totals.blobs += run.blobs;
                gc.totals.manifests += run.manifests;
                gc.totals.uploads += run.uploads;
            }
            None => gc.failed += 1,
        }
    }

    fn observe_request(&self, route: RouteLabel, method: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((route, method, status)).or_insert(0) += 1;
    }

    /// Upload sessions as the API shows them: a POST that opens one (202) or pushes a whole
    /// blob (201 without `mount`), the closing PUT (201), a cancelling DELETE (204).
    fn observe_upload(&self, route: RouteLabel, method: &'static str, status: u16, mount: bool) {
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match (route, method, status) {
            (RouteLabel::Uploads, "POST", 202) => count(&self.uploads_started),
            (RouteLabel::Uploads, "POST", 201) if !mount => {
                count(&self.uploads_started);
                count(&self.uploads_completed);
            }
            (RouteLabel::Upload, "PUT", 201) => count(&self.uploads_completed),
            (RouteLabel::Upload, "DELETE", 204) => count(&self.uploads_cancelled),
            _ => {}
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "rregistry_http_requests_total",
            "counter",
            "HTTP requests answered, by route, method and status.",
        );
        {
            let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((route, method, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "rregistry_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    route.as_str()
                );
            }
        }
        for (name, help, counters) in [
            (
                "rregistry_http_request_bytes_total",
                "Request body bytes received, by route.",
                &self.received_bytes,
            ),
            (
                "rregistry_http_response_bytes_total",
                "Response body bytes sent, by route.",
                &self.sent_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for route in RouteLabel::ALL {
                let n = counters[route as usize].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{route=\"{}\"}} {n}", route.as_str());
            }
        }
        for (name, help, counter) in [
            (
                "rregistry_upload_sessions_started_total",
                "Blob upload sessions opened (a monolithic POST counts as one).",
                &self.uploads_started,
            ),
            (
                "rregistry_upload_sessions_completed_total",
                "Blob upload sessions completed into a blob.",
                &self.uploads_completed,
            ),
            (
                "rregistry_upload_sessions_cancelled_total",
                "Blob upload sessions cancelled by the client.",
                &self.uploads_cancelled,
            ),
        ] {
            let n = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}"
            );
        }
        self.render_storage(&mut out);
        self.render_gc(&mut out);
        if let Some(mirror) = self.mirror.get() {
            mirror.render(&mut out);
        }
        out
    }

    fn render_storage(&self, out: &mut String) {
        let name = "rregistry_storage_operation_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of storage driver operations, by operation.\n# TYPE {name} histogram"
        );
        for op in StorageOp::ALL {
            let h = &self.storage_latency[op.index()];
            let mut cumulative = 0;
            for (slot, count) in h.counts.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS
                    .get(slot)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{name}_bucket{{op=\"{}\",le=\"{le}\"}} {cumulative}",
                    op.as_str()
                );
            }
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{op=\"{}\"}} {sum}", op.as_str());
            let _ = writeln!(out, "{name}_count{{op=\"{}\"}} {cumulative}", op.as_str());
        }
        let name = "rregistry_storage_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Storage driver operations that failed (not-found answers excluded).\n# TYPE {name} counter"
        );
        for op in StorageOp::ALL {
            let n = self.storage_errors[op.index()].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{op=\"{}\"}} {n}", op.as_str());
        }
    }

    fn render_gc(&self, out: &mut String) {
        let gc = self.gc.lock().unwrap_or_else(|p| p.into_inner());
        let name = "rregistry_gc_runs_total";
        let _ = writeln!(
            out,
            "# HELP {name} Garbage collection passes, by result.\n# TYPE {name} counter\n{name}{{result=\"success\"}} {}\n{name}{{result=\"failure\"}} {}",
            gc.succeeded, gc.failed
        );
        for (name, help, n) in [
            (
                "rregistry_gc_reclaimed_bytes_total",
                "Bytes of blobs removed by garbage collection.",
                gc.totals.reclaimed_bytes,
            ),
            (
                "rregistry_gc_removed_blobs_total",
                "Blobs removed by garbage collection.",
                gc.totals.blobs,
            ),
            (
                "rregistry_gc_removed_manifests_total",
                "Untagged manifests removed by garbage collection.",
                gc.totals.manifests,
            ),
            (
                "rregistry_gc_removed_uploads_total",
                "Idle upload sessions removed by garbage collection.",
                gc.totals.uploads,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}"
            );
        }
        if let Some(d) = gc.last_duration {
            let name = "rregistry_gc_last_duration_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Duration of the last garbage collection pass.\n# TYPE {name} gauge\n{name} {}",
                d.as_secs_f64()
            );
        }
        if let Some(t) = gc.last_success {
            let name = "rregistry_gc_last_success_timestamp_seconds";
            let secs = t
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let _ = writeln!(
                out,
                "# HELP {name} When the last successful garbage collection pass ended.\n# TYPE {name} gauge\n{name} {secs}"
            );
        }
    }
}

/// Middleware: counts the request by route, method and status, and the body bytes both ways.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = RouteLabel::of(req.uri().path());
    let method = method_label(req.method());
    let mount = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("mount=")));
    let req = req.map(|body| {
        Body::new(ObservedBody::new(
            body,
            CounterRef::Received(metrics.clone(), route),
        ))
    });
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    metrics.observe_request(route, method, status);
    metrics.observe_upload(route, method, status, mount);
    resp.map(|body| Body::new(ObservedBody::new(body, CounterRef::Sent(metrics, route))))
}

/// Which byte counter a body adds its data frames to.
enum CounterRef {
    Received(Arc<Metrics>, RouteLabel),
    Sent(Arc<Metrics>, RouteLabel),
}

impl FrameObserver for CounterRef {
    fn data(&mut self, n: u64) {
        let (counters, route) = match self {
            CounterRef::Received(m, r) => (&m.received_bytes, *r),
            CounterRef::Sent(m, r) => (&m.sent_bytes, *r),
        };
        counters[route as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// `GET /metrics` and `GET /healthz` (HEAD too), outside the `/v2/` API.
pub fn routes<S: StorageDriver>(metrics: Arc<Metrics>, registry: Arc<Registry<S>>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(serve_metrics))
        .with_state(metrics)
        .merge(
            Router::new()
                .route(HEALTH_PATH, get(health::<S>))
                .with_state(registry),
        )
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// How long `/healthz` waits for storage before calling it unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// 200 when storage answers (a not-found root is an answer: a fresh registry), 503 otherwise.
async fn health<S: StorageDriver>(State(registry): State<Arc<Registry<S>>>) -> Response {
    let root = paths::repositories_root();
    let problem = match tokio::time::timeout(HEALTH_TIMEOUT, registry.driver().stat(&root)).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.is_not_found() => None,
        Ok(Err(e)) => Some(format!("storage: {e}")),
        Err(_) => Some(format!("storage did not answer within {HEALTH_TIMEOUT:?}")),
    };
    match problem {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(message) => {
            tracing::warn!(%message, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_never_carry_the_repository() {
        assert_eq!(RouteLabel::of("/v2/a/b/blobs/sha256:ab"), RouteLabel::Blobs);
        assert_eq!(RouteLabel::of("/v2/a/blobs/uploads/"), RouteLabel::Uploads);
        assert_eq!(RouteLabel::of("/metrics"), RouteLabel::Metrics);
        assert_eq!(RouteLabel::of("/nope"), RouteLabel::Other);
        for (i, r) in RouteLabel::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
        for (i, op) in StorageOp::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "StorageOp::ALL is in declaration order");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_storage(StorageOp::Stat, Duration::from_micros(20), false);
        m.observe_storage(StorageOp::Stat, Duration::from_millis(3), true);
        m.observe_storage(StorageOp::Stat, Duration::from_secs(9), false);
        let text = m.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing in\n{text}"))
                .to_string()
        };
        assert!(line(
            "rregistry_storage_operation_duration_seconds_bucket{op=\"stat\",le=\"0.00005\"}"
        )
        .ends_with(" 1"));
        assert!(line(
            "rregistry_storage_operation_duration_seconds_bucket{op=\"stat\",le=\"0.005\"}"
        )
        .ends_with(" 2"));
        assert!(line(
            "rregistry_storage_operation_duration_seconds_bucket{op=\"stat\",le=\"+Inf\"}"
        )
        .ends_with(" 3"));
        assert!(
            line("rregistry_storage_operation_duration_seconds_count{op=\"stat\"}").ends_with(" 3")
        );
        assert!(line("rregistry_storage_errors_total{op=\"stat\"}").ends_with(" 1"));
    }
}
