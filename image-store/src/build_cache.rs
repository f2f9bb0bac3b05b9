//! The builder's cache: step cache key → the layer that step produced. Records live under
//! `ROOT/build-cache/<key hex>.json`; their layers are GC roots, so `prune` keeps them until
//! the cache itself is pruned.

use std::fs;
use std::io;
use std::path::PathBuf;

use oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::store::{io_err, write_atomic, Store, StoreError};

/// What a cached step produced: a layer, or nothing (an empty diff).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub layer: Option<CachedLayer>,
    /// When the step first ran (RFC 3339), for history entries of rebuilt images.
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

impl Store {
    fn cache_dir(&self) -> PathBuf {
        self.root().join("build-cache")
    }

    /// The record of `key`, if it is cached and its layer blob is still stored.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>, StoreError> {
        let path = self.cache_dir().join(format!("{}.json", key.encoded()));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        // A damaged record is a miss, not an error: the step just runs again.
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            return Ok(None);
        };
        match &record.layer {
            Some(layer) if !self.content().contains(&layer.descriptor.digest) => Ok(None),
            _ => Ok(Some(record)),
        }
    }

    pub fn cache_put(&self, key: &Digest, record: &CacheRecord) -> Result<(), StoreError> {
        let dir = self.cache_dir();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let bytes = serde_json::to_vec(record).map_err(|e| io_err(&dir)(e.into()))?;
        write_atomic(&dir.join(format!("{}.json", key.encoded())), &bytes)
    }

    /// Every layer the cache refers to (GC roots).
    pub(crate) fn cache_layers(&self) -> Result<Vec<CachedLayer>, StoreError> {
        let dir = self.cache_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            if let Ok(bytes) = fs::read(entry.path()) {
                if let Ok(CacheRecord {
                    layer: Some(layer), ..
                }) = serde_json::from_slice(&bytes)
                {
                    out.push(layer);
                }
            }
        }
        Ok(out)
    }

    /// Drops the whole build cache (`rbuild prune --cache`); GC then frees its layers.
    pub fn cache_clear(&self) -> Result<(), StoreError> {
        let dir = self.cache_dir();
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }
}
