//! Layer tars (image-spec layer.md): [`create`] turns a directory, or an overlayfs upper
//! directory, into a deterministic compressed layer while hashing it ([`diff_id`] only hashes
//! that tar, for layers kept unpacked until an image needs them); [`apply`] extracts a
//! layer onto a directory without ever writing outside it; [`content_size`] counts a layer's
//! bytes as docker shows them.
//!
//! Module map: `create` walks the source and `tar_writer` encodes headers (ustar + PAX);
//! `apply` interprets entries; `pipeline` runs the hashing and (de)compression of both on a
//! helper thread;
//! `root` confines every path operation to the target directory (openat2 RESOLVE_IN_ROOT,
//! *at syscalls); `whiteout` names the layer.md whiteout files and their overlayfs encodings;
//! `xattr` wraps the extended-attribute syscalls; `path` cleans entry names; `hashing` digests
//! streams as they pass.

mod apply;
mod content_size;
mod create;
mod hashing;
mod path;
mod pipeline;
mod root;
mod tar_writer;
mod whiteout;
mod xattr;

use std::io;
use std::path::PathBuf;

pub use apply::{apply, ApplyMode, ApplyStats};
pub use content_size::content_size;
pub use create::{clamp_mtimes, create, diff_id, set_mtime, CreateOptions, LayerInfo, SourceKind};
pub use whiteout::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Why creating or applying a layer failed. Errors about one tar entry carry its name.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading layer source {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer source {path}: {reason}")]
    UnsupportedSource { path: PathBuf, reason: String },
    #[error("writing the layer: {0}")]
    Output(#[source] io::Error),
    #[error("reading the layer stream (corrupt or truncated tar, gzip or zstd): {0}")]
    Read(#[source] io::Error),
    #[error("opening the target directory {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The entry would write outside the target or is malformed; nothing of it was written.
    #[error("refusing layer entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("layer entry {entry:?}: unsupported tar entry type {kind:?}")]
    UnsupportedEntry { entry: String, kind: char },
    #[error("layer entry {entry:?} is truncated: header says {expected} bytes, stream ended after {actual}")]
    Truncated {
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer entry {entry:?}: {action}: {source}")]
    Entry {
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Entry names are bytes; errors show them lossily.
fn display_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
