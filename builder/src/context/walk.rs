//! Walking a directory of the context the way BuildKit's fsutil sends it: entries in byte
//! order of their names, symlinks not followed, `.dockerignore` applied to paths relative to
//! the context root, `--exclude` (and, for `--parents`, the include pattern) applied to paths
//! relative to the walk's base. A directory that is itself excluded is still entered when an
//! exception (`!pattern`) could re-include something below it, and then appears only as the
//! parent of what was re-included.

use std::ffi::OsString;
use std::fs::FileType;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::patternmatcher::{MatchInfo, PatternMatcher};
use super::{ContextError, FileKind};

/// One entry found by a walk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// Relative to the context root.
    pub in_context: PathBuf,
    /// Relative to the walk's base.
    pub rel: PathBuf,
    pub kind: FileKind,
}

/// The matchers a walk applies; `exclude` and `include` may be empty.
pub(crate) struct Filters<'a> {
    pub ignore: &'a PatternMatcher,
    pub exclude: &'a PatternMatcher,
    /// `--parents` source pattern: only matching paths (and their parents) are kept.
    pub include: Option<&'a PatternMatcher>,
}

/// Parent-directory match state of the three matchers.
#[derive(Debug, Clone, Default)]
pub(crate) struct WalkState {
    pub ignore: MatchInfo,
    pub exclude: MatchInfo,
    pub include: MatchInfo,
}

impl FileKind {
    pub(crate) fn of(file_type: FileType) -> FileKind {
        if file_type.is_dir() {
            FileKind::Dir
        } else if file_type.is_file() {
            FileKind::File
        } else if file_type.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        }
    }
}

pub(crate) fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// Appends to `out` everything below the directory `dir_in_context` (relative to `root`) that
/// the filters keep, depth first, parents before children. `dir_rel` is the directory's path
/// relative to the walk base (empty for the base itself); `state` holds its match results.
pub(crate) fn walk_dir(
    root: &Path,
    dir_in_context: &Path,
    dir_rel: &Path,
    filters: &Filters<'_>,
    state: &WalkState,
    out: &mut Vec<Found>,
) -> Result<(), ContextError> {
    let abs = root.join(dir_in_context);
    let io_err = |source| ContextError::Io {
        path: abs.clone(),
        source,
    };
    let mut children: Vec<(OsString, FileType)> = Vec::new();
    for entry in std::fs::read_dir(&abs).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        children.push((entry.file_name(), entry.file_type().map_err(io_err)?));
    }
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    for (name, file_type) in children {
        let in_context = dir_in_context.join(&name);
        let rel = dir_rel.join(&name);
        let kind = FileKind::of(file_type);
        let pattern_err = |source| ContextError::BadPattern {
            path: in_context.clone(),
            source,
        };

        let (ignored, ignore) = filters
            .ignore
            .matches_using_parent_results(bytes(&in_context), &state.ignore)
            .map_err(pattern_err)?;
        let (excluded, exclude) = filters
            .exclude
            .matches_using_parent_results(bytes(&rel), &state.exclude)
            .map_err(pattern_err)?;
        let (included, include) = match filters.include {
            Some(m) => m
                .matches_using_parent_results(bytes(&rel), &state.include)
                .map_err(pattern_err)?,
            None => (true, MatchInfo::default()),
        };
        let keep = !ignored && !excluded && included;

        if kind != FileKind::Dir {
            if keep {
                out.push(Found {
                    in_context,
                    rel,
                    kind,
                });
            }
            continue;
        }
        // Skipping a whole excluded directory is only an optimisation, valid when no
        // exception could bring back anything below it.
        let enter = (!ignored || filters.ignore.may_reinclude_below(bytes(&in_context)))
            && (!excluded || filters.exclude.may_reinclude_below(bytes(&rel)))
            && (included
                || filters
                    .include
                    .is_some_and(|m| m.may_match_below(bytes(&rel))));
        if !keep && !enter {
            continue;
        }
        let child_state = WalkState {
            ignore,
            exclude,
            include,
        };
        let mut below = Vec::new();
        walk_dir(root, &in_context, &rel, filters, &child_state, &mut below)?;
        if keep || !below.is_empty() {
            out.push(Found {
                in_context,
                rel,
                kind,
            });
            out.append(&mut below);
        }
    }
    Ok(())
}

/// Whether `matcher` matches `path` and the match state to hand to its children, computed
/// component by component as a walk from the top would (`path` is relative to the matcher's
/// base: the context root for `.dockerignore`).
pub(crate) fn match_state(
    matcher: &PatternMatcher,
    path: &Path,
) -> Result<(bool, MatchInfo), ContextError> {
    let mut info = MatchInfo::default();
    let mut ignored = false;
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let (hit, next) = matcher
            .matches_using_parent_results(bytes(&prefix), &info)
            .map_err(|source| ContextError::BadPattern {
                path: prefix.clone(),
                source,
            })?;
        ignored = hit;
        info = next;
    }
    Ok((ignored, info))
}
