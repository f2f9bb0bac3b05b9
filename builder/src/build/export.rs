//! Turning a solved stage into an image: config and manifest into the store, then the
//! outputs (`-t` names in the local store, OCI or docker archives, a local directory).

use std::fs;
use std::path::{Path, PathBuf};

use image_store::Store;
use oci::archive::{write_archive_file, ArchiveFormat, ArchiveImage};
use oci::image::{to_json_bytes, History, Manifest};
use oci::layer::{apply, ApplyMode, ApplyStats};
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest};

use super::progress::Progress;
use super::stage::{Layer, StageState};
use super::{BuildError, BuildOptions};

/// Where a build's image goes besides the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `type=oci,dest=FILE`: an OCI archive.
    Oci(PathBuf),
    /// `type=docker,dest=FILE`: a docker-archive for `docker load`.
    Docker(PathBuf),
    /// `type=local,dest=DIR`: the image's root filesystem as files.
    Local(PathBuf),
    /// `type=tar,dest=FILE`: the image's root filesystem as one tar.
    Tar(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest: Descriptor,
    /// The image ID (the config digest), as `docker build` prints it.
    pub config_digest: Digest,
    /// Build check findings only a build can make (UndefinedVar).
    pub lint: Vec<crate::dockerfile::CheckWarning>,
}

pub(crate) fn export(
    store: &Store,
    state: &StageState,
    options: &BuildOptions,
    progress: &Progress,
) -> Result<BuildResult, BuildError> {
    let mut config = state.config.clone();
    fill_history_times(&mut config.history);
    // The image is as old as its newest layer, so that a rebuild that changes nothing gives
    // the same image ID, as with BuildKit (its exporter's `patchImageConfig`).
    config.created = config.history.iter().rev().find_map(|h| h.created.clone());
    if let Some(epoch) = options.source_date_epoch {
        let created = oci::timestamp::format_rfc3339(epoch);
        config.created = Some(created.clone());
        // Reproducible builds: no timestamp after SOURCE_DATE_EPOCH, as BuildKit rewrites them.
        for h in &mut config.history {
            let later = h
                .created
                .as_deref()
                .and_then(oci::timestamp::parse_rfc3339)
                .is_none_or(|t| t > epoch);
            if later {
                h.created = Some(created.clone());
            }
        }
    }
    for (k, v) in &options.labels {
        config.config_mut().labels.insert(k.clone(), v.clone());
    }
    let layers = super::snapshot::image_layers(store, &state.layers, options)?;
    let config_bytes = to_json_bytes(&config);
    let config_digest = store
        .content()
        .put(&config_bytes)
        .map_err(image_store::StoreError::from)?;
    let mut manifest = Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers.iter().map(|l| l.descriptor.clone()).collect(),
    );
    manifest.annotations = options.annotations.clone();
    let manifest_bytes = to_json_bytes(&manifest);
    let digest = store
        .content()
        .put(&manifest_bytes)
        .map_err(image_store::StoreError::from)?;
    let descriptor = Descriptor::new(
        media_type::OCI_MANIFEST,
        digest,
        manifest_bytes.len() as u64,
    );
    store.add_image(&descriptor, &options.tags)?;

    for output in &options.outputs {
        match output {
            Output::Oci(path) | Output::Docker(path) => {
                let format = if matches!(output, Output::Oci(_)) {
                    ArchiveFormat::Oci
                } else {
                    ArchiveFormat::Docker
                };
                let step = progress.step(usize::MAX, &format!("exporting to {}", path.display()));
                let image = ArchiveImage {
                    names: options.tags.clone(),
                    descriptor: descriptor.clone(),
                };
                write_archive_file(store.content(), &[image], format, path)
                    .map_err(|e| BuildError::other(format!("{}: {e}", path.display())))?;
                step.finish(super::progress::StepStatus::Done);
            }
            Output::Local(dir) => {
                let step =
                    progress.step(usize::MAX, &format!("copying files to {}", dir.display()));
                export_local(store, &layers, dir)?;
                step.finish(super::progress::StepStatus::Done);
            }
            Output::Tar(path) => {
                let step = progress.step(
                    usize::MAX,
                    &format!("sending tarball to {}", path.display()),
                );
                export_tar(store, &layers, path, options.source_date_epoch)?;
                step.finish(super::progress::StepStatus::Done);
            }
        }
    }
    for tag in &options.tags {
        progress.message(&format!("naming to {tag}"));
    }
    Ok(BuildResult {
        manifest: descriptor,
        config_digest,
        lint: Vec::new(),
    })
}

