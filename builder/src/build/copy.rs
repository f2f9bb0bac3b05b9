//! COPY, ADD and WORKDIR: steps that put files into the stage's filesystem from the build
//! context, another stage, or inline heredocs.
//!
//! The copy runs on the host, into the step's overlay snapshot mounted in a private mount
//! namespace (see `snapshot`), so that copying into existing directories behaves exactly as
//! in the image: parent directories keep their attributes (overlayfs copies them up) and
//! symlinks in the destination path resolve inside the image, never on the host.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::snapshot::{commit_upper, lower_dirs, with_merged, Workspace};
use super::stage::{step_error, Layer, Solver, StageState};
use super::{key_of, BuildError};
use crate::dockerfile::instructions::{Files, Located};
use crate::dockerfile::{Chmod, Instruction};
use crate::image_config::{join_workdir, Scope};

/// A COPY or ADD after variable expansion.
/// Where `COPY --from` takes its files.
pub(crate) enum FromSource {
    Stage(usize),
    /// An image from the store: its layers and its manifest digest (for the cache key).
    Image((Vec<Layer>, oci::Digest)),
}

pub(crate) struct CopyPlan {
    /// Absolute paths of the sources on the host (in the context or a stage's snapshot).
    sources: Vec<PathBuf>,
    inline: Vec<(String, String)>,
    /// Destination inside the image, absolute; a trailing `/` kept.
    dest: String,
    /// The stage or image to copy from, if any.
    from_source: Option<FromSource>,
    chown: Option<String>,
    chmod: Option<Chmod>,
    link: bool,
    /// ADD: unpack local archives.
    unpack_archives: bool,
    /// What the sources are named in the Dockerfile, for the cache key and errors.
    source_names: Vec<String>,
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
            let mut sums = Vec::new();
            for name in &plan.source_names {
                sums.push(
                    context_checksum(solver, name)
                        .map_err(|e| step_error(at, e))?
                        .to_string(),
                );
            }
            sums.join("\0")
        }
    };
    let inline: Vec<String> = plan
        .inline
        .iter()
        .map(|(n, c)| format!("{n}\0{c}"))
        .collect();
    let parent = if plan.link {
        "link".to_string()
    } else {
        state.fs_key.to_string()
    };
    Ok(key_of(&[
        b"copy",
        parent.as_bytes(),
        sources.as_bytes(),
        inline.join("\0").as_bytes(),
        plan.dest.as_bytes(),
        format!("{:?}{:?}{}", plan.chown, plan.chmod, plan.unpack_archives).as_bytes(),
    ]))
}

/// Expands a COPY/ADD and finds its sources.
pub(crate) fn plan(
    solver: &Solver,
    index: usize,
    state: &StageState,
    at: &Located<Instruction>,
) -> Result<CopyPlan, BuildError> {
    let (files, from, chown, chmod, link, unpack): (&Files, Option<&String>, _, _, bool, bool) =
        match &at.value {
            Instruction::Copy(c) => (&c.files, c.from.as_ref(), &c.chown, &c.chmod, c.link, false),
            Instruction::Add(a) => (
                &a.files,
                None,
                &a.chown,
                &a.chmod,
                a.link,
                a.unpack.unwrap_or(true),
            ),
            _ => return Err(step_error(at, "not a COPY or ADD")),
        };
    let scope = Scope::new(&state.config, &state.args);
    let expand = |w: &str| {
        solver
            .lex
            .process_word(w, &scope)
            .map_err(|e| step_error(at, e))
    };
    let mut dest = expand(&files.dest)?;
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
    let from_source = match from {
        Some(name) => {
            let name = expand(name)?;
            Some(match solver.stage_index(&name, index) {
                Some(stage) => FromSource::Stage(stage),
                None => {
                    FromSource::Image(solver.image_layers(&name).map_err(|e| step_error(at, e))?)
                }
            })
        }
        None => None,
    };
    let mut source_names = Vec::new();
    for s in &files.sources {
        let s = expand(s)?;
        if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@") {
            return Err(step_error(
                at,
                format!("{s}: remote sources (URLs, git) are not supported yet"),
            ));
        }
        source_names.push(s);
    }
    let mut sources = Vec::new();
    if from_source.is_none() {
        for name in &source_names {
            sources.push(context_path(solver, name).map_err(|e| step_error(at, e))?);
        }
    }
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
    let chown = chown.as_ref().map(|c| expand(c)).transpose()?;
    let chmod = match chmod {
        Some(c) => {
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
        sources,
        inline,
        dest,
        from_source,
        chown,
        chmod,
        link,
        unpack_archives: unpack,
        source_names,
    })
}

