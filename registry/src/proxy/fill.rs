//! Blobs the cache lacks: one upstream download per digest however many clients ask
//! (single flight).
//!
//! The download is spooled to a temporary file as it arrives (without a name, so it is
//! never visible and vanishes with the last reader, whatever happens). Every waiting client
//! reads that file at its own pace: a flight holds a few MiB of memory whatever the blob's
//! size, clients that join late start from the file's first byte, and neither the download
//! nor the clients wait for storage writes.
//!
//! On the filesystem driver the spool is made in the storage itself (`local_temp_file`) and,
//! once verified, is given the blob's name (`adopt_blob`): the bytes are written and hashed
//! once. A cold pull spent about half of the mirror's CPU copying the spool through an upload
//! and hashing it again (perf, issue 8). Elsewhere (S3, or a `proxy.spooldirectory`) the
//! storage side is an ordinary upload session, as a client's POST, PATCH and PUT
//! (`start_upload`, `append_chunk`, `complete_upload`), reading the spool as it grows. Both
//! hold the GC gate for the final step as a client's PUT does (gc/gate.rs), so online GC never
//! sweeps a blob a fill is linking. A blob becomes visible only once its digest is verified,
//! and a failed download leaves nothing behind.
//!
//! Readers are held back from the last byte until the downloaded bytes match the digest
//! (hashed as they arrive, beside the storage path's own check, so that clients need not wait
//! for the storage commit's fsync): a client never receives the whole of a blob whose digest
//! is wrong, its transfer breaks.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci::{Digest, Digester};
use reqwest::Method;
use tokio::sync::watch;

use super::cache::MirrorMetrics;
use super::routing::Target;
use super::upstream::UpstreamError;
use super::Mirror;
use crate::error::{ErrorCode, RegistryError};
use crate::gc::GcGate;
use crate::storage::StorageDriver;

/// The download is written to the spool in batches of up to this many bytes, or what arrived
/// until the network paused for `SPOOL_DELAY`: small network chunks cost few writes (and few
/// wake-ups of the readers), and readers see bytes at most that late.
const SPOOL_BATCH: usize = 1 << 20;
const SPOOL_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
/// The most bytes a reader takes from the spool at once: the memory a reader holds.
const READ_CHUNK: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Set when the upstream answered: the size it announced, or why it failed.
    started: Option<Result<Option<u64>, Arc<UpstreamError>>>,
    /// Bytes in the spool file so far.
    written: u64,
    /// Every byte arrived and matches the digest: readers may have the last one.
    verified: bool,
    /// Why the download broke off; readers fail.
    failed: Option<String>,
}

/// One download in flight.
pub struct Inflight {
    progress: watch::Sender<Progress>,
    /// The bytes received so far (a temporary file without a name, read and written by
    /// offset).
    spool: File,
    /// The spool is the storage's own `local_temp_file`: at commit it is adopted as the blob,
    /// not copied through an upload.
    adoptable: bool,
    /// Cache repositories that asked for the blob meanwhile: all are linked at commit.
    repos: Mutex<BTreeSet<String>>,
}

/// Downloads by digest.
pub type InflightMap = Mutex<HashMap<Digest, Arc<Inflight>>>;

/// A blob's bytes as a client reads them from a flight.
pub type FlightReader = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

