//! Directory → deterministic layer tar, streamed through the compressor while both the tar
//! (diff_id) and the compressed blob (digest) are hashed. Nothing is buffered beyond a few
//! chunks and compression blocks, whatever the layer's size.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::hashing::HashingWriter;
use super::pipeline::{write_behind, ChannelWriter};
use super::tar_writer::{self, EntryHeader};
use super::whiteout::{self, whiteout_name, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use super::{path, xattr, LayerError};
use crate::compression::{CompressOptions, Compression, Compressor};
use crate::digest::Digest;

/// What the source directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The complete filesystem of the layer (a base layer, a COPY result).
    Directory,
    /// An overlayfs upper directory: the diff of a RUN step over its lower layers. Its whiteout
    /// devices (char 0:0) become `.wh.NAME` entries and its opaque directories
    /// (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` under `userxattr`) get a
    /// `.wh..wh..opq` entry; overlay's own `trusted.overlay.*` / `user.overlay.*` xattrs are left
    /// out.
    OverlayUpper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    pub compression: Compression,
    pub compress: CompressOptions,
    /// When set, no mtime in the layer is later than this (seconds since the epoch), as the
    /// reproducible-builds SOURCE_DATE_EPOCH convention asks.
    pub source_date_epoch: Option<u64>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            compression: Compression::Gzip,
            compress: CompressOptions::default(),
            source_date_epoch: None,
        }
    }
}

/// What a manifest and an image config need to know about a created layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
    /// sha256 of the blob as written: the manifest descriptor's digest.
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

/// Writes `source` as a layer into `out` and returns its digests and sizes.
///
/// The tar is deterministic: entries in depth-first order with siblings sorted by name bytes
/// (so parents come before children), numeric uid/gid with empty user and group names, mtimes
/// in whole seconds clamped to `source_date_epoch`, no atime/ctime, PAX headers only where
/// ustar cannot hold a value and for xattrs. The root directory itself is not an entry.
/// Hardlinks are detected by (device, inode): the first path in that order carries the data and
/// later ones are hardlink entries to it. Sockets cannot be stored in a tar and are skipped.
pub fn create<W: Write + Send>(
    source: &Path,
    kind: SourceKind,
    opts: &CreateOptions,
    out: W,
) -> Result<LayerInfo, LayerError> {
    check_source(source)?;
    let blob = HashingWriter::new(out);
    let compressor =
        Compressor::new(blob, opts.compression, &opts.compress).map_err(LayerError::Output)?;
    let (compressor, diff_id, uncompressed_size) =
        write_tar(source, kind, opts.source_date_epoch, compressor)?;
    let blob = compressor.finish().map_err(LayerError::Output)?;
    let (_, digest, size) = blob.finish();
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        uncompressed_size,
        compression: opts.compression,
    })
}

/// The diff ID and size of the tar [`create`] makes of `source` (with no `source_date_epoch`),
/// without compressing or storing it: how a builder names a layer it keeps unpacked and
/// compresses only if an image needs it.
pub fn diff_id(source: &Path, kind: SourceKind) -> Result<(Digest, u64), LayerError> {
    check_source(source)?;
    let (_, diff_id, size) = write_tar(source, kind, None, std::io::sink())?;
    Ok((diff_id, size))
}

/// Lowers every mtime under `source` that is later than `epoch` to `epoch`, so that the
/// directory itself holds what [`create`] with that `source_date_epoch` would record, and a tar
/// made of it later without the option has the same diff ID.
pub fn clamp_mtimes(source: &Path, epoch: u64) -> Result<(), LayerError> {
    clamp_dir(source, i64::try_from(epoch).unwrap_or(i64::MAX))
}

fn clamp_dir(dir: &Path, epoch: i64) -> Result<(), LayerError> {
    let source_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayerError::Source { path, source }
    };
    for entry in fs::read_dir(dir).map_err(source_error(dir))? {
        let path = entry.map_err(source_error(dir))?.path();
        let md = fs::symlink_metadata(&path).map_err(source_error(&path))?;
        if md.is_dir() {
            clamp_dir(&path, epoch)?;
        }
        // Setting an entry's times changes its ctime only, never its parent's mtime.
        if md.mtime() > epoch {
            set_mtime(&path, epoch).map_err(source_error(&path))?;
        }
    }
    Ok(())
}

