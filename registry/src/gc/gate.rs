//! The one pause online GC needs: requests that add references (a manifest PUT, the PUT that
//! completes an upload, a monolithic or mounting POST — each writes revision or `_layers`
//! links) hold the gate shared while they run; a GC pass takes it exclusively only for its
//! final catch-up and sweep. Reads, PATCHes and deletes never wait.
//!
//! Why not timestamps alone: a manifest PUT checks its blobs' links and then writes its
//! revision link. If GC deleted a blob between the two, the manifest would be stored
//! referencing nothing, and no refresh of the blob's timestamp can close that window: GC may
//! have read the old timestamp just before the refresh. With the gate, every reference-adding
//! request has either finished before the sweep (and the catch-up mark sees what it wrote,
//! since the gate records its repository) or starts after it (and finds the swept link gone:
//! MANIFEST_BLOB_UNKNOWN, and the client pushes the blob again). Nothing referenced is lost.
//!
//! The gate is this process's; replicas over one storage extend it through that storage
//! (replicas.rs), when `storage.maintenance.gc.replicas` says there are several.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::replicas::{Announcement, Announcer};
use crate::http::route::Route;
use crate::storage::StorageResult;

#[derive(Default)]
pub struct GcGate {
    writers: RwLock<()>,
    /// Repositories written by requests that finished since the running pass began; `None`
    /// when no pass is recording.
    written: Mutex<Option<BTreeSet<String>>>,
    /// One pass at a time per gate: the recording above belongs to a single pass.
    pass: tokio::sync::Mutex<()>,
    /// Set when other replicas share the storage: writers and sweeps announce themselves there.
    replicas: Option<Announcer>,
}

/// Held by a request that adds references to `repository`.
pub struct WriteGuard<'a> {
    gate: &'a GcGate,
    repository: String,
    _shared: RwLockReadGuard<'a, ()>,
    _announced: Option<Announcement>,
}

impl Drop for WriteGuard<'_> {
    // Recorded when the request ends, while the shared lock is still held (fields drop after
    // this body): a request that began before the pass but wrote during it is recorded too.
    fn drop(&mut self) {
        let mut written = self.gate.written.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = written.as_mut() {
            set.insert(std::mem::take(&mut self.repository));
        }
    }
}

/// A pass in progress: records written repositories until dropped.
pub(super) struct Recording<'a> {
    gate: &'a GcGate,
    _pass: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        *self.gate.written.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Reference-adding requests are paused while this lives.
pub(super) struct Paused<'a> {
    _exclusive: RwLockWriteGuard<'a, ()>,
    _sweeping: Option<Announcement>,
    /// Repositories written since recording began (by any replica's writers).
    pub written: BTreeSet<String>,
}

impl GcGate {
    /// A gate whose pauses reach the writers of every replica over the same storage.
    pub fn across_replicas(announcer: Announcer) -> Self {
        GcGate {
            replicas: Some(announcer),
            ..GcGate::default()
        }
    }

    /// Waits while a GC pass sweeps, then lets the caller add references to `repository`.
    /// Fails only when the announcement to other replicas cannot be stored.
    pub async fn writer(&self, repository: &str) -> StorageResult<WriteGuard<'_>> {
        let shared = self.writers.read().await;
        let announced = match &self.replicas {
            Some(announcer) => Some(announcer.writer(repository).await?),
            None => None,
        };
        Ok(WriteGuard {
            gate: self,
            repository: repository.to_string(),
            _shared: shared,
            _announced: announced,
        })
    }

    /// Starts a pass: from now on, every finished writer's repository is recorded.
    pub(super) async fn record(&self) -> Recording<'_> {
        let pass = self.pass.lock().await;
        *self.written.lock().unwrap_or_else(|p| p.into_inner()) = Some(BTreeSet::new());
        Recording {
            gate: self,
            _pass: pass,
        }
    }

    /// Waits up to `wait` for writers in flight to finish and pauses new ones. While it waits,
    /// new writers queue behind it (tokio's lock is fair), so `wait` bounds their delay too;
    /// `None` when the writers did not finish in time. Across replicas, the wait for this
    /// process's writers and then for the others' shares `wait`.
    pub(super) async fn pause(&self, wait: Duration) -> StorageResult<Option<Paused<'_>>> {
        let deadline = tokio::time::Instant::now() + wait;
        let Ok(exclusive) = tokio::time::timeout_at(deadline, self.writers.write()).await else {
            return Ok(None);
        };
        let sweeping = match &self.replicas {
            Some(announcer) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match announcer.sweep(left).await? {
                    Some(sweeping) => Some(sweeping),
                    None => return Ok(None),
                }
            }
            None => None,
        };
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        if let Some(announcer) = &self.replicas {
            written.extend(announcer.take_written().await?);
        }
        Ok(Some(Paused {
            _exclusive: exclusive,
            _sweeping: sweeping,
            written,
        }))
    }
}