impl<S: StorageDriver> Mirror<S> {
    /// Joins the download of `digest` or starts one for `target` (committed holding `gate`).
    /// Returns the size the upstream announced (if it did) and the blob's bytes as they arrive.
    pub(super) async fn fetch_blob(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        gate: &Arc<GcGate>,
    ) -> Result<(Option<u64>, FlightReader), RegistryError> {
        let joined = self.flight(digest);
        let flight = match joined {
            Some(flight) => flight,
            None => {
                // The spool is made outside the map's lock (it is file I/O); a flight started
                // meanwhile by another client wins, and this spool is dropped unused.
                let mirror = self.clone();
                let (spool, adoptable) = tokio::task::spawn_blocking(move || {
                    new_spool(
                        mirror.settings.spool_dir.as_deref(),
                        mirror.registry.driver(),
                    )
                })
                .await
                .map_err(|e| RegistryError::internal(format!("spool task: {e}")))?
                .map_err(|e| RegistryError::internal(format!("mirror spool file: {e}")))?;
                let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(digest) {
                    Some(f) => f.clone(),
                    None => {
                        let (progress, _) = watch::channel(Progress::default());
                        let flight = Arc::new(Inflight {
                            progress,
                            spool,
                            adoptable,
                            repos: Mutex::new(BTreeSet::new()),
                        });
                        map.insert(digest.clone(), flight.clone());
                        tokio::spawn(self.clone().download(
                            target.clone(),
                            digest.clone(),
                            flight.clone(),
                            gate.clone(),
                        ));
                        flight
                    }
                }
            }
        };
        flight
            .repos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.storage.clone());
        let size = started(&flight).await?;
        Ok((size, read_flight(flight, 0..u64::MAX)))
    }

    /// The download of `digest` under way, if there is one and the upstream announced its
    /// size, for a Range GET to read from ([`read_flight`]) instead of asking the upstream.
    pub(super) async fn sized_flight(
        &self,
        digest: &Digest,
    ) -> Result<Option<(u64, Arc<Inflight>)>, RegistryError> {
        let Some(flight) = self.flight(digest) else {
            return Ok(None);
        };
        Ok(started(&flight).await?.map(|size| (size, flight)))
    }

    fn flight(&self, digest: &Digest) -> Option<Arc<Inflight>> {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(digest).cloned()
    }

    /// The download itself, detached from the client that started it: a client that goes
    /// away does not waste what was fetched for the others.
    async fn download(
        self: Arc<Self>,
        target: Target,
        digest: Digest,
        flight: Arc<Inflight>,
        gate: Arc<GcGate>,
    ) {
        MirrorMetrics::add(&self.metrics.upstream_fetches, 1);
        let rest = format!("blobs/{digest}");
        let response = target
            .upstream
            .send(Method::GET, &target.remote, &rest, &[], false)
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, %digest, error = %e, "mirror: blob fetch failed");
                self.forget_flight(&digest);
                flight
                    .progress
                    .send_modify(|p| p.started = Some(Err(Arc::new(e))));
                return;
            }
        };
        let size = response.content_length();
        flight.progress.send_modify(|p| p.started = Some(Ok(size)));

        // The storage side reads the spool like any client.
        let commit = tokio::spawn(self.clone().store(
            target.clone(),
            digest.clone(),
            flight.clone(),
            gate.clone(),
        ));
        let pumped = pump(&target, &digest, &flight, response, &self.metrics).await;
        if let Err(e) = &pumped {
            flight.progress.send_modify(|p| p.failed = Some(e.clone()));
        }
        let committed = match commit.await {
            Ok(result) => result.map_err(|e| e.message),
            Err(join) => Err(format!("storage task failed: {join}")),
        };
        let outcome = match (pumped, committed) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(format!("not cached: {e}")),
            (Ok(received), Ok(())) => Ok(received),
        };
        match outcome {
            Ok(received) => {
                let repos = {
                    // Under the map lock, so that no reader joins after the list is taken.
                    let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                    map.remove(&digest);
                    std::mem::take(&mut *flight.repos.lock().unwrap_or_else(|p| p.into_inner()))
                };
                for repo in repos {
                    if repo != target.storage {
                        // A mount adds a reference, as a mounting POST does: under the gate.
                        let mounted: Result<bool, RegistryError> = async {
                            let _writing = gate.writer(&repo).await?;
                            self.registry.mount_blob(&repo, &digest, None).await
                        }
                        .await;
                        if let Err(e) = mounted {
                            tracing::warn!(repository = %repo, %digest, error = %e, "mirror: linking a fetched blob failed");
                        }
                    }
                    self.cache.record(&digest, received, &repo);
                }
                tracing::info!(upstream = target.upstream.name(), repository = %target.remote, %digest, bytes = received, "mirror: blob cached");
                self.evict_if_over_limit();
            }
            Err(error) => {
                self.forget_flight(&digest);
                tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, %digest, error = %error, "mirror: blob download failed; nothing cached");
            }
        }
    }

    /// Puts the flight's bytes in the cache repository. An adoptable spool becomes the blob
    /// once the download is verified (no copy, no second hash); otherwise the bytes go
    /// through an upload session as they arrive, cancelled when anything fails so that
    /// nothing of it stays.
    async fn store(
        self: Arc<Self>,
        target: Target,
        digest: Digest,
        flight: Arc<Inflight>,
        gate: Arc<GcGate>,
    ) -> Result<(), RegistryError> {
        let registry = &self.registry;
        let repo = &target.storage;
        if flight.adoptable {
            let size = verified_size(&flight).await?;
            let _writing = gate.writer(repo).await?;
            return registry
                .adopt_blob(repo, &digest, &flight.spool, size)
                .await;
        }
        let upload = registry.start_upload(repo, digest.algorithm()).await?;
        let body = read_flight(flight, 0..u64::MAX)
            .map(|chunk| chunk.map_err(|e| RegistryError::internal(e.to_string())))
            .boxed();
        let stored = async {
            registry
                .append_chunk(repo, &upload.id, None, None, body)
                .await?;
            let _writing = gate.writer(repo).await?;
            registry
                .complete_upload(
                    repo,
                    &upload.id,
                    &digest,
                    None,
                    Some(0),
                    futures_util::stream::empty(),
                )
                .await
        }
        .await;
        if stored.is_err() {
            match registry.cancel_upload(repo, &upload.id).await {
                Ok(()) => {}
                // Already removed by the failing step (an oversized blob is).
                Err(e) if e.code == ErrorCode::BlobUploadUnknown => {}
                Err(e) => {
                    tracing::warn!(repository = %repo, upload = %upload.id, error = %e, "mirror: removing a failed fill's upload failed")
                }
            }
        }
        stored
    }

    fn forget_flight(&self, digest: &Digest) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }
}

