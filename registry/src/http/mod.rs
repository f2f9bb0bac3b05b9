//! The HTTP face of the registry: one axum fallback handler that parses the API's paths
//! ([`route`]), checks names, and calls the services; plus the access log.

pub(crate) mod body;
pub mod connections;
mod handlers;
pub mod route;

pub(crate) use handlers::{blob_answer, byte_range, range_not_satisfiable};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::service::Registry;
use crate::storage::StorageDriver;

/// HTTP-level limits (from `config::HttpConfig`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub manifest_max_bytes: u64,
    pub body_timeout: Duration,
}

pub struct AppState<S: StorageDriver> {
    pub registry: Arc<Registry<S>>,
    pub limits: HttpLimits,
    /// The auth layer; `None` serves everyone (no `auth` section).
    pub auth: Option<Arc<crate::auth::Auth>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Reference-adding requests hold it so that online GC can pause them (gc/gate.rs).
    pub gc_gate: Arc<crate::gc::GcGate>,
    /// The pull-through mirror; `None` without a `proxy` section (proxy/mod.rs).
    pub mirror: Option<Arc<crate::proxy::Mirror<S>>>,
}

pub fn router<S: StorageDriver>(state: Arc<AppState<S>>, access_log: bool) -> Router {
    let auth = state.auth.clone();
    let metrics = state.metrics.clone();
    // /metrics and /healthz are merged after auth: probes and scrapers need no credentials.
    let operational = crate::metrics::routes(metrics.clone(), state.registry.clone());
    let gate = state.gc_gate.clone();
    let router = Router::new()
        .fallback(dispatch::<S>)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            gate,
            crate::gc::gate::hold_writes,
        ));
    let router = crate::auth::protect(router, auth)
        .merge(operational)
        .layer(middleware::map_response(api_version_header));
    let router = if access_log {
        router.layer(middleware::from_fn(log_access))
    } else {
        router
    };
    router.layer(middleware::from_fn_with_state(
        metrics,
        crate::metrics::track,
    ))
}

async fn dispatch<S: StorageDriver>(State(app): State<Arc<AppState<S>>>, req: Request) -> Response {
    match handlers::handle(&app, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// Every response names the API version, as distribution does; Docker clients look for it.
async fn api_version_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

/// One line per request (method, path, status, bytes, ms), written when the body is done.
async fn log_access(req: Request, next: Next) -> Response {
    let record = body::AccessRecord {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        status: 0,
        started: Instant::now(),
    };
    let resp = next.run(req).await;
    let (parts, inner) = resp.into_parts();
    let record = body::AccessRecord {
        status: parts.status.as_u16(),
        ..record
    };
    Response::from_parts(
        parts,
        Body::new(body::ObservedBody::new(
            inner,
            body::LoggedBody::new(record),
        )),
    )
}
