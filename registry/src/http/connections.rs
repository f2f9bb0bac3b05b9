//! Connections: the plain-HTTP accept loop and the per-connection serving that enforces a
//! request-head deadline (`http.headertimeout`). It replaces `axum::serve`, which offers no
//! way to set one: without it, a client that sends half a request head (slowloris) holds a
//! connection and its task forever.
//!
//! Two mechanisms, because hyper's `header_read_timeout` only starts once hyper knows it
//! speaks HTTP/1: the first request must reach the service within the deadline (this covers
//! a silent client and a half-sent HTTP/2 preface), and every later HTTP/1 head is bounded by
//! hyper's own timer, which also closes keep-alive connections idle that long.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How long to back off when `accept` fails (e.g. out of file descriptors), as axum does.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection settings every listener uses (HTTP/2 as `http.http2.disabled` says).
/// `header_timeout` of zero disables the deadline.
pub fn builder(header_timeout: Duration, http2: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout((!header_timeout.is_zero()).then_some(header_timeout));
    if http2 {
        builder
    } else {
        builder.http1_only()
    }
}

/// Serves `app` on plain-HTTP `listener` until `stop` resolves, then stops accepting and waits
/// for the requests in flight (the caller bounds the wait with `http.draintimeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    header_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // As Go's net/http (distribution) does: a response's last small segment
                    // must not wait for the client's delayed ACK (Nagle).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    stream
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            builder.clone(),
            header_timeout,
            graceful.watcher(),
        ));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves one connection (plain or, after its handshake, TLS). A connection whose first
/// request head is not complete within `header_timeout` is closed.
pub async fn serve_connection<I>(
    io: I,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    header_timeout: Duration,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let arrived = Arc::new(Notify::new());
    let service = TowerToHyperService::new(FirstRequest {
        inner: app,
        arrived: arrived.clone(),
    });
    let connection = watcher.watch(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    let mut connection = std::pin::pin!(connection);
    if !header_timeout.is_zero() {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = arrived.notified() => {}
            _ = tokio::time::sleep(header_timeout) => {
                tracing::debug!(?header_timeout, "no request head within http.headertimeout; closing");
                return;
            }
        }
    }
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Passes requests to `inner`, signalling `arrived` on each: hyper calls the service only
/// once a whole request head has been read.
#[derive(Clone)]
struct FirstRequest<S> {
    inner: S,
    arrived: Arc<Notify>,
}

impl<S, R> tower_service::Service<R> for FirstRequest<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // A stored permit: the connection task sees it even if it polls later.
        self.arrived.notify_one();
        self.inner.call(req)
    }
}
