//! Snapshots: a step's view of its stage's filesystem is an overlay of the stage's unpacked
//! layers (from the store's cache of unpacked layers) under a fresh upper directory; what the
//! step changed is the upper directory, which becomes the step's layer.
//!
//! Mounts the builder makes itself (COPY, WORKDIR) happen on a thread that first moves into a
//! private mount namespace: they are invisible to the host and vanish with the thread, so a
//! killed build never leaves a mount behind. RUN's overlay is mounted by the executor inside
//! the container's own namespace for the same reason.

use std::fs;
use std::path::{Path, PathBuf};

use image_store::Store;
use oci::layer::{diff_id, SourceKind};

use super::stage::Layer;
use super::{BuildError, BuildOptions};

/// Scratch directories of one step, removed when dropped.
pub(crate) struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// A new workspace under ROOT/tmp, on the same filesystem as the unpacked layers (overlay
    /// needs upper and work together; renames stay cheap).
    pub fn new(store: &Store) -> Result<Workspace, BuildError> {
        let base = store.scratch_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(&base)
            .map_err(|e| BuildError::other(format!("{}: {e}", base.display())))?;
        for sub in ["upper", "work", "merged", "empty"] {
            fs::create_dir(dir.path().join(sub))
                .map_err(|e| BuildError::other(format!("{}: {e}", dir.path().display())))?;
        }
        Ok(Workspace { dir })
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub fn upper(&self) -> PathBuf {
        self.path("upper")
    }
}

/// The unpacked directories of `layers`, bottom first; an empty stage gets one empty
/// directory, since overlayfs needs at least one lower layer.
pub(crate) fn lower_dirs(
    store: &Store,
    layers: &[Layer],
    ws: &Workspace,
) -> Result<Vec<PathBuf>, BuildError> {
    if layers.is_empty() {
        return Ok(vec![ws.path("empty")]);
    }
    layers
        .iter()
        .map(|l| {
            store
                .unpacked_layer(&l.descriptor, &l.diff_id)
                .map_err(BuildError::from)
        })
        .collect()
}

/// Runs `f` with the overlay of `lower` and the workspace's upper directory mounted at the
/// workspace's `merged` directory, in a private mount namespace (see the module comment).
pub(crate) fn with_merged<T: Send>(
    ws: &Workspace,
    lower: &[PathBuf],
    f: impl FnOnce(&Path) -> Result<T, BuildError> + Send,
) -> Result<T, BuildError> {
    let merged = ws.path("merged");
    let (upper, work) = (ws.upper(), ws.path("work"));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_private_mount_namespace()?;
                runtime_exec::overlay::mount_overlay(lower, &upper, &work, &merged)
                    .map_err(|e| BuildError::other(format!("mount the step's snapshot: {e}")))?;
                // No unmount needed: the namespace, and the mount with it, ends with the thread.
                f(&merged)
            })
            .join()
            .map_err(|_| BuildError::other("a snapshot thread panicked"))?
    })
}

/// The private mount namespace of a snapshot thread (see the module comment).
pub(crate) fn enter_private_mount_namespace() -> Result<(), BuildError> {
    runtime_exec::overlay::enter_private_mount_namespace().map_err(BuildError::other)
}

