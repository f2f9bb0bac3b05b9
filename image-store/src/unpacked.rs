//! The cache of unpacked layers: each layer extracted once, alone, with its whiteouts in
//! overlayfs form, so that a container or a RUN step mounts an image as an overlay of these
//! directories instead of copying files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci::layer::{apply, ApplyMode};
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest};

use crate::store::{io_err, Store, StoreError};

impl Store {
    /// Where the layer `diff_id` is (or would be) unpacked.
    pub(crate) fn unpacked_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root().join("layers").join(diff_id.encoded())
    }

    /// The directory holding `layer` unpacked, extracting it on first use. The caller holds
    /// [`Store::writer_lock`] so that GC cannot remove the directory while it is used.
    pub fn unpacked_layer(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.unpacked_dir(diff_id);
        if dir.is_dir() {
            return Ok(dir);
        }
        let compression = match media_type::kind(&layer.media_type) {
            Kind::Layer(c) => c,
            _ => {
                return Err(StoreError::Io {
                    path: dir,
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a layer ({})", layer.digest, layer.media_type),
                    ),
                })
            }
        };
        let layers = self.root().join("layers");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&layers)
            .map_err(io_err(&layers))?;
        let blob = self.content().open_blob(&layer.digest)?;
        apply(blob, compression, tmp.path(), ApplyMode::OverlayLayer).map_err(|source| {
            StoreError::Layer {
                digest: layer.digest.clone(),
                source,
            }
        })?;
        let tmp = tmp.keep();
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(dir),
            // Another process unpacked the same layer first: theirs is as good as ours.
            Err(_) if dir.is_dir() => {
                fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
                Ok(dir)
            }
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// Takes `dir` — a directory already in the unpacked-layer format (an overlayfs upper
    /// directory: whiteouts as char 0:0 devices, opaque directories marked) holding exactly the
    /// layer `diff_id` — as that layer's unpacked form, so that it is not extracted again from
    /// its blob. Leaves `dir` where it is when the layer is unpacked already.
    pub fn adopt_unpacked_layer(
        &self,
        diff_id: &Digest,
        dir: &std::path::Path,
    ) -> Result<(), StoreError> {
        let target = self.unpacked_dir(diff_id);
        if target.exists() {
            return Ok(());
        }
        match fs::rename(dir, &target) {
            Ok(()) => Ok(()),
            // Another process adopted or unpacked it first: theirs is as good.
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(io_err(&target)(e)),
        }
    }

    /// Removes every unpacked layer not named in `keep` (diff ID hex), and unfinished ones:
    /// how many, and the bytes they took.
    pub(crate) fn remove_unpacked_except(
        &self,
        keep: &BTreeSet<String>,
    ) -> Result<(usize, u64), StoreError> {
        let layers = self.root().join("layers");
        let (mut removed, mut bytes) = (0, 0);
        for entry in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                bytes += disk_usage(&entry.path());
                fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                removed += 1;
            }
        }
        Ok((removed, bytes))
    }

    /// What a cached layer takes in the store: its unpacked directory and its blobs (its
    /// own, or those made for it later: layer_blobs.rs).
    pub(crate) fn stored_layer_size(
        &self,
        layer: &crate::CachedLayer,
        unpacked: &mut UnpackedSizes,
    ) -> u64 {
        let blob = self.content().size(&layer.descriptor.digest).unwrap_or(0);
        blob + self.made_blobs_size(&layer.diff_id) + unpacked.of(self, &layer.diff_id)
    }
}

/// Sizes of layers by diff ID, each measured once (a layer never changes) and remembered in
/// a JSON file in the store's root. A missing or damaged file only means measuring again.
pub(crate) struct LayerSizeFile {
    path: PathBuf,
    known: BTreeMap<String, u64>,
    changed: bool,
}

impl LayerSizeFile {
    pub(crate) fn load(store: &Store, name: &str) -> Self {
        let path = store.root().join(name);
        let known = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        LayerSizeFile {
            path,
            known,
            changed: false,
        }
    }

    /// The remembered size of `diff_id`, else what `measure` finds, remembered unless None.
    pub(crate) fn get_or_measure<E>(
        &mut self,
        diff_id: &Digest,
        measure: impl FnOnce() -> Result<Option<u64>, E>,
    ) -> Result<Option<u64>, E> {
        if let Some(size) = self.known.get(diff_id.encoded()) {
            return Ok(Some(*size));
        }
        let size = measure()?;
        if let Some(size) = size {
            self.known.insert(diff_id.encoded().to_string(), size);
            self.changed = true;
        }
        Ok(size)
    }

    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// Forgets the layers (diff ID hex) `keep` refuses.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.known.len();
        self.known.retain(|hex, _| keep(hex));
        self.changed |= self.known.len() != before;
    }

    /// Writes the file if anything changed.
    pub(crate) fn save(self) -> Result<(), StoreError> {
        if !self.changed {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.known).map_err(|e| io_err(&self.path)(e.into()))?;
        crate::store::write_atomic(&self.path, &bytes)
    }
}

/// The disk usage of unpacked layers, in `ROOT/layer-sizes.json`, so that sizing the build
/// cache after every build does not walk every layer's files again. Read and written under
/// gc.lock held exclusively.
pub(crate) struct UnpackedSizes(LayerSizeFile);

impl UnpackedSizes {
    pub(crate) fn load(store: &Store) -> Self {
        UnpackedSizes(LayerSizeFile::load(store, "layer-sizes.json"))
    }

    fn of(&mut self, store: &Store, diff_id: &Digest) -> u64 {
        let dir = store.unpacked_dir(diff_id);
        let Ok(size) = self.0.get_or_measure(diff_id, || {
            Ok::<_, std::convert::Infallible>(dir.is_dir().then(|| disk_usage(&dir)))
        });
        size.unwrap_or(0)
    }

    /// Writes what was measured, forgetting layers that are gone.
    pub(crate) fn save(mut self, store: &Store) -> Result<(), StoreError> {
        if self.0.changed() {
            let layers = store.root().join("layers");
            self.0.retain(|hex| layers.join(hex).is_dir());
        }
        self.0.save()
    }
}

/// The disk blocks under `path` (as `du` counts them), hard links counted once per visit.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                total += disk_usage(&entry.path());
            }
        }
    }
    total
}