/// Gives history entries without a time (instructions that changed only the config) the time
/// of a layer beside them, as BuildKit's exporter does (`normalizeLayersAndHistory`): those
/// before the build's first layer take that layer's time, later ones the time of the layer
/// before them; with no layer in the build, the base image's last time. The times of layers
/// come from their cache records, so a rebuild from the cache writes the same history.
pub(crate) fn fill_history_times(history: &mut [History]) {
    // The time for entries before the first one that has a time again.
    let mut fill = None;
    let mut missing = false;
    for entry in history.iter() {
        match &entry.created {
            Some(t) => {
                fill = Some(t.clone());
                if missing {
                    break;
                }
            }
            None => missing = true,
        }
    }
    let mut missing = false;
    for entry in history.iter_mut() {
        match &entry.created {
            Some(t) if missing => fill = Some(t.clone()),
            Some(_) => {}
            None => {
                missing = true;
                entry.created = fill.clone();
            }
        }
    }
}

/// The root filesystem, unpacked in the store's scratch space, then written as one tar (the
/// layer writer's: sorted, deterministic). The file appears whole or not at all.
fn export_tar(
    store: &Store,
    layers: &[Layer],
    path: &Path,
    source_date_epoch: Option<i64>,
) -> Result<(), BuildError> {
    let failed = |e: &dyn std::fmt::Display| BuildError::other(format!("{}: {e}", path.display()));
    let rootfs = super::snapshot::Workspace::new(store)?;
    export_local(store, layers, &rootfs.path("rootfs"))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = tempfile::NamedTempFile::new_in(parent).map_err(|e| failed(&e))?;
    let options = oci::layer::CreateOptions {
        compression: oci::compression::Compression::None,
        source_date_epoch: source_date_epoch.map(|e| e.max(0) as u64),
        ..Default::default()
    };
    oci::layer::create(
        &rootfs.path("rootfs"),
        oci::layer::SourceKind::Directory,
        &options,
        file.as_file(),
    )
    .map_err(|e| failed(&e))?;
    file.persist(path).map_err(|e| failed(&e))?;
    Ok(())
}

fn export_local(store: &Store, layers: &[Layer], dir: &Path) -> Result<(), BuildError> {
    fs::create_dir_all(dir).map_err(|e| BuildError::other(format!("{}: {e}", dir.display())))?;
    for layer in layers {
        apply_blob(store, &layer.descriptor, dir)?;
    }
    Ok(())
}

/// Applies the stored layer blob `blob` onto `dir` as plain files, its whiteouts carried out.
pub(crate) fn apply_blob(
    store: &Store,
    blob: &Descriptor,
    dir: &Path,
) -> Result<ApplyStats, BuildError> {
    let Kind::Layer(compression) = media_type::kind(&blob.media_type) else {
        return Err(BuildError::other(format!(
            "{} is not a layer ({})",
            blob.digest, blob.media_type
        )));
    };
    let file = store
        .content()
        .open_blob(&blob.digest)
        .map_err(image_store::StoreError::from)?;
    apply(file, compression, dir, ApplyMode::Merged)
        .map_err(|e| BuildError::other(format!("{}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(times: &[Option<&str>]) -> Vec<History> {
        times
            .iter()
            .map(|t| History {
                created: t.map(str::to_string),
                ..History::default()
            })
            .collect()
    }

    fn times(history: &[History]) -> Vec<Option<&str>> {
        history.iter().map(|h| h.created.as_deref()).collect()
    }

    /// The cases dockerd's BuildKit showed (docker build, then `docker save`): config-only
    /// instructions before the first layer take its time, later ones the previous layer's,
    /// and a build without layers takes the base image's time.
    #[test]
    fn history_times_are_filled_as_buildkit_fills_them() {
        // base, ARG, ENV, RUN, WORKDIR, LABEL, COPY, USER, CMD
        let mut h = entries(&[
            Some("base"),
            None,
            None,
            Some("run"),
            Some("workdir"),
            None,
            Some("copy"),
            None,
            None,
        ]);
        fill_history_times(&mut h);
        assert_eq!(
            times(&h),
            ["base", "run", "run", "run", "workdir", "workdir", "copy", "copy", "copy"].map(Some)
        );
        // base, ENV, CMD
        let mut h = entries(&[Some("base"), None, None]);
        fill_history_times(&mut h);
        assert_eq!(times(&h), ["base"; 3].map(Some));
        // FROM scratch and CMD only: nothing to take a time from.
        let mut h = entries(&[None]);
        fill_history_times(&mut h);
        assert_eq!(times(&h), [None]);
    }
}
