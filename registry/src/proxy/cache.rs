//! What the mirror has cached, for the size limit (`proxy.maxsize`, least recently used blobs
//! go first) and the metrics. The index lives in memory and is rebuilt from storage at start
//! (link times stand in for last use), so storage stays the only truth.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oci::Digest;

/// Counters of the mirror (docs/REGISTRY.md, "Pull-through mirror").
#[derive(Debug, Default)]
pub struct MirrorMetrics {
    /// Requests answered from the cache without asking the upstream.
    pub hits: AtomicU64,
    /// Requests that needed the upstream's content (blobs and manifests).
    pub misses: AtomicU64,
    /// Tag requests whose cached manifest the upstream confirmed (a HEAD).
    pub revalidated: AtomicU64,
    /// Tag requests answered from the cache because the upstream failed (429, 5xx, down).
    pub stale: AtomicU64,
    /// Blob bytes received from upstreams.
    pub upstream_bytes: AtomicU64,
    /// Blob downloads started from upstreams (one per digest however many clients wait).
    pub upstream_fetches: AtomicU64,
    pub evicted_blobs: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// Bytes of the cached blobs now (a gauge, kept by `CacheIndex`).
    pub cached_bytes: AtomicU64,
}

impl MirrorMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus' text format (metrics.rs renders the rest).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let counters = [
            (
                &self.hits,
                "hits",
                "Mirror requests answered from the cache.",
            ),
            (
                &self.misses,
                "misses",
                "Mirror requests that needed an upstream's content.",
            ),
            (
                &self.revalidated,
                "revalidated",
                "Cached tags confirmed by the upstream.",
            ),
            (
                &self.stale,
                "stale",
                "Cached content served because the upstream failed.",
            ),
            (
                &self.upstream_bytes,
                "upstream_bytes",
                "Blob bytes received from upstreams.",
            ),
            (
                &self.upstream_fetches,
                "upstream_fetches",
                "Blob downloads from upstreams.",
            ),
            (
                &self.evicted_blobs,
                "evicted_blobs",
                "Cached blobs evicted for proxy.maxsize.",
            ),
            (
                &self.evicted_bytes,
                "evicted_bytes",
                "Bytes evicted for proxy.maxsize.",
            ),
        ];
        for (counter, name, help) in counters {
            let name = format!("rregistry_mirror_{name}_total");
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rregistry_mirror_cached_bytes Bytes of the blobs the mirror holds (see proxy.maxsize).\n# TYPE rregistry_mirror_cached_bytes gauge\nrregistry_mirror_cached_bytes {}",
            self.cached_bytes.load(Ordering::Relaxed)
        );
    }
}

/// A cached blob: its size, when it was last used (a logical clock), and the cache
/// repositories that link it.
#[derive(Debug, Clone)]
pub struct CachedBlob {
    pub size: u64,
    last_used: u64,
    pub repos: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Index {
    blobs: HashMap<Digest, CachedBlob>,
    total: u64,
    clock: u64,
}

#[derive(Debug)]
pub struct CacheIndex {
    inner: Mutex<Index>,
    metrics: Arc<MirrorMetrics>,
}

impl CacheIndex {
    /// An empty index that keeps `metrics.cached_bytes` up to date.
    pub fn new(metrics: Arc<MirrorMetrics>) -> CacheIndex {
        CacheIndex {
            inner: Mutex::default(),
            metrics,
        }
    }

    fn publish(&self, index: &Index) {
        self.metrics
            .cached_bytes
            .store(index.total, Ordering::Relaxed);
    }

    /// A blob cached (or found at start) in `repo`.
    pub fn record(&self, digest: &Digest, size: u64, repo: &str) {
        let mut index = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        index.clock += 1;
        let now = index.clock;
        let mut added = 0;
        let entry = index.blobs.entry(digest.clone()).or_insert_with(|| {
            added = size;
            CachedBlob {
                size,
                last_used: now,
                repos: BTreeSet::new(),
            }
        });
        entry.last_used = now;
        entry.repos.insert(repo.to_string());
        index.total += added;
        self.publish(&index);
    }

    /// A cached blob served again.
    pub fn touch(&self, digest: &Digest) {
        let mut index = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        index.clock += 1;
        let now = index.clock;
        if let Some(entry) = index.blobs.get_mut(digest) {
            entry.last_used = now;
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Removes the least recently used blobs until at most `limit` bytes remain and returns
    /// them; the caller deletes them from storage.
    pub fn take_victims(&self, limit: u64) -> Vec<(Digest, CachedBlob)> {
        let mut index = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if index.total <= limit {
            return Vec::new();
        }
        let mut order: Vec<(u64, Digest)> = index
            .blobs
            .iter()
            .map(|(d, b)| (b.last_used, d.clone()))
            .collect();
        order.sort_unstable();
        let mut victims = Vec::new();
        for (_, digest) in order {
            if index.total <= limit {
                break;
            }
            if let Some(blob) = index.blobs.remove(&digest) {
                index.total -= blob.size;
                victims.push((digest, blob));
            }
        }
        self.publish(&index);
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first() {
        let metrics = Arc::new(MirrorMetrics::default());
        let index = CacheIndex::new(metrics.clone());
        let d = |s: &str| Digest::sha256_of(s.as_bytes());
        index.record(&d("a"), 10, "r1");
        index.record(&d("b"), 10, "r1");
        index.record(&d("c"), 10, "r2");
        index.record(&d("a"), 10, "r2");
        index.touch(&d("b"));
        assert_eq!(index.total_bytes(), 30);
        let victims = index.take_victims(15);
        let gone: Vec<_> = victims.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(gone, vec![d("c"), d("a")]);
        assert_eq!(victims[1].1.repos.len(), 2);
        assert_eq!(index.total_bytes(), 10);
        assert_eq!(metrics.cached_bytes.load(Ordering::Relaxed), 10);
        assert!(index.take_victims(15).is_empty());
    }
}
