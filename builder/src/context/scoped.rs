//! Path lookups confined to the context root ("follow in root", like BuildKit's
//! `fs.RootPath`): `..` stops at the root and a symlink's target — relative or absolute — is
//! resolved as if the root were `/`. Nothing outside the context is ever reachable.

use std::path::{Path, PathBuf};

use runtime_exec::paths::ResolveError;

use super::ContextError;

pub(crate) use runtime_exec::paths::is_missing;

/// Resolves `path` (slash-separated, taken as relative to `root` even when it starts with `/`)
/// and returns the real location relative to `root`, with no symlink left among its parents.
/// The last component is followed too when `follow_final` is set. Components that do not
/// exist are kept lexically, so the caller's `lstat` reports them missing. The walk itself is
/// the executor's ([`runtime_exec::paths::resolve_relative`]): one implementation for rootfs
/// and context.
pub fn resolve_in_root(
    root: &Path,
    path: &Path,
    follow_final: bool,
) -> Result<PathBuf, ContextError> {
    runtime_exec::paths::resolve_relative(root, path, follow_final).map_err(|e| match e {
        ResolveError::Io { path, source } => ContextError::Io { path, source },
        ResolveError::SymlinkLoop { path } => ContextError::SymlinkLoop { path },
    })
}