/// Turns the workspace's upper directory into the step's layer; `None` when the step changed
/// nothing (BuildKit records such steps as empty layers and leaves them out).
///
/// The upper directory is the layer in overlay form already: it is adopted as the layer's
/// unpacked directory, which the next step mounts. Most step layers, such as an intermediate
/// stage's big COPY, never reach an image, so only their tar's diff ID is computed and the
/// compressed blob is made when an image needs it ([`image_layers`], image-store
/// layer_blobs.rs). A step of the target stage (`in_image`) is in the image for sure: its blob
/// is made now, in the same pass as its diff ID, instead of a second pass over the same files
/// at export.
///
/// `write_back`: the upper directory was written through a volatile overlay (a RUN step), so
/// nothing has made it durable yet. One syncfs(2) of its filesystem runs beside the pass over
/// its files, and ends before the directory is adopted and the cache can name it.
pub(crate) fn commit_upper(
    store: &Store,
    ws: &Workspace,
    options: &BuildOptions,
    in_image: bool,
    write_back: bool,
) -> Result<Option<Layer>, BuildError> {
    let upper = ws.upper();
    let empty = fs::read_dir(&upper)
        .map_err(|e| BuildError::other(format!("{}: {e}", upper.display())))?
        .next()
        .is_none();
    if empty {
        return Ok(None);
    }
    let layer_error = |e| BuildError::other(format!("create layer: {e}"));
    if let Some(epoch) = options.source_date_epoch {
        // In the directory itself, so that the blob made from it has this diff ID.
        oci::layer::clamp_mtimes(&upper, epoch.max(0) as u64).map_err(layer_error)?;
    }
    let (diff_id, size) = std::thread::scope(|scope| {
        let written_back = write_back.then(|| scope.spawn(|| sync_filesystem(&upper)));
        // Overlay features that would make the upper dir differ from the diff, such as
        // redirect_dir or metacopy, make this fail.
        let layer = if in_image {
            store
                .make_blob_of_unpacked_dir(&upper, options.compression)
                .map(|(diff_id, size, _blob)| (diff_id, size))
                .map_err(BuildError::from)
        } else {
            diff_id(&upper, SourceKind::OverlayUpper).map_err(layer_error)
        };
        if let Some(handle) = written_back {
            handle
                .join()
                .map_err(|_| BuildError::other("a write-back thread panicked"))??;
        }
        layer
    })?;
    store.adopt_unpacked_layer(&diff_id, &upper)?;
    // The descriptor stays the unpacked-only one either way: the step's cache record names the
    // layer, and an export in another compression makes its own blob.
    Ok(Some(Layer {
        descriptor: image_store::unpacked_only_descriptor(&diff_id, size),
        diff_id,
    }))
}

/// Writes back the filesystem holding `dir` with one syncfs(2).
fn sync_filesystem(dir: &Path) -> Result<(), BuildError> {
    let handle =
        fs::File::open(dir).map_err(|e| BuildError::other(format!("{}: {e}", dir.display())))?;
    nix::unistd::syncfs(&handle)
        .map_err(|e| BuildError::other(format!("sync the filesystem of {}: {e}", dir.display())))
}

/// `layers` with a stored blob each, for an image's manifest: blobs of step layers that exist
/// only unpacked are made now, in the build's compression.
pub(crate) fn image_layers(
    store: &Store,
    layers: &[Layer],
    options: &BuildOptions,
) -> Result<Vec<Layer>, BuildError> {
    layers
        .iter()
        .map(|l| {
            Ok(Layer {
                descriptor: store.layer_blob(&l.descriptor, &l.diff_id, options.compression)?,
                diff_id: l.diff_id.clone(),
            })
        })
        .collect()
}

/// Whether `rel` (a path inside the image, without leading `/`) exists in the merged view of
/// `lower` (bottom first), honouring whiteouts and opaque directories of upper layers.
pub(crate) fn exists_in_lowers(lower: &[PathBuf], rel: &Path) -> bool {
    for dir in lower.iter().rev() {
        let candidate = dir.join(rel);
        if candidate.symlink_metadata().is_ok() {
            // A char device 0:0 is an overlay whiteout: deleted in this layer.
            return !is_whiteout(&candidate);
        }
        // An opaque ancestor hides everything below it in lower layers.
        let mut ancestor = rel.parent();
        while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
            if is_opaque(&dir.join(a)) {
                return false;
            }
            ancestor = a.parent();
        }
    }
    false
}

fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    path.symlink_metadata()
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Mounts the layers of another stage or image read-only at `target` (overlayfs needs two lower
/// layers when it has no upper one, hence `empty`).
pub(crate) fn mount_read_only(
    lower: &[PathBuf],
    target: &Path,
    empty: &Path,
) -> Result<(), BuildError> {
    fs::create_dir_all(target).map_err(BuildError::other)?;
    let mut dirs = runtime_exec::overlay::lowerdir_list(lower).map_err(BuildError::other)?;
    if dirs.len() == 1 {
        dirs.push(
            empty
                .to_str()
                .ok_or_else(|| BuildError::other("the workspace path is not UTF-8"))?,
        );
    }
    let data = format!("lowerdir={}", dirs.join(":"));
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| BuildError::other(format!("mount a stage read-only: {e}")))
}
