//! Blobs the cache lacks: one upstream download per digest however many clients ask
//! (single flight), streamed to every waiting client as it arrives while it is written to
//! storage through the ordinary upload path (`Registry::upload_monolithic`: hashed while
//! written, verified, then renamed into place and linked). So a blob becomes visible only
//! once its digest is verified, and a failed download leaves nothing behind.
//!
//! Readers are held back from the final chunk until the downloaded bytes match the digest
//! (hashed as they arrive, beside the storage path's own check, so that clients need not wait
//! for the storage commit's fsync): a client never receives the whole of a blob whose digest
//! is wrong, its transfer breaks.
//! While a download runs its chunks are kept in memory for readers that join late; they are
//! freed when the last reader is done.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use oci::{Digest, Digester};
use reqwest::Method;
use tokio::sync::{mpsc, watch};

use super::cache::MirrorMetrics;
use super::routing::Target;
use super::upstream::UpstreamError;
use super::Mirror;
use crate::error::{ErrorCode, RegistryError};
use crate::storage::StorageDriver;

/// How many chunks may wait for storage before the download pauses.
const STORAGE_BACKLOG: usize = 64;

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Set when the upstream answered: the size it announced, or why it failed.
    started: Option<Result<Option<u64>, Arc<UpstreamError>>>,
    chunks: usize,
    /// Every byte arrived and matches the digest: readers may have the last chunk.
    verified: bool,
    /// Set when the blob is committed (`Ok`) or abandoned.
    done: Option<Result<(), String>>,
}

/// One download in flight.
pub struct Inflight {
    progress: watch::Sender<Progress>,
    chunks: Mutex<Vec<Bytes>>,
    /// Cache repositories that asked for the blob meanwhile: all are linked at commit.
    repos: Mutex<BTreeSet<String>>,
}

/// Downloads by digest.
pub type InflightMap = Mutex<HashMap<Digest, Arc<Inflight>>>;

