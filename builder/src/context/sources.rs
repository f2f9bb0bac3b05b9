//! COPY/ADD source resolution, as BuildKit's Dockerfile frontend and fsutil's copier do it.
//!
//! Spec: dockerfile/reference.md, "COPY" (sources are relative to the context; wildcards use
//! Go's `filepath.Match`; a directory's *contents* are copied, not the directory), "COPY
//! --exclude" and "COPY --parents".
//!
//! - A source is cleaned as if rooted at `/`: `../x` and `/x` both mean `x` in the context.
//! - Its literal part is looked up following symlinks *within* the root; so is every match
//!   of a wildcard. Symlinks inside a copied directory are copied as symlinks.
//! - Wildcards are matched per path component (`*` never crosses `/`; `**` is just `*`
//!   here, as with Go's `filepath.Match`), and a matching directory is not searched further.
//! - `--exclude` patterns (moby/patternmatcher semantics, like `.dockerignore`) are matched
//!   against paths relative to where the source's wildcard starts — so `--exclude=*.txt hom*`
//!   drops `homework.txt` — and, inside a copied directory, relative to that directory; with
//!   `--parents`, relative to the pivot. A literal source is never excluded by its own name.
//! - `--parents` keeps each entry's path relative to the context root, or to the `/./` pivot
//!   in the source; its source is matched as a patternmatcher pattern, so `**` spans
//!   directories (reference.md's `./src/**/*.txt` example).
//! - A source that yields nothing is an error naming it, even for a wildcard: an empty COPY
//!   is almost always a mistake (BuildKit's `AllowEmptyWildcard` would copy nothing).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::patternmatcher::PatternMatcher;
use super::scoped::{is_missing, resolve_in_root};
use super::walk::{bytes, match_state, walk_dir, Filters, Found, WalkState};
use super::wildcard::{clean, go_match, has_wildcards};
use super::{BuildContext, ContextError, FileKind};

/// The source side of one COPY/ADD from the context, after variable expansion.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopySources<'a> {
    /// The `<src>` arguments, as written.
    pub sources: &'a [String],
    /// `--exclude` patterns.
    pub excludes: &'a [String],
    /// `--parents`.
    pub parents: bool,
}

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopyEntry {
    /// Where to read it: relative to the context root, with every symlink among its parents
    /// already resolved inside the root, so `root.join(source)` is safe to open (with
    /// `O_NOFOLLOW` for the last component, which is never followed for a [`FileKind::Symlink`]).
    pub source: PathBuf,
    /// Where it lands, relative to the COPY destination. Empty means the destination itself
    /// (a copied directory, whose contents follow). A single file source yields its base
    /// name; when the destination does not end in `/`, the solver renames it as COPY does.
    pub dest: PathBuf,
    /// The type from `lstat` at resolution time.
    pub kind: FileKind,
}

impl BuildContext {
    /// The entries one COPY/ADD copies from this context, in order: sources in the order
    /// given, each directory before its contents, names in byte order. Duplicates (same
    /// source and destination) appear once.
    pub fn resolve_sources(&self, spec: &CopySources<'_>) -> Result<Vec<CopyEntry>, ContextError> {
        let exclude =
            PatternMatcher::new(spec.excludes).map_err(|source| ContextError::Pattern {
                origin: "--exclude".to_string(),
                source,
            })?;
        let mut out = Vec::new();
        for src in spec.sources {
            let found = if spec.parents {
                self.resolve_with_parents(src, &exclude, &mut out)?
            } else {
                self.resolve_plain(src, &exclude, &mut out)?
            };
            if !found {
                return Err(ContextError::NotFound { path: src.clone() });
            }
        }
        let mut seen = HashSet::new();
        out.retain(|e| seen.insert((e.source.clone(), e.dest.clone())));
        Ok(out)
    }

