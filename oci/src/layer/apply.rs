//! Layer tar → directory, safely (see `root` for how paths stay inside the target) and with
//! layer.md's whiteout semantics.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, futimens, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use tar::EntryType;

use super::pipeline::read_ahead;
use super::root::{self, Root};
use super::whiteout::{self, Whiteout, OVERLAY_OPAQUE_XATTR};
use super::{display_name, path, xattr, LayerError};
use crate::compression::{decompress, Compression};
use crate::digest::Digest;

/// Where the layer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Onto a directory that already holds the lower layers: `.wh.NAME` deletes NAME and
    /// `.wh..wh..opq` empties its directory of what the lower layers had (but never of what
    /// this layer adds, wherever the marker sits in the tar; layer.md "Opaque Whiteout").
    Merged,
    /// Into an empty directory that will be an overlayfs lowerdir: whiteouts become what
    /// overlayfs understands, a char device 0:0 for `.wh.NAME` and the xattr
    /// `trusted.overlay.opaque=y` on the directory of a `.wh..wh..opq`.
    OverlayLayer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries applied, whiteouts included.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// sha256 of the uncompressed stream, to check against the image config's diff_id.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Extracts a layer stream compressed as `compression` onto `target`.
///
/// Every path is resolved inside `target` (openat2 RESOLVE_IN_ROOT): absolute names are taken
/// relative to it, names climbing out with `..` are refused, symlinks from this or earlier
/// layers resolve as if `target` were `/`, hardlinks must point inside. Content is streamed to
/// disk, never held in memory. Ownership needs root (or a user namespace mapping the ids);
/// setuid/setgid bits are set after chown, which would clear them, and xattrs after both.
///
/// On error the target holds the entries applied so far: callers extract into a staging
/// directory and rename it into place once this returns Ok, so a half-applied layer is
/// never visible.
pub fn apply<R: Read + Send>(
    reader: R,
    compression: Compression,
    target: &Path,
    mode: ApplyMode,
) -> Result<ApplyStats, LayerError> {
    let root = Root::open(target).map_err(|e| LayerError::Target {
        path: target.to_path_buf(),
        source: e.into(),
    })?;
    let stream = decompress(reader, compression).map_err(LayerError::Read)?;
    let mut applier = Applier {
        root,
        mode,
        added: HashSet::new(),
        dirs: Vec::new(),
        entries: 0,
        bytes: 0,
        copy_buf: vec![0; 1 << 20],
    };
    let ((), diff_id, uncompressed_size) = read_ahead(
        stream,
        |tar_stream| {
            let mut archive = tar::Archive::new(tar_stream);
            for entry in archive.entries().map_err(LayerError::Read)? {
                let mut entry = entry.map_err(LayerError::Read)?;
                applier.entry(&mut entry)?;
            }
            applier.finish_dirs()
        },
        LayerError::Read,
    )?;
    Ok(ApplyStats {
        entries: applier.entries,
        bytes: applier.bytes,
        diff_id,
        uncompressed_size,
    })
}

