//! The local image store of `rbuild`.
//!
//! On disk (one place documents it; see also docs/ARCHITECTURE.md):
//!
//! ```text
//! ROOT/                   /var/lib/rbuild as root, $XDG_DATA_HOME/rbuild otherwise
//!   oci-layout            the store is an OCI image layout (image-layout.md), so skopeo and
//!   index.json            umoci can read it as `oci:ROOT`; index.json lists every image, once
//!                         per name (annotations io.containerd.image.name and
//!                         org.opencontainers.image.ref.name), untagged images without a name
//!   blobs/sha256/…        content, written only through oci::content (verify, fsync, rename)
//!   ingest/               blobs being written; leftovers of killed writers are pruned
//!   layers/<diff-id hex>/ unpacked layers, each ready to be an overlayfs lowerdir; a build
//!                         step's layer exists only here until an image needs its blob
//!   layer-blobs/<diff-id hex>.<compression>.json  the blob made late for such a layer
//!   index.lock            held exclusively while index.json is read-modified-written
//!   build-cache/<key>.json  the builder's step cache: key → layer (GC roots)
//!   layer-sizes.json      disk usage of each unpacked layer, measured once, for cache limits
//!   layer-content-sizes.json  each layer's size as docker shows it (its files' bytes), by
//!                         diff ID, measured once (content_sizes.rs)
//!   cache-mounts/<sha256 of id>[-N]/  RUN --mount=type=cache directories (N: a `sharing=private`
//!                         instance), each with its `.lock` file beside it, whose mtime is
//!                         when a step last held the mount (for GC)
//!   tmp/                  scratch space of running builds (overlay upper/work dirs); it and
//!                         layers/ carry ext4's TOPDIR flag (`chattr +T`), see Store::scratch_dir
//!   gc.lock               held shared by every operation that adds content, exclusively by GC
//! ```
//!
//! Two rbuild processes can use one store at once: blobs and unpacked layers appear by atomic
//! rename, index.json changes under `index.lock`, and garbage collection waits for writers.

mod build_cache;
mod cache_mounts;
mod content_sizes;
mod ingest;
mod layer_blobs;
mod layout_import;
mod lock;
mod store;
mod unpacked;

pub use build_cache::{
    CacheBackend, CacheBackendError, CacheConfig, CachePrune, CachePruneReport, CacheRecord,
    CachedLayer, ExportedCacheMount, ExportedRecord, CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE,
};
pub use cache_mounts::{
    CacheMountPrune, CacheMountsPruned, HeldCacheMount, MountSharing, CACHE_MOUNT_GC,
};
pub use content_sizes::LayerContentSizes;
pub use layer_blobs::unpacked_only_descriptor;
pub use lock::{LockError, StoreLock};
pub use store::{ImageRecord, PruneReport, RemoveOutcome, Store, StoreError};
