//! COPY, ADD and WORKDIR: steps that put files into the stage's filesystem from the build
//! context, another stage or image, or inline heredocs.
//!
//! Sources are resolved by the build context (`crate::context`: .dockerignore, wildcards,
//! `--exclude`, `--parents`, confinement to the context) and checksummed for the cache key
//! without timestamps. The copy runs on the host, into the step's overlay snapshot mounted in a
//! private mount namespace (see `snapshot`), so that copying into existing directories behaves
//! exactly as in the image: parent directories keep their attributes (overlayfs copies them
//! up) and symlinks in the destination path resolve inside the image, never on the host.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::git_source::GitSource;
use super::snapshot::{commit_upper, lower_dirs, mount_read_only, with_merged, Workspace};
use super::stage::{step_error, Layer, Solver, StageState};
use super::{key_of, BuildError};
use crate::context::{BuildContext, ContextError, CopyEntry, CopySources, FileKind};
use crate::dockerfile::instructions::{Files, Located};
use crate::dockerfile::{Chmod, Instruction};
use crate::image_config::{join_workdir, Scope};
use oci::compression::Compression;

/// Where `COPY --from` takes its files.
pub(crate) enum FromSource {
    Stage(usize),
    /// An image from the store: its layers and its manifest digest (for the cache key).
    Image((Vec<Layer>, oci::Digest)),
}

/// A COPY or ADD after variable expansion.
pub(crate) struct CopyPlan {
    /// What to copy from the context (empty with `--from`: resolved once that is mounted).
    entries: Vec<CopyEntry>,
    inline: Vec<(String, String)>,
    /// Destination inside the image, absolute; a trailing `/` kept.
    dest: String,
    from_source: Option<FromSource>,
    /// Without `from_source`: the `--build-context` the entries come from (the build
    /// context when `None`).
    named_context: Option<String>,
    chown: Option<String>,
    chmod: Option<Chmod>,
    link: bool,
    parents: bool,
    excludes: Vec<String>,
    /// ADD: unpack local archives.
    unpack_archives: bool,
    /// The sources as written, after expansion (URLs excluded).
    source_names: Vec<String>,
    /// ADD of URLs: fetched while planning, since their content is part of the cache key.
    downloads: Vec<Download>,
    /// ADD of Git repositories: resolved to commits while planning, fetched on a miss.
    git: Vec<GitPlan>,
}

/// A Git source of ADD and the commit its ref names.
pub(crate) struct GitPlan {
    source: GitSource,
    commit: String,
    keep_git_dir: bool,
}

/// A file ADD fetched from a URL.
pub(crate) struct Download {
    url: String,
    file: tempfile::NamedTempFile,
    digest: oci::Digest,
    /// From Last-Modified, as BuildKit sets the file's mtime.
    modified: Option<std::time::SystemTime>,
}

/// The cache key of a COPY/ADD: its parent (none with --link), the sources' content, and
/// everything that decides where and how they land.
pub(crate) fn cache_key(
    solver: &Solver,
    state: &StageState,
    plan: &CopyPlan,
    at: &Located<Instruction>,
) -> Result<oci::Digest, BuildError> {
    let sources = match &plan.from_source {
        Some(FromSource::Stage(stage)) => {
            solver.solve(*stage)?.fs_key.to_string() + &plan.source_names.join("\0")
        }
        Some(FromSource::Image((_, digest))) => digest.to_string() + &plan.source_names.join("\0"),
        None => {
            let context = solver.source_context(plan.named_context.as_deref());
            solver
                .checksum(context, &plan.entries)
                .map_err(|e| step_error(at, e))?
                .to_string()
        }
    };
    let inline: Vec<String> = plan
        .inline
        .iter()
        .map(|(n, c)| format!("{n}\0{c}"))
        .chain(
            plan.downloads
                .iter()
                .map(|d| format!("{}\0{}", d.url, d.digest)),
        )
        .chain(plan.git.iter().map(|g| {
            format!(
                "git\0{}\0{}\0{:?}\0{}",
                g.source.remote, g.commit, g.source.subdir, g.keep_git_dir
            )
        }))
        .collect();
    let parent = if plan.link {
        "link".to_string()
    } else {
        state.fs_key.to_string()
    };
    let flags = format!(
        "{:?}{:?}{}{}{:?}",
        plan.chown, plan.chmod, plan.unpack_archives, plan.parents, plan.excludes
    );
    Ok(key_of(&[
        b"copy",
        parent.as_bytes(),
        sources.as_bytes(),
        inline.join("\0").as_bytes(),
        plan.dest.as_bytes(),
        flags.as_bytes(),
    ]))
}

