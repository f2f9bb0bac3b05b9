//! Manifests through the mirror. By digest: from the cache, else fetched once and kept (a
//! digest names fixed content, so the upstream is never asked again). By tag: from the cache
//! while younger than the upstream's `freshness`; after that a HEAD asks the upstream for the
//! tag's digest (free on Docker Hub: HEADs do not count against the pull limit), and only a
//! changed digest costs a GET. When the upstream fails (429, 5xx, auth, no answer) the cached
//! tag is served, marked stale.
//!
//! The tag link's modification time is when the upstream last confirmed it; confirming
//! rewrites the link. So freshness and `ttl` need no state beside storage.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use oci::image::ManifestOrIndex;
use oci::{Digest, Digester};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;

use super::cache::MirrorMetrics;
use super::routing::Target;
use super::upstream::{header_text, UpstreamError, MANIFEST_ACCEPT};
use super::{upstream_failure, CacheStatus, Mirror};
use crate::error::{ErrorCode, RegistryError};
use crate::gc::GcGate;
use crate::names::Reference;
use crate::paths;
use crate::service::ManifestBody;
use crate::storage::StorageDriver;

/// How many child manifests of an index are fetched ahead at once.
const PREFETCH_CHILDREN: usize = 4;

impl<S: StorageDriver> Mirror<S> {
    /// Makes sure the manifest `reference` is in the cache repository, as fresh as the
    /// upstream's settings ask, and says how it was found. The caller then serves it from
    /// storage like any local manifest. Manifests are stored holding `gate`, as a manifest PUT
    /// does (gc/gate.rs).
    pub(super) async fn ensure_manifest(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
        gate: &Arc<GcGate>,
    ) -> Result<CacheStatus, RegistryError> {
        match reference {
            Reference::Digest(digest) => {
                if self
                    .registry
                    .get_manifest(&target.storage, reference)
                    .await
                    .is_ok()
                {
                    return Ok(CacheStatus::Hit);
                }
                let stored = self
                    .fetch_manifest(target, digest.as_str(), Some(digest), None, gate)
                    .await
                    .map_err(|e| upstream_failure(&e, ErrorCode::ManifestUnknown))?;
                self.prefetch_children(target, &stored, gate);
                Ok(CacheStatus::Miss)
            }
            Reference::Tag(tag) => self.ensure_tag(target, tag, gate).await,
        }
    }

