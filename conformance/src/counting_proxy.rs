//! An HTTP proxy in front of a registry that records every request line, so a test can count
//! what reached the upstream (e.g. one blob GET for sixteen concurrent pulls through a
//! mirror), and can answer every request with an error status instead (an upstream that is
//! rate-limited or failing). Built on the one-request-per-connection [`crate::relay`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::AsyncWriteExt;

use crate::relay::{drain_body, read_head, relay, ProxyServer};

pub struct CountingProxy {
    server: ProxyServer,
    requests: Arc<Mutex<Vec<String>>>,
    failing: Arc<Mutex<Option<String>>>,
    /// (method, status): requests with that method get the status (an upstream refusing HEAD).
    refusing: Arc<Mutex<Option<(String, String)>>>,
}

impl CountingProxy {
    /// Starts on a free loopback port in front of `upstream`, passing everything through.
    pub fn start(upstream: SocketAddr) -> Result<CountingProxy> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failing: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let refusing: Arc<Mutex<Option<(String, String)>>> = Arc::new(Mutex::new(None));
        let (log, fail, refuse) = (requests.clone(), failing.clone(), refusing.clone());
        let server = ProxyServer::start("counting-proxy", move |mut client| {
            let (log, fail, refuse) = (log.clone(), fail.clone(), refuse.clone());
            async move {
                let request = match read_head(&mut client).await {
                    Ok(Some(request)) => request,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("counting proxy: {e:#}");
                        return;
                    }
                };
                let head = String::from_utf8_lossy(&request.head);
                let line = head.lines().next().unwrap_or("");
                // "GET /v2/x/blobs/sha256:.. HTTP/1.1" → "GET /v2/x/blobs/sha256:.."
                let line = line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string();
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.clone());
                let refused = refuse
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .filter(|(method, _)| line.starts_with(&format!("{method} ")))
                    .map(|(_, status)| status);
                let status = fail
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .or(refused);
                match status {
                    Some(status) => {
                        let _ = drain_body(&mut client, &request).await;
                        let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected by the test's counting proxy"}]}"#;
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(response.as_bytes()).await;
                        let _ = client.shutdown().await;
                    }
                    None => {
                        if let Err(e) = relay(client, request, upstream).await {
                            eprintln!("counting proxy to {upstream}: {e:#}");
                        }
                    }
                }
            }
        })?;
        Ok(CountingProxy {
            server,
            requests,
            failing,
            refusing,
        })
    }

    /// Every request so far as `METHOD /path?query`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests so far start with `prefix` (e.g. `"GET /v2/a/blobs/"`).
    pub fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// Answers every request with `status` (e.g. `"503 Service Unavailable"`), or passes
    /// them through again with `None`.
    pub fn fail_with(&self, status: Option<&str>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = status.map(str::to_string);
    }

    /// Answers requests with `method` (e.g. `"HEAD"`) with `status` (e.g. `"405 Method Not
    /// Allowed"`), as some registries and CDNs do; `None` passes them through again.
    pub fn refuse_method(&self, method: &str, status: Option<&str>) {
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner()) =
            status.map(|s| (method.to_string(), s.to_string()));
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}
