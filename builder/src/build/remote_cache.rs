//! A build cache shared between machines: `--cache-to` exports the records of a build's steps
//! as an OCI artifact (to a registry, or to an OCI layout directory), `--cache-from` imports
//! one so that another build, even on an empty store, takes its steps from it.
//!
//! The format is rbuild's own (image-store's `build_cache`; docs/ARCHITECTURE.md, "Registry
//! build cache"): an OCI image manifest with `artifactType` `application/vnd.rbuild.cache.v1`
//! (image-spec manifest.md, "Guidelines for Artifact Usage"), whose config is the list of
//! records (key, parent key, layer descriptor, diff ID, created) and whose layers are the
//! records' layer blobs.
//!
//! Importing is lazy: it reads the manifest and the config only. A step whose key matches an
//! imported record is CACHED without running and without downloading anything; a layer blob
//! is fetched only when its bytes are needed: by a step that misses and must run on top of it
//! (the stage's layers and those of the stages it reads from), or by the export of the result.
//! A fetched layer's records become local records, so the next build here needs no import.
//!
//! With `cache-mounts=true`, an export also carries the `RUN --mount=type=cache` directories
//! the build's RUN steps name (BuildKit cannot: moby/buildkit#1474), each as one layer. An
//! import restores such a directory only when a step that runs needs it and it does not
//! exist here; a build whose steps are all cached passes the imported blob on unopened.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use image_store::CacheBackend;
use image_store::{
    CacheBackendError, CacheConfig, CacheRecord, CachedLayer, ExportedCacheMount, ExportedRecord,
    Store, StoreError, CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE,
};
use oci::archive::reachable_blobs;
use oci::compression::Compression;
use oci::content::ContentStore;
use oci::image::{to_json_bytes, Index, Manifest};
use oci::{media_type, Descriptor, Digest};

use super::progress::{Progress, StepStatus};
use super::stage::{Layer, Solver, StageState};
use super::{BuildError, BuildOptions};
use crate::dockerfile::instructions::Located;
use crate::dockerfile::Instruction;

/// Which records `--cache-to` exports (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps behind the result's filesystem: what a rebuild of the same image needs.
    Min,
    /// Every step of every stage this build solved.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone)]
pub struct CacheExport {
    pub backend: Arc<dyn CacheBackend>,
    pub mode: CacheMode,
    /// Also export the cache mounts' directories (`cache-mounts=true`).
    pub cache_mounts: bool,
}

/// The imported records of one build, and the steps it recorded for export.
#[derive(Default)]
pub(crate) struct RemoteCache {
    /// Step key → record, from every `--cache-from` (the first one that has a key wins).
    imported: HashMap<Digest, CacheRecord>,
    /// Layer blob digest → the cache that can send it.
    sources: HashMap<Digest, Arc<dyn CacheBackend>>,
    /// Steps this build resolved (ran or took from a cache), by key, for `--cache-to`.
    steps: Mutex<BTreeMap<Digest, ExportedRecord>>,
    /// Cache mount id → its directory as a layer, and the cache that can send it.
    imported_mounts: HashMap<String, (CachedLayer, Arc<dyn CacheBackend>)>,
    /// The ids of the cache mounts this build's RUN steps name, run or cached.
    mounts: Mutex<BTreeSet<String>>,
}

impl RemoteCache {
    /// Reads the manifest and config of every `--cache-from`. A cache that does not exist yet
    /// is a warning (the first build of a branch exports it); anything else is an error.
    pub fn import(
        store: &Store,
        backends: &[Arc<dyn CacheBackend>],
        progress: &Progress,
    ) -> Result<RemoteCache, BuildError> {
        let mut cache = RemoteCache::default();
        for backend in backends {
            let what = backend.describe();
            let step = progress.step(usize::MAX, &format!("importing cache manifest from {what}"));
            match cache.import_one(store, backend) {
                Ok(found) => {
                    step.finish(StepStatus::Done);
                    if !found {
                        progress.message(&format!("WARNING: no build cache at {what} yet"));
                    }
                }
                Err(e) => {
                    step.finish(StepStatus::Failed);
                    return Err(BuildError::Other(format!("--cache-from {what}: {e}")));
                }
            }
        }
        Ok(cache)
    }

