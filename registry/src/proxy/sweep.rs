//! Keeping the cache in bounds: at start the size index is rebuilt from storage; then every
//! `proxy.sweepinterval` cached tags older than their upstream's `ttl` are dropped, and
//! whenever the cached blobs exceed `proxy.maxsize` the least recently used ones are evicted.
//!
//! Eviction removes the cache repositories' links first and the blob's bytes only when no
//! other repository (a local one, or another upstream's cache) links it. A manifest whose
//! blobs were evicted stays: a later pull fetches the blobs again.

use std::sync::Arc;
use std::time::SystemTime;

use oci::Digest;

use super::cache::MirrorMetrics;
use super::Mirror;
use crate::error::RegistryError;
use crate::paths;
use crate::storage::StorageDriver;

impl<S: StorageDriver> Mirror<S> {
    /// The cache repositories: every repository under an upstream's storage prefix.
    async fn cache_repositories(&self) -> Result<Vec<String>, RegistryError> {
        let prefixes = self.routes.storage_prefixes();
        let all = self.registry.catalog(None, None).await?.items;
        Ok(all
            .into_iter()
            .filter(|r| prefixes.iter().any(|p| r.starts_with(&format!("{p}/"))))
            .collect())
    }

    /// Rebuilds the size index from the cache repositories' blob links, oldest link first so
    /// that link age stands in for last use.
    pub(super) async fn load_index(&self) -> Result<(), RegistryError> {
        let driver = self.registry.driver();
        let mut found: Vec<(SystemTime, Digest, u64, String)> = Vec::new();
        for repo in self.cache_repositories().await? {
            // The `_layers/<alg>/<hex>/link` tree of paths.rs.
            let layers = format!("{}/_layers", paths::repository(&repo));
            let algorithms = match driver.list(&layers).await {
                Ok(a) => a,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for alg in algorithms {
                let hexes = match driver.list(&format!("{layers}/{alg}")).await {
                    Ok(h) => h,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                for hex in hexes {
                    let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                        continue;
                    };
                    let (Ok(link), Ok(data)) = (
                        driver.stat(&paths::layer_link(&repo, &digest)).await,
                        driver.stat(&paths::blob_data(&digest)).await,
                    ) else {
                        continue;
                    };
                    found.push((link.modified, digest, data.size, repo.clone()));
                }
            }
        }
        found.sort_by_key(|a| a.0);
        for (_, digest, size, repo) in &found {
            self.cache.record(digest, *size, repo);
        }
        tracing::info!(
            blobs = found.len(),
            bytes = self.cache.total_bytes(),
            "mirror: cache index loaded"
        );
        Ok(())
    }

    /// Runs forever: one sweep every interval, and an eviction whenever a fill asks for one.
    pub async fn run_sweeper(self: Arc<Self>) {
        if let Err(e) = self.load_index().await {
            tracing::warn!(error = %e, "mirror: loading the cache index failed; sizes start at 0");
        }
        let mut ticker = tokio::time::interval(self.settings.sweep_interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = self.expire_tags().await {
                        tracing::warn!(error = %e, "mirror: tag expiry failed");
                    }
                }
                _ = self.evict_wanted.notified() => {}
            }
            if let Err(e) = self.evict().await {
                tracing::warn!(error = %e, "mirror: eviction failed");
            }
        }
    }

    /// Asks the sweeper for an eviction when the cache is over its size limit.
    pub(super) fn evict_if_over_limit(&self) {
        if self.settings.maxsize > 0 && self.cache.total_bytes() > self.settings.maxsize {
            self.evict_wanted.notify_one();
        }
    }

    /// Drops cached tags that the upstream has not confirmed for longer than its `ttl`.
    async fn expire_tags(&self) -> Result<(), RegistryError> {
        let driver = self.registry.driver();
        let now = SystemTime::now();
        for repo in self.cache_repositories().await? {
            let Some(upstream) = self.routes.upstreams().iter().find(|u| {
                repo.starts_with(&format!("{}/", super::routing::storage_prefix(u.name())))
            }) else {
                continue;
            };
            let ttl = upstream.settings.ttl;
            if ttl.is_zero() {
                continue;
            }
            let tags = match driver.list(&paths::tags_dir(&repo)).await {
                Ok(t) => t,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for tag in tags {
                let Ok(meta) = driver.stat(&paths::tag_current_link(&repo, &tag)).await else {
                    continue;
                };
                if now.duration_since(meta.modified).unwrap_or_default() > ttl {
                    match driver.delete(&paths::tag_dir(&repo, &tag)).await {
                        Ok(()) => {
                            tracing::info!(repository = %repo, tag, "mirror: cached tag expired (ttl)")
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Evicts least recently used blobs until the cache fits `proxy.maxsize`.
    async fn evict(&self) -> Result<(), RegistryError> {
        if self.settings.maxsize == 0 {
            return Ok(());
        }
        let victims = self.cache.take_victims(self.settings.maxsize);
        if victims.is_empty() {
            return Ok(());
        }
        let driver = self.registry.driver();
        let repositories = self.registry.catalog(None, None).await?.items;
        for (digest, blob) in victims {
            for repo in &blob.repos {
                let link = paths::layer_link(repo, &digest);
                match driver.delete(link.trim_end_matches("/link")).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut still_linked = false;
            for repo in &repositories {
                if driver.stat(&paths::layer_link(repo, &digest)).await.is_ok() {
                    still_linked = true;
                    break;
                }
            }
            if !still_linked {
                let data = paths::blob_data(&digest);
                match driver.delete(data.trim_end_matches("/data")).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            MirrorMetrics::add(&self.metrics.evicted_blobs, 1);
            MirrorMetrics::add(&self.metrics.evicted_bytes, blob.size);
            tracing::info!(%digest, bytes = blob.size, bytes_freed = !still_linked, "mirror: blob evicted (proxy.maxsize)");
        }
        Ok(())
    }
}