/// A COPY/ADD's words with their variables expanded.
pub(crate) struct CopyWords {
    dest: String,
    from: Option<String>,
    checksum: Option<String>,
    sources: Vec<String>,
    excludes: Vec<String>,
    /// Heredoc files: (name, content).
    inline: Vec<(String, String)>,
    chown: Option<String>,
}

/// Expands a COPY/ADD's words in the stage's scope, noting the variables nothing set (the
/// UndefinedVar check); `rbuild build --check` stops here.
pub(crate) fn expand_words(
    solver: &Solver,
    state: &StageState,
    at: &Located<Instruction>,
) -> Result<CopyWords, BuildError> {
    let (files, from, chown, excludes, checksum): (&Files, _, _, _, _) = match &at.value {
        Instruction::Copy(c) => (&c.files, c.from.as_ref(), &c.chown, &c.exclude, None),
        Instruction::Add(a) => (&a.files, None, &a.chown, &a.exclude, a.checksum.as_ref()),
        _ => return Err(step_error(at, "not a COPY or ADD")),
    };
    let scope = Scope::new(&state.config, &state.args);
    let expand = |w: &str| {
        let expansion = solver
            .lex
            .expand(w, &scope)
            .map_err(|e| step_error(at, e))?;
        solver.note_unset(state, at, &expansion.unset);
        Ok::<_, BuildError>(expansion.word)
    };
    let inline = files
        .inline
        .iter()
        .map(|f| {
            let content = if f.expand {
                expand(&f.content)?
            } else {
                f.content.clone()
            };
            Ok((f.name.clone(), content))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok(CopyWords {
        dest: expand(&files.dest)?,
        from: from.map(|name| expand(name)).transpose()?,
        checksum: checksum.map(|c| expand(c)).transpose()?,
        sources: files
            .sources
            .iter()
            .map(|s| expand(s))
            .collect::<Result<_, _>>()?,
        excludes: excludes
            .iter()
            .map(|e| expand(e))
            .collect::<Result<_, _>>()?,
        inline,
        chown: chown.as_ref().map(|c| expand(c)).transpose()?,
    })
}

/// Expands a COPY/ADD and resolves its context sources.
pub(crate) fn plan(
    solver: &Solver,
    index: usize,
    state: &StageState,
    at: &Located<Instruction>,
) -> Result<CopyPlan, BuildError> {
    let (chmod, link, unpack, parents, keep_git_dir) = match &at.value {
        Instruction::Copy(c) => (&c.chmod, c.link, false, c.parents, false),
        Instruction::Add(a) => (
            &a.chmod,
            a.link,
            a.unpack.unwrap_or(true),
            false,
            a.keep_git_dir,
        ),
        _ => return Err(step_error(at, "not a COPY or ADD")),
    };
    let CopyWords {
        mut dest,
        from,
        checksum,
        sources,
        excludes,
        inline,
        chown,
    } = expand_words(solver, state, at)?;
    let workdir = state
        .config
        .config
        .as_ref()
        .map(|c| c.working_dir.clone())
        .unwrap_or_default();
    if !dest.starts_with('/') {
        let trailing = dest.ends_with('/') || dest == "." || dest.is_empty();
        dest = join_workdir(&workdir, &dest);
        if trailing && !dest.ends_with('/') {
            dest.push('/');
        }
    }
    let (from_source, named_context) = match from {
        Some(name) if solver.is_named_directory(&name) => (None, Some(name)),
        Some(name) => (
            Some(match solver.stage_index(&name, index) {
                Some(stage) => FromSource::Stage(stage),
                None => {
                    FromSource::Image(solver.image_layers(&name).map_err(|e| step_error(at, e))?)
                }
            }),
            None,
        ),
        None => (None, None),
    };
    let mut source_names = Vec::new();
    let mut downloads = Vec::new();
    let mut git = Vec::new();
    let is_add = matches!(at.value, Instruction::Add(_));
    for s in sources {
        if let Some(source) = GitSource::parse(&s).filter(|_| is_add) {
            let commit = source
                .resolve(
                    solver
                        .options
                        .ssh_agents
                        .get("default")
                        .map(PathBuf::as_path),
                )
                .map_err(|e| step_error(at, e))?;
            // For Git, --checksum is the commit id or a prefix of it.
            if let Some(expected) = checksum.as_deref() {
                if !commit.starts_with(expected) {
                    return Err(step_error(
                        at,
                        format!("{s}: checksum mismatch: --checksum says {expected}, the ref is at commit {commit}"),
                    ));
                }
            }
            git.push(GitPlan {
                source,
                commit,
                keep_git_dir,
            });
            continue;
        }
        let is_url = s.starts_with("http://") || s.starts_with("https://");
        if is_url {
            if matches!(at.value, Instruction::Copy(_)) {
                return Err(step_error(
                    at,
                    format!("{s}: COPY cannot take a URL; use ADD"),
                ));
            }
            downloads
                .push(download(solver, &s, checksum.as_deref()).map_err(|e| step_error(at, e))?);
        } else {
            source_names.push(s);
        }
    }
    if checksum.is_some() && downloads.is_empty() && git.is_empty() {
        return Err(step_error(
            at,
            "--checksum applies to URL and Git sources only",
        ));
    }
    let entries = if from_source.is_none() && !source_names.is_empty() {
        let spec = CopySources {
            sources: &source_names,
            excludes: &excludes,
            parents,
        };
        solver
            .source_context(named_context.as_deref())
            .resolve_sources(&spec)
            .map_err(|e| step_error(at, copy_failed(e)))?
    } else {
        Vec::new()
    };
    let chmod = match chmod {
        Some(c) => {
            let scope = Scope::new(&state.config, &state.args);
            let mut ex = |w: &str| {
                solver
                    .lex
                    .process_word(w, &scope)
                    .map_err(|e| e.to_string())
            };
            Some(c.resolve(&mut ex).map_err(|e| step_error(at, e))?)
        }
        None => None,
    };
    Ok(CopyPlan {
        entries,
        inline,
        dest,
        from_source,
        named_context,
        chown,
        chmod,
        link,
        parents,
        excludes,
        unpack_archives: unpack,
        source_names,
        downloads,
        git,
    })
}

/// Copies into a snapshot of the stage and returns the layer.
pub(crate) fn execute(
    solver: &Solver,
    state: &StageState,
    plan: &CopyPlan,
    at: &Located<Instruction>,
    in_image: bool,
) -> Result<Option<Layer>, BuildError> {
    let store = solver.store;
    let ws = Workspace::new(store)?;
    // --link copies onto nothing: the layer does not depend on what is below it.
    let lower = if plan.link {
        lower_dirs(store, &[], &ws)?
    } else {
        lower_dirs(store, &state.layers, &ws)?
    };
    let from_lower = match &plan.from_source {
        Some(FromSource::Stage(stage)) => {
            Some(lower_dirs(store, &solver.solve(*stage)?.layers, &ws)?)
        }
        Some(FromSource::Image((layers, _))) => Some(lower_dirs(store, layers, &ws)?),
        None => None,
    };
    with_merged(&ws, &lower, |root| {
        // With --from, the other filesystem is mounted read-only beside ours and resolved like
        // a context without ignore patterns.
        let (source_root, entries, preserve_owner) = match &from_lower {
            Some(from_lower) => {
                let from_root = ws.path("from");
                mount_read_only(from_lower, &from_root, &ws.path("empty"))?;
                let context = BuildContext::with_ignore_patterns(&from_root, &[] as &[&str])
                    .map_err(|e| step_error(at, e))?;
                let spec = CopySources {
                    sources: &plan.source_names,
                    excludes: &plan.excludes,
                    parents: plan.parents,
                };
                let entries = context
                    .resolve_sources(&spec)
                    .map_err(|e| step_error(at, copy_failed(e)))?;
                (context.root().to_path_buf(), entries, true)
            }
            None => (
                solver
                    .source_context(plan.named_context.as_deref())
                    .root()
                    .to_path_buf(),
                plan.entries.clone(),
                false,
            ),
        };
        let owner = match &plan.chown {
            Some(spec) => {
                let (uid, gid, _) =
                    runtime_exec::user::resolve(root, spec).map_err(|e| step_error(at, e))?;
                Some((uid, gid))
            }
            None if preserve_owner => None,
            None => Some((0, 0)),
        };
        let mut copier = Copier::new(owner, plan.chmod.clone());
        // `COPY a.txt /dest` names the file itself unless /dest is a directory or ends in `/`;
        // several sources (or a wildcard match) always go into a directory.
        let top_level: Vec<&CopyEntry> = entries
            .iter()
            .filter(|e| e.dest.components().count() <= 1)
            .collect();
        let single_file = top_level.len() + plan.inline.len() + plan.downloads.len() == 1
            && top_level.first().is_none_or(|e| e.kind != FileKind::Dir)
            && plan.git.is_empty();
        let rename = single_file && !plan.dest.ends_with('/') && !dest_is_dir(root, &plan.dest);
        let (dest_dir, renamed) = if rename {
            let dest = Path::new(&plan.dest);
            let parent = dest
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                ensure_dir(root, &parent, owner)?,
                dest.file_name().map(PathBuf::from),
            )
        } else {
            (ensure_dir(root, &plan.dest, owner)?, None)
        };
        for entry in &entries {
            if entry.dest.as_os_str().is_empty() {
                continue; // the destination directory itself, made above
            }
            let src = source_root.join(&entry.source);
            let is_top = entry.dest.components().count() == 1;
            if plan.unpack_archives && is_top && entry.kind == FileKind::File {
                if let Some(archive) = open_archive(&src).map_err(|e| step_error(at, e))? {
                    copier.flush().map_err(|e| step_error(at, e))?;
                    // An archive's destination is a directory even without a trailing '/'.
                    let into = match renamed {
                        Some(_) => ensure_dir(root, &plan.dest, owner)?,
                        None => dest_dir.clone(),
                    };
                    extract_archive(archive, &into).map_err(|e| step_error(at, e))?;
                    continue;
                }
            }
            let target = match &renamed {
                Some(name) => dest_dir.join(name),
                None => dest_dir.join(&entry.dest),
            };
            copier
                .copy_one(&src, &target, entry.kind, &entry.source)
                .map_err(|e| step_error(at, e))?;
        }
        copier.flush().map_err(|e| step_error(at, e))?;
        // A repository is added as a directory of the context would be: its content.
        for g in &plan.git {
            let checkout = ws.path("git");
            fs::create_dir(&checkout).map_err(BuildError::other)?;
            let ssh_agent = solver.options.ssh_agents.get("default");
            let repo_root = g
                .source
                .checkout(
                    &g.commit,
                    &checkout,
                    g.keep_git_dir,
                    ssh_agent.map(PathBuf::as_path),
                )
                .map_err(|e| step_error(at, e))?;
            let repo = BuildContext::with_ignore_patterns(&repo_root, &[] as &[&str])
                .map_err(|e| step_error(at, e))?;
            let whole = CopySources {
                sources: &[".".to_string()],
                excludes: &plan.excludes,
                parents: false,
            };
            let entries = repo
                .resolve_sources(&whole)
                .map_err(|e| step_error(at, copy_failed(e)))?;
            for entry in entries.iter().filter(|e| !e.dest.as_os_str().is_empty()) {
                copier
                    .copy_one(
                        &repo_root.join(&entry.source),
                        &dest_dir.join(&entry.dest),
                        entry.kind,
                        &entry.source,
                    )
                    .map_err(|e| step_error(at, e))?;
            }
            copier.flush().map_err(|e| step_error(at, e))?;
            fs::remove_dir_all(&checkout).map_err(BuildError::other)?;
        }
        for d in &plan.downloads {
            let target = match &renamed {
                Some(file) => dest_dir.join(file),
                None => dest_dir.join(url_file_name(&d.url)),
            };
            fs::copy(d.file.path(), &target)
                .map_err(|e| step_error(at, format!("{}: {e}", d.url)))?;
            // BuildKit gives downloaded files mode 0600 and the server's Last-Modified time.
            copier
                .finish_attributes(&target, 0o600, false)
                .map_err(|e| step_error(at, e))?;
            if let Some(modified) = d.modified {
                fs::File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_modified(modified))
                    .map_err(|e| step_error(at, e))?;
            }
        }
        for (name, content) in &plan.inline {
            let target = match &renamed {
                Some(file) => dest_dir.join(file),
                None => dest_dir.join(name),
            };
            fs::write(&target, content).map_err(BuildError::other)?;
            copier
                .finish_attributes(&target, 0o644, false)
                .map_err(|e| step_error(at, e))?;
        }
        copier.finish_dirs().map_err(|e| step_error(at, e))
    })?;
    commit_upper(store, &ws, solver.options, in_image, false)
}

