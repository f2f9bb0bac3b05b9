//! Images and their names.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use oci::archive::{
    index_entries, reachable_blobs, resolve_platform, ArchiveError, ANNOTATION_IMAGE_NAME,
};
use oci::content::{ContentError, ContentStore};
use oci::image::{to_json_bytes, ImageConfig, ImageJsonError, Index, Manifest};
use oci::{Descriptor, Digest, Platform, Reference};

use crate::lock::{LockError, LockKind, StoreLock};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Json(#[from] ImageJsonError),
    #[error("{path}: corrupt store index: {source}")]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: ImageJsonError,
    },
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image ID prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("image {id} has several names ({names}); remove them by name or use --force")]
    HasNames { id: String, names: String },
    #[error(transparent)]
    Reference(#[from] oci::ReferenceError),
    #[error("not a valid tar archive: {0}")]
    BadTar(#[source] io::Error),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: oci::layer::LayerError,
    },
    #[error("layer from {path}: {source}")]
    LayerDir {
        path: PathBuf,
        #[source]
        source: oci::layer::LayerError,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An image in the store: its manifest (or index) and the names that point at it.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub descriptor: Descriptor,
    pub names: Vec<Reference>,
}

impl ImageRecord {
    /// The short or long ID docker shows is the config digest; for an index, the index digest.
    pub fn id(&self, store: &Store) -> Result<Digest, StoreError> {
        match store.manifest_for_host(&self.descriptor) {
            Ok((_, manifest)) => Ok(manifest.config.digest),
            Err(StoreError::Archive(ArchiveError::NoPlatform(_))) => {
                Ok(self.descriptor.digest.clone())
            }
            Err(e) => Err(e),
        }
    }
}

pub enum RemoveOutcome {
    Untagged(Reference),
    Deleted(Digest),
}

#[derive(Debug, Default)]
pub struct PruneReport {
    pub images: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub layers: usize,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    content: ContentStore,
}

impl Store {
    /// The store root when none is given: /var/lib/rbuild for root, else
    /// $XDG_DATA_HOME/rbuild (default ~/.local/share/rbuild).
    pub fn default_root() -> PathBuf {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/rbuild");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("rbuild")
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        create_spreading_dir(&root.join("layers"))?;
        let content = ContentStore::open(&root)?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Store { root, content })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// ROOT/tmp, the scratch space of builds and runs (step workspaces, downloads), on the
    /// layers' filesystem so that a finished step's upper dir is renamed into `layers/`.
    /// `rbuild prune` removes it whole.
    pub fn scratch_dir(&self) -> Result<PathBuf, StoreError> {
        let tmp = self.root.join("tmp");
        create_spreading_dir(&tmp)?;
        Ok(tmp)
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Held (shared) by every operation that adds blobs, for its whole length, so that GC
    /// never deletes a blob that is written but not yet referenced.
    pub fn writer_lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::acquire(
            &self.root.join("gc.lock"),
            LockKind::Shared,
        )?)
    }

    fn index_lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::acquire(
            &self.root.join("index.lock"),
            LockKind::Exclusive,
        )?)
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => {
                Index::parse(&bytes).map_err(|source| StoreError::CorruptIndex { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::oci(Vec::new())),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        write_atomic(&self.root.join("index.json"), &to_json_bytes(index))
    }

    /// Every image, in the order they were added.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(records_of(&self.read_index()?))
    }

    /// Finds an image by name (`busybox`, `host/a:tag`, `name@digest`) or by ID: a full or
    /// prefix config digest or manifest digest, with or without `sha256:`.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, StoreError> {
        let images = self.images()?;
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let looks_like_id = !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !name_or_id.starts_with("sha256:") {
            if let Ok(reference) = Reference::parse(name_or_id) {
                if let Some(found) = images.iter().find(|i| i.names.contains(&reference)) {
                    return Ok(found.clone());
                }
                if let Some(digest) = &reference.digest {
                    if let Some(found) = images.iter().find(|i| &i.descriptor.digest == digest) {
                        return Ok(found.clone());
                    }
                }
            }
        }
        if looks_like_id {
            let mut matches = Vec::new();
            for image in &images {
                let id = image.id(self)?;
                if id.encoded().starts_with(hex)
                    || image.descriptor.digest.encoded().starts_with(hex)
                {
                    matches.push(image.clone());
                }
            }
            return match matches.len() {
                1 => Ok(matches.remove(0)),
                0 => Err(StoreError::NotFound(name_or_id.to_string())),
                _ => Err(StoreError::Ambiguous(name_or_id.to_string())),
            };
        }
        Err(StoreError::NotFound(name_or_id.to_string()))
    }

    /// Records an image whose blobs are all stored, under `names` (moved from any image that
    /// had them, as docker does). With no names the image is kept untagged.
    pub fn add_image(
        &self,
        descriptor: &Descriptor,
        names: &[Reference],
    ) -> Result<(), StoreError> {
        reachable_blobs(&self.content, descriptor)?;
        let _guard = self.index_lock()?;
        let mut records = records_of(&self.read_index()?);
        for record in &mut records {
            record.names.retain(|n| !names.contains(n));
        }
        match records
            .iter_mut()
            .find(|r| r.descriptor.digest == descriptor.digest)
        {
            Some(existing) => {
                for name in names {
                    if !existing.names.contains(name) {
                        existing.names.push(name.clone());
                    }
                }
            }
            None => {
                let mut bare = descriptor.clone();
                bare.annotations.clear();
                bare.platform = None;
                records.push(ImageRecord {
                    descriptor: bare,
                    names: names.to_vec(),
                });
            }
        }
        // An image that lost its last name to this one stays, untagged ("dangling").
        self.write_index(&index_of(&records))
    }

    /// `rbuild tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        let image = self.resolve(source)?;
        self.add_image(&image.descriptor, std::slice::from_ref(target))
    }

    /// `rbuild rmi`: a name removes that name (and the image with its last name); an ID
    /// removes the image when it has at most one name, or with `force`.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<Vec<RemoveOutcome>, StoreError> {
        let image = self.resolve(name_or_id)?;
        let by_name = Reference::parse(name_or_id)
            .ok()
            .filter(|r| image.names.contains(r));
        let mut outcomes = Vec::new();
        {
            let _guard = self.index_lock()?;
            let mut records = records_of(&self.read_index()?);
            let Some(pos) = records
                .iter()
                .position(|r| r.descriptor.digest == image.descriptor.digest)
            else {
                return Err(StoreError::NotFound(name_or_id.to_string()));
            };
            match by_name {
                Some(name) if records[pos].names.len() > 1 => {
                    records[pos].names.retain(|n| n != &name);
                    outcomes.push(RemoveOutcome::Untagged(name));
                }
                _ => {
                    if by_name.is_none() && records[pos].names.len() > 1 && !force {
                        return Err(StoreError::HasNames {
                            id: image.id(self)?.short().to_string(),
                            names: records[pos]
                                .names
                                .iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    let removed = records.remove(pos);
                    outcomes.extend(removed.names.into_iter().map(RemoveOutcome::Untagged));
                    outcomes.push(RemoveOutcome::Deleted(image.id(self)?));
                }
            }
            self.write_index(&index_of(&records))?;
        }
        // Free the content now unless a writer is busy; `prune` catches up later.
        if let Some(_gc) = self.try_gc_lock()? {
            self.collect_garbage()?;
        }
        Ok(outcomes)
    }

    /// `rbuild prune`: removes untagged images, then every blob and unpacked layer no image
    /// needs, and leftovers of killed writers.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        self.prune_images_where(|image| image.names.is_empty())
    }

    /// [`Store::prune`] removing the images `remove` picks (decided under the index lock, so
    /// that no name added meanwhile is lost).
    pub fn prune_images_where(
        &self,
        remove: impl Fn(&ImageRecord) -> bool,
    ) -> Result<PruneReport, StoreError> {
        let _gc = self.gc_lock()?;
        let mut report = PruneReport::default();
        {
            let _guard = self.index_lock()?;
            let mut records = records_of(&self.read_index()?);
            let before = records.len();
            records.retain(|r| !remove(r));
            report.images = before - records.len();
            self.write_index(&index_of(&records))?;
        }
        let collected = self.collect_garbage()?;
        report.blobs = collected.blobs;
        report.bytes = collected.bytes;
        report.layers = collected.layers;
        // No writer holds the shared lock now, so every ingest file and step workspace left
        // behind is from a process that was killed.
        self.content.clean_ingest(std::time::Duration::ZERO)?;
        let tmp = self.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        Ok(report)
    }

    /// Excludes writers (builds, pulls, loads) while GC decides what is garbage.
    pub(crate) fn gc_lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::acquire(
            &self.root.join("gc.lock"),
            LockKind::Exclusive,
        )?)
    }

    /// [`Store::gc_lock`] when no writer holds the store, else None at once.
    pub(crate) fn try_gc_lock(&self) -> Result<Option<StoreLock>, StoreError> {
        Ok(StoreLock::try_acquire(
            &self.root.join("gc.lock"),
            LockKind::Exclusive,
        )?)
    }

    /// Deletes what no image or build cache record reaches. The caller holds [`Store::gc_lock`].
    pub(crate) fn collect_garbage(&self) -> Result<PruneReport, StoreError> {
        let (mut live, mut live_layers) = self.image_roots()?;
        for layer in self.cache_layers()? {
            live.insert(layer.descriptor.digest);
            live_layers.insert(layer.diff_id.encoded().to_string());
        }
        // Blobs made late for kept layers stay with them (layer_blobs.rs).
        live.extend(self.layer_blobs_to_keep(&live_layers)?);
        let mut report = PruneReport::default();
        for digest in self.content.list()? {
            if !live.contains(&digest) {
                report.bytes += self.content.size(&digest).unwrap_or(0);
                self.content.delete(&digest)?;
                report.blobs += 1;
            }
        }
        let (layers, bytes) = self.remove_unpacked_except(&live_layers)?;
        report.layers = layers;
        report.bytes += bytes;
        Ok(report)
    }

    /// What the images reach: their blobs, and their layers' diff IDs (hex).
    pub(crate) fn image_roots(&self) -> Result<(BTreeSet<Digest>, BTreeSet<String>), StoreError> {
        let mut live = BTreeSet::new();
        let mut live_layers = BTreeSet::new();
        for image in self.images()? {
            for desc in reachable_blobs(&self.content, &image.descriptor)? {
                if oci::media_type::is_manifest(&desc.media_type) {
                    let manifest = Manifest::parse(&self.content.read(&desc.digest)?)?;
                    if oci::media_type::kind(&manifest.config.media_type)
                        == oci::media_type::Kind::Config
                    {
                        let config =
                            ImageConfig::parse(&self.content.read(&manifest.config.digest)?)?;
                        live_layers.extend(
                            config
                                .rootfs
                                .diff_ids
                                .iter()
                                .map(|d| d.encoded().to_string()),
                        );
                    }
                }
                live.insert(desc.digest);
            }
        }
        Ok((live, live_layers))
    }

    /// The manifest of `descriptor` for this host (an index is resolved to its child).
    pub fn manifest_for_host(
        &self,
        descriptor: &Descriptor,
    ) -> Result<(Descriptor, Manifest), StoreError> {
        Ok(resolve_platform(
            &self.content,
            descriptor,
            &Platform::host(),
        )?)
    }

    /// The host manifest and the config (parsed, and as its exact bytes) of an image.
    pub fn image_config(
        &self,
        image: &ImageRecord,
    ) -> Result<(Manifest, ImageConfig, Vec<u8>), StoreError> {
        let (_, manifest) = self.manifest_for_host(&image.descriptor)?;
        let bytes = self.content.read(&manifest.config.digest)?;
        let config = ImageConfig::parse(&bytes)?;
        Ok((manifest, config, bytes))
    }
}

