//! Paths inside a root directory (a container's rootfs, a build context): an image's or a
//! context's symlinks must never lead a mount, a file read or a copy out of the root (the
//! same job as Go's filepath-securejoin that runc uses, and BuildKit's `fs.RootPath`).
//! The one implementation of the workspace: the builder's context code calls it too.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `path` (under the root) exists but could not be inspected.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// More than [`MAX_SYMLINKS`] symlinks on the way (relative to the root).
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> Self {
        let kind = match &e {
            ResolveError::Io { source, .. } => source.kind(),
            ResolveError::SymlinkLoop { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Resolves `path` as if `root` were `/` and returns the real location under `root`:
/// symlinks (the last component's too) are followed with absolute targets taken relative to
/// `root`, and `..` never climbs above `root`. Components that do not exist yet are appended
/// as they are.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    Ok(root.join(resolve_relative(root, path, true)?))
}

/// Resolves `path` (slash-separated, taken as relative to `root` even when it starts with `/`)
/// and returns the real location relative to `root`, with no symlink left among its parents.
/// The last component is followed too when `follow_final` is set. Components that do not
/// exist are kept lexically, so the caller's `lstat` reports them missing; any other error
/// inspecting a component is returned rather than guessed around.
pub fn resolve_relative(
    root: &Path,
    path: &Path,
    follow_final: bool,
) -> Result<PathBuf, ResolveError> {
    let mut pending: VecDeque<OsString> = components(path.as_os_str().as_bytes()).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(component) = pending.pop_front() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(component);
        if pending.is_empty() && !follow_final {
            break;
        }
        let here: PathBuf = resolved.iter().collect();
        let abs = root.join(&here);
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => continue,
            Err(source) => return Err(ResolveError::Io { path: abs, source }),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ResolveError::SymlinkLoop { path: here });
        }
        let target = std::fs::read_link(&abs).map_err(|source| ResolveError::Io {
            path: abs.clone(),
            source,
        })?;
        resolved.pop();
        let target = target.as_os_str().as_bytes();
        if target.starts_with(b"/") {
            resolved.clear();
        }
        for part in components(target).collect::<Vec<_>>().into_iter().rev() {
            pending.push_front(part);
        }
    }
    Ok(resolved.iter().collect())
}

/// The non-empty, non-`.` components of a slash-separated byte path.
fn components(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

/// Errors that mean "this path does not exist" (a file used as a directory included).
pub fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("usr/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/bin/sh")).unwrap(),
            root.join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/usr/escape/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            resolve_relative(root, Path::new("bin"), false).unwrap(),
            Path::new("bin")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let err = resolve_in_root(dir.path(), Path::new("/a/x")).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }
}