    fn import_one(
        &mut self,
        store: &Store,
        backend: &Arc<dyn CacheBackend>,
    ) -> Result<bool, CacheBackendError> {
        let Some(bytes) = backend.read_manifest()? else {
            return Ok(false);
        };
        let manifest = Manifest::parse(&bytes)?;
        if manifest.artifact_type.as_deref() != Some(CACHE_ARTIFACT_TYPE)
            || manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE
        {
            return Err(format!(
                "not an rbuild build cache (artifactType {:?}, config {}; expected {CACHE_ARTIFACT_TYPE})",
                manifest.artifact_type.as_deref().unwrap_or(""),
                manifest.config.media_type
            )
            .into());
        }
        backend.fetch_blob(store, &manifest.config)?;
        let config_bytes = store.content().read(&manifest.config.digest)?;
        let config: CacheConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| format!("cache config {}: {e}", manifest.config.digest))?;
        let listed: HashSet<&Digest> = manifest.layers.iter().map(|l| &l.digest).collect();
        // Only blobs the manifest names are known to be in the cache's repository.
        let check_listed = |what: String, digest: &Digest| -> Result<(), String> {
            if listed.contains(digest) {
                return Ok(());
            }
            Err(format!(
                "{what} names layer {digest}, which the cache manifest does not list"
            ))
        };
        for exported in config.records {
            if let Some(layer) = &exported.record.layer {
                let digest = &layer.descriptor.digest;
                check_listed(format!("record {}", exported.key), digest)?;
                self.sources
                    .entry(digest.clone())
                    .or_insert_with(|| backend.clone());
            }
            self.imported.entry(exported.key).or_insert(exported.record);
        }
        for mount in config.cache_mounts {
            check_listed(
                format!("cache mount {:?}", mount.id),
                &mount.layer.descriptor.digest,
            )?;
            self.imported_mounts
                .entry(mount.id)
                .or_insert_with(|| (mount.layer, backend.clone()));
        }
        Ok(true)
    }

    /// Notes that a RUN step of this build names the cache mount `id`, for `cache-mounts=true`.
    pub fn note_cache_mount(&self, id: &str) {
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// Fills the absent directory `dir` of cache mount `id` from an imported cache, if one
    /// carries it; `false` when none does. The directory appears whole or not at all.
    pub fn restore_cache_mount(
        &self,
        store: &Store,
        id: &str,
        dir: &Path,
        progress: &Progress,
    ) -> Result<bool, BuildError> {
        let Some((layer, backend)) = self.imported_mounts.get(id) else {
            return Ok(false);
        };
        let what = backend.describe();
        let step = progress.step(
            usize::MAX,
            &format!("importing cache mount {id} from {what}"),
        );
        let restored = restore_into(store, layer, backend.as_ref(), dir);
        match restored {
            Ok(()) => {
                step.finish(StepStatus::Done);
                Ok(true)
            }
            Err(e) => {
                step.finish(StepStatus::Failed);
                Err(BuildError::Other(format!(
                    "--cache-from {what}: cache mount {id}: {e}"
                )))
            }
        }
    }

    /// The record of `key`: the local build cache first, then the imported caches. An
    /// imported record's layer may not be stored yet (see [`RemoteCache::fetch`]).
    pub fn get(&self, store: &Store, key: &Digest) -> Result<Option<CacheRecord>, BuildError> {
        if let Some(record) = store.cache_get(key)? {
            return Ok(Some(record));
        }
        let Some(record) = self.imported.get(key) else {
            return Ok(None);
        };
        let local = record
            .layer
            .as_ref()
            .is_none_or(|l| store.has_layer(&l.descriptor, &l.diff_id));
        if local {
            // Nothing to download: the record is as good as a local one from now on.
            store.cache_put(key, record)?;
        }
        Ok(Some(record.clone()))
    }

    /// Downloads the blobs of `layers` that only an imported cache has. Layers missing for
    /// another reason are left to whoever reads them, which reports it.
    pub fn fetch(
        &self,
        store: &Store,
        layers: &[Layer],
        progress: &Progress,
    ) -> Result<(), BuildError> {
        for layer in layers {
            let digest = &layer.descriptor.digest;
            if store.has_layer(&layer.descriptor, &layer.diff_id) {
                continue;
            }
            let Some(backend) = self.sources.get(digest) else {
                continue;
            };
            let what = backend.describe();
            let step = progress.step(
                usize::MAX,
                &format!("importing cache layer {digest} from {what}"),
            );
            if let Err(e) = backend.fetch_blob(store, &layer.descriptor) {
                step.finish(StepStatus::Failed);
                return Err(BuildError::Other(format!(
                    "--cache-from {what}: layer {digest}: {e}"
                )));
            }
            step.finish(StepStatus::Done);
            for (key, record) in &self.imported {
                if record
                    .layer
                    .as_ref()
                    .is_some_and(|l| &l.descriptor.digest == digest)
                {
                    store.cache_put(key, record)?;
                }
            }
        }
        Ok(())
    }

    /// Notes a step of this build for `--cache-to`: `parent` is the key of the filesystem it
    /// ran on, `key` its own.
    pub fn record(&self, parent: &Digest, key: &Digest, layer: Option<&Layer>, created: &str) {
        let exported = ExportedRecord {
            key: key.clone(),
            parent: Some(parent.clone()),
            record: CacheRecord {
                layer: layer.map(|l| CachedLayer {
                    descriptor: l.descriptor.clone(),
                    diff_id: l.diff_id.clone(),
                }),
                created: created.to_string(),
            },
        };
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert(exported);
    }

    /// Writes every `--cache-to`: the records `mode` selects (`result` is the key of the
    /// result's filesystem), as an artifact, through its backend.
    pub fn export(
        &self,
        store: &Store,
        result: &Digest,
        options: &BuildOptions,
        progress: &Progress,
    ) -> Result<(), BuildError> {
        for export in &options.cache_to {
            let what = export.backend.describe();
            let step = progress.step(usize::MAX, &format!("exporting cache to {what}"));
            if let Err(e) = self.export_one(store, result, export, options.compression, progress) {
                step.finish(StepStatus::Failed);
                return Err(BuildError::Other(format!("--cache-to {what}: {e}")));
            }
            step.finish(StepStatus::Done);
        }
        Ok(())
    }

    fn export_one(
        &self,
        store: &Store,
        result: &Digest,
        export: &CacheExport,
        compression: Compression,
        progress: &Progress,
    ) -> Result<(), BuildError> {
        let mut records = self.select(result, export.mode);
        // Records taken from a --cache-from whose layers were never needed: their blobs must
        // be here to be exported again.
        let layers: Vec<Layer> = records
            .iter()
            .filter_map(|r| r.record.layer.as_ref())
            .map(|l| Layer {
                descriptor: l.descriptor.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        self.fetch(store, &layers, progress)?;
        // A step's layer may exist only unpacked (image-store layer_blobs.rs): the cache
        // carries blobs, made now in the build's compression as an image's would be.
        for record in &mut records {
            if let Some(layer) = &mut record.record.layer {
                layer.descriptor =
                    store.layer_blob(&layer.descriptor, &layer.diff_id, compression)?;
            }
        }
        let cache_mounts = if export.cache_mounts {
            self.export_cache_mounts(store, compression)?
        } else {
            Vec::new()
        };
        let manifest = write_artifact(store, records, cache_mounts)?;
        export
            .backend
            .write(store, &manifest)
            .map_err(BuildError::other)
    }

    /// The cache mounts this build named, by id: a directory here becomes a new blob, one
    /// never restored here passes on as the imported cache had it.
    fn export_cache_mounts(
        &self,
        store: &Store,
        compression: Compression,
    ) -> Result<Vec<ExportedCacheMount>, BuildError> {
        let ids = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut exported = Vec::new();
        for id in ids {
            let dir = store.cache_mount_dir(&id);
            let layer = if dir.is_dir() {
                let (descriptor, diff_id) = store.blob_of_dir(&dir, compression)?;
                CachedLayer {
                    descriptor,
                    diff_id,
                }
            } else if let Some((layer, backend)) = self.imported_mounts.get(&id) {
                backend
                    .fetch_blob(store, &layer.descriptor)
                    .map_err(|e| BuildError::Other(format!("cache mount {id}: {e}")))?;
                layer.clone()
            } else {
                continue;
            };
            exported.push(ExportedCacheMount { id, layer });
        }
        Ok(exported)
    }

    /// The records to export, sorted by key so that the same build exports the same bytes.
    fn select(&self, result: &Digest, mode: CacheMode) -> Vec<ExportedRecord> {
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        let mut records: Vec<ExportedRecord> = match mode {
            CacheMode::Max => steps.values().cloned().collect(),
            CacheMode::Min => {
                // Follow the result's filesystem back through the steps that made it.
                let mut chain = Vec::new();
                let mut seen = HashSet::new();
                let mut at = Some(result);
                while let Some(record) = at.and_then(|k| steps.get(k)) {
                    if !seen.insert(&record.key) {
                        break;
                    }
                    chain.push(record.clone());
                    at = record.parent.as_ref();
                }
                chain
            }
        };
        records.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        records
    }
}

/// Unpacks the cache mount `layer`, fetched through `backend`, as the directory `dir`: into the
/// store's scratch space first (which `rbuild prune` clears of what a killed build left),
/// renamed into place when whole. A blob fetched only for this is dropped again.
fn restore_into(
    store: &Store,
    layer: &CachedLayer,
    backend: &dyn CacheBackend,
    dir: &Path,
) -> Result<(), BuildError> {
    let blob = &layer.descriptor;
    let fetched = !store.content().contains(&blob.digest);
    backend.fetch_blob(store, blob).map_err(BuildError::other)?;
    let parent = dir.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(BuildError::other)?;
    let scratch = store.scratch_dir()?;
    let partial = tempfile::Builder::new()
        .prefix("restoring-")
        .tempdir_in(&scratch)
        .map_err(BuildError::other)?;
    let stats = super::export::apply_blob(store, blob, partial.path())?;
    if stats.diff_id != layer.diff_id {
        return Err(BuildError::Other(format!(
            "layer {} has diff ID {}, not {}",
            blob.digest, stats.diff_id, layer.diff_id
        )));
    }
    let restored = partial.keep();
    if let Err(e) = fs::rename(&restored, dir) {
        let _ = fs::remove_dir_all(&restored);
        // Another step restoring the same mount was first; its copy will do.
        if !dir.is_dir() {
            return Err(BuildError::Other(format!(
                "restore the cache mount {}: {e}",
                dir.display()
            )));
        }
    }
    if fetched {
        // Only the directory is kept; the blob was for this restore alone.
        store
            .content()
            .delete(&blob.digest)
            .map_err(StoreError::from)?;
    }
    Ok(())
}

/// Stores the cache artifact of `records` (config, then manifest) in the content store.
fn write_artifact(
    store: &Store,
    records: Vec<ExportedRecord>,
    cache_mounts: Vec<ExportedCacheMount>,
) -> Result<Descriptor, BuildError> {
    let mut layers: Vec<Descriptor> = Vec::new();
    let record_layers = records.iter().filter_map(|r| r.record.layer.as_ref());
    for layer in record_layers.chain(cache_mounts.iter().map(|m| &m.layer)) {
        if !layers.iter().any(|l| l.digest == layer.descriptor.digest) {
            layers.push(layer.descriptor.clone());
        }
    }
    let config_bytes = to_json_bytes(&CacheConfig {
        records,
        cache_mounts,
    });
    let content = store.content();
    let config_digest = content.put(&config_bytes).map_err(StoreError::from)?;
    let mut manifest = Manifest::oci(
        Descriptor::new(
            CACHE_CONFIG_MEDIA_TYPE,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
    );
    manifest.artifact_type = Some(CACHE_ARTIFACT_TYPE.to_string());
    let manifest_bytes = to_json_bytes(&manifest);
    let digest = content.put(&manifest_bytes).map_err(StoreError::from)?;
    let mut descriptor = Descriptor::new(
        media_type::OCI_MANIFEST,
        digest,
        manifest_bytes.len() as u64,
    );
    descriptor.artifact_type = Some(CACHE_ARTIFACT_TYPE.to_string());
    Ok(descriptor)
}

impl Solver<'_> {
    /// Before a step that missed runs: the blobs it reads that only an imported cache has,
    /// those of its stage's layers and of the stages it reads (`COPY --from`,
    /// `RUN --mount from=`). A `from=$VAR` stage is not known here; its layers come from the
    /// build's own steps, or fail loudly when read.
    pub(super) fn fetch_step_inputs(
        &self,
        index: usize,
        state: &StageState,
        at: &Located<Instruction>,
    ) -> Result<(), BuildError> {
        self.remote_cache
            .fetch(self.store, &state.layers, self.progress)?;
        let sources = match &at.value {
            Instruction::Copy(copy) => copy.from.iter().cloned().collect(),
            Instruction::Run(run) => super::stage::run_mount_sources(run),
            _ => Vec::new(),
        };
        for stage in sources.iter().filter_map(|s| self.stage_index(s, index)) {
            let solved = self.solve(stage)?;
            self.remote_cache
                .fetch(self.store, &solved.layers, self.progress)?;
        }
        Ok(())
    }
}

/// `type=local`: the cache as an OCI image layout directory (image-layout.md), as BuildKit's
/// local cache is one. index.json names the cache manifest; blobs of earlier exports stay
/// until the directory is removed.
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
}

impl LocalCache {
    pub fn new(dir: impl Into<PathBuf>) -> LocalCache {
        LocalCache { dir: dir.into() }
    }
}

impl CacheBackend for LocalCache {
    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }

    fn read_manifest(&self) -> Result<Option<Vec<u8>>, CacheBackendError> {
        let index_path = self.dir.join("index.json");
        let index_bytes = match fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(&index_path, e)),
        };
        let index = Index::parse(&index_bytes).map_err(|e| at(&index_path, e))?;
        let Some(manifest) = index
            .manifests
            .iter()
            .find(|d| d.artifact_type.as_deref() == Some(CACHE_ARTIFACT_TYPE))
        else {
            return Err(at(
                &index_path,
                format!("no manifest of artifactType {CACHE_ARTIFACT_TYPE}"),
            ));
        };
        // Read as a content store reads: checked against its name.
        let layout = ContentStore::open_layout(&self.dir).map_err(|e| at(&self.dir, e))?;
        let bytes = layout
            .read(&manifest.digest)
            .map_err(|e| at(&self.dir, e))?;
        Ok(Some(bytes))
    }

    fn fetch_blob(&self, store: &Store, blob: &Descriptor) -> Result<(), CacheBackendError> {
        let layout = ContentStore::open_layout(&self.dir).map_err(|e| at(&self.dir, e))?;
        store
            .content()
            .copy_from(&layout, &blob.digest, blob.size)
            .map_err(|e| at(&self.dir, e))?;
        Ok(())
    }

    fn write(&self, store: &Store, manifest: &Descriptor) -> Result<(), CacheBackendError> {
        // The layout's blobs/ is a content store of its own: every blob lands verified and by
        // rename, so a reader never sees half a blob.
        let layout = ContentStore::open(&self.dir)?;
        for blob in reachable_blobs(store.content(), manifest)? {
            layout.copy_from(store.content(), &blob.digest, blob.size)?;
        }
        // Only the ingest area of a finished write is left: an empty directory, not layout.
        let _ = fs::remove_dir(self.dir.join("ingest"));
        write_replacing(
            &self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        // index.json last: it makes the new manifest the cache, all its blobs being in place.
        write_replacing(
            &self.dir.join("index.json"),
            &to_json_bytes(&Index::oci(vec![manifest.clone()])),
        )
    }
}

/// An error about the file at `path`.
fn at(path: &Path, error: impl std::fmt::Display) -> CacheBackendError {
    format!("{}: {error}", path.display()).into()
}

/// Replaces `path` with `data` by rename, so that a reader sees the old or the new file.
fn write_replacing(path: &Path, data: &[u8]) -> Result<(), CacheBackendError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| at(dir, e))?;
    tmp.write_all(data).map_err(|e| at(path, e))?;
    tmp.as_file().sync_all().map_err(|e| at(path, e))?;
    tmp.persist(path).map_err(|e| at(path, e.error))?;
    Ok(())
}
