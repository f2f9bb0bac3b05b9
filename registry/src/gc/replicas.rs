//! Online GC across replicas (`storage.maintenance.gc.replicas`). The in-process gate
//! (gate.rs) pauses only its own process's writers; replicas over one storage also announce
//! themselves in that storage, so that a pass on any replica pauses reference-adding requests
//! on all of them:
//!
//! - a writer stores `_gc/writers/<id>`, *then* lists `_gc/sweeps/`; if a sweep is announced
//!   it withdraws, waits and tries again;
//! - a pass stores `_gc/sweeps/<id>`, *then* lists `_gc/writers/` and sweeps once none is
//!   left.
//!
//! Both storages are read-after-write and list-after-write consistent (a directory; S3 since
//! December 2020), so of a writer and a pass announcing at the same time, at least one sees
//! the other: each writes before it reads. They never both go ahead.
//!
//! A writer that finishes stores `_gc/written/<repository>` before it withdraws, so the
//! pass's catch-up, once no writer is left, finds every repository written since its mark
//! began (and removes the entries: the next pass marks everything anyway).
//!
//! An announcement holds the time it was last written and is rewritten every [`REFRESH`]
//! while it lasts; one not rewritten for [`STALE`] belongs to a replica that died, and is
//! ignored and removed. STALE also bounds the clock skew between replicas it tolerates.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::service::Registry;
use crate::storage::{StorageDriver, StorageError, StorageResult};

const WRITERS: &str = "docker/registry/v2/_gc/writers";
const SWEEPS: &str = "docker/registry/v2/_gc/sweeps";
const WRITTEN: &str = "docker/registry/v2/_gc/written";

/// How often a live announcement is rewritten.
const REFRESH: Duration = Duration::from_secs(15);
/// An announcement older than this is a dead replica's.
const STALE: Duration = Duration::from_secs(120);
/// How often a waiting writer or pass looks again.
const POLL: Duration = Duration::from_millis(50);

type Boxed<'a, T> = Pin<Box<dyn Future<Output = StorageResult<T>> + Send + 'a>>;

/// The storage operations announcements need, object-safe so that the (non-generic) gate can
/// hold any driver.
pub trait AnnouncementStorage: Send + Sync + 'static {
    fn put<'a>(&'a self, path: &'a str, content: Bytes) -> Boxed<'a, ()>;
    fn get<'a>(&'a self, path: &'a str) -> Boxed<'a, Bytes>;
    fn list<'a>(&'a self, dir: &'a str) -> Boxed<'a, Vec<String>>;
    fn delete<'a>(&'a self, path: &'a str) -> Boxed<'a, ()>;
}

impl<S: StorageDriver> AnnouncementStorage for Registry<S> {
    fn put<'a>(&'a self, path: &'a str, content: Bytes) -> Boxed<'a, ()> {
        Box::pin(self.driver().put_content(path, content))
    }
    fn get<'a>(&'a self, path: &'a str) -> Boxed<'a, Bytes> {
        Box::pin(self.driver().get_content(path))
    }
    fn list<'a>(&'a self, dir: &'a str) -> Boxed<'a, Vec<String>> {
        Box::pin(async move {
            match self.driver().list(dir).await {
                Err(StorageError::NotFound(_)) => Ok(Vec::new()),
                listed => listed,
            }
        })
    }
    fn delete<'a>(&'a self, path: &'a str) -> Boxed<'a, ()> {
        Box::pin(async move {
            match self.driver().delete(path).await {
                Err(StorageError::NotFound(_)) => Ok(()),
                deleted => deleted,
            }
        })
    }
}

/// This replica's side of the announcements.
pub struct Announcer {
    storage: Arc<dyn AnnouncementStorage>,
}

impl Announcer {
    pub fn new(storage: Arc<dyn AnnouncementStorage>) -> Self {
        Announcer { storage }
    }

