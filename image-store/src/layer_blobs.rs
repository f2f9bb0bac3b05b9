//! Blobs made late: the layers of build steps start out unpacked only, and get a compressed
//! blob when an image needs one.
//!
//! A build step's changes are already a directory in unpacked-layer form (its overlay upper
//! directory, adopted as `layers/<diff id>/`), and most of them never reach an image: the big
//! `COPY` of an intermediate stage is read by the next step and that is all. So, as BuildKit
//! does with its lazy blobs, a step only hashes its tar for the diff ID and records an
//! *unpacked-only* descriptor — the uncompressed layer media type with the diff ID as digest
//! and no blob behind it. [`Store::layer_blob`] compresses such a layer when an image is made
//! of it, and `layer-blobs/<diff id hex>.<compression>.json` remembers the blob, so that the
//! next export of the same layer compresses nothing.
//!
//! The directory stays the source of truth: it is never changed after its step (overlayfs
//! never writes to a lower directory), and a tar of it is deterministic, so the blob made late
//! has the diff ID the step recorded; [`Store::layer_blob`] checks that it does.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci::compression::{CompressOptions, Compression};
use oci::content::{BlobWriter, Expected};
use oci::layer::{create, CreateOptions, LayerInfo, SourceKind};
use oci::{media_type, Descriptor, Digest};

use crate::store::{files_in, io_err, write_atomic, Store, StoreError};

/// The descriptor of a layer that exists only unpacked: the uncompressed media type, and the
/// diff ID as digest (which is what the blob's digest would be, uncompressed).
pub fn unpacked_only_descriptor(diff_id: &Digest, uncompressed_size: u64) -> Descriptor {
    Descriptor::new(
        media_type::oci_layer(Compression::None),
        diff_id.clone(),
        uncompressed_size,
    )
}

impl Store {
    fn layer_blobs_dir(&self) -> PathBuf {
        self.root().join("layer-blobs")
    }