/// The attributes an entry restores.
struct Meta {
    mode: u32,
    uid: Uid,
    gid: Gid,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose mode and mtime are set after the whole layer: children written later
/// would change its mtime, and a read-only mode would be in the way.
struct DeferredDir {
    path: Vec<u8>,
    mode: u32,
    mtime: TimeSpec,
}

struct Applier {
    root: Root,
    mode: ApplyMode,
    /// Paths this layer created, with their ancestors: whiteouts only hide lower layers.
    added: HashSet<Vec<u8>>,
    dirs: Vec<DeferredDir>,
    entries: u64,
    bytes: u64,
    copy_buf: Vec<u8>,
}

/// Builds the error for a failed syscall on an entry.
fn failed<'a>(entry: &'a str, action: &'static str) -> impl FnOnce(Errno) -> LayerError + 'a {
    move |errno| LayerError::Entry {
        entry: entry.to_string(),
        action,
        source: errno.into(),
    }
}

fn refuse(entry: &str, reason: impl Into<String>) -> LayerError {
    LayerError::Unsafe {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

impl Applier {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw_name = entry.path_bytes().into_owned();
        let name_str = display_name(&raw_name);
        let name_str = name_str.as_str();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // pax global headers carry archive-wide defaults, no file.
            return Ok(());
        }
        self.entries += 1;
        let rel = path::clean(&raw_name).map_err(|r| refuse(name_str, r))?;
        let (parent, file_name) = path::split(&rel);

        if let Some(wh) = whiteout::parse(file_name) {
            let wh = wh.map_err(|r| refuse(name_str, r))?;
            return self.whiteout(parent, wh, name_str);
        }
        let supported = matches!(
            kind,
            EntryType::Directory
                | EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Symlink
                | EntryType::Link
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo
        );
        if !supported {
            return Err(LayerError::UnsupportedEntry {
                entry: name_str.to_string(),
                kind: kind.as_byte() as char,
            });
        }
        let meta = read_meta(entry, name_str)?;

        if rel.is_empty() {
            // `./` itself: only a directory entry makes sense, and it updates the target root.
            if kind != EntryType::Directory {
                return Err(refuse(
                    name_str,
                    "a non-directory entry names the target root",
                ));
            }
            let fd = root::open_subdir(self.root_fd(name_str)?.as_fd(), b".")
                .map_err(failed(name_str, "open the target root"))?;
            return self.dir_attributes(fd.as_fd(), rel, meta, name_str);
        }

        let dir = self
            .root
            .ensure_dir(parent)
            .map_err(failed(name_str, "open (or create) its parent directory"))?;
        let dir = dir.as_fd();
        // layer.md "Changeset over existing files": a directory over a directory keeps it and
        // takes the new attributes; anything else replaces what was there.
        let existing = root::lstat_at(dir, file_name).map_err(failed(name_str, "lstat"))?;
        let keep_dir = kind == EntryType::Directory && existing.as_ref().is_some_and(root::is_dir);
        if existing.is_some() && !keep_dir {
            root::remove_all_at(dir, file_name)
                .map_err(failed(name_str, "remove the existing file"))?;
        }
        let c_name = OsStr::from_bytes(file_name);

        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    nix::sys::stat::mkdirat(dir, c_name, Mode::from_bits_truncate(0o700))
                        .map_err(failed(name_str, "mkdir"))?;
                }
                let fd = root::open_subdir(dir, file_name).map_err(failed(name_str, "open"))?;
                self.dir_attributes(fd.as_fd(), rel.clone(), meta, name_str)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = openat(
                    dir,
                    c_name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(failed(name_str, "create file"))?;
                let mut file = File::from(fd);
                // A GNU sparse entry's stored size differs from the size it expands to.
                let expected = (kind != EntryType::GNUSparse).then(|| entry.size());
                self.copy_content(entry, &mut file, expected, name_str)?;
                let fd = file.as_fd();
                fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(failed(name_str, "chown"))?;
                fchmod(fd, mode_bits(meta.mode)).map_err(failed(name_str, "chmod"))?;
                for (key, value) in &meta.xattrs {
                    xattr::set_fd(fd, key, value).map_err(|e| xattr_error(name_str, key, e))?;
                }
                futimens(fd, &meta.mtime, &meta.mtime).map_err(failed(name_str, "set mtime"))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(name_str, "symlink without a target"))?;
                // The target is stored as is: it is only ever resolved inside the root.
                symlinkat(OsStr::from_bytes(&link), dir, c_name)
                    .map_err(failed(name_str, "symlink"))?;
                self.special_attributes(dir, file_name, &meta, false, name_str)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(name_str, "hardlink without a target"))?;
                let link = path::clean(&link)
                    .map_err(|r| refuse(name_str, format!("hardlink target: {r}")))?;
                if link.is_empty() {
                    return Err(refuse(name_str, "hardlink to the target root"));
                }
                let (link_parent, link_name) = path::split(&link);
                let link_dir = self
                    .root
                    .open_dir(link_parent)
                    .map_err(failed(name_str, "open the hardlink target's directory"))?;
                // Flags 0: a symlink as target is linked itself, never followed.
                linkat(
                    &link_dir,
                    OsStr::from_bytes(link_name),
                    dir,
                    c_name,
                    AtFlags::empty(),
                )
                .map_err(failed(name_str, "hardlink"))?;
            }
            // Char, Block or Fifo: the only kinds left after the check above.
            _ => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let header = entry.header();
                        let bad = |_| refuse(name_str, "malformed tar header: device number");
                        // Pre-ustar headers have no device fields at all.
                        let major = header.device_major().map_err(bad)?.unwrap_or(0);
                        let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
                        let sflag = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (sflag, libc::makedev(major, minor))
                    }
                };
                mknodat(dir, c_name, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(failed(name_str, "mknod"))?;
                self.special_attributes(dir, file_name, &meta, true, name_str)?;
            }
        }
        self.mark_added(rel);
        Ok(())
    }

    fn root_fd(&self, entry: &str) -> Result<OwnedFd, LayerError> {
        self.root
            .open_dir(b"")
            .map_err(failed(entry, "open the target root"))
    }

    /// Owner and xattrs now; mode and mtime once the layer is done.
    fn dir_attributes(
        &mut self,
        fd: BorrowedFd<'_>,
        rel: Vec<u8>,
        meta: Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(failed(entry, "chown"))?;
        for (key, value) in &meta.xattrs {
            xattr::set_fd(fd, key, value).map_err(|e| xattr_error(entry, key, e))?;
        }
        self.dirs.push(DeferredDir {
            path: rel,
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    /// Attributes of a symlink, device or fifo `name` just created in `dir`.
    fn special_attributes(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        chmod: bool,
        entry: &str,
    ) -> Result<(), LayerError> {
        let c_name = OsStr::from_bytes(name);
        fchownat(
            dir,
            c_name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(failed(entry, "chown"))?;
        if chmod {
            // Not a symlink (just created by mknod), so following is safe; Linux has no
            // lchmod for older kernels.
            fchmodat(
                dir,
                c_name,
                mode_bits(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(failed(entry, "chmod"))?;
        }
        for (key, value) in &meta.xattrs {
            xattr::set_at(dir, name, key, value).map_err(|e| xattr_error(entry, key, e))?;
        }
        utimensat(
            dir,
            c_name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(failed(entry, "set mtime"))
    }

    fn whiteout(&mut self, parent: &[u8], wh: Whiteout<'_>, entry: &str) -> Result<(), LayerError> {
        match (wh, self.mode) {
            (Whiteout::Opaque, ApplyMode::Merged) => {
                let dir = match self.root.open_dir(parent) {
                    Ok(dir) => dir,
                    // Nothing below to hide.
                    Err(Errno::ENOENT) => return Ok(()),
                    Err(e) => return Err(failed(entry, "open the opaque directory")(e)),
                };
                self.clear_lower(dir.as_fd(), parent)
                    .map_err(failed(entry, "empty the opaque directory"))
            }
            (Whiteout::Opaque, ApplyMode::OverlayLayer) => {
                let dir = self
                    .root
                    .ensure_dir(parent)
                    .map_err(failed(entry, "open the opaque directory"))?;
                let dir = root::open_subdir(dir.as_fd(), b".")
                    .map_err(failed(entry, "open the opaque directory"))?;
                xattr::set_fd(dir.as_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|e| xattr_error(entry, OVERLAY_OPAQUE_XATTR, e))
            }
            (Whiteout::Remove(name), mode) => {
                if self.added.contains(&path::join(parent, name)) {
                    // Whiteouts hide lower layers only (layer.md "Whiteouts").
                    return Ok(());
                }
                let dir = match (mode, self.root.open_dir(parent)) {
                    (_, Ok(dir)) => dir,
                    (ApplyMode::Merged, Err(Errno::ENOENT | Errno::ENOTDIR)) => return Ok(()),
                    (ApplyMode::Merged, Err(e)) => {
                        return Err(failed(entry, "open the whiteout's directory")(e))
                    }
                    (ApplyMode::OverlayLayer, Err(_)) => self
                        .root
                        .ensure_dir(parent)
                        .map_err(failed(entry, "open the whiteout's directory"))?,
                };
                root::remove_all_at(dir.as_fd(), name)
                    .map_err(failed(entry, "remove the whited-out file"))?;
                if mode == ApplyMode::OverlayLayer {
                    mknodat(
                        &dir,
                        OsStr::from_bytes(name),
                        SFlag::S_IFCHR,
                        Mode::empty(),
                        0,
                    )
                    .map_err(failed(entry, "create the overlay whiteout device"))?;
                }
                Ok(())
            }
        }
    }

    /// Removes everything in `dir` (at `rel`) that this layer did not add, descending into
    /// directories this layer added or passed through.
    fn clear_lower(&self, dir: BorrowedFd<'_>, rel: &[u8]) -> nix::Result<()> {
        for name in root::read_names(dir)? {
            let child = path::join(rel, &name);
            if !self.added.contains(&child) {
                root::remove_all_at(dir, &name)?;
                continue;
            }
            if root::lstat_at(dir, &name)?
                .as_ref()
                .is_some_and(root::is_dir)
            {
                let sub = root::open_subdir(dir, &name)?;
                self.clear_lower(sub.as_fd(), &child)?;
            }
        }
        Ok(())
    }

    fn mark_added(&mut self, rel: Vec<u8>) {
        for ancestor in path::ancestors(&rel) {
            if !self.added.insert(ancestor.to_vec()) {
                break;
            }
        }
        self.added.insert(rel);
    }

    fn copy_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        expected: Option<u64>,
        name: &str,
    ) -> Result<(), LayerError> {
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut self.copy_buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(LayerError::Entry {
                        entry: name.to_string(),
                        action: "read its content from the layer stream",
                        source: e,
                    })
                }
            };
            file.write_all(&self.copy_buf[..n])
                .map_err(|e| LayerError::Entry {
                    entry: name.to_string(),
                    action: "write",
                    source: e,
                })?;
            copied += n as u64;
        }
        self.bytes += copied;
        match expected {
            Some(expected) if expected != copied => Err(LayerError::Truncated {
                entry: name.to_string(),
                expected,
                actual: copied,
            }),
            _ => Ok(()),
        }
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        for dir in std::mem::take(&mut self.dirs) {
            let name_str = display_name(&dir.path);
            let (parent, name) = path::split(&dir.path);
            let name: &[u8] = if name.is_empty() { b"." } else { name };
            let fd = match self
                .root
                .open_dir(parent)
                .and_then(|p| root::open_subdir(p.as_fd(), name))
            {
                Ok(fd) => fd,
                // Removed or replaced by a later entry of this layer: nothing to restore.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(failed(&name_str, "open")(e)),
            };
            fchmod(fd.as_fd(), mode_bits(dir.mode)).map_err(failed(&name_str, "chmod"))?;
            futimens(fd.as_fd(), &dir.mtime, &dir.mtime).map_err(failed(&name_str, "set mtime"))?;
        }
        Ok(())
    }
}

fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_truncate(mode & 0o7777)
}

fn xattr_error(entry: &str, key: &[u8], source: io::Error) -> LayerError {
    LayerError::Entry {
        entry: entry.to_string(),
        action: if key.starts_with(b"security.capability") {
            "set xattr security.capability"
        } else {
            "set an xattr"
        },
        source: io::Error::new(
            source.kind(),
            format!("{}: {source}", String::from_utf8_lossy(key)),
        ),
    }
}

/// Mode, owner, mtime and xattrs of an entry, with PAX records overriding the ustar fields.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, LayerError> {
    let bad = |what: &str| refuse(name, format!("malformed tar header: {what}"));
    let header = entry.header();
    let raw = header.as_old();
    // Like Go's archive/tar (which wrote most layers out there), an empty numeric field is 0.
    let field = |value: std::io::Result<u64>, raw: &[u8], what| match value {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(_) => Err(bad(what)),
    };
    let mode = field(header.mode().map(u64::from), &raw.mode, "mode")? as u32;
    // The tar crate already applied PAX uid/gid to the header.
    let uid = field(header.uid(), &raw.uid, "uid")?;
    let gid = field(header.gid(), &raw.gid, "gid")?;
    let mtime = field(header.mtime(), &raw.mtime, "mtime")?;
    let mut mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(LayerError::Read)? {
        for record in pax {
            let record = record.map_err(|_| bad("PAX record"))?;
            let key = record.key_bytes();
            if let Some(xattr_name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((xattr_name.to_vec(), record.value_bytes().to_vec()));
            } else if key == b"mtime" {
                // Fractional seconds are dropped: layers are compared at second precision.
                let value = record.value().map_err(|_| bad("PAX mtime"))?;
                let seconds = value.split('.').next().unwrap_or_default();
                mtime = seconds.parse().map_err(|_| bad("PAX mtime"))?;
            }
        }
    }
    let id = |v: u64, what| u32::try_from(v).map_err(|_| bad(what));
    Ok(Meta {
        mode,
        uid: Uid::from_raw(id(uid, "uid")?),
        gid: Gid::from_raw(id(gid, "gid")?),
        mtime: TimeSpec::new(mtime, 0),
        xattrs,
    })
}
