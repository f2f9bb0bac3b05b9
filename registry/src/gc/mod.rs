//! Garbage collection: mark every blob a kept manifest references, sweep the rest once they
//! are older than a grace period, together with the `_layers` links to them, and remove upload
//! sessions idle for longer than that.
//!
//! Everything goes through the [`StorageDriver`] trait and the registry's own operations, so
//! every backend gets GC. A pass:
//!
//! 1. **Mark** (no lock): in every repository, the manifest revisions are the roots — or, with
//!    `delete_untagged`, the tagged manifests plus revisions younger than the grace period —
//!    and a root keeps its config and layers, an index its child manifests, and (with
//!    `delete_untagged`) a kept manifest its referrers. Untagged manifests count as referenced
//!    otherwise, as in distribution's `garbage-collect` without `--delete-untagged`.
//! 2. **Inventory** (no lock): every stored blob, and which repositories link each.
//! 3. **Catch up** (writers paused, see [`gate`]): repositories written by requests that
//!    finished since step 1 began, on this replica or (see [`replicas`]) another, are marked
//!    again and their links listed again. Offline (`rregistry gc`, no gate) every repository
//!    is marked again.
//! 4. **Sweep** (still paused): an unmarked blob is removed when its data object and every link
//!    to it are older than the grace period — links first, so a crash never leaves a link to
//!    a missing blob. The grace period protects blobs uploaded for a manifest not pushed yet;
//!    judging by the links too means a re-upload or mount of an old blob counts as fresh.
//! 5. **Uploads** (no lock): sessions started and last written before the grace period.

pub mod gate;
pub mod replicas;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oci::image::ManifestOrIndex;
use oci::Digest;

use crate::config::{Config, GcConfig};
use crate::error::{ErrorCode, RegistryError};
use crate::metrics::{GcRun, Metrics};
use crate::names::Reference;
use crate::paths;
use crate::service::{Registry, Settings};
use crate::storage::filesystem::FilesystemDriver;
use crate::storage::s3::S3Driver;
use crate::storage::{StorageDriver, StorageError};
pub use gate::GcGate;

/// The longest a pass waits for reference-adding requests in flight before it skips the sweep.
const PAUSE_WAIT: Duration = Duration::from_secs(10);

/// Where the blobs of `paths::blob_data` live (`<alg>/<two hex>/<hex>/data` below).
const BLOBS_ROOT: &str = "docker/registry/v2/blobs";

fn revisions_dir(repository: &str) -> String {
    format!("{}/_manifests/revisions", paths::repository(repository))
}

fn layers_dir(repository: &str) -> String {
    format!("{}/_layers", paths::repository(repository))
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("stored manifest {repository}@{digest} does not parse, so what it references is unknown; nothing was swept: {reason}")]
    Unparseable {
        repository: String,
        digest: Digest,
        reason: String,
    },
    #[error("manifest pushes in flight did not finish within {0:?}; the sweep was skipped")]
    Busy(Duration),
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub grace_period: Duration,
    pub dry_run: bool,
    pub delete_untagged: bool,
}

impl From<&GcConfig> for GcOptions {
    fn from(c: &GcConfig) -> Self {
        GcOptions {
            grace_period: c.graceperiod,
            dry_run: c.dryrun,
            delete_untagged: c.deleteuntagged,
        }
    }
}

/// What a pass removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Distinct blobs the mark kept.
    pub marked: usize,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub young: usize,
    pub blobs: Vec<(Digest, u64)>,
    pub layer_links: usize,
    /// `<repository>@<digest>` of untagged manifests.
    pub manifests: Vec<String>,
    /// `<repository>/<session id>` of idle upload sessions.
    pub uploads: Vec<String>,
}

impl GcReport {
    pub fn reclaimed_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }

    /// The counts as the metrics take them; a dry run reclaims nothing.
    pub fn as_run(&self) -> GcRun {
        if self.dry_run {
            return GcRun::default();
        }
        GcRun {
            reclaimed_bytes: self.reclaimed_bytes(),
            blobs: self.blobs.len() as u64,
            manifests: self.manifests.len() as u64,
            uploads: self.uploads.len() as u64,
        }
    }
}

