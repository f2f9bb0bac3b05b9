//! The checksum of a COPY/ADD's sources, the context part of the step's cache key
//! (DESIGN.md "Cache keys").
//!
//! Per entry it covers: type, source path, destination path, permission bits (with
//! setuid/setgid/sticky), uid, gid, and then the size and content hash of a regular file, the
//! target of a symlink, or the device number of a device node. Never mtime/atime/ctime: a fresh
//! CI clone of the same tree must hit the cache. Never a directory's size either, which
//! depends on the filesystem, not on the tree. Ignored and excluded files are not entries, so
//! they cannot change it.

use std::os::unix::fs::MetadataExt;

use oci::{Algorithm, Digest, Digester};

use super::scoped::is_missing;
use super::sources::CopyEntry;
use super::stat_cache::StatCache;
use super::walk::bytes;
use super::{BuildContext, ContextError, FileKind};

impl BuildContext {
    /// Digest of what `entries` (from [`BuildContext::resolve_sources`]) would copy. File
    /// contents are hashed in parallel, or taken from `cache` when the file's (size, mtime,
    /// ctime, inode, device) are unchanged since it was last hashed; call
    /// [`StatCache::save`] afterwards to keep new hashes for the next build.
    pub fn checksum(
        &self,
        entries: &[CopyEntry],
        cache: &mut StatCache,
    ) -> Result<Digest, ContextError> {
        let mut metas = Vec::with_capacity(entries.len());
        for entry in entries {
            let abs = self.root.join(&entry.source);
            match std::fs::symlink_metadata(&abs) {
                Ok(meta) => metas.push((abs, meta)),
                // Deleted since resolution: the build must not use a stale view.
                Err(e) if is_missing(&e) => {
                    return Err(ContextError::NotFound {
                        path: entry.source.display().to_string(),
                    })
                }
                Err(source) => return Err(ContextError::Io { path: abs, source }),
            }
        }
        let files: Vec<_> = metas
            .iter()
            .filter(|(_, meta)| meta.file_type().is_file())
            .map(|(abs, meta)| (abs.as_path(), meta))
            .collect();
        let mut contents = cache.content_digests(&files)?.into_iter();

        let mut digester = Digester::new(Algorithm::Sha256);
        for (entry, (abs, meta)) in entries.iter().zip(&metas) {
            let kind = FileKind::of(meta.file_type());
            let tag: &[u8] = match kind {
                FileKind::File => b"file",
                FileKind::Dir => b"dir",
                FileKind::Symlink => b"symlink",
                FileKind::Other => b"other",
            };
            field(&mut digester, tag);
            field(&mut digester, bytes(&entry.source));
            field(&mut digester, bytes(&entry.dest));
            field(
                &mut digester,
                format!("{:o}", meta.mode() & 0o7777).as_bytes(),
            );
            field(
                &mut digester,
                format!("{}:{}", meta.uid(), meta.gid()).as_bytes(),
            );
            match kind {
                FileKind::File => {
                    field(&mut digester, meta.size().to_string().as_bytes());
                    // content_digests returns one digest per regular file, in order.
                    let content = contents.next().ok_or_else(|| ContextError::NotFound {
                        path: entry.source.display().to_string(),
                    })?;
                    field(&mut digester, content.as_str().as_bytes());
                }
                FileKind::Symlink => {
                    let target = std::fs::read_link(abs).map_err(|source| ContextError::Io {
                        path: abs.clone(),
                        source,
                    })?;
                    field(&mut digester, bytes(&target));
                }
                FileKind::Other => {
                    let format = meta.mode() & libc::S_IFMT;
                    field(
                        &mut digester,
                        format!("{format:o} {}", meta.rdev()).as_bytes(),
                    );
                }
                FileKind::Dir => {}
            }
        }
        Ok(digester.finish())
    }
}

/// Length-prefixed so that no choice of names can make two different trees hash alike.
fn field(digester: &mut Digester, value: &[u8]) {
    digester.update(&(value.len() as u64).to_le_bytes());
    digester.update(value);
}
