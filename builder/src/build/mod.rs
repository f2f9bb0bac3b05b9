//! The build solver: a parsed [`Dockerfile`] and a build context in, an image out.
//!
//! BuildKit's split is the model (DESIGN.md "Build solver"): `stage` interprets a stage's
//! instructions into filesystem steps (RUN, COPY/ADD, WORKDIR) and config changes; each
//! filesystem step has a cache key computed from its parent's key and its own inputs
//! (`cache_key`), is looked up in the store's build cache, and only runs on a miss. Steps run
//! on overlay snapshots of unpacked layers (`snapshot`), RUN through the executor (`run`).
//! Stages that do not depend on each other are solved on parallel threads; only the stages
//! the target needs are solved at all. `export` turns the final state into an image.

mod copy;
mod export;
mod git_source;
mod progress;
mod remote_cache;
mod run;
mod snapshot;
mod squash;
mod ssh_agent;
mod stage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use image_store::Store;
use oci::compression::Compression;
use oci::{Digest, Platform, Reference};

pub use export::{BuildResult, Output};
pub use git_source::GitSource;
pub use progress::{Progress, ProgressMode};
pub use remote_cache::{CacheBackend, CacheExport, CacheMode, LocalCache};

use crate::dockerfile::{CheckWarning, Dockerfile, DockerfileError};

/// Everything `rbuild build` can be asked.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile's path, for its `<name>.dockerignore`; `None` when it was read from
    /// standard input (the caller reads and parses it, so that errors can show lines).
    pub dockerfile_path: Option<PathBuf>,
    pub tags: Vec<Reference>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// `--annotation`: the image manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    pub no_cache: bool,
    /// Stages (by name) whose steps are never taken from the cache.
    pub no_cache_filter: Vec<String>,
    /// The platform to build for; only the host's is supported.
    pub platform: Platform,
    /// Clamp layer mtimes and set every `created` to this time, for reproducible digests.
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    pub outputs: Vec<Output>,
    /// `--secret id=…,src=…|env=…`: id → secret bytes. Never written to an image or a key.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh id=SOCKET`: id → an ssh-agent socket of the host, for RUN --mount=type=ssh.
    /// Never part of a key: another agent (another CI job) still hits the cache.
    pub ssh_agents: BTreeMap<String, PathBuf>,
    /// `--cache-from`: caches whose records this build may use (see `remote_cache`).
    pub cache_from: Vec<std::sync::Arc<dyn CacheBackend>>,
    /// `--cache-to`: where this build's records go.
    pub cache_to: Vec<CacheExport>,
    /// Where images the store lacks come from (FROM, `COPY --from`, `RUN --mount from=`), as
    /// BuildKit resolves them from their registries; `None`: the local store only.
    pub image_fetcher: Option<Arc<dyn ImageFetcher>>,
    /// `--pull`: fetch every image the build names, even those in the store (a newer one
    /// under the same tag replaces it).
    pub pull: bool,
    /// `--build-context NAME=…`: what `FROM NAME`, `COPY --from=NAME` and `RUN --mount
    /// from=NAME` mean, before any stage or image of that name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--add-host`, `--ulimit`, `--shm-size`: how every RUN's sandbox differs from the default.
    pub sandbox: RunSandbox,
    /// `--squash`: the layers the target stage adds to its base image become one.
    pub squash: bool,
    /// `--allow security.insecure`: `RUN --security=insecure` may run privileged.
    pub allow_insecure: bool,
    /// `--allow device`: `RUN --device` may use any CDI device, not only auto-allowed ones.
    pub allow_devices: bool,
    /// Where `RUN --device` finds CDI specs (`runtime_exec::cdi::spec_dirs`).
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// What docker build's `--add-host`, `--ulimit`, `--shm-size` and `--network` change in every RUN. Part of
/// each RUN's cache key, as in BuildKit (they are in its ExecOp's metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSandbox {
    /// Extra /etc/hosts lines: (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// (RLIMIT_… name, soft, hard).
    pub ulimits: Vec<(String, u64, u64)>,
    /// The size of /dev/shm in bytes (the default is 64 MiB).
    pub shm_size: Option<u64>,
    /// `--network none`: a RUN without `--network` gets no network, only `lo`.
    pub no_network: bool,
}

/// A named build context (buildx's `--build-context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: that image in place of the name.
    Image(String),
    /// An image already put into the local store (by the CLI, from `oci-layout://`), named by
    /// its manifest digest: never pulled, `--pull` or not.
    StoredImage(oci::Digest),
    /// A directory, read as the build context is (with its own .dockerignore).
    Directory(PathBuf),
}

/// Puts an image into the store under its name, from wherever it lives (a registry).
pub trait ImageFetcher: Send + Sync + std::fmt::Debug {
    fn fetch(&self, store: &Store, name: &str, platform: &Platform) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Dockerfile(String),
    /// An instruction failed; `location` is `Dockerfile:LINE`.
    #[error("{location}: {instruction}: {message}")]
    Step {
        location: String,
        instruction: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] image_store::StoreError),
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    pub(crate) fn other(message: impl std::fmt::Display) -> BuildError {
        BuildError::Other(message.to_string())
    }
}

impl From<DockerfileError> for BuildError {
    fn from(e: DockerfileError) -> Self {
        BuildError::Dockerfile(e.to_string())
    }
}

/// Builds `dockerfile` and writes the result to `options.outputs`.
pub fn build(
    store: &Store,
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    progress: &Progress,
) -> Result<BuildResult, BuildError> {
    if options.platform.os != Platform::host().os
        || options.platform.architecture != Platform::host().architecture
    {
        return Err(BuildError::Other(format!(
            "building for {} is not supported: rbuild builds for this host's platform ({}) only",
            options.platform,
            Platform::host()
        )));
    }
    let _writing = store.writer_lock()?;
    let solver = stage::Solver::new(store, dockerfile, options, progress)?;
    let target = solver.target_stage()?;
    let state = solver.solve(target)?;
    solver.save_stat_cache()?;
    // Layers taken from a --cache-from are downloaded now, and only those the image has.
    solver.remote_cache.fetch(store, &state.layers, progress)?;
    let squashed;
    let image = if options.squash {
        squashed = squash::squash(store, &state, options, progress)?;
        &squashed
    } else {
        &*state
    };
    let mut result = export::export(store, image, options, progress)?;
    result.lint = solver.lint();
    solver
        .remote_cache
        .export(store, &state.fs_key, options, progress)?;
    Ok(result)
}

/// The build checks that need the stages evaluated (UndefinedVar), as BuildKit's
/// `--call=check` makes them: the stages the target needs, with their base images (fetched as
/// a build would), evaluated without running or copying anything.
pub fn check(
    store: &Store,
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    progress: &Progress,
) -> Result<Vec<CheckWarning>, BuildError> {
    // No cache is read or written: nothing is built.
    let options = BuildOptions {
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        ..options.clone()
    };
    let _writing = store.writer_lock()?;
    let solver = stage::Solver::new(store, dockerfile, &options, progress)?.only_checking();
    solver.solve(solver.target_stage()?)?;
    Ok(solver.lint())
}

/// The digest of a cache-key preimage.
pub(crate) fn key_of(parts: &[&[u8]]) -> Digest {
    let mut d = oci::Digester::new(oci::Algorithm::Sha256);
    for part in parts {
        // Length-prefixed, so that no two different part lists hash alike.
        d.update(&(part.len() as u64).to_le_bytes());
        d.update(part);
    }
    d.finish()
}
