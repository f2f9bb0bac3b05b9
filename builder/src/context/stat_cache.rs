//! Remembered content hashes of context files, so an unchanged file is not read again.
//!
//! An entry is trusted only while the file's (size, mtime, ctime, inode, device) — times to
//! the nanosecond — are all unchanged. BuildKit keys on size and mtime alone and so misses an
//! edit that keeps the size and restores the mtime (`touch -d`, `utimensat`, some editors and
//! checkouts); such an edit always moves the ctime, which no unprivileged tool can set back.
//!
//! Timestamps tick at the kernel's coarse clock, so a file written in the same tick as we hash
//! it could change without changing its times (git's "racy clean" problem). A hash is therefore
//! only remembered when the file's ctime is older than the start of the hash by more than
//! [`RACY_WINDOW_NS`]; younger files are simply hashed again next time.
//!
//! On disk: one file, `stat-cache-v1`, in the directory the caller chooses (e.g.
//! `ROOT/cache/context/`), replaced atomically. Line 1 is a header; then one line per file:
//! `dev ino size mtime_ns ctime_ns digest hex(path)`. An unreadable or foreign cache file is
//! discarded, not fatal: it only costs re-hashing.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use oci::{Algorithm, Digest, Digester};

use super::ContextError;

const FILE_NAME: &str = "stat-cache-v1";
const HEADER: &str = "rbuild stat cache v1";
/// Larger than any kernel's coarse-clock tick (at most 10 ms, HZ=100).
pub const RACY_WINDOW_NS: i128 = 20_000_000;
/// Few enough to leave a core to the rest of the build; hashing is mostly I/O bound anyway.
const MAX_WORKERS: usize = 4;
/// Below this, threads cost more than they save.
const FILES_PER_WORKER: usize = 8;

/// What a file looked like when it was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl StatKey {
    fn of(meta: &Metadata) -> Self {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    key: StatKey,
    digest: Digest,
}

/// Content hashes of files by absolute path, valid while their stat key is unchanged.
#[derive(Debug)]
pub struct StatCache {
    file: PathBuf,
    entries: HashMap<PathBuf, Cached>,
    dirty: bool,
    files_hashed: u64,
}

impl StatCache {
    /// Loads the cache kept in `dir` (created if missing); a damaged cache file starts empty.
    pub fn open(dir: &Path) -> Result<Self, ContextError> {
        std::fs::create_dir_all(dir).map_err(|source| ContextError::StatCache {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let entries = match std::fs::read(&file) {
            Ok(bytes) => parse(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(ContextError::StatCache { path: file, source }),
        };
        Ok(StatCache {
            file,
            entries,
            dirty: false,
            files_hashed: 0,
        })
    }

    /// How many files this cache has read and hashed since it was opened (tests use it to
    /// show that an unchanged tree is not read again).
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed
    }

    /// Content digests of `files` (absolute path, `lstat` result of a regular file), in
    /// order: from the cache when the stat key matches, otherwise read in parallel.
    pub(crate) fn content_digests(
        &mut self,
        files: &[(&Path, &Metadata)],
    ) -> Result<Vec<Digest>, ContextError> {
        let mut digests: Vec<Option<Digest>> = files
            .iter()
            .map(|(path, meta)| {
                self.entries
                    .get(*path)
                    .filter(|cached| cached.key == StatKey::of(meta))
                    .map(|cached| cached.digest.clone())
            })
            .collect();
        let todo: Vec<usize> = (0..files.len()).filter(|&i| digests[i].is_none()).collect();
        if todo.is_empty() {
            return digests
                .into_iter()
                .map(|d| d.ok_or_else(internal))
                .collect();
        }

        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_WORKERS)
            .min(todo.len().div_ceil(FILES_PER_WORKER))
            .max(1);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, io::Result<Hashed>)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let mut local = Vec::new();
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = todo.get(n) else { break };
                        local.push((i, hash_file(files[i].0, &mut buf)));
                    }
                    // A poisoned lock only means another worker panicked; its results are
                    // still whole, so keep going with them.
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(&mut local);
                });
            }
        });

        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        for (i, result) in results {
            let path = files[i].0;
            let hashed = result.map_err(|source| ContextError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            self.files_hashed += 1;
            if let Some(key) = hashed.trustworthy_key {
                self.entries.insert(
                    path.to_path_buf(),
                    Cached {
                        key,
                        digest: hashed.digest.clone(),
                    },
                );
                self.dirty = true;
            }
            digests[i] = Some(hashed.digest);
        }
        digests
            .into_iter()
            .map(|d| d.ok_or_else(internal))
            .collect()
    }

    /// Writes the cache if it changed: to a temporary file in the same directory, fsynced,
    /// then renamed over the old one, so a reader never sees half a cache. Entries of files
    /// that no longer exist are dropped.
    pub fn save(&mut self) -> Result<(), ContextError> {
        if !self.dirty {
            return Ok(());
        }
        let err = |source| ContextError::StatCache {
            path: self.file.clone(),
            source,
        };
        self.entries
            .retain(|path, _| path.symlink_metadata().is_ok());
        let mut out = Vec::with_capacity(self.entries.len() * 160);
        out.extend_from_slice(HEADER.as_bytes());
        out.push(b'\n');
        let mut paths: Vec<_> = self.entries.keys().collect();
        paths.sort();
        for path in paths {
            let Cached { key, digest } = &self.entries[path];
            let line = format!(
                "{} {} {} {} {} {} {}\n",
                key.dev,
                key.ino,
                key.size,
                key.mtime_ns,
                key.ctime_ns,
                digest,
                hex::encode(path.as_os_str().as_bytes())
            );
            out.extend_from_slice(line.as_bytes());
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        tmp.write_all(&out).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.file).map_err(|e| err(e.error))?;
        self.dirty = false;
        Ok(())
    }
}

fn internal() -> ContextError {
    ContextError::StatCache {
        path: PathBuf::new(),
        source: io::Error::other("a file's digest went missing while hashing"),
    }
}

/// A file's content digest, and its stat key if the hash may be remembered.
struct Hashed {
    digest: Digest,
    trustworthy_key: Option<StatKey>,
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<Hashed> {
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    // O_NOFOLLOW: the entry was a regular file when resolved; never follow a symlink swapped in.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let before = StatKey::of(&file.metadata()?);
    let mut digester = Digester::new(Algorithm::Sha256);
    loop {
        let n = file.read(buf)?;
        if n == 0 {
            break;
        }
        digester.update(&buf[..n]);
    }
    let after = StatKey::of(&file.metadata()?);
    let settled = before.ctime_ns < started - RACY_WINDOW_NS;
    Ok(Hashed {
        digest: digester.finish(),
        trustworthy_key: (before == after && settled).then_some(before),
    })
}

fn parse(bytes: &[u8]) -> Option<HashMap<PathBuf, Cached>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut entries = HashMap::new();
    for line in lines {
        let mut fields = line.split(' ');
        let mut next = || fields.next();
        let key = StatKey {
            dev: next()?.parse().ok()?,
            ino: next()?.parse().ok()?,
            size: next()?.parse().ok()?,
            mtime_ns: next()?.parse().ok()?,
            ctime_ns: next()?.parse().ok()?,
        };
        let digest: Digest = next()?.parse().ok()?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&hex::decode(next()?).ok()?));
        entries.insert(path, Cached { key, digest });
    }
    Some(entries)
}
