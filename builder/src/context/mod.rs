//! The build context of `rbuild build`: the directory COPY/ADD read from.
//!
//! - [`BuildContext::open`] fixes the root and the `.dockerignore` that applies
//!   ([`dockerignore`]: a per-Dockerfile `NAME.dockerignore` wins, as in BuildKit).
//! - [`BuildContext::resolve_sources`] turns the sources of one COPY/ADD into the list of
//!   entries to copy ([`sources`]): wildcards, directory-content semantics, `--exclude`,
//!   `--parents`, all confined to the root ([`scoped`]).
//! - [`BuildContext::checksum`] digests those entries for the step's cache key
//!   ([`checksum`]), with per-file content hashes remembered in a [`StatCache`].
//!
//! The solver does the copying; this module only decides what is copied and what it hashes to.

pub mod checksum;
pub mod dockerignore;
pub mod patternmatcher;
pub mod scoped;
pub mod sources;
pub mod stat_cache;
mod walk;
pub mod wildcard;

use std::io;
use std::path::{Path, PathBuf};

pub use patternmatcher::{PatternError, PatternMatcher};
pub use sources::{CopyEntry, CopySources};
pub use stat_cache::StatCache;

/// What kind of file an entry is (from `lstat`: a symlink is a [`FileKind::Symlink`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device node.
    Other,
}

/// Why the context could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The wording of Docker's classic builder, so users and scripts recognise it.
    #[error("COPY failed: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist")]
    NotFound { path: String },
    #[error("{origin}: {source}")]
    Pattern {
        /// Where the patterns came from: an ignore file's path or `--exclude`.
        origin: String,
        source: PatternError,
    },
    /// A pattern that passed the syntax check but cannot be matched (moby/patternmatcher
    /// reports these at match time too).
    #[error("matching {path}: {source}")]
    BadPattern {
        path: PathBuf,
        source: wildcard::BadPattern,
    },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    #[error("build context {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("stat cache {path}: {source}")]
    StatCache { path: PathBuf, source: io::Error },
}

/// A build context: a root directory plus the `.dockerignore` patterns that hide part of it.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    ignore: PatternMatcher,
}

impl BuildContext {
    /// Opens the context at `root`, reading the ignore file that applies to `dockerfile`
    /// (see [`dockerignore::ignore_file_for`]; `None` means only `ROOT/.dockerignore`).
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let origin = dockerignore::ignore_file_for(root, dockerfile)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let patterns = dockerignore::load_ignore_patterns(root, dockerfile)?;
        Self::with_ignore_patterns(root, &patterns).map_err(|e| with_origin(e, &origin))
    }

    /// Opens the context at `root` with explicit ignore patterns (already in ignore-file
    /// form, as [`dockerignore::parse_ignore_file`] returns them).
    pub fn with_ignore_patterns<S: AsRef<str>>(
        root: &Path,
        patterns: &[S],
    ) -> Result<Self, ContextError> {
        // Canonical once, so stat-cache keys and symlink scoping use the real directory.
        let root = root.canonicalize().map_err(|source| ContextError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let ignore = PatternMatcher::new(patterns).map_err(|source| ContextError::Pattern {
            origin: ".dockerignore".to_string(),
            source,
        })?;
        Ok(BuildContext { root, ignore })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn with_origin(e: ContextError, origin: &str) -> ContextError {
    match e {
        ContextError::Pattern { source, .. } if !origin.is_empty() => ContextError::Pattern {
            origin: origin.to_string(),
            source,
        },
        other => other,
    }
}