    /// Without `--parents`: files land under their base name, directories contribute their
    /// contents. Returns whether anything matched.
    fn resolve_plain(
        &self,
        src: &str,
        exclude: &PatternMatcher,
        out: &mut Vec<CopyEntry>,
    ) -> Result<bool, ContextError> {
        let components = rooted_components(src);
        let Some(first_wild) = components.iter().position(|c| has_wildcards(c.as_bytes())) else {
            let real = resolve_in_root(&self.root, &join(&components), true)?;
            let dest = components.last().map(PathBuf::from).unwrap_or_default();
            return self.emit(&real, &dest, Placement::ContentsOfDirs, None, exclude, out);
        };
        let base = resolve_in_root(&self.root, &join(&components[..first_wild]), true)?;
        let mut matches = Vec::new();
        self.glob(
            &base,
            Path::new(""),
            &components[first_wild..],
            &mut matches,
        )?;
        let mut any = false;
        for rel in matches {
            let excluded = exclude
                .matches_or_parent_matches(bytes(&rel))
                .map_err(|source| ContextError::BadPattern {
                    path: rel.clone(),
                    source,
                })?;
            if excluded {
                continue;
            }
            // BuildKit follows each match as a source of its own (FollowSymlinks).
            let real = resolve_in_root(&self.root, &base.join(&rel), true)?;
            let dest = rel.file_name().map(PathBuf::from).unwrap_or_default();
            any |= self.emit(&real, &dest, Placement::ContentsOfDirs, None, exclude, out)?;
        }
        Ok(any)
    }

    /// With `--parents`: destinations keep the path below the pivot (`/./`) or the root.
    fn resolve_with_parents(
        &self,
        src: &str,
        exclude: &PatternMatcher,
        out: &mut Vec<CopyEntry>,
    ) -> Result<bool, ContextError> {
        let mut src = src;
        while let Some(rest) = src.strip_prefix("./") {
            src = rest;
        }
        let (pivot, pattern) = match src.find("/./") {
            Some(i) => (&src[..i], &src[i + 3..]),
            None => ("", src),
        };
        let base = resolve_in_root(&self.root, &join(&rooted_components(pivot)), true)?;
        let components = rooted_components(pattern);
        let first_wild = components.iter().position(|c| has_wildcards(c.as_bytes()));
        let literal_len = first_wild.unwrap_or(components.len());

        let mut found = Vec::new();
        let any = match first_wild {
            None => {
                let dest = join(&components);
                let real = resolve_in_root(&self.root, &base.join(&dest), true)?;
                self.emit(
                    &real,
                    &dest,
                    Placement::KeepPath,
                    Some(&dest),
                    exclude,
                    &mut found,
                )?
            }
            Some(_) => {
                let prefix = join(&components[..literal_len]);
                let start = resolve_in_root(&self.root, &base.join(&prefix), true)?;
                if self.kind_of(&start)? != Some(FileKind::Dir) {
                    return Ok(false);
                }
                let include = PatternMatcher::new(&[join(&components).to_string_lossy()]).map_err(
                    |source| ContextError::Pattern {
                        origin: format!("COPY --parents source {src:?}"),
                        source,
                    },
                )?;
                let state = WalkState {
                    ignore: match_state(&self.ignore, &start)?.1,
                    exclude: match_state(exclude, &prefix)?.1,
                    include: match_state(&include, &prefix)?.1,
                };
                let filters = Filters {
                    ignore: &self.ignore,
                    exclude,
                    include: Some(&include),
                };
                let mut below = Vec::new();
                walk_dir(&self.root, &start, &prefix, &filters, &state, &mut below)?;
                let any = !below.is_empty();
                found.extend(below.into_iter().map(entry));
                any
            }
        };
        if !any {
            return Ok(false);
        }
        // The parent directories the destination path keeps (for a literal source, all but
        // the source itself), so the solver can create them with the context's metadata.
        let parents_len = if first_wild.is_some() {
            literal_len
        } else {
            literal_len.saturating_sub(1)
        };
        for i in 1..=parents_len {
            let dest = join(&components[..i]);
            let source = resolve_in_root(&self.root, &base.join(&dest), true)?;
            out.push(CopyEntry {
                source,
                dest,
                kind: FileKind::Dir,
            });
        }
        out.append(&mut found);
        Ok(true)
    }

