//! The builder's cache: step cache key → the layer that step produced. Records live under
//! `ROOT/build-cache/<key hex>.json`; their layers are GC roots, so `prune` keeps them until
//! the cache itself is pruned ([`Store::cache_prune`], `rbuild builder prune`). A hit sets its
//! record's mtime, which is when the record was last used.
//!
//! Records also travel between machines (`rbuild build --cache-to/--cache-from`) as an OCI
//! artifact: a manifest with `artifactType` [`CACHE_ARTIFACT_TYPE`] whose config
//! ([`CACHE_CONFIG_MEDIA_TYPE`]) is a [`CacheConfig`] and whose layers are the records' layer
//! blobs (docs/ARCHITECTURE.md, "Registry build cache").

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::cache_mounts::{CacheMountPrune, CacheMountsPruned, CACHE_MOUNT_GC};
use crate::store::{files_in, io_err, write_atomic, PruneReport, Store, StoreError};
use crate::unpacked::UnpackedSizes;

/// What a cached step produced: a layer, or nothing (an empty diff).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub layer: Option<CachedLayer>,
    /// When the step first ran (RFC 3339), for history entries of rebuilt images.
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// The `artifactType` of an exported build cache manifest (image-spec manifest.md).
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";
/// The media type of an exported build cache's config blob, a [`CacheConfig`].
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The config blob of an exported build cache: the records, sorted by key, and (with
/// `--cache-to …,cache-mounts=true`) the contents of the build's `RUN --mount=type=cache`
/// directories, sorted by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub records: Vec<ExportedRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_mounts: Vec<ExportedCacheMount>,
}

/// One cache mount's directory as a layer blob (its files from the directory's root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedCacheMount {
    pub id: String,
    #[serde(flatten)]
    pub layer: CachedLayer,
}

/// One step's record as exported: its key, the key of the filesystem it ran on (so that a
/// reader can follow a chain of steps), and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub key: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    #[serde(flatten)]
    pub record: CacheRecord,
}

/// What a [`CacheBackend`] fails with: its own error (a registry's, a file's), boxed.
pub type CacheBackendError = Box<dyn std::error::Error + Send + Sync>;

/// Where an exported build cache lives. The builder implements an OCI layout directory,
/// distribution-client a registry repository; the builder's solver uses either through this.
pub trait CacheBackend: Send + Sync + std::fmt::Debug {
    /// What progress lines and errors call it, e.g. `127.0.0.1:5000/cache:main`.
    fn describe(&self) -> String;
    /// The cache manifest's exact bytes, or `None` when nothing was exported there yet.
    fn read_manifest(&self) -> Result<Option<Vec<u8>>, CacheBackendError>;
    /// Copies one blob of the cache into `store`'s content store, verified against `blob`.
    fn fetch_blob(&self, store: &Store, blob: &Descriptor) -> Result<(), CacheBackendError>;
    /// Makes `manifest` (in `store`'s content store, with every blob it names) the cache here.
    fn write(&self, store: &Store, manifest: &Descriptor) -> Result<(), CacheBackendError>;
}

impl Store {
    fn cache_dir(&self) -> PathBuf {
        self.root().join("build-cache")
    }