/// Moves the upstream's body into the spool, hashing it; returns the bytes received once
/// they match the digest.
async fn pump(
    target: &Target,
    digest: &Digest,
    flight: &Arc<Inflight>,
    mut response: reqwest::Response,
    metrics: &MirrorMetrics,
) -> Result<u64, String> {
    let mut digester = Digester::new(digest.algorithm());
    // The network's chunks as they came (not copied into one buffer: perf showed that copy).
    let mut batch = Batch::default();
    let mut written = 0u64;
    loop {
        // Flush when the batch is full or the network paused (see SPOOL_BATCH). A chunk
        // future dropped by the timeout has consumed nothing: the body is read by polling.
        let next = if batch.is_empty() {
            Some(response.chunk().await)
        } else if batch.len >= SPOOL_BATCH {
            None
        } else {
            tokio::time::timeout(SPOOL_DELAY, response.chunk())
                .await
                .ok()
        };
        let Some(next) = next else {
            written = spool_write(flight, std::mem::take(&mut batch), written).await?;
            continue;
        };
        match next {
            Ok(Some(chunk)) => {
                digester.update(&chunk);
                MirrorMetrics::add(&metrics.upstream_bytes, chunk.len() as u64);
                batch.push(chunk);
            }
            Ok(None) => {
                if !batch.is_empty() {
                    written = spool_write(flight, std::mem::take(&mut batch), written).await?;
                }
                let actual = digester.finish();
                if actual != *digest {
                    return Err(format!("the upstream sent bytes with digest {actual}"));
                }
                flight.progress.send_modify(|p| p.verified = true);
                return Ok(written);
            }
            Err(e) => return Err(target.upstream.unreachable(&e).to_string()),
        }
    }
}

/// Network chunks waiting to be written to the spool together.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Appends `batch` at `offset` of the spool and tells the readers; returns the new end.
async fn spool_write(flight: &Arc<Inflight>, batch: Batch, offset: u64) -> Result<u64, String> {
    let end = offset + batch.len as u64;
    let writer = flight.clone();
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        for chunk in &batch.chunks {
            writer.spool.write_all_at(chunk, at)?;
            at += chunk.len() as u64;
        }
        io::Result::Ok(())
    })
    .await
    .map_err(|e| format!("spool task: {e}"))?
    .map_err(|e| format!("writing the mirror spool file: {e}"))?;
    flight.progress.send_modify(|p| p.written = end);
    Ok(end)
}