impl<S: StorageDriver> Mirror<S> {
    /// Joins the download of `digest` or starts one for `target`. Returns the size the
    /// upstream announced (if it did) and the blob's bytes as they arrive.
    pub(super) async fn fetch_blob(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
    ) -> Result<
        (
            Option<u64>,
            impl Stream<Item = std::io::Result<Bytes>> + Send,
        ),
        RegistryError,
    > {
        let flight = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(digest) {
                Some(f) => f.clone(),
                None => {
                    let (progress, _) = watch::channel(Progress::default());
                    let flight = Arc::new(Inflight {
                        progress,
                        chunks: Mutex::new(Vec::new()),
                        repos: Mutex::new(BTreeSet::new()),
                    });
                    map.insert(digest.clone(), flight.clone());
                    tokio::spawn(self.clone().download(
                        target.clone(),
                        digest.clone(),
                        flight.clone(),
                    ));
                    flight
                }
            }
        };
        flight
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.storage.clone());
        let mut rx = flight.progress.subscribe();
        let size = loop {
            let started = rx.borrow_and_update().started.clone();
            match started {
                Some(Ok(size)) => break size,
                Some(Err(e)) => return Err(super::upstream_failure(&e, ErrorCode::BlobUnknown)),
                None => {
                    if rx.changed().await.is_err() {
                        return Err(RegistryError::internal("blob download vanished"));
                    }
                }
            }
        };
        Ok((size, read_flight(flight, rx)))
    }

    /// The download itself, detached from the client that started it: a client that goes
    /// away does not waste what was fetched for the others.
    async fn download(self: Arc<Self>, target: Target, digest: Digest, flight: Arc<Inflight>) {
        MirrorMetrics::add(&self.metrics.upstream_fetches, 1);
        let rest = format!("blobs/{digest}");
        let response = target
            .upstream
            .send(Method::GET, &target.remote, &rest, None, false)
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, %digest, error = %e, "mirror: blob fetch failed");
                self.forget_flight(&digest);
                flight.progress.send_modify(|p| {
                    p.started = Some(Err(Arc::new(e)));
                    p.done = Some(Err("upstream refused".into()));
                });
                return;
            }
        };
        let size = response.content_length();
        flight.progress.send_modify(|p| p.started = Some(Ok(size)));

        // The storage side: the ordinary verified upload, fed through a channel.
        let (tx, rx) = mpsc::channel::<Result<Bytes, RegistryError>>(STORAGE_BACKLOG);
        let body = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let registry = self.registry.clone();
        let storage = target.storage.clone();
        let commit_digest = digest.clone();
        let commit = tokio::spawn(async move {
            registry
                .upload_monolithic(&storage, &commit_digest, size, body)
                .await
        });

        let mut received = 0u64;
        let mut storage_open = true;
        let mut digester = Digester::new(digest.algorithm());
        let pumped: Result<(), String> = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    received += chunk.len() as u64;
                    digester.update(&chunk);
                    MirrorMetrics::add(&self.metrics.upstream_bytes, chunk.len() as u64);
                    // Readers first, so that they are not paced by the storage writes.
                    let count = {
                        let mut chunks = flight.chunks.lock().unwrap_or_else(|p| p.into_inner());
                        chunks.push(chunk.clone());
                        chunks.len()
                    };
                    flight.progress.send_modify(|p| p.chunks = count);
                    if storage_open && tx.send(Ok(chunk)).await.is_err() {
                        // The upload ended early (refused); readers still get their bytes.
                        storage_open = false;
                    }
                }
                Ok(None) => {
                    let actual = digester.finish();
                    if actual != digest {
                        break Err(format!("the upstream sent bytes with digest {actual}"));
                    }
                    flight.progress.send_modify(|p| p.verified = true);
                    break Ok(());
                }
                Err(e) => {
                    let e = target.upstream.unreachable(&e);
                    let _ = tx
                        .send(Err(RegistryError::internal(format!(
                            "upstream broke off: {e}"
                        ))))
                        .await;
                    break Err(e.to_string());
                }
            }
        };
        drop(tx);
        let committed = match commit.await {
            Ok(result) => result.map_err(|e| e.message),
            Err(join) => Err(format!("storage task failed: {join}")),
        };
        let outcome = match (pumped, committed) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(format!("not cached: {e}")),
            (Ok(()), Ok(())) => Ok(()),
        };
        match &outcome {
            Ok(()) => {
                let repos = {
                    // Under the map lock, so that no reader joins after the list is taken.
                    let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                    map.remove(&digest);
                    std::mem::take(&mut *flight.repos.lock().unwrap_or_else(|p| p.into_inner()))
                };
                for repo in repos {
                    if repo != target.storage {
                        if let Err(e) = self.registry.mount_blob(&repo, &digest, None).await {
                            tracing::warn!(repository = %repo, %digest, error = %e, "mirror: linking a fetched blob failed");
                        }
                    }
                    self.cache.record(&digest, received, &repo);
                }
                tracing::info!(upstream = target.upstream.name(), repository = %target.remote, %digest, bytes = received, "mirror: blob cached");
                self.evict_if_over_limit();
            }
            Err(e) => {
                self.forget_flight(&digest);
                tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, %digest, error = %e, "mirror: blob download failed; nothing cached");
            }
        }
        flight.progress.send_modify(|p| p.done = Some(outcome));
    }

    fn forget_flight(&self, digest: &Digest) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }
}

/// A reader of one download: every chunk from the first, the last one only once the bytes
/// are verified (or the blob committed).
fn read_flight(
    flight: Arc<Inflight>,
    rx: watch::Receiver<Progress>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(Some((flight, rx, 0usize)), |state| async move {
        let (flight, mut rx, next) = state?;
        loop {
            let progress = rx.borrow_and_update().clone();
            let complete = progress.verified || matches!(progress.done, Some(Ok(())));
            let releasable = if complete {
                progress.chunks
            } else {
                progress.chunks.saturating_sub(1)
            };
            if next < releasable {
                let chunk = flight.chunks.lock().unwrap_or_else(|p| p.into_inner())[next].clone();
                return Some((Ok(chunk), Some((flight, rx, next + 1))));
            }
            if complete {
                return None;
            }
            if let Some(Err(e)) = &progress.done {
                let e = std::io::Error::other(format!("mirror download failed: {e}"));
                return Some((Err(e), None));
            }
            if rx.changed().await.is_err() {
                let e = std::io::Error::other("mirror download vanished");
                return Some((Err(e), None));
            }
        }
    })
}
