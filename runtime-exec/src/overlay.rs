//! Overlayfs rootfs: an image's unpacked layers as read-only lower directories under a
//! writable upper directory (kernel Documentation/filesystems/overlayfs.rst).

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// The overlay option that skips every sync of the upper filesystem: fsync(2) in the overlay
/// returns at once and the unmount does not write the upper directory back (kernel 5.10+,
/// overlayfs.rst "Volatile mount").
const VOLATILE: &str = ",volatile";

/// The `lowerdir=` list for `lower` (bottom first, image order): overlayfs wants the topmost
/// directory first. A directory that appears twice is named once, at its topmost place:
/// overlayfs refuses a lower directory given twice (ELOOP, "overlapping layers"), and images
/// hold the same layer more than once, such as the empty layer BuildKit writes for each WORKDIR.
/// The lower occurrence changes nothing that the upper one does not already decide.
pub fn lowerdir_list(lower: &[PathBuf]) -> Result<Vec<&str>> {
    let mut lowers: Vec<&str> = Vec::with_capacity(lower.len());
    for dir in lower.iter().rev() {
        let text = dir.to_str().ok_or_else(|| {
            Error::InvalidSpec(format!("overlay layer path {dir:?} is not UTF-8"))
        })?;
        // ',' separates options and ':' separates layers in the overlay option syntax.
        if text.contains([',', ':']) {
            return Err(Error::InvalidSpec(format!(
                "overlay layer path {text:?} contains ',' or ':'"
            )));
        }
        if !lowers.contains(&text) {
            lowers.push(text);
        }
    }
    Ok(lowers)
}

/// The mount(2) data string (see [`lowerdir_list`]). `volatile`: see
/// [`crate::OverlayRootfs::volatile`].
pub fn mount_options(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    volatile: bool,
) -> Result<String> {
    if lower.is_empty() {
        return Err(Error::InvalidSpec(
            "an overlay rootfs needs at least one lower directory".into(),
        ));
    }
    let lowers = lowerdir_list(lower)?;
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    if volatile {
        data.push_str(VOLATILE);
    }
    // mount(2) copies at most one page of option data.
    if data.len() >= 4096 {
        return Err(Error::InvalidSpec(format!(
            "overlay options for {} layers exceed one page ({} bytes); use shorter layer paths",
            lower.len(),
            data.len()
        )));
    }
    Ok(data)
}

/// Mounts an overlay of `lower` (bottom first) with `upper` and `work` on `target`, in the
/// caller's mount namespace. `work` must be an empty directory on the same filesystem as
/// `upper`. Prefer [`crate::RunOptions::overlay`] for containers: that mount lives only in the
/// container's namespace and can never be left behind.
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let data = mount_options(lower, upper, work, false)?;
    mount_with_options(target, &data)
        .map_err(|e| Error::sys(format!("mount overlay on {}", target.display()), e))
}

/// Mounts an overlay with the data string of [`mount_options`]. Kernels before 5.10 refuse
/// `volatile` (EINVAL): there the overlay is mounted without it, which only costs the syncs
/// it would have skipped.
pub(crate) fn mount_with_options(target: &Path, data: &str) -> nix::Result<()> {
    let overlay = |data: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    match (overlay(data), data.strip_suffix(VOLATILE)) {
        (Err(Errno::EINVAL), Some(without)) => overlay(without),
        (result, _) => result,
    }
}

/// Unmounts what [`mount_overlay`] mounted.
pub fn unmount_overlay(target: &Path) -> Result<()> {
    umount2(target, MntFlags::empty())
        .map_err(|e| Error::sys(format!("unmount {}", target.display()), e))
}

/// Moves the calling thread into a new mount namespace whose mounts do not propagate back to
/// the host, so that overlays the caller mounts there vanish with the thread (and with the
/// process, if it is killed). unshare(CLONE_NEWNS) implies CLONE_FS, which only this thread's
/// fs context needs: the process's other threads keep the host's namespace. Processes the
/// thread spawns (the executor's helper) inherit the namespace and see its mounts.
pub fn enter_private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys("unshare the mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make mounts private", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_list_is_topmost_first_and_names_each_directory_once() {
        let dirs: Vec<PathBuf> = ["/l/a", "/l/empty", "/l/b", "/l/empty", "/l/c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            lowerdir_list(&dirs).unwrap(),
            ["/l/c", "/l/empty", "/l/b", "/l/a"]
        );
        assert!(lowerdir_list(&[PathBuf::from("/l/a:b")]).is_err());
    }
}