fn workdir_of(state: &StageState) -> (String, String) {
    let rc = state.config.config.clone().unwrap_or_default();
    let dir = if rc.working_dir.is_empty() {
        "/".to_string()
    } else {
        rc.working_dir
    };
    (dir, rc.user)
}

pub(crate) fn workdir_key(state: &StageState) -> oci::Digest {
    let (dir, user) = workdir_of(state);
    key_of(&[
        b"workdir",
        state.fs_key.as_str().as_bytes(),
        dir.as_bytes(),
        user.as_bytes(),
    ])
}

/// WORKDIR creates its directory, owned by the current USER, as BuildKit does.
pub(crate) fn workdir(
    solver: &Solver,
    state: &StageState,
    in_image: bool,
) -> Result<Option<Layer>, BuildError> {
    let (dir, user) = workdir_of(state);
    let store = solver.store;
    let ws = Workspace::new(store)?;
    let lower = lower_dirs(store, &state.layers, &ws)?;
    with_merged(&ws, &lower, |root| {
        let owner = if user.is_empty() {
            None
        } else {
            let (uid, gid, _) = runtime_exec::user::resolve(root, &user)
                .map_err(|e| BuildError::other(e.to_string()))?;
            Some((uid, gid))
        };
        ensure_dir(root, &dir, owner).map(|_| ())
    })?;
    commit_upper(store, &ws, solver.options, in_image, false)
}