/// The repository a request adds references to, if it is one of the gated writers.
fn references_added_by(method: &Method, path: &str) -> Option<String> {
    match (Route::parse(path)?, method) {
        (Route::Manifest { name, .. }, &Method::PUT)
        | (Route::Upload { name, .. }, &Method::PUT)
        | (Route::Uploads { name }, &Method::POST) => Some(name),
        _ => None,
    }
}

/// Middleware: runs reference-adding requests under [`GcGate::writer`], and hands the gate to
/// the handlers (a request extension) for writes that outlive their request: the mirror's
/// fills (proxy/fill.rs) take it the same way.
pub async fn hold_writes(
    State(gate): State<Arc<GcGate>>,
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(gate.clone());
    match references_added_by(req.method(), req.uri().path()) {
        Some(repository) => match gate.writer(&repository).await {
            Ok(_writing) => next.run(req).await,
            Err(e) => crate::error::RegistryError::from(e).into_response(),
        },
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gated_requests() {
        let gated = |m: Method, p: &str| references_added_by(&m, p);
        assert_eq!(
            gated(Method::PUT, "/v2/a/b/manifests/v1").as_deref(),
            Some("a/b")
        );
        assert_eq!(
            gated(Method::POST, "/v2/a/blobs/uploads/").as_deref(),
            Some("a")
        );
        assert_eq!(
            gated(Method::PUT, "/v2/a/blobs/uploads/x").as_deref(),
            Some("a")
        );
        assert_eq!(gated(Method::PATCH, "/v2/a/blobs/uploads/x"), None);
        assert_eq!(gated(Method::GET, "/v2/a/manifests/v1"), None);
        assert_eq!(gated(Method::DELETE, "/v2/a/manifests/v1"), None);
    }

    #[tokio::test]
    async fn a_pass_records_writers_that_finish_during_it() {
        let gate = GcGate::default();
        let early = gate.writer("early").await.expect("writer");
        {
            let _recording = gate.record().await;
            drop(early);
            drop(gate.writer("during").await.expect("writer"));
            let paused = gate
                .pause(Duration::from_secs(5))
                .await
                .expect("storage")
                .expect("paused");
            let written: Vec<_> = paused.written.iter().cloned().collect();
            assert_eq!(written, ["during", "early"]);
        }
        drop(gate.writer("after").await.expect("writer"));
        assert!(gate.written.lock().expect("lock").is_none());
    }

    #[tokio::test]
    async fn pause_gives_up_when_a_writer_does_not_finish() {
        let gate = GcGate::default();
        let _recording = gate.record().await;
        let _stuck = gate.writer("slow").await.expect("writer");
        let paused = gate
            .pause(Duration::from_millis(50))
            .await
            .expect("storage");
        assert!(paused.is_none());
    }

    /// Two replicas' gates over one directory: each one's pause waits for the other's
    /// writers, and the other's writers wait for its sweep.
    #[tokio::test]
    async fn a_pause_reaches_the_writers_of_another_replica() {
        use crate::service::{Registry, Settings};
        use crate::storage::filesystem::FilesystemDriver;
        use crate::storage::StorageDriver;

        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Registry::new(
            FilesystemDriver::new(dir.path()).expect("driver"),
            Settings {
                delete_enabled: true,
                upload_max_bytes: 0,
            },
        ));
        let replica = || GcGate::across_replicas(Announcer::new(registry.clone()));
        let (a, b) = (replica(), replica());

        let _recording = a.record().await;
        let writing_on_b = b.writer("team/app").await.expect("writer");
        let paused = a.pause(Duration::from_millis(300)).await.expect("storage");
        assert!(paused.is_none(), "a sweep started while B wrote");
        drop(writing_on_b);

        let paused = a
            .pause(Duration::from_secs(5))
            .await
            .expect("storage")
            .expect("B's writer withdrew");
        let written: Vec<_> = paused.written.iter().cloned().collect();
        assert_eq!(
            written,
            ["team/app"],
            "B's write is recorded for the catch-up"
        );
        let b_writes = tokio::time::timeout(Duration::from_millis(300), b.writer("repo")).await;
        assert!(b_writes.is_err(), "B wrote during A's sweep");
        drop(paused);
        tokio::time::timeout(Duration::from_secs(5), b.writer("repo"))
            .await
            .expect("B writes after the sweep")
            .expect("writer");

        // A replica that died while writing: its announcement goes stale and stops no one.
        let dead = "docker/registry/v2/_gc/writers/dead";
        registry
            .driver()
            .put_content(dead, bytes::Bytes::from_static(b"1000"))
            .await
            .expect("put");
        let paused = a.pause(Duration::from_secs(5)).await.expect("storage");
        assert!(paused.is_some(), "a stale announcement held the sweep");
        assert!(
            registry.driver().stat(dead).await.is_err(),
            "stale announcement left"
        );
    }
}
