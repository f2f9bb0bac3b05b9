//! Layer sizes as docker shows them in `images`, `history` and inspect's `Size`: the bytes of
//! a layer's files ([`oci::layer::content_size`]), not its compressed blob. Each layer is
//! measured once (an unpacked layer by walking its directory, as moby walks a layer's diff
//! directory; any other from its blob's tar) and remembered by diff ID in
//! `ROOT/layer-content-sizes.json`. The file is a cache: a missing or damaged one, or one that
//! cannot be written (a read-only store), only means measuring again.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci::image::{ImageConfig, Manifest};
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest};

use crate::store::{io_err, Store, StoreError};
use crate::unpacked::LayerSizeFile;

/// The remembered sizes, and the layers this process asked about.
pub struct LayerContentSizes<'a> {
    store: &'a Store,
    file: LayerSizeFile,
    asked: BTreeSet<String>,
}

impl Store {
    pub fn layer_content_sizes(&self) -> LayerContentSizes<'_> {
        LayerContentSizes {
            store: self,
            file: LayerSizeFile::load(self, "layer-content-sizes.json"),
            asked: BTreeSet::new(),
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
        self.asked.insert(diff_id.encoded().to_string());
        let store = self.store;
        let measured = self.file.get_or_measure(diff_id, || {
            let dir = store.unpacked_dir(diff_id);
            if dir.is_dir() {
                let size = directory_content_size(&dir, &mut HashSet::new());
                return size.map(Some).map_err(io_err(&dir));
            }
            let Kind::Layer(compression) = media_type::kind(&layer.media_type) else {
                return Ok(None);
            };
            if !store.content().contains(&layer.digest) {
                return Ok(None);
            }
            let blob = store.content().open_blob(&layer.digest)?;
            oci::layer::content_size(blob, compression)
                .map(Some)
                .map_err(|source| StoreError::Layer {
                    digest: layer.digest.clone(),
                    source,
                })
        })?;
        // Neither form is here (a foreign layer): what the manifest says, not remembered.
        Ok(measured.unwrap_or(layer.size))
    }

    /// Remembers what was measured. `keep_only_asked`: a caller that asked about every image
    /// (`rbuild images`) drops the sizes of layers no image has any more.
    pub fn save(mut self, keep_only_asked: bool) {
        if keep_only_asked {
            let asked = std::mem::take(&mut self.asked);
            self.file.retain(|hex| asked.contains(hex));
        }
        // A cache: when it cannot be written, the next caller measures again.
        let _ = self.file.save();
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