    /// Announces a writer to `repository`, once no sweep is announced. When the announcement
    /// is dropped, the repository is recorded as written and then the announcement withdrawn.
    pub async fn writer(&self, repository: &str) -> StorageResult<Announcement> {
        // '/' separates path components; '+' is not allowed in repository names.
        let written = format!("{WRITTEN}/{}", repository.replace('/', "+"));
        loop {
            let writing = self.announce(WRITERS, Some(written.clone())).await?;
            if !self.any_live(SWEEPS).await? {
                return Ok(writing);
            }
            writing.withdraw().await?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// The repositories writers recorded since the entries were last taken, which this
    /// removes. Called while a sweep is announced and no writer is left.
    pub async fn take_written(&self) -> StorageResult<Vec<String>> {
        let mut repositories = Vec::new();
        for name in self.storage.list(WRITTEN).await? {
            self.storage.delete(&format!("{WRITTEN}/{name}")).await?;
            repositories.push(name.replace('+', "/"));
        }
        Ok(repositories)
    }

    /// Announces a sweep and waits up to `wait` for the writers announced on every replica to
    /// finish; `None` (the announcement withdrawn) when they did not.
    pub async fn sweep(&self, wait: Duration) -> StorageResult<Option<Announcement>> {
        let sweeping = self.announce(SWEEPS, None).await?;
        let deadline = tokio::time::Instant::now() + wait;
        while self.any_live(WRITERS).await? {
            if tokio::time::Instant::now() >= deadline {
                sweeping.withdraw().await?;
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Some(sweeping))
    }

    async fn announce(&self, dir: &str, written: Option<String>) -> StorageResult<Announcement> {
        let path = format!("{dir}/{:032x}", rand::random::<u128>());
        self.storage.put(&path, now_millis()).await?;
        let shared = Arc::new(Shared {
            storage: self.storage.clone(),
            path,
            written,
            withdrawn: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
            writing: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refresh(shared.clone()));
        Ok(Announcement { shared })
    }

    /// Whether `dir` holds an announcement that is not stale; stale ones are removed.
    async fn any_live(&self, dir: &str) -> StorageResult<bool> {
        let now = since_epoch();
        for name in self.storage.list(dir).await? {
            let path = format!("{dir}/{name}");
            let written_at = match self.storage.get(&path).await {
                Ok(content) => parse_millis(&content),
                // Withdrawn since the listing.
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            match written_at {
                Some(at) if now.saturating_sub(at) < STALE => return Ok(true),
                _ => {
                    tracing::warn!(announcement = %path, "gc: removing a stale announcement (a replica that stopped?)");
                    self.storage.delete(&path).await?;
                }
            }
        }
        Ok(false)
    }
}

struct Shared {
    storage: Arc<dyn AnnouncementStorage>,
    path: String,
    /// A writer's `_gc/written/` entry, stored when it finishes.
    written: Option<String>,
    /// Set once the announcement is no longer rewritten: withdrawn, or left to go stale.
    withdrawn: AtomicBool,
    /// Wakes the refresher to end it.
    ended: tokio::sync::Notify,
    /// Held while the announcement is written, so that a rewrite in flight can never land
    /// after the withdrawal's delete.
    writing: tokio::sync::Mutex<()>,
}

impl Shared {
    fn stop_refreshing(&self) {
        self.withdrawn.store(true, Ordering::SeqCst);
        self.ended.notify_one();
    }
}

/// A live announcement; withdrawn when dropped (in the background) or by [`withdraw`].
///
/// [`withdraw`]: Announcement::withdraw
pub struct Announcement {
    shared: Arc<Shared>,
}

impl Announcement {
    /// Withdraws the announcement before anything was done under it.
    pub async fn withdraw(self) -> StorageResult<()> {
        // Before anything awaits, so that the drop of `self` records nothing either way.
        self.shared.stop_refreshing();
        withdraw(&self.shared).await
    }
}

impl Drop for Announcement {
    /// Done: a writer's repository is recorded (before the withdrawal, so that a pass waiting
    /// for the writers to go finds it), then the announcement goes, in the background.
    fn drop(&mut self) {
        if self.shared.withdrawn.load(Ordering::SeqCst) {
            return;
        }
        let shared = self.shared.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // The runtime is gone (shutdown): the announcement goes stale instead.
            shared.stop_refreshing();
            return;
        };
        runtime.spawn(async move {
            let recorded = match &shared.written {
                Some(entry) => put_with_retries(&shared, entry).await,
                None => Ok(()),
            };
            // A writer whose repository could not be recorded is not withdrawn: it goes
            // stale, and a pass waiting for it meanwhile gives up (Busy) rather than miss its
            // write. The next pass marks everything anyway.
            let done = match recorded {
                Ok(()) => withdraw(&shared).await,
                Err(e) => {
                    shared.stop_refreshing();
                    Err(e)
                }
            };
            if let Err(e) = done {
                tracing::warn!(announcement = %shared.path, error = %e, "gc: finishing an announcement failed; it goes stale");
            }
        });
    }
}

async fn put_with_retries(shared: &Shared, path: &str) -> StorageResult<()> {
    let mut wait = Duration::from_millis(100);
    loop {
        match shared.storage.put(path, Bytes::new()).await {
            Err(_) if wait <= Duration::from_millis(400) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
}

async fn withdraw(shared: &Shared) -> StorageResult<()> {
    shared.stop_refreshing();
    let _writing = shared.writing.lock().await;
    shared.storage.delete(&shared.path).await
}

/// Rewrites the announcement every REFRESH until it is withdrawn.
async fn refresh(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = shared.ended.notified() => return,
        }
        let _writing = shared.writing.lock().await;
        if shared.withdrawn.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = shared.storage.put(&shared.path, now_millis()).await {
            tracing::warn!(announcement = %shared.path, error = %e, "gc: refreshing an announcement failed");
        }
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn now_millis() -> Bytes {
    Bytes::from(since_epoch().as_millis().to_string())
}

fn parse_millis(content: &[u8]) -> Option<Duration> {
    std::str::from_utf8(content)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}
