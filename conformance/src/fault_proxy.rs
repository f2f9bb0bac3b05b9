//! A fault-injecting HTTP proxy for the S3 server: a chosen share of requests gets a 500
//! with S3's `InternalError` body, or is stalled (accepted, never answered), or, for copies and
//! multipart completions, a 200 carrying that error body (how S3 reports a copy that failed
//! after it answered 200); the others pass through. Faults are spread evenly (every k-th
//! request), so a test is deterministic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::AsyncWriteExt;

use crate::relay::{drain_body, read_head, relay, ProxyServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every request reaches the server.
    None,
    /// This many percent of requests get `500 InternalError`.
    ServerErrors(u8),
    /// This many percent of requests are never answered.
    Stalls(u8),
    /// This many percent of copies (CopyObject, UploadPartCopy) and multipart completions get
    /// `200 OK` with an `InternalError` body, and are not performed. Other requests pass and
    /// do not count toward the share.
    ErrorsIn200(u8),
}

/// How long a stalled request is held; far beyond any client timeout in the tests.
const STALL: Duration = Duration::from_secs(300);

const INTERNAL_ERROR: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>injected by the test's fault proxy</Message></Error>";

pub struct FaultProxy {
    server: ProxyServer,
    /// 0 none, 1 server errors, 2 stalls, 3 errors in a 200; and the percentage.
    kind: Arc<AtomicU8>,
    percent: Arc<AtomicU8>,
    faults: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts on a free loopback port in front of `upstream`, passing everything through.
    pub fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let kind = Arc::new(AtomicU8::new(0));
        let percent = Arc::new(AtomicU8::new(0));
        let faults = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let (k, p, f) = (kind.clone(), percent.clone(), faults.clone());
        let server = ProxyServer::start("fault-proxy", move |mut client| {
            let (kind, percent, faults, seen) = (k.clone(), p.clone(), f.clone(), seen.clone());
            async move {
                let request = match read_head(&mut client).await {
                    Ok(Some(request)) => request,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("fault proxy: {e:#}");
                        return;
                    }
                };
                let kind = kind.load(Ordering::Relaxed);
                let counted = kind != 3 || is_copy_or_completion(&request.head);
                // Request n faults when the running share ⌊n·p/100⌋ steps up at n.
                let fault = counted && {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    let pct = u64::from(percent.load(Ordering::Relaxed).min(100));
                    (n + 1) * pct / 100 != n * pct / 100
                };
                match (fault, kind) {
                    (true, 1 | 3) => {
                        faults.fetch_add(1, Ordering::Relaxed);
                        let _ = drain_body(&mut client, &request).await;
                        let status = if kind == 1 {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INTERNAL_ERROR}",
                            INTERNAL_ERROR.len()
                        );
                        let _ = client.write_all(response.as_bytes()).await;
                        let _ = client.shutdown().await;
                    }
                    (true, 2) => {
                        faults.fetch_add(1, Ordering::Relaxed);
                        // Hold the connection open and silent until the client gives up.
                        tokio::time::sleep(STALL).await;
                        drop(client);
                    }
                    _ => {
                        if let Err(e) = relay(client, request, upstream).await {
                            eprintln!("fault proxy to {upstream}: {e:#}");
                        }
                    }
                }
            }
        })?;
        Ok(FaultProxy {
            server,
            kind,
            percent,
            faults,
        })
    }

    pub fn set(&self, fault: Fault) {
        let (kind, percent) = match fault {
            Fault::None => (0, 0),
            Fault::ServerErrors(p) => (1, p),
            Fault::Stalls(p) => (2, p),
            Fault::ErrorsIn200(p) => (3, p),
        };
        self.percent.store(percent, Ordering::Relaxed);
        self.kind.store(kind, Ordering::Relaxed);
    }

    /// Requests answered with a fault so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// A CopyObject or UploadPartCopy (a copy-source header) or a CompleteMultipartUpload (a POST
/// with an upload id): the requests S3 may answer 200 and then fail.
fn is_copy_or_completion(head: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let request_line = head.lines().next().unwrap_or_default();
    head.contains("\r\nx-amz-copy-source:")
        || (request_line.starts_with("post ") && request_line.contains("uploadid="))
}
