//! The plumbing the test proxies share (`round_robin`, `fault_proxy`): a loopback listener on
//! its own thread and runtime, and an HTTP/1.1 relay that carries exactly one request per
//! client connection. It adds `Connection: close` to each request, so the backend closes
//! after its response and tells the client so; the client's next request then arrives on a
//! new connection, and the proxy decides again (another replica, another fault).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head accepted; registry and S3 requests are far below it.
const MAX_HEAD: usize = 64 << 10;

/// A request head read off a client connection.
pub struct RequestHead {
    /// The head, with `Connection: close` in place of any connection header, ending in the
    /// blank line.
    pub head: Vec<u8>,
    /// Bytes read past the head: the start of the body.
    pub body_start: Vec<u8>,
    /// The request's `Content-Length`, if it has one.
    pub content_length: Option<u64>,
}

/// Reads one request head; `None` when the client closed without sending one.
pub async fn read_head(client: &mut TcpStream) -> Result<Option<RequestHead>> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("request head longer than {MAX_HEAD} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await.context("read request head")?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let mut head = String::new();
    let mut content_length = None;
    for line in text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok();
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    Ok(Some(RequestHead {
        head: head.into_bytes(),
        body_start: buf[end..].to_vec(),
        content_length,
    }))
}

/// Sends `request` to `backend` and relays both directions until either side closes.
pub async fn relay(mut client: TcpStream, request: RequestHead, backend: SocketAddr) -> Result<()> {
    let mut upstream = TcpStream::connect(backend)
        .await
        .with_context(|| format!("connect {backend}"))?;
    upstream.write_all(&request.head).await?;
    upstream.write_all(&request.body_start).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .context("relay")?;
    Ok(())
}

/// Reads and discards the rest of a request body of `content_length` bytes.
pub async fn drain_body(client: &mut TcpStream, request: &RequestHead) -> Result<()> {
    let mut left = request
        .content_length
        .unwrap_or(0)
        .saturating_sub(request.body_start.len() as u64);
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = client.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    Ok(())
}

/// A loopback listener served on its own thread; stopped (and its connections dropped) when
/// this value is dropped.
pub struct ProxyServer {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyServer {
    /// Calls `handle` with each accepted connection, on a task of its own.
    pub fn start<F, Fut>(name: &str, handle: F) -> Result<ProxyServer>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind proxy")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = Arc::new(handle);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("proxy runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("proxy listener: {e}");
                            return;
                        }
                    };
                    let accept = async {
                        loop {
                            match listener.accept().await {
                                Ok((conn, _)) => {
                                    tokio::spawn(handle(conn));
                                }
                                Err(e) => eprintln!("proxy accept: {e}"),
                            }
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                // Stalled connections are dropped with the runtime, not waited for.
                runtime.shutdown_background();
            })
            .context("spawn proxy thread")?;
        Ok(ProxyServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