fn records_of(index: &Index) -> Vec<ImageRecord> {
    let mut records: Vec<ImageRecord> = Vec::new();
    for entry in &index.manifests {
        let name = entry
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .and_then(|n| Reference::parse(n).ok());
        match records
            .iter_mut()
            .find(|r| r.descriptor.digest == entry.digest)
        {
            Some(record) => record.names.extend(name),
            None => {
                let mut bare = entry.clone();
                bare.annotations.clear();
                records.push(ImageRecord {
                    descriptor: bare,
                    names: name.into_iter().collect(),
                });
            }
        }
    }
    records
}

fn index_of(records: &[ImageRecord]) -> Index {
    let mut index = Index::oci(Vec::new());
    for record in records {
        index
            .manifests
            .extend(index_entries(&record.descriptor, &record.names));
    }
    index
}

/// The entries of `dir`; none when it does not exist (yet).
pub(crate) fn files_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    entries
        .map(|entry| entry.map(|e| e.path()).map_err(io_err(dir)))
        .collect()
}

/// `FS_TOPDIR_FL` of linux/fs.h (`chattr +T`); the libc crate does not define it.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Creates `dir` marked as the top of directory hierarchies, so that ext4's Orlov allocator
/// puts each of its subdirectories (a step's workspace, an unpacked layer) in a block group of
/// its own rather than beside its parent. Without that, new files land in the groups whose
/// inodes a prune has just freed, and ext4 without a journal makes every create there skip
/// each inode freed in the last 60-300 s (`recently_deleted` in fs/ext4/ialloc.c): a
/// 5,000-file COPY after `rbuild prune` took 2.4 s instead of 0.95 s. Only a hint: a
/// filesystem without the flag refuses it, and nothing else changes.
fn create_spreading_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Ok(handle) = fs::File::open(dir) {
        let fd = handle.as_raw_fd();
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS and FS_IOC_SETFLAGS read or write one int at the pointer,
        // on a descriptor that stays open across both calls.
        unsafe {
            if libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) == 0 && flags & FS_TOPDIR_FL == 0
            {
                flags |= FS_TOPDIR_FL;
                libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags);
            }
        }
    }
    Ok(())
}

/// Replaces `path` with `data` atomically: a reader sees the old or the new file, whole.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(data).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On ext4 (this project's machines, / included) the scratch and layer directories carry
    /// the TOPDIR flag, and prune's removal of `tmp/` does not lose it for the next build.
    #[test]
    fn scratch_and_layers_spread_their_subdirectories() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let flags = |path: &Path| {
            let handle = fs::File::open(path).unwrap();
            let mut flags: libc::c_int = 0;
            // SAFETY: FS_IOC_GETFLAGS writes one int at the pointer.
            let got = unsafe { libc::ioctl(handle.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
            assert_eq!(
                got,
                0,
                "{}: no inode flags here; /var/tmp must be on ext4",
                path.display()
            );
            flags
        };
        let scratch = store.scratch_dir().unwrap();
        for path in [&scratch, &store.root().join("layers")] {
            assert_ne!(flags(path) & FS_TOPDIR_FL, 0, "{}", path.display());
        }
        store.prune().unwrap();
        assert!(!scratch.exists());
        assert_ne!(flags(&store.scratch_dir().unwrap()) & FS_TOPDIR_FL, 0);
    }
}