    async fn ensure_tag(
        self: &Arc<Self>,
        target: &Target,
        tag: &str,
        gate: &Arc<GcGate>,
    ) -> Result<CacheStatus, RegistryError> {
        let link = paths::tag_current_link(&target.storage, tag);
        let cached = match self.registry.driver().stat(&link).await {
            Ok(meta) => match self
                .registry
                .get_manifest(&target.storage, &Reference::Tag(tag.to_string()))
                .await
            {
                Ok(m) => Some((m, meta.modified)),
                Err(_) => None,
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some((_, confirmed)) = &cached {
            let age = SystemTime::now()
                .duration_since(*confirmed)
                .unwrap_or_default();
            if age < target.upstream.settings.freshness {
                return Ok(CacheStatus::Hit);
            }
        }
        let rest = format!("manifests/{tag}");
        let head = target
            .upstream
            .send(
                Method::HEAD,
                &target.remote,
                &rest,
                &[(ACCEPT, MANIFEST_ACCEPT)],
                true,
            )
            .await;
        let upstream_digest = match head {
            Ok(resp) => header_text(resp.headers(), "docker-content-digest")
                .and_then(|d| d.parse::<Digest>().ok()),
            Err(e) if e.is_outage() => {
                return match cached {
                    Some(_) => {
                        tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, tag, error = %e, "mirror: upstream failing; serving the cached tag (stale)");
                        Ok(CacheStatus::Stale)
                    }
                    None => Err(upstream_failure(&e, ErrorCode::ManifestUnknown)),
                };
            }
            Err(e)
                if e.is_not_found()
                    && cached.is_some()
                    && target.upstream.settings.serve_cached_on_not_found =>
            {
                tracing::warn!(upstream = target.upstream.name(), repository = %target.remote, tag, "mirror: the upstream no longer has the tag; serving the cached tag (stale)");
                return Ok(CacheStatus::Stale);
            }
            Err(e) => return Err(upstream_failure(&e, ErrorCode::ManifestUnknown)),
        };
        if let (Some((m, _)), Some(d)) = (&cached, &upstream_digest) {
            if m.digest == *d {
                // Confirmed: rewriting the tag link restarts its freshness window and ttl.
                let _writing = gate.writer(&target.storage).await?;
                self.registry
                    .put_mirrored_manifest(
                        &target.storage,
                        &m.digest,
                        Some(&m.media_type),
                        m.bytes.clone(),
                        Some(tag),
                    )
                    .await?;
                MirrorMetrics::add(&self.metrics.revalidated, 1);
                return Ok(CacheStatus::Revalidated);
            }
        }
        // Changed or never cached: fetch by digest when the HEAD named one (a cached digest
        // is then served without another transfer), else by tag.
        let fetched = match &upstream_digest {
            Some(d) => {
                let by_digest = Reference::Digest(d.clone());
                match self
                    .registry
                    .get_manifest(&target.storage, &by_digest)
                    .await
                {
                    Ok(m) => {
                        let _writing = gate.writer(&target.storage).await?;
                        self.registry
                            .put_mirrored_manifest(
                                &target.storage,
                                d,
                                Some(&m.media_type),
                                m.bytes,
                                Some(tag),
                            )
                            .await
                            .map(|_| ())
                    }
                    Err(_) => self
                        .fetch_manifest(target, d.as_str(), Some(d), Some(tag), gate)
                        .await
                        .map(|stored| self.prefetch_children(target, &stored, gate))
                        .map_err(|e| upstream_failure(&e, ErrorCode::ManifestUnknown)),
                }
            }
            None => self
                .fetch_manifest(target, tag, None, Some(tag), gate)
                .await
                .map(|stored| self.prefetch_children(target, &stored, gate))
                .map_err(|e| upstream_failure(&e, ErrorCode::ManifestUnknown)),
        };
        fetched?;
        Ok(CacheStatus::Miss)
    }

    /// GETs a manifest from the upstream, checks its digest, and stores its exact bytes
    /// (tagged `tag`).
    async fn fetch_manifest(
        self: &Arc<Self>,
        target: &Target,
        reference: &str,
        expected: Option<&Digest>,
        tag: Option<&str>,
        gate: &GcGate,
    ) -> Result<ManifestBody, UpstreamError> {
        let protocol = |detail: String| UpstreamError::Protocol {
            upstream: target.upstream.name().to_string(),
            detail,
        };
        let resp = target
            .upstream
            .send(
                Method::GET,
                &target.remote,
                &format!("manifests/{reference}"),
                &[(ACCEPT, MANIFEST_ACCEPT)],
                true,
            )
            .await?;
        let content_type = header_text(resp.headers(), CONTENT_TYPE.as_str()).map(str::to_string);
        let announced = header_text(resp.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let bytes: Bytes = resp
            .bytes()
            .await
            .map_err(|e| target.upstream.unreachable(&e))?;
        // The digest that names these bytes: the one asked for, else the announced one, else
        // sha256 (spec.md "Pulling manifests"); it must match the bytes either way.
        let digest = expected.or(announced.as_ref()).cloned();
        let digest = match digest {
            Some(d) => {
                let mut h = Digester::new(d.algorithm());
                h.update(&bytes);
                let actual = h.finish();
                if actual != d {
                    return Err(protocol(format!(
                        "manifest {reference} of {} has digest {actual}, not {d}",
                        target.remote
                    )));
                }
                d
            }
            None => Digest::sha256_of(&bytes),
        };
        let _writing = gate
            .writer(&target.storage)
            .await
            .map_err(|e| protocol(format!("manifest {reference} of {}: {e}", target.remote)))?;
        let stored = self
            .registry
            .put_mirrored_manifest(
                &target.storage,
                &digest,
                content_type.as_deref(),
                bytes,
                tag,
            )
            .await
            .map_err(|e| {
                protocol(format!(
                    "manifest {reference} of {}: {}",
                    target.remote, e.message
                ))
            })?;
        tracing::info!(upstream = target.upstream.name(), repository = %target.remote, reference, %digest, "mirror: manifest cached");
        Ok(stored)
    }

    /// For an index just cached: fetches its child manifests in the background. For an image
    /// manifest, with `proxy.prefetchblobs`: starts the downloads of its config and layers.
    fn prefetch_children(
        self: &Arc<Self>,
        target: &Target,
        stored: &ManifestBody,
        gate: &Arc<GcGate>,
    ) {
        match ManifestOrIndex::parse_any(&stored.bytes) {
            Ok((_, ManifestOrIndex::Index(index))) => {
                let children: Vec<Digest> =
                    index.manifests.iter().map(|d| d.digest.clone()).collect();
                tokio::spawn(
                    self.clone()
                        .prefetch(target.clone(), children, gate.clone()),
                );
            }
            Ok((_, ManifestOrIndex::Manifest(manifest))) if self.settings.prefetch_blobs => {
                let blobs: Vec<Digest> = std::iter::once(&manifest.config)
                    .chain(&manifest.layers)
                    .map(|d| d.digest.clone())
                    .collect();
                tokio::spawn(
                    self.clone()
                        .prefetch_blobs(target.clone(), blobs, gate.clone()),
                );
            }
            _ => {}
        }
    }

    /// Starts the download of every blob in `blobs` the cache lacks, all at once: the client
    /// that fetched the manifest asks for them next, and its requests join these downloads
    /// (fill.rs) instead of waiting for a batch of its own to finish before it asks for the
    /// rest. Each download goes on detached; nothing here waits for the bytes.
    async fn prefetch_blobs(
        self: Arc<Self>,
        target: Target,
        blobs: Vec<Digest>,
        gate: Arc<GcGate>,
    ) {
        let started = blobs.into_iter().map(|digest| {
            let (this, target, gate) = (self.clone(), target.clone(), gate.clone());
            async move {
                let fetched = match this.blob_cached(&target, &digest, &gate).await {
                    Ok(true) => return,
                    Ok(false) => this.fetch_blob(&target, &digest, &gate).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = fetched {
                    tracing::warn!(repository = %target.remote, %digest, error = %e, "mirror: prefetching a blob failed");
                }
            }
        });
        futures_util::future::join_all(started).await;
    }

    /// Fetches an index's child manifests that the cache lacks, a few at a time, so that the
    /// platform a client picks next is already here (and stays pullable when the upstream
    /// goes down). Indexes nested in indexes are fetched when asked for, not ahead.
    async fn prefetch(self: Arc<Self>, target: Target, children: Vec<Digest>, gate: Arc<GcGate>) {
        use futures_util::StreamExt;
        futures_util::stream::iter(children)
            .for_each_concurrent(PREFETCH_CHILDREN, |digest| {
                let this = self.clone();
                let target = target.clone();
                let gate = gate.clone();
                async move {
                    let reference = Reference::Digest(digest.clone());
                    if this.registry.get_manifest(&target.storage, &reference).await.is_ok() {
                        return;
                    }
                    let fetched = this
                        .fetch_manifest(&target, digest.as_str(), Some(&digest), None, &gate)
                        .await;
                    if let Err(e) = fetched {
                        tracing::warn!(repository = %target.remote, %digest, error = %e, "mirror: prefetching a child manifest failed");
                    }
                }
            })
            .await;
    }
}

/// A manifest reference the mirror cannot resolve.
pub(super) fn unknown_reference(reference: &str) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference:?} unknown"),
    )
}
