//! Request bodies as the services read them (with a stall timeout), and bodies observed frame
//! by frame: the access-log line when a response finishes, the byte metrics.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::{ErrorCode, RegistryError};
use crate::service::BodyStream;

/// The request body as a stream of chunks. A client that sends nothing for `idle` gets 408:
/// a stalled upload must not hold a session lock and a connection forever.
pub fn request_stream(body: Body, idle: Duration) -> impl BodyStream {
    let data = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(
        Some(data),
        move |state| async move {
            let mut data = state?;
            match tokio::time::timeout(idle, data.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(data))),
                Ok(Some(Err(e))) => Some((
                    Err(RegistryError::bad_request(
                        ErrorCode::BlobUploadInvalid,
                        format!("reading the request body failed: {e}"),
                    )),
                    None,
                )),
                Ok(None) => None,
                Err(_) => Some((
                    Err(RegistryError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        ErrorCode::BlobUploadInvalid,
                        format!("request body stalled for more than {idle:?} (http.bodytimeout)"),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// How much of an oversized body is read and discarded before answering 413.
const DRAIN_CAP: u64 = 64 << 20;

/// Reads a whole body of at most `limit` bytes; a larger one gets 413.
pub async fn read_limited(
    mut body: impl BodyStream,
    limit: u64,
    declared: Option<u64>,
) -> Result<Bytes, RegistryError> {
    let too_large = || {
        RegistryError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ManifestInvalid,
            format!("manifest is larger than the limit of {limit} bytes (http.manifestmaxbytes)"),
        )
    };
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if received > limit {
            // Read on (up to a cap) and discard, so that the client, still sending, gets to
            // read the 413 instead of a reset connection.
            if received > DRAIN_CAP {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if received > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

/// What the access log says about one request.
pub struct AccessRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub started: Instant,
}

/// Told the size of every data frame an [`ObservedBody`] passes on.
pub trait FrameObserver: Send + Unpin + 'static {
    fn data(&mut self, bytes: u64);
}

/// A body that tells its observer about each data frame as it passes, so that aborted
/// transfers report what was really moved: the access log and the byte metrics.
pub struct ObservedBody<O> {
    inner: Body,
    observer: O,
}

impl<O: FrameObserver> ObservedBody<O> {
    pub fn new(inner: Body, observer: O) -> Self {
        ObservedBody { inner, observer }
    }
}

impl<O: FrameObserver> HttpBody for ObservedBody<O> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                self.observer.data(len);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a response's bytes and logs the request when the body is dropped, so the line
/// reports the whole transfer, not just the time to the headers.
pub struct LoggedBody {
    bytes: u64,
    record: AccessRecord,
}

impl LoggedBody {
    pub fn new(record: AccessRecord) -> Self {
        LoggedBody { bytes: 0, record }
    }
}

impl FrameObserver for LoggedBody {
    fn data(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let r = &self.record;
        tracing::info!(
            target: "rregistry::access",
            method = %r.method,
            path = %r.path,
            status = r.status,
            bytes = self.bytes,
            ms = r.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}
