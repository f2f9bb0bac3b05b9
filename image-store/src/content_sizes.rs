//! Layer sizes as docker shows them in `images`, `history` and inspect's `Size`: the bytes of
//! a layer's files ([`oci::layer::content_size`]), not its compressed blob. Each layer is
//! measured once (an unpacked layer by walking its directory, as moby walks a layer's diff
//! directory; any other from its blob's tar) and remembered by diff ID in
//! `ROOT/layer-content-sizes.json`. The file is a cache: a missing or damaged one, or one that
//! cannot be written (a read-only store), only means measuring again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci::image::{ImageConfig, Manifest};
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest};

use crate::store::{io_err, write_atomic, Store, StoreError};

/// The remembered sizes, and what this process measured or asked for.
pub struct LayerContentSizes<'a> {
    store: &'a Store,
    path: PathBuf,
    known: BTreeMap<String, u64>,
    asked: BTreeSet<String>,
    changed: bool,
}

impl Store {
    pub fn layer_content_sizes(&self) -> LayerContentSizes<'_> {
        let path = self.root().join("layer-content-sizes.json");
        let known = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        LayerContentSizes {
            store: self,
            path,
            known,
            asked: BTreeSet::new(),
            changed: false,
        }
    }
}

impl LayerContentSizes<'_> {
    /// The size of each layer of an image, in the manifest's order.
    pub fn of_image(
        &mut self,
        manifest: &Manifest,
        config: &ImageConfig,
    ) -> Result<Vec<u64>, StoreError> {
        manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| self.of_layer(layer, diff_id))
            .collect()
    }

    fn of_layer(&mut self, layer: &Descriptor, diff_id: &Digest) -> Result<u64, StoreError> {
        let key = diff_id.encoded().to_string();
        self.asked.insert(key.clone());
        if let Some(size) = self.known.get(&key) {
            return Ok(*size);
        }
        let dir = self.store.unpacked_dir(diff_id);
        let size = if dir.is_dir() {
            directory_content_size(&dir, &mut HashSet::new()).map_err(io_err(&dir))?
        } else if let (true, Kind::Layer(compression)) = (
            self.store.content().contains(&layer.digest),
            media_type::kind(&layer.media_type),
        ) {
            let blob = self.store.content().open_blob(&layer.digest)?;
            oci::layer::content_size(blob, compression).map_err(|source| StoreError::Layer {
                digest: layer.digest.clone(),
                source,
            })?
        } else {
            // Neither form is here (a foreign layer): what the manifest says, not remembered.
            return Ok(layer.size);
        };
        self.known.insert(key, size);
        self.changed = true;
        Ok(size)
    }

    /// Remembers what was measured. `keep_only_asked`: a caller that asked about every image
    /// (`rbuild images`) drops the sizes of layers no image has any more.
    pub fn save(mut self, keep_only_asked: bool) {
        if keep_only_asked && self.known.len() > self.asked.len() {
            let asked = std::mem::take(&mut self.asked);
            self.known.retain(|hex, _| asked.contains(hex));
            self.changed = true;
        }
        if !self.changed {
            return;
        }
        // A cache: when it cannot be written, the next caller measures again.
        if let Ok(bytes) = serde_json::to_vec(&self.known) {
            let _ = write_atomic(&self.path, &bytes);
        }
    }
}

/// moby's count of a directory (pkg/directory): every entry but directories by its lstat size,
/// each inode once.
fn directory_content_size(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += directory_content_size(&entry.path(), seen)?;
        } else if meta.len() > 0 && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    Ok(total)
}
