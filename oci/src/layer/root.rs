//! The target directory of an extraction as a confined root.
//!
//! Every directory an entry touches is opened with openat2(RESOLVE_IN_ROOT): the kernel
//! resolves the path as if the target were `/`, so `..` stops at the target and a symlink
//! planted by this or an earlier layer (`evil -> /`, `evil -> ../../..`) resolves inside the
//! target too (the chroot semantics Docker gets by chrooting its extractor). The last component
//! is then created or removed with *at() syscalls that never follow it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::path;

pub(super) struct Root {
    fd: OwnedFd,
}

impl Root {
    pub(super) fn open(target: &Path) -> nix::Result<Root> {
        let fd = nix::fcntl::open(
            target,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// Opens the directory at the cleaned relative path `rel` (empty = the root itself),
    /// resolving symlinks inside the root. `/proc`-style magic links are refused outright.
    pub(super) fn open_dir(&self, rel: &[u8]) -> nix::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // openat2 fails with EAGAIN when a concurrent rename raced the lookup; retrying is the
        // documented answer.
        loop {
            match openat2(self.fd.as_fd(), OsStr::from_bytes(rel), how) {
                Err(Errno::EAGAIN) => continue,
                other => return other,
            }
        }
    }

    /// Like [`Root::open_dir`] but creates missing directories (mode 0755, owned by the caller)
    /// the way tar does for entries whose parents the archive does not list.
    pub(super) fn ensure_dir(&self, rel: &[u8]) -> nix::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(Errno::ENOENT) if !rel.is_empty() => {
                let (parent, name) = path::split(rel);
                let parent_fd = self.ensure_dir(parent)?;
                match mkdirat(
                    &parent_fd,
                    OsStr::from_bytes(name),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                self.open_dir(rel)
            }
            other => other,
        }
    }
}

/// lstat of `name` in `dir`; `None` when it does not exist.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(
        dir,
        OsStr::from_bytes(name),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Opens the directory `name` in `dir` for reading, refusing to follow a symlink.
pub(super) fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory, without `.` and `..`.
pub(super) fn read_names(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, recursively if it is a directory, never following symlinks.
/// A missing name is not an error.
pub(super) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let os_name = OsStr::from_bytes(name);
    if is_dir(&st) {
        let sub = open_subdir(dir, name)?;
        for child in read_names(sub.as_fd())? {
            remove_all_at(sub.as_fd(), &child)?;
        }
        unlinkat(dir, os_name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(dir, os_name, UnlinkatFlags::NoRemoveDir)
    }
}
