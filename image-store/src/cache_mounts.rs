//! `RUN --mount=type=cache` directories: `cache-mounts/<sha256 of id>[-N]/`, each with a lock
//! file beside it (`….lock`) that a step holds while it runs, as the mount's `sharing` asks
//! (reference.md, "RUN --mount=type=cache"): `shared` users use one directory at once,
//! `locked` waits to be its only user, and `private` takes the first instance nobody uses,
//! making a new one when all are busy. The locks are flocks, so they hold between the
//! parallel stages of one build and between builds on one store alike.

use std::path::PathBuf;

use crate::lock::{LockKind, StoreLock};
use crate::store::{Store, StoreError};

/// A cache mount's `sharing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountSharing {
    Shared,
    Private,
    Locked,
}

/// A cache mount directory held for one step; released when dropped. The directory itself
/// may not exist yet.
#[derive(Debug)]
pub struct HeldCacheMount {
    pub dir: PathBuf,
    /// Whether it is the mount's first instance (the one `--cache-to` exports).
    pub first: bool,
    _lock: StoreLock,
}

impl Store {
    /// The first (exported, restored) instance of cache mount `id`.
    pub fn cache_mount_dir(&self, id: &str) -> PathBuf {
        self.cache_mount_instance(id, 0)
    }

    fn cache_mount_instance(&self, id: &str, n: usize) -> PathBuf {
        let hex = oci::Digest::sha256_of(id.as_bytes()).encoded().to_string();
        let name = if n == 0 { hex } else { format!("{hex}-{n}") };
        self.root().join("cache-mounts").join(name)
    }

    /// Takes cache mount `id` for one step, waiting as `sharing` says.
    pub fn hold_cache_mount(
        &self,
        id: &str,
        sharing: MountSharing,
    ) -> Result<HeldCacheMount, StoreError> {
        let dir = self.cache_mount_dir(id);
        let parent = dir.parent().unwrap_or(&dir);
        std::fs::create_dir_all(parent).map_err(crate::store::io_err(parent))?;
        let lock_of = |dir: &PathBuf| dir.with_extension("lock");
        let held = |dir: PathBuf, first: bool, lock: StoreLock| HeldCacheMount {
            dir,
            first,
            _lock: lock,
        };
        match sharing {
            MountSharing::Shared => {
                let lock = StoreLock::acquire(&lock_of(&dir), LockKind::Shared)?;
                Ok(held(dir, true, lock))
            }
            MountSharing::Locked => {
                let lock = StoreLock::acquire(&lock_of(&dir), LockKind::Exclusive)?;
                Ok(held(dir, true, lock))
            }
            MountSharing::Private => {
                let mut n = 0;
                loop {
                    let dir = self.cache_mount_instance(id, n);
                    if let Some(lock) = StoreLock::try_acquire(&lock_of(&dir), LockKind::Exclusive)?
                    {
                        return Ok(held(dir, n == 0, lock));
                    }
                    n += 1;
                }
            }
        }
    }
}
