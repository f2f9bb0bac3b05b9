//! A content-addressed blob store in containerd's ingest model: a blob is written to a private
//! temporary file while it is hashed, its size and digest are checked, it is fsynced, and only
//! then renamed to `blobs/<alg>/<hex>`. A failed or interrupted write leaves nothing under
//! `blobs/`, so a blob that is visible is always whole and correct.
//!
//! The `blobs/` tree has the layout of an OCI image layout (image-layout.md, "Blobs"), so the
//! same store serves as the blob directory of a layout.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest, Digester};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} not found")]
    NotFound(Digest),
}

impl ContentError {
    fn io(path: &Path, source: io::Error) -> ContentError {
        ContentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a writer must receive, when the caller knows it in advance.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

impl Expected {
    pub fn digest(digest: Digest) -> Self {
        Expected {
            digest: Some(digest),
            size: None,
        }
    }

    pub fn exact(digest: Digest, size: u64) -> Self {
        Expected {
            digest: Some(digest),
            size: Some(size),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a store whose blobs live under `root/blobs` and whose
    /// in-progress writes live under `root/ingest`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, ContentError> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(|e| ContentError::io(&dir, e))?;
        }
        Ok(ContentStore { root })
    }

    /// Opens the blobs of an OCI image layout someone else wrote, to read from: nothing is
    /// created in it.
    pub fn open_layout(root: impl Into<PathBuf>) -> Result<ContentStore, ContentError> {
        let root = root.into();
        let blobs = root.join("blobs");
        if !blobs.is_dir() {
            return Err(ContentError::io(
                &blobs,
                io::Error::new(io::ErrorKind::NotFound, "not an OCI image layout"),
            ));
        }
        Ok(ContentStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.encoded())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(ContentError::io(&self.path(digest), e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(digest.clone()),
            _ => ContentError::io(&path, e),
        })
    }

    /// Reads a whole blob (for manifests and configs) and checks its digest, so that a blob
    /// damaged on disk is never trusted.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut data = Vec::new();
        let path = self.path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(|e| ContentError::io(&path, e))?;
        let mut d = Digester::new(digest.algorithm());
        d.update(&data);
        let actual = d.finish();
        if actual != *digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Stores `data` and returns its sha256 digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, ContentError> {
        let digest = Digest::sha256_of(data);
        if !self.contains(&digest) {
            let mut w = self.writer(Expected::exact(digest.clone(), data.len() as u64))?;
            w.write_all(data)
                .map_err(|e| ContentError::io(&w.temp, e))?;
            w.commit()?;
        }
        Ok(digest)
    }

    /// Copies blob `digest` of `size` bytes from `source` unless this store has it already,
    /// verified on the way in.
    pub fn copy_from(
        &self,
        source: &ContentStore,
        digest: &Digest,
        size: u64,
    ) -> Result<(), ContentError> {
        if self.contains(digest) {
            return Ok(());
        }
        self.ingest(
            source.open_blob(digest)?,
            Expected::exact(digest.clone(), size),
        )?;
        Ok(())
    }

    /// Streams `reader` into the store, verifying it against `expected`.
    pub fn ingest(
        &self,
        reader: impl Read,
        expected: Expected,
    ) -> Result<(Digest, u64), ContentError> {
        let mut w = self.writer(expected)?;
        let mut reader = reader;
        io::copy(&mut reader, &mut w).map_err(|e| ContentError::io(&w.temp, e))?;
        w.commit()
    }

    /// A writer for one blob. Dropping it without [`BlobWriter::commit`] discards the data.
    pub fn writer(&self, expected: Expected) -> Result<BlobWriter, ContentError> {
        let ingest = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&ingest)
            .map_err(|e| ContentError::io(&ingest, e))?;
        let algorithm = expected
            .digest
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        Ok(BlobWriter {
            temp: file.path().to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            digester: Digester::new(algorithm),
            written: 0,
            expected,
            store: self.clone(),
        })
    }

    /// Removes a blob; absent blobs are fine.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContentError::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.name());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ContentError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| ContentError::io(&dir, e))?;
                let name = entry.file_name();
                if let Ok(d) = format!("{}:{}", alg.name(), name.to_string_lossy()).parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Removes leftovers of writers that died (killed processes) older than `age`.
    pub fn clean_ingest(&self, age: std::time::Duration) -> Result<u64, ContentError> {
        let dir = self.root.join("ingest");
        let mut removed = 0;
        let entries = fs::read_dir(&dir).map_err(|e| ContentError::io(&dir, e))?;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// An in-progress blob write; see [`ContentStore::writer`].
pub struct BlobWriter {
    temp: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    digester: Digester,
    written: u64,
    expected: Expected,
    store: ContentStore,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies, fsyncs and moves the blob into place. A blob that is already stored (another
    /// writer won the race) is kept and this copy dropped: both are the same bytes.
    pub fn commit(self) -> Result<(Digest, u64), ContentError> {
        let BlobWriter {
            temp,
            file,
            digester,
            written,
            expected,
            store,
        } = self;
        let actual = digester.finish();
        if let Some(size) = expected.size {
            if size != written {
                return Err(ContentError::SizeMismatch {
                    digest: expected
                        .digest
                        .as_ref()
                        .map_or_else(|| actual.to_string(), Digest::to_string),
                    expected: size,
                    actual: written,
                });
            }
        }
        if let Some(digest) = expected.digest {
            if digest != actual {
                return Err(ContentError::DigestMismatch {
                    expected: digest,
                    actual,
                });
            }
        }
        let file = file
            .into_inner()
            .map_err(|e| ContentError::io(&temp, e.into_error()))?;
        file.as_file()
            .sync_all()
            .map_err(|e| ContentError::io(&temp, e))?;
        let target = store.path(&actual);
        if !target.exists() {
            let dir = target.parent().unwrap_or(store.root());
            fs::create_dir_all(dir).map_err(|e| ContentError::io(dir, e))?;
            file.persist(&target)
                .map_err(|e| ContentError::io(&target, e.error))?;
            // The rename is durable only once the directory entry is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ContentError::io(dir, e))?;
        }
        Ok((actual, written))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.digester.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        assert!(store.contains(&d));
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert_eq!(store.size(&d).unwrap(), 5);
        assert_eq!(store.put(b"hello").unwrap(), d);
        assert_eq!(store.list().unwrap(), vec![d]);
    }

    #[test]
    fn failed_ingest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let wrong = Digest::sha256_of(b"other");
        let err = store
            .ingest(&b"hello"[..], Expected::digest(wrong))
            .unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }));
        let err = store
            .ingest(
                &b"hello"[..],
                Expected::exact(Digest::sha256_of(b"hello"), 4),
            )
            .unwrap_err();
        assert!(matches!(err, ContentError::SizeMismatch { .. }));
        // An abandoned writer is removed on drop.
        let mut w = store.writer(Expected::default()).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn damaged_blob_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        fs::write(store.path(&d), b"jello").unwrap();
        assert!(matches!(
            store.read(&d),
            Err(ContentError::DigestMismatch { .. })
        ));
    }
}