/// One pass. `gate` is the serving registry's (online); `None` runs without pausing writers,
/// which is only safe when no server writes to the storage (see docs/REGISTRY.md).
pub async fn collect<S: StorageDriver>(
    registry: &Registry<S>,
    gate: Option<&GcGate>,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let driver = registry.driver();
    let recording = match gate {
        Some(g) => Some(g.record().await),
        None => None,
    };
    // One cutoff for the whole pass, taken before anything is read: the conservative choice.
    let cutoff = SystemTime::now()
        .checked_sub(options.grace_period)
        .unwrap_or(UNIX_EPOCH);
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };

    let mut survey = Survey::default();
    for repository in registry.catalog(None, None).await?.items {
        survey.add(registry, repository, options, cutoff).await?;
    }
    let blobs = list_blobs(driver).await?;

    let paused = match gate {
        Some(g) => Some(
            g.pause(PAUSE_WAIT)
                .await?
                .ok_or(GcError::Busy(PAUSE_WAIT))?,
        ),
        None => None,
    };
    let again = match &paused {
        Some(p) => p.written.iter().cloned().collect(),
        None => registry.catalog(None, None).await?.items,
    };
    for repository in again {
        survey.add(registry, repository, options, cutoff).await?;
    }

    let marked: HashSet<&Digest> = survey.marks.values().flat_map(|m| &m.referenced).collect();
    report.marked = marked.len();
    for (repository, mark) in &survey.marks {
        for digest in &mark.untagged {
            if !options.dry_run {
                match registry
                    .delete_manifest(repository, &Reference::Digest(digest.clone()))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.code == ErrorCode::ManifestUnknown => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            report.manifests.push(format!("{repository}@{digest}"));
        }
    }
    for digest in blobs.iter().filter(|d| !marked.contains(d)) {
        let repositories = survey.links.get(digest);
        match sweep_blob(driver, digest, repositories, cutoff, options.dry_run).await? {
            Swept::Gone => {}
            Swept::Young => report.young += 1,
            Swept::Removed { size, links } => {
                report.blobs.push((digest.clone(), size));
                report.layer_links += links;
            }
        }
    }
    drop(paused);
    drop(recording);

    report.uploads = sweep_uploads(registry, options, cutoff).await?;
    Ok(report)
}

/// What the repositories keep, and which of them link each blob.
#[derive(Default)]
struct Survey {
    marks: BTreeMap<String, RepositoryMark>,
    links: BTreeMap<Digest, BTreeSet<String>>,
}

impl Survey {
    /// Marks `repository` (again: a later mark replaces an earlier one) and adds its links.
    async fn add<S: StorageDriver>(
        &mut self,
        registry: &Registry<S>,
        repository: String,
        options: &GcOptions,
        cutoff: SystemTime,
    ) -> Result<(), GcError> {
        let mark = mark_repository(registry, &repository, options, cutoff).await?;
        let layers = list_digests(registry.driver(), &layers_dir(&repository)).await?;
        for digest in layers {
            self.links
                .entry(digest)
                .or_default()
                .insert(repository.clone());
        }
        self.marks.insert(repository, mark);
        Ok(())
    }
}

/// What one repository keeps.
#[derive(Default)]
struct RepositoryMark {
    /// Blobs its kept manifests reference, the manifests' own bytes included.
    referenced: HashSet<Digest>,
    /// Manifests to delete (only with `delete_untagged`).
    untagged: Vec<Digest>,
}

