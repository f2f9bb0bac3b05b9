//! Cgroups: one narrow trait, a v1 manager (one directory per controller hierarchy) and a v2
//! manager (one directory in the unified hierarchy). Spec: runtime-spec config-linux.md
//! "Control groups"; kernel Documentation/admin-guide/cgroup-v1 and cgroup-v2.rst.
//!
//! Lifecycle, driven by the helper process (see `helper.rs`): `create` (mkdir and write the
//! limits) → `add_process` (the container's init, before it execs) → the run →
//! `oom_killed` → `destroy` (rmdir; what is left is killed first). The helper itself never
//! joins the cgroup, so it can always remove it, also when the caller was killed.

mod device_filter;
mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::error::{Error, Result};
use crate::options::CgroupChoice;

pub use v1::V1Manager;
pub use v2::V2Manager;

/// The operations the executor needs from a cgroup implementation.
pub trait CgroupManager {
    /// Creates the cgroup and applies the Spec's resource limits. Fails when the cgroup
    /// already exists (another container with the same id or cgroupsPath is running).
    fn create(&self, resources: Option<&LinuxResources>) -> Result<()>;
    /// Moves a process (and so its future children) into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Whether the kernel's OOM killer killed a process of this cgroup.
    fn oom_killed(&self) -> bool;
    /// SIGKILLs every process still in the cgroup and waits until it is empty.
    fn kill_all(&self) -> Result<()>;
    /// Removes the cgroup directories, killing any process still in them.
    fn destroy(&self) -> Result<()>;
    /// The directories this manager owns (for diagnostics and tests).
    fn paths(&self) -> Vec<PathBuf>;
}

/// Whether `dir` is the mount point of a cgroup2 filesystem.
pub fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The manager for `choice`, for the cgroup at the Spec's `cgroups_path`.
///
/// An absolute path is taken from each hierarchy's root. A relative one is placed like runc
/// places it: on v1 below the caller's own cgroup of each controller (so that limits the
/// caller runs under still apply), on v2 below the hierarchy root (v2 forbids enabling
/// controllers for children of a cgroup that holds processes, as the caller's does).
pub fn manager_for(choice: &CgroupChoice, cgroups_path: &Path) -> Result<Box<dyn CgroupManager>> {
    let absolute = cgroups_path.is_absolute();
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    if relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::InvalidSpec(format!(
            "linux.cgroupsPath {cgroups_path:?} must name a cgroup below the hierarchy root, without `..`"
        )));
    }
    let default_root = Path::new("/sys/fs/cgroup");
    Ok(match choice {
        CgroupChoice::Auto if is_cgroup2(default_root) => {
            Box::new(V2Manager::new(default_root, relative)?)
        }
        CgroupChoice::Auto => Box::new(V1Manager::new(default_root, relative, !absolute)?),
        CgroupChoice::V1 { root } => Box::new(V1Manager::new(root, relative, !absolute)?),
        CgroupChoice::V2 { root } => Box::new(V2Manager::new(root, relative)?),
    })
}

/// This process's cgroup in the v1 hierarchy of `controller` (from /proc/self/cgroup), as a
/// path relative to that hierarchy's root.
pub(crate) fn own_v1_cgroup(controller: &str) -> PathBuf {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| PathBuf::from(path.trim_start_matches('/')))
        })
        .unwrap_or_default()
}

/// Devices every container may use whatever the Spec's rules say, as runc allows them
/// (libcontainer/specconv AllowedDevices): mknod of anything, the /dev basics, ptys. In
/// [`device_rule`]'s syntax.
pub(crate) const DEFAULT_ALLOWED_DEVICES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The devices.allow/deny syntax: `TYPE MAJOR:MINOR ACCESS`, `a` alone for every device.
pub(crate) fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => return "a".to_string(),
        Some(LinuxDeviceType::B) => "b",
        _ => "c",
    };
    let number = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    format!(
        "{typ} {}:{} {}",
        number(rule.major()),
        number(rule.minor()),
        rule.access().clone().unwrap_or_else(|| "rwm".to_string())
    )
}

pub(crate) fn write_file(dir: &Path, name: &str, value: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, value).map_err(|e| Error::Cgroup {
        path: path.clone(),
        reason: format!("write {value:?}: {e}"),
    })
}

pub(crate) fn cgroup_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Cgroup {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The pids listed in a `cgroup.procs` file (empty when it cannot be read).
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs the processes of `dir` until it is empty; processes of a dying PID namespace
/// can linger for a moment, hence the bounded retry.
pub(crate) fn kill_procs(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = procs(dir);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from our own cgroup; no memory is touched.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if Instant::now() > deadline {
            return Err(cgroup_error(dir, "processes survive SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes a cgroup directory. The common case, an empty cgroup without children, is one
/// rmdir; otherwise sub-cgroups the container made are removed deepest first and remaining
/// processes killed, retrying while the kernel releases exiting tasks (EBUSY).
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(cgroup_error(dir, format!("rmdir: {e}")))
            }
            Err(_) => {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            remove_dir(&entry.path())?;
                        }
                    }
                }
                let _ = kill_procs(dir);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// mkdir -p for the ancestors, plain mkdir for the leaf so that an existing cgroup (a
/// container of the same name still running) is an error rather than shared.
pub(crate) fn create_leaf(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| cgroup_error(parent, format!("mkdir: {e}")))?;
    }
    std::fs::create_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            cgroup_error(dir, "already exists: a container with this id or cgroupsPath is running (or was left behind)")
        } else {
            cgroup_error(dir, format!("mkdir: {e}"))
        }
    })
}

/// The value of `key` in a flat-keyed cgroup file such as memory.events or memory.oom_control.
pub(crate) fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

/// Refuses resource kinds neither manager applies, instead of dropping them silently.
pub(crate) fn refuse_unsupported(resources: &LinuxResources) -> Result<()> {
    let mut unsupported = Vec::new();
    if resources.block_io().is_some() {
        unsupported.push("blockIO");
    }
    if resources
        .hugepage_limits()
        .as_ref()
        .is_some_and(|h| !h.is_empty())
    {
        unsupported.push("hugepageLimits");
    }
    if resources.network().is_some() {
        unsupported.push("network");
    }
    if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        unsupported.push("rdma");
    }
    if let Some(cpu) = resources.cpu() {
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            unsupported.push("cpu.cpus/cpu.mems (cpuset)");
        }
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            unsupported.push("cpu.realtime*");
        }
    }
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "linux.resources {} are not applied by this executor",
            unsupported.join(", ")
        )))
    }
}