    /// Emits the source at `real` (already resolved in the root) under `dest`: a file as
    /// itself, a directory as itself plus its filtered contents (at the destination itself
    /// with [`Placement::ContentsOfDirs`]). `exclude_self` is the path `--exclude` sees for the
    /// source itself (`None`: a literal source is never excluded). Returns false when the
    /// source is missing or hidden by `.dockerignore`/`--exclude`.
    fn emit(
        &self,
        real: &Path,
        dest: &Path,
        placement: Placement,
        exclude_self: Option<&Path>,
        exclude: &PatternMatcher,
        out: &mut Vec<CopyEntry>,
    ) -> Result<bool, ContextError> {
        let Some(kind) = self.kind_of(real)? else {
            return Ok(false);
        };
        let (ignored, ignore_info) = match_state(&self.ignore, real)?;
        let (excluded, exclude_info) = match exclude_self {
            Some(path) => match_state(exclude, path)?,
            None => (false, Default::default()),
        };
        if kind != FileKind::Dir {
            if ignored || excluded {
                return Ok(false);
            }
            out.push(CopyEntry {
                source: real.to_path_buf(),
                dest: dest.to_path_buf(),
                kind,
            });
            return Ok(true);
        }
        let dest = match placement {
            Placement::ContentsOfDirs => Path::new(""),
            Placement::KeepPath => dest,
        };
        let may_enter = (!ignored || self.ignore.may_reinclude_below(bytes(real)))
            && (!excluded || exclude.may_reinclude_below(bytes(dest)));
        let mut below = Vec::new();
        if may_enter {
            let state = WalkState {
                ignore: ignore_info,
                exclude: exclude_info,
                include: Default::default(),
            };
            let filters = Filters {
                ignore: &self.ignore,
                exclude,
                include: None,
            };
            walk_dir(&self.root, real, dest, &filters, &state, &mut below)?;
        }
        // A hidden directory exists in the context only as the parent of what an exception
        // re-included.
        if (ignored || excluded) && below.is_empty() {
            return Ok(false);
        }
        out.push(CopyEntry {
            source: real.to_path_buf(),
            dest: dest.to_path_buf(),
            kind,
        });
        out.extend(below.into_iter().map(entry));
        Ok(true)
    }

    /// Expands wildcard `components` below `dir` (relative to the root; `rel` is the path
    /// matched so far). Like Go's `filepath.Walk` under BuildKit's resolver, it does not
    /// descend through symlinks while matching.
    fn glob(
        &self,
        dir: &Path,
        rel: &Path,
        components: &[String],
        matches: &mut Vec<PathBuf>,
    ) -> Result<(), ContextError> {
        let Some((pattern, rest)) = components.split_first() else {
            return Ok(());
        };
        let abs = self.root.join(dir).join(rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(source) => return Err(ContextError::Io { path: abs, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ContextError::Io {
                path: abs.clone(),
                source,
            })?;
            let is_dir = entry
                .file_type()
                .map_err(|source| ContextError::Io {
                    path: abs.clone(),
                    source,
                })?
                .is_dir();
            names.push((entry.file_name(), is_dir));
        }
        names.sort_by(|a, b| bytes(Path::new(&a.0)).cmp(bytes(Path::new(&b.0))));
        for (name, is_dir) in names {
            let hit = go_match(pattern.as_bytes(), bytes(Path::new(&name))).map_err(|source| {
                ContextError::BadPattern {
                    path: PathBuf::from(pattern),
                    source,
                }
            })?;
            if !hit {
                continue;
            }
            let path = rel.join(&name);
            if rest.is_empty() {
                matches.push(path);
            } else if is_dir {
                self.glob(dir, &path, rest, matches)?;
            }
        }
        Ok(())
    }

    /// The type of `path` (relative to the root) from `lstat`, `None` when it is missing.
    fn kind_of(&self, path: &Path) -> Result<Option<FileKind>, ContextError> {
        let abs = self.root.join(path);
        match std::fs::symlink_metadata(&abs) {
            Ok(meta) => Ok(Some(FileKind::of(meta.file_type()))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(source) => Err(ContextError::Io { path: abs, source }),
        }
    }
}

/// Where a directory source's contents land.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Docker's directory-content semantics: into the destination itself.
    ContentsOfDirs,
    /// `--parents`: under the directory's own path.
    KeepPath,
}

fn entry(found: Found) -> CopyEntry {
    CopyEntry {
        source: found.in_context,
        dest: found.rel,
        kind: found.kind,
    }
}

/// The components of `path` cleaned as if rooted at `/`, so `..` cannot climb out.
fn rooted_components(path: &str) -> Vec<String> {
    clean(&format!("/{path}"))
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn join(components: &[String]) -> PathBuf {
    components.iter().collect()
}
