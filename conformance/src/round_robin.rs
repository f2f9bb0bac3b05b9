//! A round-robin HTTP proxy in front of several registry replicas, as a load balancer would
//! be: each request goes to the next replica in turn (one request per client connection, see
//! `relay`), so consecutive requests of one upload or one pull land on different replicas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::relay::{read_head, relay, ProxyServer};

pub struct RoundRobin {
    server: ProxyServer,
    served: Arc<Vec<AtomicUsize>>,
}

impl RoundRobin {
    /// Starts on a free loopback port in front of `backends`.
    pub fn start(backends: Vec<SocketAddr>) -> Result<RoundRobin> {
        ensure!(!backends.is_empty(), "round robin needs a backend");
        let backends = Arc::new(backends);
        let served: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let counts = served.clone();
        let server = ProxyServer::start("round-robin", move |mut client| {
            let (backends, counts, next) = (backends.clone(), counts.clone(), next.clone());
            async move {
                let request = match read_head(&mut client).await {
                    Ok(Some(request)) => request,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("round robin: {e:#}");
                        return;
                    }
                };
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                counts[i].fetch_add(1, Ordering::Relaxed);
                if let Err(e) = relay(client, request, backends[i]).await {
                    eprintln!("round robin to {}: {e:#}", backends[i]);
                }
            }
        })?;
        Ok(RoundRobin { server, served })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// Requests sent to each backend so far.
    pub fn served(&self) -> Vec<usize> {
        self.served
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}