/// The host path of `name` in the build context; never outside it.
/// Where `name` of a context (the build context, or a `--build-context` directory) is.
pub(crate) fn context_path(
    solver: &Solver,
    context: Option<&str>,
    name: &str,
) -> Result<PathBuf, String> {
    let root = solver.source_context(context).root();
    let rel = crate::context::scoped::resolve_in_root(root, Path::new(name), true)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(root.join(rel))
}

/// A checksum of what `name` in a context holds, for cache keys.
pub(crate) fn context_checksum(
    solver: &Solver,
    context: Option<&str>,
    name: &str,
) -> Result<oci::Digest, String> {
    let sources = [name.to_string()];
    let spec = CopySources {
        sources: &sources,
        ..CopySources::default()
    };
    let context = solver.source_context(context);
    let entries = context.resolve_sources(&spec).map_err(copy_failed)?;
    solver
        .checksum(context, &entries)
        .map_err(|e| e.to_string())
}

/// Fetches `url` into the store's scratch space, checking `--checksum` when given.
fn download(solver: &Solver, url: &str, checksum: Option<&str>) -> Result<Download, String> {
    let expected = checksum
        .map(|c| {
            c.parse::<oci::Digest>()
                .map_err(|e| format!("--checksum: {e}"))
        })
        .transpose()?;
    let dir = solver.store.scratch_dir().map_err(|e| e.to_string())?;
    let mut file = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(&dir)
        .map_err(|e| e.to_string())?;
    let mut response = reqwest::blocking::get(url)
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{url}: {e}"))?;
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let algorithm = expected
        .as_ref()
        .map_or(oci::Algorithm::Sha256, |d| d.algorithm());
    let mut hashing = HashingFile {
        file: file.as_file_mut(),
        digester: oci::Digester::new(algorithm),
    };
    io::copy(&mut response, &mut hashing).map_err(|e| format!("{url}: {e}"))?;
    let digest = hashing.digester.finish();
    if let Some(expected) = expected {
        if expected != digest {
            return Err(format!(
                "{url}: digest mismatch: --checksum says {expected}, the download is {digest}"
            ));
        }
    }
    Ok(Download {
        url: url.to_string(),
        file,
        digest,
        modified,
    })
}