    fn layer_blob_record(&self, diff_id: &Digest, compression: Compression) -> PathBuf {
        let suffix = match compression {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        self.layer_blobs_dir()
            .join(format!("{}.{suffix}.json", diff_id.encoded()))
    }

    /// Whether the layer can be used: its blob is stored, or it is unpacked (the only form of
    /// a build step's layer until an image needs it).
    pub fn has_layer(&self, layer: &Descriptor, diff_id: &Digest) -> bool {
        self.content().contains(&layer.digest) || self.unpacked_dir(diff_id).is_dir()
    }

    /// A stored blob of `layer`: `layer` itself when its blob is stored, else a blob made in
    /// `compression` from the unpacked directory (once; later calls find it again). The caller
    /// holds [`Store::writer_lock`].
    pub fn layer_blob(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<Descriptor, StoreError> {
        if self.content().contains(&layer.digest) {
            return Ok(layer.clone());
        }
        let record = self.layer_blob_record(diff_id, compression);
        if let Some(made) = self.read_layer_blob_record(&record) {
            return Ok(made);
        }
        let dir = self.unpacked_dir(diff_id);
        if !dir.is_dir() {
            return Err(StoreError::Io {
                path: dir,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("layer {diff_id} is neither stored nor unpacked"),
                ),
            });
        }
        let (info, writer) = self.compress_dir(&dir, SourceKind::OverlayUpper, compression)?;
        if &info.diff_id != diff_id {
            // Dropping the writer discards the blob.
            return Err(StoreError::Io {
                path: dir,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the unpacked layer {diff_id} changed: its tar is now {}",
                        info.diff_id
                    ),
                ),
            });
        }
        self.commit_layer_blob(writer, diff_id, compression)
    }

    /// Makes the blob of `dir` (a directory in unpacked-layer form, about to be adopted with
    /// [`Store::adopt_unpacked_layer`]) in `compression`, in the same pass over its files that
    /// gives its diff ID, and remembers it as that layer's blob. For a build step whose layer
    /// is known to reach an image, this saves reading and hashing the layer twice (once for the
    /// diff ID at commit, once more for the blob at export). Returns the diff ID, the tar's
    /// size and the blob's descriptor.
    ///
    /// Blob and record come before the adoption: an adopted directory without its record
    /// would only cost a second compression at export, a record without its directory is
    /// dropped by GC.
    pub fn make_blob_of_unpacked_dir(
        &self,
        dir: &Path,
        compression: Compression,
    ) -> Result<(Digest, u64, Descriptor), StoreError> {
        let (info, writer) = self.compress_dir(dir, SourceKind::OverlayUpper, compression)?;
        let made = self.commit_layer_blob(writer, &info.diff_id, compression)?;
        Ok((info.diff_id, info.uncompressed_size, made))
    }

    /// Stores the files of `dir`, a plain directory (a RUN cache mount's), as one layer blob in
    /// `compression`; returns it with its diff ID. Nothing remembers the blob: the caller
    /// references it before the next GC (it holds [`Store::writer_lock`]).
    pub fn blob_of_dir(
        &self,
        dir: &Path,
        compression: Compression,
    ) -> Result<(Descriptor, Digest), StoreError> {
        let (info, writer) = self.compress_dir(dir, SourceKind::Directory, compression)?;
        let (digest, size) = writer.commit()?;
        let blob = Descriptor::new(media_type::oci_layer(compression), digest, size);
        Ok((blob, info.diff_id))
    }

    /// Writes the blob of `dir` into the content store, uncommitted. An overlay upper
    /// directory's whiteouts and opaque markers become layer.md's.
    fn compress_dir(
        &self,
        dir: &Path,
        kind: SourceKind,
        compression: Compression,
    ) -> Result<(LayerInfo, BlobWriter), StoreError> {
        let opts = CreateOptions {
            compression,
            compress: CompressOptions::default(),
            // The directory's mtimes are final already (see oci::layer::clamp_mtimes).
            source_date_epoch: None,
        };
        let mut writer = self.content().writer(Expected::default())?;
        let info =
            create(dir, kind, &opts, &mut writer).map_err(|source| StoreError::LayerDir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok((info, writer))
    }

    /// Commits the blob made for layer `diff_id` and remembers it in `layer-blobs/`.
    fn commit_layer_blob(
        &self,
        writer: BlobWriter,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<Descriptor, StoreError> {
        let (digest, size) = writer.commit()?;
        let made = Descriptor::new(media_type::oci_layer(compression), digest, size);
        let dir = self.layer_blobs_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let record = self.layer_blob_record(diff_id, compression);
        let bytes = serde_json::to_vec(&made).map_err(|e| io_err(&record)(e.into()))?;
        write_atomic(&record, &bytes)?;
        Ok(made)
    }

    /// The blob a record names, if it is still stored (GC may have taken it since).
    fn read_layer_blob_record(&self, record: &Path) -> Option<Descriptor> {
        let bytes = fs::read(record).ok()?;
        let made: Descriptor = serde_json::from_slice(&bytes).ok()?;
        self.content().contains(&made.digest).then_some(made)
    }

    /// The bytes of the blobs made for the layer `diff_id`, in every compression.
    pub(crate) fn made_blobs_size(&self, diff_id: &Digest) -> u64 {
        [Compression::None, Compression::Gzip, Compression::Zstd]
            .into_iter()
            .filter_map(|c| self.read_layer_blob_record(&self.layer_blob_record(diff_id, c)))
            .map(|made| self.content().size(&made.digest).unwrap_or(0))
            .sum()
    }

    /// For GC, which holds gc.lock exclusively: forgets the blobs made for layers that are no
    /// longer kept (`live_layers`: diff ID hex), and returns the blobs made for the kept ones,
    /// which stay as long as their layers do, as a cached step's blob always has.
    pub(crate) fn layer_blobs_to_keep(
        &self,
        live_layers: &BTreeSet<String>,
    ) -> Result<Vec<Digest>, StoreError> {
        let mut keep = Vec::new();
        for path in files_in(&self.layer_blobs_dir())? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let diff_id = name.split('.').next().unwrap_or_default();
            let made = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok());
            match made {
                Some(made) if live_layers.contains(diff_id) => keep.push(made.digest),
                // A dead layer's record, a damaged one, or a write-atomic leftover.
                _ => fs::remove_file(&path).map_err(io_err(&path))?,
            }
        }
        Ok(keep)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use oci::compression::decompress;
    use oci::layer::diff_id;

    use super::*;

    #[test]
    fn the_blob_made_before_adoption_is_the_one_a_later_export_finds() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("etc/apt")).unwrap();
        fs::write(upper.join("etc/apt/sources.list"), "deb x\n".repeat(5_000)).unwrap();
        let (expected_id, expected_size) = diff_id(&upper, SourceKind::OverlayUpper).unwrap();

        let (id, size, blob) = store
            .make_blob_of_unpacked_dir(&upper, Compression::Gzip)
            .unwrap();
        // One pass gives the diff ID the separate hashing pass gives.
        assert_eq!((&id, size), (&expected_id, expected_size));
        store.adopt_unpacked_layer(&id, &upper).unwrap();
        assert!(!upper.exists(), "the directory was adopted");
        assert!(store
            .unpacked_dir(&id)
            .join("etc/apt/sources.list")
            .is_file());
        let mut tar = Vec::new();
        decompress(
            store.content().open_blob(&blob.digest).unwrap(),
            Compression::Gzip,
        )
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
        assert_eq!(Digest::sha256_of(&tar), id);

        // The export asks for the blob of the unpacked-only layer: the one made at adoption.
        let blobs = store.content().list().unwrap().len();
        let found = store
            .layer_blob(&unpacked_only_descriptor(&id, size), &id, Compression::Gzip)
            .unwrap();
        assert_eq!(found, blob);
        assert_eq!(
            store.content().list().unwrap().len(),
            blobs,
            "nothing compressed again"
        );
    }
}
