//! `--squash`: the layers the target stage added above its base image become one layer, as
//! the classic `docker build --squash` made them (BuildKit declined it: moby/buildkit#819).
//! The base image's layers stay as they are, shared with every other image on that base.
//!
//! The new layer is the upper directory of an overlay of the base layers onto which each
//! added layer is applied in turn, so overlayfs itself turns the deletion of a base file into
//! a whiteout. The result is a build cache record keyed by the layers' diff IDs: a rebuild
//! that changes nothing squashes nothing again.

use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::Path;

use image_store::{CacheRecord, CachedLayer, Store};
use oci::compression::Compression;
use oci::image::History;
use oci::layer::{apply, create, ApplyMode, CreateOptions, SourceKind};

use super::progress::{Progress, StepStatus};
use super::snapshot::{commit_upper, lower_dirs, with_merged, Workspace};
use super::stage::{Layer, StageState};
use super::{key_of, BuildError, BuildOptions};

/// `state` with the layers above its first `state.base_layers` squashed into one, and its
/// history saying so: the squashed steps' entries stay, as empty layers, and one entry for
/// the new layer follows them.
pub(crate) fn squash(
    store: &Store,
    state: &StageState,
    options: &BuildOptions,
    progress: &Progress,
) -> Result<StageState, BuildError> {
    let base = state.base_layers.min(state.layers.len());
    let (kept, added) = state.layers.split_at(base);
    if added.len() < 2 {
        return Ok(state.clone());
    }
    let step = progress.step(usize::MAX, &format!("squashing {} layers", added.len()));
    let squashed = match squashed_layer(store, kept, added, options) {
        Ok((layer, cached)) => {
            step.finish(if cached {
                StepStatus::Cached
            } else {
                StepStatus::Done
            });
            layer
        }
        Err(e) => {
            step.finish(StepStatus::Failed);
            return Err(e);
        }
    };

    let mut out = state.clone();
    out.layers = kept.to_vec();
    let mut layers_seen = 0;
    for entry in &mut out.config.history {
        if !entry.empty_layer {
            layers_seen += 1;
            entry.empty_layer = layers_seen > base;
        }
    }
    if let Some(layer) = squashed {
        out.layers.push(layer);
        let created = out.config.history.last().and_then(|h| h.created.clone());
        out.config.history.push(History {
            created,
            created_by: Some("rbuild build --squash".to_string()),
            comment: Some(format!("{} layers merged into one", added.len())),
            ..History::default()
        });
    }
    let diff_ids = out.layers.iter().map(|l| l.diff_id.clone()).collect();
    out.config.rootfs.diff_ids = diff_ids;
    Ok(out)
}

/// The one layer `added` make on top of `kept` (`None` when together they change nothing),
/// and whether it came from the build cache.
fn squashed_layer(
    store: &Store,
    kept: &[Layer],
    added: &[Layer],
    options: &BuildOptions,
) -> Result<(Option<Layer>, bool), BuildError> {
    let ids: Vec<&[u8]> = std::iter::once(&b"squash"[..])
        .chain(
            kept.iter()
                .chain(added)
                .map(|l| l.diff_id.as_str().as_bytes()),
        )
        .collect();
    let key = key_of(&ids);
    // A build cache record's layer is kept by GC for as long as the record is.
    if let Some(record) = store.cache_get(&key)? {
        let layer = record.layer.map(|l| Layer {
            descriptor: l.descriptor,
            diff_id: l.diff_id,
        });
        return Ok((layer, true));
    }
    let ws = Workspace::new(store)?;
    let lower = lower_dirs(store, kept, &ws)?;
    let added_dirs = added
        .iter()
        .map(|l| store.unpacked_layer(&l.descriptor, &l.diff_id))
        .collect::<Result<Vec<_>, _>>()?;
    with_merged(&ws, &lower, |merged| {
        added_dirs.iter().try_for_each(|dir| replay(dir, merged))
    })?;
    let layer = commit_upper(store, &ws, options, true, false)?;
    let record = CacheRecord {
        layer: layer.as_ref().map(|l| CachedLayer {
            descriptor: l.descriptor.clone(),
            diff_id: l.diff_id.clone(),
        }),
        created: oci::timestamp::format_rfc3339(oci::timestamp::now_unix()),
    };
    store.cache_put(&key, &record)?;
    Ok((layer, false))
}

/// Applies the unpacked layer `dir` onto the mounted `merged` view, through a pipe: the
/// layer's own tar, as its blob would carry it, read as a pull applies one.
fn replay(dir: &Path, merged: &Path) -> Result<(), BuildError> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(BuildError::other)?;
    let failed = |e: &dyn std::fmt::Display| {
        BuildError::other(format!("squash the layer {}: {e}", dir.display()))
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let opts = CreateOptions {
                compression: Compression::None,
                ..CreateOptions::default()
            };
            create(
                dir,
                SourceKind::OverlayUpper,
                &opts,
                BufWriter::with_capacity(1 << 20, File::from(write_end)),
            )
        });
        let mut reader = BufReader::with_capacity(1 << 20, File::from(read_end));
        let applied = apply(&mut reader, Compression::None, merged, ApplyMode::Merged)
            .map_err(|e| failed(&e))
            // The tar's zero padding after its end marker, so the writer finishes cleanly.
            .and_then(|_| {
                io::copy(&mut reader, &mut io::sink())
                    .map(drop)
                    .map_err(|e| failed(&e))
            });
        // Closing the read end stops a writer whose reader gave up.
        drop(reader);
        let written = writer
            .join()
            .map_err(|_| BuildError::other("a squash thread panicked"))?;
        // The reader's error explains a writer's broken pipe, so it comes first.
        applied?;
        written.map_err(|e| failed(&e))?;
        Ok(())
    })
}