    /// The record of `key`, if it is cached and its layer is still stored (as a blob, or
    /// unpacked only: see layer_blobs.rs).
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>, StoreError> {
        let path = self.cache_dir().join(format!("{}.json", key.encoded()));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        // A damaged record is a miss, not an error: the step just runs again.
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            return Ok(None);
        };
        match &record.layer {
            Some(layer) if !self.has_layer(&layer.descriptor, &layer.diff_id) => Ok(None),
            _ => {
                // Last use, for `cache_prune`'s age and size limits; a failure costs nothing
                // but a record that looks older than it is.
                let _ = oci::layer::set_mtime(&path, oci::timestamp::now_unix());
                Ok(Some(record))
            }
        }
    }

    pub fn cache_put(&self, key: &Digest, record: &CacheRecord) -> Result<(), StoreError> {
        let dir = self.cache_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let bytes = serde_json::to_vec(record).map_err(|e| io_err(&dir)(e.into()))?;
        write_atomic(&dir.join(format!("{}.json", key.encoded())), &bytes)
    }

    /// Every layer the cache refers to (GC roots).
    pub(crate) fn cache_layers(&self) -> Result<Vec<CachedLayer>, StoreError> {
        let records = self.cache_records_by_age()?;
        Ok(records.into_iter().filter_map(|r| r.layer).collect())
    }

    /// `rbuild builder prune`: removes the records `policy` selects (least recently used
    /// first), with `cache_mounts` the RUN cache mounts too, then the content nothing needs
    /// any more. Waits for running builds, as `prune` does.
    pub fn cache_prune(&self, policy: &CachePrune) -> Result<CachePruneReport, StoreError> {
        let _gc = self.gc_lock()?;
        let doomed = self.records_to_prune(policy)?;
        let mut report = self.remove_records(&doomed)?;
        if policy.cache_mounts {
            report.cache_mounts = self.prune_cache_mounts(&CacheMountPrune {
                unused_for: policy.unused_for,
                keep_bytes: None,
            })?;
        }
        Ok(report)
    }

    /// After a build, as BuildKit's GC after a solve: when the cache takes more than
    /// `keep_bytes`, its least recently used records go, never one used since `build_started`
    /// (the build's own), and then what only they held; RUN cache mounts go by
    /// [`CACHE_MOUNT_GC`]. None when another process is writing to the store: the next build
    /// catches up rather than this one waiting.
    pub fn cache_prune_after_build(
        &self,
        keep_bytes: u64,
        build_started: SystemTime,
    ) -> Result<Option<CachePruneReport>, StoreError> {
        let Some(_gc) = self.try_gc_lock()? else {
            return Ok(None);
        };
        // Record times are whole seconds (`cache_get`).
        let since = build_started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()))
            .unwrap_or(build_started);
        let policy = CachePrune {
            keep_bytes: Some(keep_bytes),
            keep_used_since: Some(since),
            ..CachePrune::default()
        };
        let cache_mounts = self.prune_cache_mounts(&CACHE_MOUNT_GC)?;
        let doomed = self.records_to_prune(&policy)?;
        let mut report = if doomed.is_empty() {
            // The common case: no GC walk of the store.
            CachePruneReport::default()
        } else {
            self.remove_records(&doomed)?
        };
        report.cache_mounts = cache_mounts;
        Ok(Some(report))
    }

    /// The records `policy` selects, least recently used first. The caller holds gc.lock.
    fn records_to_prune(&self, policy: &CachePrune) -> Result<Vec<UsedRecord>, StoreError> {
        let mut records = self.cache_records_by_age()?;
        let now = SystemTime::now();
        let too_old = |used: SystemTime| {
            policy
                .unused_for
                .is_some_and(|age| now.duration_since(used).unwrap_or_default() >= age)
        };
        let mut doomed = Vec::new();
        if policy.unused_for.is_none() && policy.keep_bytes.is_none() {
            doomed.append(&mut records);
        } else {
            // Oldest first: those unused for too long, then as many more as the size needs.
            // A layer an image holds costs the cache nothing: removing its records for size
            // would lose cache hits and free no byte.
            let (_, image_layers) = self.image_roots()?;
            let held_by_image = |record: &UsedRecord| {
                record
                    .layer
                    .as_ref()
                    .is_some_and(|l| image_layers.contains(l.diff_id.encoded()))
            };
            let mut unpacked = UnpackedSizes::load(self);
            let mut sizes = LayerSizes::default();
            for record in records.iter().filter(|r| !held_by_image(r)) {
                sizes.add(self, &mut unpacked, record);
            }
            unpacked.save(self)?;
            records.reverse();
            while let Some(record) = records.pop() {
                let over = policy.keep_bytes.is_some_and(|keep| sizes.total > keep);
                let kept = policy.keep_used_since.is_some_and(|t| record.used >= t);
                if kept || !(too_old(record.used) || over) {
                    break;
                }
                if !too_old(record.used) && held_by_image(&record) {
                    continue;
                }
                sizes.remove(&record);
                doomed.push(record);
            }
        }
        Ok(doomed)
    }

    /// Removes `doomed`, then what nothing needs any more. The caller holds gc.lock.
    fn remove_records(&self, doomed: &[UsedRecord]) -> Result<CachePruneReport, StoreError> {
        let mut report = CachePruneReport::default();
        for record in doomed {
            fs::remove_file(&record.path).map_err(io_err(&record.path))?;
            report.records += 1;
        }
        report.collected = self.collect_garbage()?;
        Ok(report)
    }

    /// Every record with its last use, least recently used first.
    fn cache_records_by_age(&self) -> Result<Vec<UsedRecord>, StoreError> {
        let mut records = Vec::new();
        for path in files_in(&self.cache_dir())? {
            let used = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(io_err(&path))?;
            let layer = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheRecord>(&b).ok())
                .and_then(|r| r.layer);
            records.push(UsedRecord { path, used, layer });
        }
        records.sort_by_key(|r| r.used);
        Ok(records)
    }
}

/// What `rbuild builder prune` removes: with neither limit, every record.
#[derive(Debug, Clone, Default)]
pub struct CachePrune {
    /// Records not used for this long (`--filter until=`).
    pub unused_for: Option<Duration>,
    /// Least recently used records until their layers take at most this (`--keep-storage`).
    pub keep_bytes: Option<u64>,
    /// Records used at or after this stay whatever the limits say (a build's own).
    pub keep_used_since: Option<SystemTime>,
    /// The RUN cache mounts too (`--all`), those `unused_for` selects.
    pub cache_mounts: bool,
}

#[derive(Debug, Default)]
pub struct CachePruneReport {
    pub records: usize,
    pub cache_mounts: CacheMountsPruned,
    /// What GC freed afterwards.
    pub collected: PruneReport,
}

struct UsedRecord {
    path: PathBuf,
    used: SystemTime,
    layer: Option<CachedLayer>,
}

/// The bytes the cache's layers take, each layer counted once however many records hold it.
#[derive(Default)]
struct LayerSizes {
    total: u64,
    /// Per layer (diff ID): its size and how many records hold it.
    layers: HashMap<Digest, (u64, usize)>,
}

impl LayerSizes {
    fn add(&mut self, store: &Store, unpacked: &mut UnpackedSizes, record: &UsedRecord) {
        let Some(layer) = &record.layer else { return };
        let entry = self.layers.entry(layer.diff_id.clone()).or_insert_with(|| {
            let size = store.stored_layer_size(layer, unpacked);
            self.total += size;
            (size, 0)
        });
        entry.1 += 1;
    }

    fn remove(&mut self, record: &UsedRecord) {
        let Some(layer) = &record.layer else { return };
        if let Some((size, holders)) = self.layers.get_mut(&layer.diff_id) {
            *holders -= 1;
            if *holders == 0 {
                self.total -= *size;
            }
        }
    }
}