/// Copies into a snapshot of the stage and returns the layer.
pub(crate) fn execute(
    solver: &Solver,
    state: &StageState,
    plan: &CopyPlan,
    at: &Located<Instruction>,
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
    let multiple = plan.source_names.len() + plan.inline.len() > 1;
    with_merged(&ws, &lower, |root| {
        let (sources, preserve_owner) = match &from_lower {
            Some(from_lower) => {
                // The other stage's filesystem, mounted read-only beside ours.
                let from_root = ws.path("from");
                fs::create_dir_all(&from_root).map_err(BuildError::other)?;
                let data = format!(
                    "lowerdir={}",
                    from_lower
                        .iter()
                        .rev()
                        .map(|p| p.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(":")
                );
                let data = if from_lower.len() == 1 {
                    format!("{data}:{}", ws.path("empty").display())
                } else {
                    data
                };
                nix::mount::mount(
                    Some("overlay"),
                    &from_root,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(data.as_str()),
                )
                .map_err(|e| BuildError::other(format!("mount source stage: {e}")))?;
                let mut sources = Vec::new();
                for name in &plan.source_names {
                    sources
                        .push(resolve_confined(&from_root, name).map_err(|e| step_error(at, e))?);
                }
                (sources, true)
            }
            None => (plan.sources.clone(), false),
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
        let mut copier = Copier {
            owner,
            chmod: plan.chmod.clone(),
            hardlinks: HashMap::new(),
        };
        for (src, name) in sources.iter().zip(&plan.source_names) {
            let meta = fs::metadata(src).map_err(|_| {
                step_error(at, format!("failed to compute cache key: \"{name}\": not found (in the build context or excluded by .dockerignore)"))
            })?;
            let into_dir = plan.dest.ends_with('/') || multiple || meta.is_dir();
            if plan.unpack_archives && meta.is_file() && is_archive(src) {
                let target = ensure_dir(root, &plan.dest, owner)?;
                let reader = fs::File::open(src).map_err(BuildError::other)?;
                let mut head = [0u8; 4];
                let n = io::Read::read(
                    &mut fs::File::open(src).map_err(BuildError::other)?,
                    &mut head,
                )
                .map_err(BuildError::other)?;
                let compression = oci::compression::Compression::detect(&head[..n]);
                oci::layer::apply(reader, compression, &target, oci::layer::ApplyMode::Merged)
                    .map_err(|e| step_error(at, e))?;
                continue;
            }
            if meta.is_dir() {
                let target = ensure_dir(root, &plan.dest, owner)?;
                copier
                    .copy_dir_contents(src, &target)
                    .map_err(|e| step_error(at, e))?;
            } else {
                let target = if into_dir || dest_is_dir(root, &plan.dest) {
                    ensure_dir(root, &plan.dest, owner)?.join(src.file_name().unwrap_or_default())
                } else {
                    let parent = Path::new(&plan.dest)
                        .parent()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ensure_dir(root, &parent, owner)?
                        .join(Path::new(&plan.dest).file_name().unwrap_or_default())
                };
                copier
                    .copy_entry(src, &target, true)
                    .map_err(|e| step_error(at, e))?;
            }
        }
        for (name, content) in &plan.inline {
            // Like a file source: a lone heredoc to a path that is not a directory is that file.
            let target = if plan.dest.ends_with('/') || multiple || dest_is_dir(root, &plan.dest) {
                ensure_dir(root, &plan.dest, owner)?.join(name)
            } else {
                let parent = Path::new(&plan.dest)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ensure_dir(root, &parent, owner)?
                    .join(Path::new(&plan.dest).file_name().unwrap_or_default())
            };
            fs::write(&target, content).map_err(BuildError::other)?;
            copier
                .finish_attributes(&target, 0o644, false)
                .map_err(|e| step_error(at, e))?;
        }
        Ok(())
    })?;
    commit_upper(store, &ws, solver.options)
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
pub(crate) fn workdir(solver: &Solver, state: &StageState) -> Result<Option<Layer>, BuildError> {
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
    commit_upper(store, &ws, solver.options)
}

/// The host path of `name` in the build context; never outside it.
pub(crate) fn context_path(solver: &Solver, name: &str) -> Result<PathBuf, String> {
    resolve_confined(&solver.options.context, name)
}

/// A checksum of the content of `name` in the build context, for cache keys: paths, types,
/// modes, sizes, contents and link targets, but no timestamps.
pub(crate) fn context_checksum(solver: &Solver, name: &str) -> Result<oci::Digest, String> {
    let path = context_path(solver, name)?;
    let mut digester = oci::Digester::new(oci::Algorithm::Sha256);
    checksum_into(&path, Path::new(""), &mut digester).map_err(|e| format!("{name}: {e}"))?;
    Ok(digester.finish())
}

fn checksum_into(path: &Path, rel: &Path, d: &mut oci::Digester) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    d.update(rel.as_os_str().as_encoded_bytes());
    d.update(&[0]);
    d.update(&meta.mode().to_le_bytes());
    if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for n in names {
            checksum_into(&path.join(&n), &rel.join(&n), d)?;
        }
    } else if meta.file_type().is_symlink() {
        d.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else {
        d.update(&meta.len().to_le_bytes());
        io::copy(&mut fs::File::open(path)?, d)?;
    }
    Ok(())
}

/// `root/name`, with `..` and symlinks resolved inside `root` (a symlink cannot lead out).
fn resolve_confined(root: &Path, name: &str) -> Result<PathBuf, String> {
    runtime_exec::paths::resolve_in_root(root, Path::new(name)).map_err(|e| format!("{name}: {e}"))
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

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let n = io::Read::read(&mut f, &mut head).unwrap_or(0);
    match oci::compression::Compression::detect(&head[..n]) {
        oci::compression::Compression::None => n >= 262 && &head[257..262] == b"ustar",
        _ => true,
    }
}

/// Copies files with the step's ownership and mode rules, keeping hardlinks together.
struct Copier {
    /// `None` keeps each file's owner (COPY --from), else every file gets this owner.
    owner: Option<(u32, u32)>,
    chmod: Option<Chmod>,
    /// (dev, inode) of a source already copied → where it went.
    hardlinks: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    fn copy_dir_contents(&mut self, src: &Path, dest: &Path) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            self.copy_entry(&src.join(&name), &dest.join(&name), false)?;
        }
        Ok(())
    }

    /// Copies one entry; `follow` follows a symlink named directly as a source.
    fn copy_entry(&mut self, src: &Path, dest: &Path, follow: bool) -> io::Result<()> {
        let meta = if follow {
            fs::metadata(src)?
        } else {
            fs::symlink_metadata(src)?
        };
        let ft = meta.file_type();
        if let Ok(existing) = fs::symlink_metadata(dest) {
            if !(existing.is_dir() && ft.is_dir()) {
                if existing.is_dir() {
                    fs::remove_dir_all(dest)?;
                } else {
                    fs::remove_file(dest)?;
                }
            }
        }
        if ft.is_dir() {
            if !dest.is_dir() {
                fs::create_dir(dest)?;
            }
            self.copy_dir_contents(src, dest)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(src)?, dest)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.hardlinks.get(&(meta.dev(), meta.ino())) {
                    return fs::hard_link(first, dest);
                }
                self.hardlinks
                    .insert((meta.dev(), meta.ino()), dest.to_path_buf());
            }
            fs::copy(src, dest)?;
        } else {
            // Devices, fifos and sockets in a context are not copied, as BuildKit skips them.
            return Ok(());
        }
        self.finish_attributes_from(dest, &meta)
    }

    fn finish_attributes_from(&self, dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
        let (uid, gid) = self.owner.unwrap_or((meta.uid(), meta.gid()));
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))?;
        if !meta.file_type().is_symlink() {
            let mode = match &self.chmod {
                Some(c) => c.apply(meta.mode() & 0o7777, meta.is_dir()),
                None => meta.mode() & 0o7777,
            };
            // After chown, which clears setuid/setgid bits.
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
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
