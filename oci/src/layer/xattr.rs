//! Extended attributes through the raw syscalls (std has no xattr API). Names and values are
//! bytes: `security.capability` values are binary.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// Calls a size-query-then-fill syscall pair until the buffer is large enough (the attribute
/// can grow between the two calls).
fn read_sized(mut call: impl FnMut(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = call(&mut []);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// All xattrs of `path` (not following a final symlink), sorted by name so that layers are
/// deterministic. A filesystem without xattr support simply has none.
pub(super) fn list(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = cstring(path.as_os_str().as_bytes())?;
    let names = match read_sized(|buf| unsafe {
        // SAFETY: c_path is NUL-terminated; buf is a valid writable region of buf.len() bytes.
        libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    }) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut attrs = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = cstring(name)?;
        let value = read_sized(|buf| unsafe {
            // SAFETY: both strings are NUL-terminated; buf is valid for buf.len() bytes.
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        });
        match value {
            Ok(value) => attrs.push((name.to_vec(), value)),
            // Removed between list and get: it is simply not there any more.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    attrs.sort();
    Ok(attrs)
}

/// Sets an xattr on an open file or directory.
pub(super) fn set_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c_name = cstring(name)?;
    // SAFETY: c_name is NUL-terminated, value is valid for value.len() bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets an xattr on `name` inside the directory `dir` without following `name` if it is a
/// symlink. Symlinks, devices and fifos cannot be opened for fsetxattr, so this goes through
/// the directory's /proc/self/fd entry: the kernel resolves that to `dir` itself, and lsetxattr
/// does not follow the last component.
pub(super) fn set_at(
    dir: BorrowedFd<'_>,
    file_name: &[u8],
    name: &[u8],
    value: &[u8],
) -> io::Result<()> {
    let path = [
        format!("/proc/self/fd/{}/", dir.as_raw_fd()).as_bytes(),
        file_name,
    ]
    .concat();
    let c_path = cstring(&path)?;
    let c_name = cstring(name)?;
    // SAFETY: both strings are NUL-terminated, value is valid for value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