async fn mark_repository<S: StorageDriver>(
    registry: &Registry<S>,
    repository: &str,
    options: &GcOptions,
    cutoff: SystemTime,
) -> Result<RepositoryMark, GcError> {
    let driver = registry.driver();
    let revisions = list_digests(driver, &revisions_dir(repository)).await?;
    let mut pending: Vec<Digest> = if options.delete_untagged {
        let mut roots = tagged_manifests(registry, repository).await?;
        for digest in &revisions {
            // A manifest pushed by digest moments ago may be the child of an index being
            // pushed right now: young revisions are roots too.
            let link = paths::manifest_revision_link(repository, digest);
            match driver.stat(&link).await {
                Ok(meta) if meta.modified >= cutoff => roots.push(digest.clone()),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        roots
    } else {
        revisions.clone()
    };
    let mut mark = RepositoryMark::default();
    let mut kept = HashSet::new();
    while let Some(digest) = pending.pop() {
        if !kept.insert(digest.clone()) {
            continue;
        }
        mark.referenced.insert(digest.clone());
        let Some(manifest) = load_manifest(registry, repository, &digest).await? else {
            continue;
        };
        match manifest {
            ManifestOrIndex::Manifest(m) => {
                mark.referenced.insert(m.config.digest.clone());
                mark.referenced
                    .extend(m.layers.iter().map(|l| l.digest.clone()));
            }
            ManifestOrIndex::Index(i) => {
                pending.extend(i.manifests.iter().map(|c| c.digest.clone()))
            }
        }
        if options.delete_untagged {
            // Signatures, SBOMs and other referrers live as long as their subject.
            for referrer in registry.referrers(repository, &digest, None).await? {
                pending.push(referrer.digest);
            }
        }
    }
    if options.delete_untagged {
        mark.untagged = revisions
            .into_iter()
            .filter(|d| !kept.contains(d))
            .collect();
    }
    Ok(mark)
}

async fn tagged_manifests<S: StorageDriver>(
    registry: &Registry<S>,
    repository: &str,
) -> Result<Vec<Digest>, GcError> {
    let tags = match registry.tags(repository, None, None).await {
        Ok(page) => page.items,
        Err(e) if e.code == ErrorCode::NameUnknown => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut digests = Vec::new();
    for tag in tags {
        match registry
            .get_manifest(repository, &Reference::Tag(tag))
            .await
        {
            Ok(m) => digests.push(m.digest),
            Err(e) if e.code == ErrorCode::ManifestUnknown => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(digests)
}

/// A manifest of the repository, parsed; `None` when it is not (or no longer) there.
async fn load_manifest<S: StorageDriver>(
    registry: &Registry<S>,
    repository: &str,
    digest: &Digest,
) -> Result<Option<ManifestOrIndex>, GcError> {
    let body = match registry
        .get_manifest(repository, &Reference::Digest(digest.clone()))
        .await
    {
        Ok(body) => body,
        Err(e) if e.code == ErrorCode::ManifestUnknown => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A manifest GC cannot read could reference anything: refuse to sweep rather than guess.
    let (_, parsed) =
        ManifestOrIndex::parse_any(&body.bytes).map_err(|e| GcError::Unparseable {
            repository: repository.to_string(),
            digest: digest.clone(),
            reason: e.to_string(),
        })?;
    Ok(Some(parsed))
}

/// The children of `<dir>/<alg>/<hex>` as digests; names that are not digests are skipped.
async fn list_digests<S: StorageDriver>(driver: &S, dir: &str) -> Result<Vec<Digest>, GcError> {
    let mut digests = Vec::new();
    for algorithm in list_or_empty(driver, dir).await? {
        for hex in list_or_empty(driver, &format!("{dir}/{algorithm}")).await? {
            if let Ok(d) = format!("{algorithm}:{hex}").parse() {
                digests.push(d);
            }
        }
    }
    Ok(digests)
}

/// Every blob in storage (`blobs/<alg>/<two hex>/<hex>/`).
async fn list_blobs<S: StorageDriver>(driver: &S) -> Result<Vec<Digest>, GcError> {
    let mut blobs = Vec::new();
    for algorithm in list_or_empty(driver, BLOBS_ROOT).await? {
        let alg_dir = format!("{BLOBS_ROOT}/{algorithm}");
        for prefix in list_or_empty(driver, &alg_dir).await? {
            for hex in list_or_empty(driver, &format!("{alg_dir}/{prefix}")).await? {
                if let Ok(d) = format!("{algorithm}:{hex}").parse() {
                    blobs.push(d);
                }
            }
        }
    }
    Ok(blobs)
}

async fn list_or_empty<S: StorageDriver>(driver: &S, dir: &str) -> Result<Vec<String>, GcError> {
    match driver.list(dir).await {
        Ok(names) => Ok(names),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

enum Swept {
    /// Deleted by someone else meanwhile.
    Gone,
    Young,
    Removed {
        size: u64,
        links: usize,
    },
}

/// Removes an unmarked blob and its links if all of them are older than `cutoff`.
async fn sweep_blob<S: StorageDriver>(
    driver: &S,
    digest: &Digest,
    repositories: Option<&BTreeSet<String>>,
    cutoff: SystemTime,
    dry_run: bool,
) -> Result<Swept, GcError> {
    let data = paths::blob_data(digest);
    let meta = match driver.stat(&data).await {
        Ok(meta) => meta,
        Err(e) if e.is_not_found() => return Ok(Swept::Gone),
        Err(e) => return Err(e.into()),
    };
    let mut newest = meta.modified;
    let mut link_paths = Vec::new();
    for repository in repositories.into_iter().flatten() {
        let link = paths::layer_link(repository, digest);
        match driver.stat(&link).await {
            Ok(m) => newest = newest.max(m.modified),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
        link_paths.push(link);
    }
    if newest >= cutoff {
        return Ok(Swept::Young);
    }
    if !dry_run {
        for link in &link_paths {
            delete_if_present(driver, link.trim_end_matches("/link")).await?;
        }
        delete_if_present(driver, data.trim_end_matches("/data")).await?;
    }
    Ok(Swept::Removed {
        size: meta.size,
        links: link_paths.len(),
    })
}

async fn delete_if_present<S: StorageDriver>(driver: &S, path: &str) -> Result<(), GcError> {
    match driver.delete(path).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Sessions started and last written before `cutoff`. They are cancelled through the
/// registry, under the session's lock, so a request to the session is never cut in half.
async fn sweep_uploads<S: StorageDriver>(
    registry: &Registry<S>,
    options: &GcOptions,
    cutoff: SystemTime,
) -> Result<Vec<String>, GcError> {
    let mut removed = Vec::new();
    // A dry-run purge lists the sessions it finds stale without touching them.
    for session in registry.purge_uploads(options.grace_period, true).await? {
        let Some((repository, id)) = session.rsplit_once('/') else {
            continue;
        };
        // The purge counts a session without its `startedat` as stale, but that is also a
        // session being created this instant: only a marker we see, and old, counts here.
        let markers = [
            (paths::upload_started_at(repository, id), true),
            (paths::upload_data(repository, id), false),
        ];
        let mut idle = true;
        for (path, required) in markers {
            match registry.driver().stat(&path).await {
                Ok(meta) => idle &= meta.modified < cutoff,
                Err(e) if e.is_not_found() => idle &= !required,
                Err(e) => return Err(e.into()),
            }
        }
        if !idle {
            continue;
        }
        if !options.dry_run {
            match registry.cancel_upload(repository, id).await {
                Ok(()) => {}
                // Finished or cancelled meanwhile.
                Err(e) if e.code == ErrorCode::BlobUploadUnknown => continue,
                Err(e) => return Err(e.into()),
            }
        }
        removed.push(session);
    }
    Ok(removed)
}

/// `rregistry gc`: one pass over the configured storage, without a serving registry's gate.
pub async fn collect_offline(config: &Config, options: &GcOptions) -> Result<GcReport, GcError> {
    let settings = Settings {
        // Deleting untagged manifests is what the operator asked for on the command line.
        delete_enabled: true,
        upload_max_bytes: 0,
    };
    // The same choice of backend as `server::serve`.
    if let Some(s3) = &config.storage.s3 {
        let registry = Registry::new(S3Driver::new(s3)?, settings);
        return collect(&registry, None, options).await;
    }
    let driver = FilesystemDriver::new(&config.storage.filesystem.rootdirectory)?;
    collect(&Registry::new(driver, settings), None, options).await
}

/// Online GC (`storage.maintenance.gc`): a pass every `interval`, the first one interval after
/// start. Passes are logged and counted in the metrics.
pub fn run_periodically<S: StorageDriver>(
    registry: Arc<Registry<S>>,
    gate: Arc<GcGate>,
    metrics: Arc<Metrics>,
    config: &GcConfig,
) {
    if !config.enabled {
        return;
    }
    let options = GcOptions::from(config);
    let interval = config.interval;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            match collect(&registry, Some(&gate), &options).await {
                Ok(report) => {
                    metrics.observe_gc(Some(report.as_run()), started.elapsed());
                    log_report(&report, started.elapsed());
                }
                Err(e) => {
                    metrics.observe_gc(None, started.elapsed());
                    tracing::warn!(error = %e, "garbage collection failed");
                }
            }
        }
    });
}

fn log_report(report: &GcReport, elapsed: Duration) {
    for (digest, size) in &report.blobs {
        tracing::debug!(%digest, size, dry_run = report.dry_run, "gc: blob");
    }
    for manifest in &report.manifests {
        tracing::debug!(%manifest, dry_run = report.dry_run, "gc: untagged manifest");
    }
    for session in &report.uploads {
        tracing::debug!(%session, dry_run = report.dry_run, "gc: upload session");
    }
    tracing::info!(
        dry_run = report.dry_run,
        marked = report.marked,
        young = report.young,
        blobs = report.blobs.len(),
        reclaimed_bytes = report.reclaimed_bytes(),
        layer_links = report.layer_links,
        manifests = report.manifests.len(),
        uploads = report.uploads.len(),
        ms = elapsed.as_secs_f64() * 1000.0,
        "garbage collection pass"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_paths() {
        let d = Digest::sha256_of(b"gc");
        assert!(paths::blob_data(&d).starts_with(&format!("{BLOBS_ROOT}/sha256/")));
        assert!(paths::layer_link("a/b", &d).starts_with(&format!("{}/sha256/", layers_dir("a/b"))));
        assert!(paths::manifest_revision_link("a/b", &d)
            .starts_with(&format!("{}/sha256/", revisions_dir("a/b"))));
    }
}