/// Writes to a file while hashing what is written.
struct HashingFile<'a> {
    file: &'a mut fs::File,
    digester: oci::Digester,
}

impl io::Write for HashingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The file name ADD gives a URL's content: the last segment of its path.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// An HTTP date (RFC 7231 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(text: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)?
        + 1;
    let secs = oci::timestamp::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z"))?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).ok()?))
}

/// BuildKit's wording for a source that matches nothing.
fn copy_failed(e: ContextError) -> String {
    match e {
        ContextError::NotFound { path } => format!(
            "failed to compute cache key: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist"
        ),
        other => other.to_string(),
    }
}

/// ADD of a local tar archive: its contents land in the destination directory.
fn extract_archive(archive: Box<dyn Read + Send>, dest_dir: &Path) -> Result<(), String> {
    oci::layer::apply(
        archive,
        Compression::None,
        dest_dir,
        oci::layer::ApplyMode::Merged,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// ADD's local archives: a tar, plain or compressed with gzip, bzip2, xz or zstd (reference.md,
/// ADD), recognised as BuildKit does (`isArchivePath`): by a valid first tar header after
/// decompression. Anything else, such as a gzipped text file, is copied as a file. Returns the
/// archive's decompressed bytes.
fn open_archive(path: &Path) -> Result<Option<Box<dyn Read + Send>>, String> {
    let failed = |e: io::Error| format!("{}: {e}", path.display());
    let mut file = fs::File::open(path).map_err(failed)?;
    let mut magic = Vec::with_capacity(6);
    (&mut file)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(failed)?;
    file.seek(io::SeekFrom::Start(0)).map_err(failed)?;
    let mut decoded: Box<dyn Read + Send> = match magic[..] {
        [0x1f, 0x8b, ..] => {
            oci::compression::decompress(file, Compression::Gzip).map_err(failed)?
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            oci::compression::decompress(file, Compression::Zstd).map_err(failed)?
        }
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => {
            Box::new(bzip2::read::MultiBzDecoder::new(io::BufReader::new(file)))
        }
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Box::new(
            liblzma::read::XzDecoder::new_multi_decoder(io::BufReader::new(file)),
        ),
        _ => Box::new(file),
    };
    let mut header = Vec::with_capacity(512);
    // A stream that fails to decompress only looked compressed: a file, not an archive.
    match (&mut decoded).take(512).read_to_end(&mut header) {
        Ok(_) if is_tar_header(&header) => {
            Ok(Some(Box::new(io::Cursor::new(header).chain(decoded))))
        }
        _ => Ok(None),
    }
}

/// Whether `block` is a tar header: its checksum field (octal) matches the sum of its bytes
/// with that field counted as spaces, unsigned or (old tars) signed. An all-zero block, the
/// end of an empty archive, has no checksum and is not one.
fn is_tar_header(block: &[u8]) -> bool {
    const CHECKSUM: std::ops::Range<usize> = 148..156;
    if block.len() != 512 {
        return false;
    }
    let Ok(field) = std::str::from_utf8(&block[CHECKSUM]) else {
        return false;
    };
    let Ok(recorded) = i64::from_str_radix(field.trim_matches([' ', '\0']), 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if CHECKSUM.contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    recorded == unsigned || recorded == signed
}

fn dest_is_dir(root: &Path, dest: &str) -> bool {
    runtime_exec::paths::resolve_in_root(root, Path::new(dest))
        .map(|p| p.is_dir())
        .unwrap_or(false)
}

/// Creates `dir` (inside the image at `root`) and its missing parents, owned by `owner`.
fn ensure_dir(root: &Path, dir: &str, owner: Option<(u32, u32)>) -> Result<PathBuf, BuildError> {
    let mut current = PathBuf::from("/");
    for component in Path::new(dir).components() {
        if let Component::Normal(c) = component {
            current.push(c);
            let host =
                runtime_exec::paths::resolve_in_root(root, &current).map_err(BuildError::other)?;
            if !host.exists() {
                fs::create_dir(&host)
                    .map_err(|e| BuildError::other(format!("{}: {e}", current.display())))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                    .map_err(BuildError::other)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&host, Some(uid), Some(gid))
                        .map_err(BuildError::other)?;
                }
            }
        }
    }
    runtime_exec::paths::resolve_in_root(root, Path::new(dir)).map_err(BuildError::other)
}

/// Runs of queued files with one destination directory, at most [`COPY_BATCH`] long: the
/// copy threads take whole runs, so that two threads rarely create files in one directory at
/// once (each creation takes the directory's lock).
fn batches_by_directory(queued: &[QueuedFile]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    for i in 1..=queued.len() {
        let ends = i == queued.len()
            || i - start >= COPY_BATCH
            || queued[i].dest.parent() != queued[start].dest.parent();
        if ends {
            batches.push(start..i);
            start = i;
        }
    }
    batches
}

/// The longest run of files of one directory a copy thread takes at a time.
const COPY_BATCH: usize = 256;

/// Regular files queued by [`Copier`] are copied by this many threads at most: the work is
/// mostly per-file system calls, which run in parallel.
const COPY_THREADS: usize = 4;
/// Fewer queued files than this are copied on the calling thread.
const PARALLEL_COPY_MIN_FILES: usize = 64;

/// Copies files with the step's ownership and mode rules, keeping hardlinks together.
///
/// Entries come parent first. Directories, symlinks and hardlinked files are made at once, in
/// order; plain regular files are queued and copied on several threads by [`Copier::flush`]
/// (their directories exist by then). The order of entries still decides when two of them
/// land on the same path: a path met twice flushes the queue first. Directory attributes are
/// set by [`Copier::finish_dirs`], after everything inside them is written, since every new
/// entry changes its directory's mtime (BuildKit's copy sets them last too).
struct Copier {
    /// `None` keeps each file's owner (COPY --from), else every file gets this owner.
    owner: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    /// (dev, inode) of a source already copied → where it went.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    /// Regular files waiting for [`Copier::flush`].
    queued: Vec<QueuedFile>,
    /// Every destination of this copy so far.
    targets: HashSet<PathBuf>,
    /// Directories whose attributes [`Copier::finish_dirs`] sets, with their source's metadata.
    dirs: Vec<(PathBuf, fs::Metadata)>,
}

struct QueuedFile {
    src: PathBuf,
    dest: PathBuf,
    meta: fs::Metadata,
    /// The source as the step names it, for errors.
    name: PathBuf,
}

impl Copier {
    fn new(owner: Option<(u32, u32)>, chmod: Option<Chmod>) -> Copier {
        Copier {
            owner,
            chmod,
            hardlinks: HashMap::new(),
            queued: Vec::new(),
            targets: HashSet::new(),
            dirs: Vec::new(),
        }
    }

    /// Copies (or queues) one entry: a directory without its contents, which are entries of
    /// their own. `name` is the source as the step names it, for errors.
    fn copy_one(
        &mut self,
        src: &Path,
        dest: &Path,
        kind: FileKind,
        name: &Path,
    ) -> Result<(), String> {
        let failed = |e: io::Error| format!("{}: {e}", name.display());
        if !self.targets.insert(dest.to_path_buf()) {
            // A second entry for one path: the earlier one must be on disk to be replaced.
            self.flush()?;
        }
        let meta = fs::symlink_metadata(src).map_err(failed)?;
        if kind == FileKind::File && meta.nlink() == 1 {
            self.queued.push(QueuedFile {
                src: src.to_path_buf(),
                dest: dest.to_path_buf(),
                meta,
                name: name.to_path_buf(),
            });
            return Ok(());
        }
        if let Ok(existing) = fs::symlink_metadata(dest) {
            let both_dirs = existing.is_dir() && kind == FileKind::Dir;
            if !both_dirs {
                remove_existing(dest, &existing).map_err(failed)?;
            }
        }
        match kind {
            FileKind::Dir => {
                if !dest.is_dir() {
                    fs::create_dir(dest).map_err(failed)?;
                }
                self.dirs.push((dest.to_path_buf(), meta));
                return Ok(());
            }
            FileKind::Symlink => {
                symlink(fs::read_link(src).map_err(failed)?, dest).map_err(failed)?
            }
            FileKind::File => {
                if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                    return fs::hard_link(first, dest).map_err(failed);
                }
                self.hardlinks
                    .insert((meta.dev(), meta.ino()), dest.to_path_buf());
                self.copy_file(src, dest, &meta).map_err(failed)?;
                return Ok(());
            }
            // Devices, fifos and sockets in a context are not copied, as BuildKit skips them.
            FileKind::Other => return Ok(()),
        }
        self.finish_attributes_from(dest, &meta).map_err(failed)
    }

    /// Copies the queued files, on several threads when there are many.
    fn flush(&mut self) -> Result<(), String> {
        let queued = std::mem::take(&mut self.queued);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(COPY_THREADS);
        if queued.len() < PARALLEL_COPY_MIN_FILES || threads == 1 {
            return queued.iter().try_for_each(|f| self.copy_queued(f));
        }
        let batches = batches_by_directory(&queued);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let this = &*self;
        std::thread::scope(|scope| {
            // The threads share this thread's mount namespace, where the snapshot is mounted.
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                            for file in &queued[batch.clone()] {
                                if failed.load(Ordering::Relaxed) {
                                    return Ok(());
                                }
                                if let Err(e) = this.copy_queued(file) {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(e);
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a copy thread panicked".to_string()))
            })
        })
    }

    fn copy_queued(&self, file: &QueuedFile) -> Result<(), String> {
        self.copy_file(&file.src, &file.dest, &file.meta)
            .map_err(|e| format!("{}: {e}", file.name.display()))
    }

    /// Copies a regular file's content (copy_file_range: no bytes through user space), owner,
    /// mode and times, through file descriptors: no path is looked up twice.
    fn copy_file(&self, src: &Path, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
        // The context checked what `src` was; it must not have become a symlink since.
        let mut from = fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)?;
        let create = || {
            fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dest)
        };
        let mut to = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Something of the lower layers (or of an ADD'ed archive) is replaced.
                remove_existing(dest, &fs::symlink_metadata(dest)?)?;
                create()?
            }
            other => other?,
        };
        io::copy(&mut from, &mut to)?;
        let (uid, gid) = self.owner.unwrap_or((meta.uid(), meta.gid()));
        std::os::unix::fs::fchown(&to, Some(uid), Some(gid))?;
        // After chown, which clears setuid/setgid bits.
        to.set_permissions(fs::Permissions::from_mode(self.mode_of(meta)))?;
        to.set_times(
            fs::FileTimes::new()
                .set_accessed(meta.accessed()?)
                .set_modified(meta.modified()?),
        )
    }

    /// The mode of a copy of a file with `meta`: its own, or what --chmod makes of it.
    fn mode_of(&self, meta: &fs::Metadata) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(meta.mode() & 0o7777, meta.is_dir()),
            None => meta.mode() & 0o7777,
        }
    }

    /// Sets the attributes of the copied directories, once nothing is added to them any more.
    fn finish_dirs(&mut self) -> Result<(), String> {
        for (dir, meta) in std::mem::take(&mut self.dirs).iter().rev() {
            self.finish_attributes_from(dir, meta)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    fn finish_attributes_from(&self, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
        let (uid, gid) = self.owner.unwrap_or((meta.uid(), meta.gid()));
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
        if !meta.file_type().is_symlink() {
            // After chown, which clears setuid/setgid bits.
            fs::set_permissions(dest, fs::Permissions::from_mode(self.mode_of(meta)))?;
        }
        let times = [
            libc::timespec {
                tv_sec: meta.atime(),
                tv_nsec: meta.atime_nsec(),
            },
            libc::timespec {
                tv_sec: meta.mtime(),
                tv_nsec: meta.mtime_nsec(),
            },
        ];
        let c_path = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: a valid path and two timespecs, as utimensat(2) requires.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Attributes of a file made from inline text (a heredoc).
    fn finish_attributes(&self, dest: &Path, mode: u32, is_dir: bool) -> io::Result<()> {
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
        let mode = match &self.chmod {
            Some(c) => c.apply(mode, is_dir),
            None => mode,
        };
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))
    }
}

/// Removes what is at `path` (described by `existing`) so that a copied entry can take its place.
fn remove_existing(path: &Path, existing: &fs::Metadata) -> io::Result<()> {
    if existing.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_told_by_their_checksum() {
        // Written by GNU tar (the ADD conformance case's archive).
        let archive = include_bytes!("../../../conformance/dockerfiles/add-archive/plain.tar");
        let mut block: [u8; 512] = archive[..512].try_into().unwrap();
        assert!(is_tar_header(&block));
        block[0] ^= 1;
        assert!(!is_tar_header(&block), "a changed header");
        assert!(!is_tar_header(&[0; 512]), "the end of an empty archive");
    }
}
