//! Path lookups confined to the context root ("follow in root", like BuildKit's
//! `fs.RootPath`): `..` stops at the root and a symlink's target — relative or absolute — is
//! resolved as if the root were `/`. Nothing outside the context is ever reachable.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ContextError;

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (slash-separated, taken as relative to `root` even when it starts with `/`)
/// and returns the real location relative to `root`, with no symlink left among its parents.
/// The last component is followed too when `follow_final` is set. Components that do not
/// exist are kept lexically, so the caller's `lstat` reports them missing.
pub fn resolve_in_root(
    root: &Path,
    path: &Path,
    follow_final: bool,
) -> Result<PathBuf, ContextError> {
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
            Err(source) => return Err(ContextError::Io { path: abs, source }),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ContextError::SymlinkLoop { path: here });
        }
        let target = std::fs::read_link(&abs).map_err(|source| ContextError::Io {
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
        .map(|c| std::ffi::OsStr::from_bytes(c).to_os_string())
}

/// Errors that mean "this path does not exist" (a file used as a directory included).
pub(crate) fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}
