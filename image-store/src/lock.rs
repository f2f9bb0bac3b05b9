//! Advisory file locks (flock) between rbuild processes sharing a store.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("lock {path}: {source}")]
pub struct LockError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// A held lock; released when dropped (closing the file releases a flock).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl StoreLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<StoreLock, LockError> {
        Self::lock(path, kind, false).map(|l| l.expect("blocking flock returns a lock"))
    }

    /// Takes the lock only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, kind: LockKind) -> Result<Option<StoreLock>, LockError> {
        Self::lock(path, kind, true)
    }

    /// Sets the lock file's mtime to now: for locks that stand for something in use, it
    /// records when that was last used.
    pub fn mark_used(&self) -> io::Result<()> {
        self.file.set_modified(std::time::SystemTime::now())
    }

    fn lock(
        path: &Path,
        kind: LockKind,
        nonblocking: bool,
    ) -> Result<Option<StoreLock>, LockError> {
        let err = |source| LockError {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(err)?;
        let mut op = match kind {
            LockKind::Shared => libc::LOCK_SH,
            LockKind::Exclusive => libc::LOCK_EX,
        };
        if nonblocking {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(StoreLock { file }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if nonblocking => return Ok(None),
                _ => return Err(err(e)),
            }
        }
    }
}