/// Waits for the upstream's answer to a download: the size it announced, if it did.
async fn started(flight: &Inflight) -> Result<Option<u64>, RegistryError> {
    let mut rx = flight.progress.subscribe();
    loop {
        let started = rx.borrow_and_update().started.clone();
        match started {
            Some(Ok(size)) => return Ok(size),
            Some(Err(e)) => return Err(super::upstream_failure(&e, ErrorCode::BlobUnknown)),
            None => {
                if rx.changed().await.is_err() {
                    return Err(RegistryError::internal("blob download vanished"));
                }
            }
        }
    }
}

/// Waits for the download to end; its size once every byte is verified.
async fn verified_size(flight: &Inflight) -> Result<u64, RegistryError> {
    let mut rx = flight.progress.subscribe();
    loop {
        {
            let p = rx.borrow_and_update();
            if p.verified {
                return Ok(p.written);
            }
            if let Some(e) = &p.failed {
                return Err(RegistryError::internal(format!(
                    "mirror download failed: {e}"
                )));
            }
        }
        if rx.changed().await.is_err() {
            return Err(RegistryError::internal("mirror download vanished"));
        }
    }
}

/// A reader of one download: the bytes of `range` (`0..u64::MAX` for all) as they arrive,
/// the blob's last one only once the bytes are verified. The reader has its own handle on
/// the spool, reopened through /proc with a position of its own, so that sequential reads
/// fill fresh buffers without zeroing them first (a positional read needs an initialised
/// buffer: perf showed that memset).
pub(super) fn read_flight(flight: Arc<Inflight>, range: std::ops::Range<u64>) -> FlightReader {
    let rx = flight.progress.subscribe();
    let start = (flight, rx, range.start, None::<File>);
    Box::pin(futures_util::stream::unfold(
        Some(start),
        move |state| async move {
            let (flight, mut rx, next, handle) = state?;
            loop {
                let (written, verified, failed) = {
                    let p = rx.borrow_and_update();
                    (p.written, p.verified, p.failed.clone())
                };
                let arrived = if verified {
                    written
                } else {
                    written.saturating_sub(1)
                };
                let readable = arrived.min(range.end);
                if next < readable {
                    let len = (readable - next).min(READ_CHUNK);
                    let reader = flight.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let handle = match handle {
                            Some(h) => h,
                            None => {
                                let mut h = File::open(format!(
                                    "/proc/self/fd/{}",
                                    reader.spool.as_raw_fd()
                                ))?;
                                h.seek(io::SeekFrom::Start(next))?;
                                h
                            }
                        };
                        let mut buf = Vec::with_capacity(len as usize);
                        (&handle).take(len).read_to_end(&mut buf)?;
                        if buf.len() as u64 != len {
                            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                        }
                        Ok((Bytes::from(buf), handle))
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(format!("spool task: {e}"))));
                    return Some(match read {
                        Ok((chunk, handle)) => {
                            (Ok(chunk), Some((flight, rx, next + len, Some(handle))))
                        }
                        Err(e) => (Err(e), None),
                    });
                }
                if verified || next >= range.end {
                    return None;
                }
                if let Some(e) = failed {
                    let e = io::Error::other(format!("mirror download failed: {e}"));
                    return Some((Err(e), None));
                }
                if rx.changed().await.is_err() {
                    let e = io::Error::other("mirror download vanished");
                    return Some((Err(e), None));
                }
            }
        },
    ))
}

/// A spool file, and whether the storage can adopt it: in `spool_dir`
/// (`proxy.spooldirectory`) when that is set; otherwise in the storage itself when it keeps
/// local files (the filesystem driver), else in TMPDIR. Also made once at start, so that a
/// spool location that takes no files is an error then, not at the first cold pull.
pub(super) fn new_spool(
    spool_dir: Option<&Path>,
    driver: &impl StorageDriver,
) -> io::Result<(File, bool)> {
    if let Some(dir) = spool_dir {
        return Ok((create_spool(dir)?, false));
    }
    match driver.local_temp_file()? {
        Some(file) => Ok((file, true)),
        None => Ok((create_spool(&std::env::temp_dir())?, false)),
    }
}

/// A new spool file in `dir`, unlinked as soon as it is open: its bytes are never visible to
/// anyone, and the system frees it with its last handle (a crash included).
fn create_spool(dir: &Path) -> io::Result<File> {
    let path = dir.join(format!(".rregistry-mirror-{:032x}", rand::random::<u128>()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    std::fs::remove_file(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(file)
}
