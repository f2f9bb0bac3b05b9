//! `RUN --mount=type=cache` directories: `cache-mounts/<sha256 of id>[-N]/`, each with a lock
//! file beside it (`….lock`) that a step holds while it runs, as the mount's `sharing` asks
//! (reference.md, "RUN --mount=type=cache"): `shared` users use one directory at once,
//! `locked` waits to be its only user, and `private` takes the first instance nobody uses,
//! making a new one when all are busy. The locks are flocks, so they hold between the
//! parallel stages of one build and between builds on one store alike.
//!
//! Holding a mount sets its lock file's mtime, so that is when the mount was last used. GC
//! removes mounts only while it holds gc.lock exclusively: every build holds it shared
//! (`Store::writer_lock`), so no step holds a mount then, and none can take one until GC ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::lock::{LockKind, StoreLock};
use crate::store::{io_err, Store, StoreError};
use crate::unpacked::disk_usage;

/// BuildKit's first default GC rule (docs/gc.md) for `exec.cachemount` records: once the
/// cache mounts take more than 512 MB, those unused for 48 hours go.
pub const CACHE_MOUNT_GC: CacheMountPrune = CacheMountPrune {
    unused_for: Some(Duration::from_secs(48 * 3600)),
    keep_bytes: Some(512 * 1000 * 1000),
};

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
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let held = |dir: PathBuf, first: bool, lock: StoreLock| {
            let lock_path = lock_of(&dir);
            lock.mark_used().map_err(io_err(&lock_path))?;
            Ok(HeldCacheMount {
                dir,
                first,
                _lock: lock,
            })
        };
        match sharing {
            MountSharing::Shared => {
                let lock = StoreLock::acquire(&lock_of(&dir), LockKind::Shared)?;
                held(dir, true, lock)
            }
            MountSharing::Locked => {
                let lock = StoreLock::acquire(&lock_of(&dir), LockKind::Exclusive)?;
                held(dir, true, lock)
            }
            MountSharing::Private => {
                let mut n = 0;
                loop {
                    let dir = self.cache_mount_instance(id, n);
                    if let Some(lock) = StoreLock::try_acquire(&lock_of(&dir), LockKind::Exclusive)?
                    {
                        return held(dir, n == 0, lock);
                    }
                    n += 1;
                }
            }
        }
    }

    /// Removes the cache mounts `policy` selects, least recently used first. The caller holds
    /// gc.lock exclusively, so no step holds any of them.
    pub(crate) fn prune_cache_mounts(
        &self,
        policy: &CacheMountPrune,
    ) -> Result<CacheMountsPruned, StoreError> {
        let mounts = self.cache_mounts_by_age()?;
        let now = SystemTime::now();
        let unused = |m: &CacheMountUse| {
            policy
                .unused_for
                .is_none_or(|age| now.duration_since(m.used).unwrap_or_default() >= age)
        };
        let mut pruned = CacheMountsPruned::default();
        // The common case after a build: nothing unused long enough, and no directory walked.
        if !mounts.iter().any(&unused) {
            return Ok(pruned);
        }
        // Sizes of all of them only when a limit needs the total.
        let mut sizes: Vec<Option<u64>> = match policy.keep_bytes {
            Some(_) => mounts.iter().map(|m| Some(disk_usage(&m.dir))).collect(),
            None => vec![None; mounts.len()],
        };
        let mut total: u64 = sizes.iter().flatten().sum();
        for (mount, size) in mounts.iter().zip(&mut sizes) {
            let over = policy.keep_bytes.is_none_or(|keep| total > keep);
            if !over || !unused(mount) {
                break;
            }
            let size = *size.get_or_insert_with(|| disk_usage(&mount.dir));
            if mount.dir.exists() {
                fs::remove_dir_all(&mount.dir).map_err(io_err(&mount.dir))?;
            }
            match fs::remove_file(&mount.lock) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&mount.lock)(e));
                }
                _ => {}
            }
            total = total.saturating_sub(size);
            pruned.mounts += 1;
            pruned.bytes += size;
        }
        Ok(pruned)
    }

    /// Every cache mount directory with when a step last held it, least recently used first.
    fn cache_mounts_by_age(&self) -> Result<Vec<CacheMountUse>, StoreError> {
        let root = self.root().join("cache-mounts");
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&root)(e)),
        };
        let mut mounts = Vec::new();
        for entry in entries {
            let dir = entry.map_err(io_err(&root))?.path();
            if dir.extension().is_some_and(|e| e == "lock") {
                continue;
            }
            let lock = lock_of(&dir);
            // A mount restored before any step held it has no lock file yet.
            let used = fs::metadata(&lock)
                .or_else(|_| fs::symlink_metadata(&dir))
                .and_then(|m| m.modified())
                .map_err(io_err(&dir))?;
            mounts.push(CacheMountUse { dir, lock, used });
        }
        mounts.sort_by_key(|m| m.used);
        Ok(mounts)
    }
}

fn lock_of(dir: &Path) -> PathBuf {
    dir.with_extension("lock")
}

/// Which cache mounts GC removes: with neither limit, every one.
#[derive(Debug, Clone, Default)]
pub struct CacheMountPrune {
    /// Only those no step held for this long.
    pub unused_for: Option<Duration>,
    /// Only while all the cache mounts together take more than this.
    pub keep_bytes: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheMountsPruned {
    pub mounts: usize,
    /// What they took on disk.
    pub bytes: u64,
}

struct CacheMountUse {
    dir: PathBuf,
    lock: PathBuf,
    used: SystemTime,
}