/// Sets the mtime of `path` (never following a symlink) and leaves its atime alone.
pub fn set_mtime(path: &Path, secs: i64) -> std::io::Result<()> {
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid NUL-terminated path and two timespecs, as utimensat(2) requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn check_source(source: &Path) -> Result<(), LayerError> {
    let md = fs::symlink_metadata(source).map_err(|e| LayerError::Source {
        path: source.to_path_buf(),
        source: e,
    })?;
    if !md.is_dir() {
        return Err(LayerError::UnsupportedSource {
            path: source.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    Ok(())
}

/// Walks `source` into a tar that goes to `sink`, hashed on the way: returns the sink, the
/// tar's sha256 (the diff ID) and its length. This thread walks and reads the source; a helper
/// thread hashes (and, through `sink`, compresses) the tar.
fn write_tar<W: Write + Send>(
    source: &Path,
    kind: SourceKind,
    source_date_epoch: Option<u64>,
    sink: W,
) -> Result<(W, Digest, u64), LayerError> {
    let ((), tar) = write_behind(
        HashingWriter::new(sink),
        |tar| {
            let mut walker = Walker {
                kind,
                source_date_epoch,
                first_links: HashMap::new(),
                tar,
                copy_buf: vec![0; 1 << 20],
            };
            walker.walk_dir(source, b"")?;
            tar_writer::write_end(walker.tar).map_err(LayerError::Output)
        },
        LayerError::Output,
    )?;
    Ok(tar.finish())
}

struct Walker<'a> {
    kind: SourceKind,
    source_date_epoch: Option<u64>,
    /// (device, inode) of multiply-linked files → the path that was written with the data.
    first_links: HashMap<(u64, u64), Vec<u8>>,
    tar: &'a mut ChannelWriter,
    copy_buf: Vec<u8>,
}

impl Walker<'_> {
    fn walk_dir(&mut self, dir: &Path, rel: &[u8]) -> Result<(), LayerError> {
        let source_error = |e| LayerError::Source {
            path: dir.to_path_buf(),
            source: e,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(source_error)? {
            names.push(entry.map_err(source_error)?.file_name().into_vec());
        }
        names.sort_unstable();
        for name in names {
            let abs = dir.join(std::ffi::OsStr::from_bytes(&name));
            self.entry(&abs, &path::join(rel, &name), &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &[u8], name: &[u8]) -> Result<(), LayerError> {
        let source_error = |e| LayerError::Source {
            path: abs.to_path_buf(),
            source: e,
        };
        let unsupported = |reason: &str| LayerError::UnsupportedSource {
            path: abs.to_path_buf(),
            reason: reason.to_string(),
        };
        let md = fs::symlink_metadata(abs).map_err(source_error)?;
        let ft = md.file_type();
        let overlay = self.kind == SourceKind::OverlayUpper;
        let mtime = self.clamp_mtime(md.mtime());
        let mode = md.mode() & 0o7777;

        if overlay && ft.is_char_device() && md.rdev() == 0 {
            // An overlayfs whiteout. Since Linux 5.8 overlay hardlinks all whiteouts to one
            // shared inode, so this check must come before hardlink detection.
            let parent = path::split(rel).0;
            let wh = path::join(parent, &whiteout_name(name));
            return self.write_empty_file(&wh, mode, md.uid(), md.gid(), mtime);
        }
        if ft.is_socket() {
            // Tar has no type for sockets (Docker and BuildKit skip them too); skipped before
            // hardlink bookkeeping so that no hardlink entry can point at one.
            return Ok(());
        }
        if name.starts_with(WHITEOUT_PREFIX) {
            return Err(unsupported(
                "names starting with `.wh.` are reserved for whiteouts (image-spec layer.md)",
            ));
        }

        let mut xattrs = xattr::list(abs).map_err(source_error)?;
        let mut opaque = false;
        if overlay {
            for (key, value) in &xattrs {
                match whiteout::overlay_xattr(key) {
                    Some(b"opaque") => opaque = value == b"y",
                    // Their content lives in a lower layer: the upper dir alone is no diff.
                    Some(b"redirect") => {
                        return Err(unsupported(
                            "overlayfs redirect_dir entries cannot be diffed",
                        ))
                    }
                    Some(b"metacopy") => {
                        return Err(unsupported("overlayfs metacopy entries cannot be diffed"))
                    }
                    _ => {}
                }
            }
            xattrs.retain(|(key, _)| whiteout::overlay_xattr(key).is_none());
        }

        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.first_links.get(&(md.dev(), md.ino())) {
                let first = first.clone();
                let header = EntryHeader {
                    path: rel,
                    kind: EntryType::Link,
                    mode,
                    uid: md.uid().into(),
                    gid: md.gid().into(),
                    mtime,
                    size: 0,
                    link: Some(&first),
                    device: (0, 0),
                    xattrs: &xattrs,
                };
                return tar_writer::write_header(self.tar, &header).map_err(LayerError::Output);
            }
            self.first_links.insert((md.dev(), md.ino()), rel.to_vec());
        }

        let mut header = EntryHeader {
            path: rel,
            kind: EntryType::Regular,
            mode,
            uid: md.uid().into(),
            gid: md.gid().into(),
            mtime,
            size: 0,
            link: None,
            device: (0, 0),
            xattrs: &xattrs,
        };
        if ft.is_dir() {
            let dir_path = [rel, b"/"].concat();
            header.path = &dir_path;
            header.kind = EntryType::Directory;
            tar_writer::write_header(self.tar, &header).map_err(LayerError::Output)?;
            if opaque {
                // Right after its directory, before the children, as layer.md recommends for
                // whiteouts.
                let marker = path::join(rel, OPAQUE_WHITEOUT);
                self.write_empty_file(&marker, 0o644, 0, 0, mtime)?;
            }
            return self.walk_dir(abs, rel);
        }
        if ft.is_file() {
            header.size = md.len();
            let file = File::open(abs).map_err(source_error)?;
            tar_writer::write_header(self.tar, &header).map_err(LayerError::Output)?;
            return self.copy_content(file, md.len(), abs);
        }
        let target;
        if ft.is_symlink() {
            target = fs::read_link(abs)
                .map_err(source_error)?
                .into_os_string()
                .into_vec();
            header.kind = EntryType::Symlink;
            header.link = Some(&target);
        } else if ft.is_char_device() || ft.is_block_device() {
            header.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            header.device = (libc::major(md.rdev()), libc::minor(md.rdev()));
        } else {
            // Sockets returned early: a fifo is all that is left.
            header.kind = EntryType::Fifo;
        }
        tar_writer::write_header(self.tar, &header).map_err(LayerError::Output)
    }

    fn clamp_mtime(&self, mtime: i64) -> u64 {
        // ustar cannot express times before 1970 without extensions; such files get 0.
        let mtime = u64::try_from(mtime).unwrap_or(0);
        self.source_date_epoch
            .map_or(mtime, |epoch| mtime.min(epoch))
    }

    fn write_empty_file(
        &mut self,
        rel: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> Result<(), LayerError> {
        let header = EntryHeader {
            path: rel,
            kind: EntryType::Regular,
            mode,
            uid: uid.into(),
            gid: gid.into(),
            mtime,
            size: 0,
            link: None,
            device: (0, 0),
            xattrs: &[],
        };
        tar_writer::write_header(self.tar, &header).map_err(LayerError::Output)
    }

    /// Copies exactly `size` bytes (the size the header announced) of `file` into the tar.
    fn copy_content(&mut self, file: File, size: u64, abs: &Path) -> Result<(), LayerError> {
        let mut reader = file.take(size);
        let mut copied = 0u64;
        loop {
            let n = match reader.read(&mut self.copy_buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(LayerError::Source {
                        path: abs.to_path_buf(),
                        source: e,
                    })
                }
            };
            self.tar
                .write_all(&self.copy_buf[..n])
                .map_err(LayerError::Output)?;
            copied += n as u64;
        }
        if copied != size {
            return Err(LayerError::UnsupportedSource {
                path: abs.to_path_buf(),
                reason: format!("file shrank from {size} to {copied} bytes while being read"),
            });
        }
        tar_writer::write_padding(self.tar, size).map_err(LayerError::Output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a.txt"), b"alpha").unwrap();
        fs::write(dir.path().join("b.txt"), vec![7u8; 3 << 20]).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", dir.path().join("link")).unwrap();
        dir
    }

    fn created(dir: &Path, source_date_epoch: Option<u64>) -> LayerInfo {
        let opts = CreateOptions {
            source_date_epoch,
            ..CreateOptions::default()
        };
        create(dir, SourceKind::Directory, &opts, std::io::sink()).unwrap()
    }

    #[test]
    fn diff_id_is_the_diff_id_of_the_created_layer() {
        let dir = tree();
        let info = created(dir.path(), None);
        let (diff_id, size) = diff_id(dir.path(), SourceKind::Directory).unwrap();
        assert_eq!(diff_id, info.diff_id);
        assert_eq!(size, info.uncompressed_size);
    }

    #[test]
    fn a_clamped_directory_is_what_create_records_with_the_epoch() {
        let dir = tree();
        let epoch = 1_000_000_000;
        let clamped_in_tar = created(dir.path(), Some(epoch));
        assert_ne!(clamped_in_tar.diff_id, created(dir.path(), None).diff_id);
        clamp_mtimes(dir.path(), epoch).unwrap();
        assert_eq!(
            diff_id(dir.path(), SourceKind::Directory).unwrap().0,
            clamped_in_tar.diff_id
        );
        let link = fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert_eq!(link.mtime(), epoch as i64, "the symlink itself is clamped");
        // Nothing later than the epoch moves again.
        clamp_mtimes(dir.path(), epoch + 10).unwrap();
        assert_eq!(
            diff_id(dir.path(), SourceKind::Directory).unwrap().0,
            clamped_in_tar.diff_id
        );
    }

    #[test]
    fn a_file_is_no_source() {
        let dir = tree();
        assert!(matches!(
            diff_id(&dir.path().join("b.txt"), SourceKind::Directory),
            Err(LayerError::UnsupportedSource { .. })
        ));
    }
}
