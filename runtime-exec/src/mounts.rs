//! The container's filesystem, set up by its init inside its own mount namespace
//! (runtime-spec config.md "Mounts", config-linux.md "Devices", "Default Devices",
//! "rootfsPropagation", "maskedPaths", "readonlyPaths"; runc libcontainer/rootfs_linux.go).
//! Every mount made here dies with the namespace: nothing can be left on the host.

use std::ffi::CString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::SetupError;
use crate::paths::resolve_in_root;

type Result<T> = std::result::Result<T, SetupError>;

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SetupError {
    SetupError::other(format!("{what}: {e}"))
}

/// Mount flags and the rest of the options (filesystem data) of one Spec mount.
struct MountOptions {
    flags: MsFlags,
    clear: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation |= propagation(opt).unwrap_or(MsFlags::empty());
                continue;
            }
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

fn propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A cgroup hierarchy mounted on the host.
struct CgroupMount {
    /// The mount point's last component (`memory`, `cpu,cpuacct`, `unified`).
    name: String,
    mount_point: PathBuf,
    fstype: String,
    superopts: String,
}

/// What the container init needs to know about the host before it pivots away from it.
pub(crate) struct HostView {
    cgroup_mounts: Vec<CgroupMount>,
}

impl HostView {
    pub(crate) fn read() -> HostView {
        let cgroup_mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                // id parent major:minor root mountpoint options ... - fstype source superoptions
                let (left, right) = line.split_once(" - ")?;
                let mount_point = left.split(' ').nth(4)?;
                let mut right = right.split(' ');
                let fstype = right.next()?;
                let superopts = right.nth(1)?;
                if fstype != "cgroup" && fstype != "cgroup2" {
                    return None;
                }
                Some(CgroupMount {
                    name: Path::new(mount_point).file_name()?.to_str()?.to_string(),
                    mount_point: PathBuf::from(mount_point),
                    fstype: fstype.to_string(),
                    superopts: superopts.to_string(),
                })
            })
            .collect();
        HostView { cgroup_mounts }
    }
}

/// Our cgroup in the v1 hierarchy mounted with `superopts` (from /proc/self/cgroup).
fn own_cgroup_in(superopts: &str) -> Option<PathBuf> {
    let options: Vec<&str> = superopts.split(',').collect();
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (!controllers.is_empty() && controllers.split(',').all(|c| options.contains(&c)))
                .then(|| PathBuf::from(path.trim_start_matches('/')))
        })
}

/// Everything up to pivot_root: propagation, the rootfs mount, the Spec's mounts, /dev. The
/// caller runs the create hooks, then [`pivot_root`] into `rootfs`.
///
/// `in_cgroup_ns` waits until the helper has moved us into the container's cgroup and enters
/// the cgroup namespace; it is called once, as late as possible (before the first `cgroup`
/// mount, else before pivot_root), because on cgroup v1 that move costs an RCU grace period
/// in the kernel (several ms) that the mounts before it overlap.
pub(crate) fn prepare_rootfs(
    spec: &Spec,
    rootfs: &Path,
    overlay: Option<&str>,
    host: &HostView,
    in_cgroup_ns: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    let root_propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some(p) => propagation(p)
            .ok_or_else(|| SetupError::other(format!("unknown rootfsPropagation {p:?}")))?,
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        root_propagation,
        None::<&str>,
    )
    .map_err(|e| fail("make / private", e))?;

    // pivot_root needs the new root to be a mount point.
    match overlay {
        Some(data) => crate::overlay::mount_with_options(rootfs, data)
            .map_err(|e| fail(format!("mount overlay rootfs on {}", rootfs.display()), e))?,
        None => mount(
            Some(rootfs),
            rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(format!("bind rootfs {}", rootfs.display()), e))?,
    }

    let mut dev_is_fresh = false;
    let mut in_cgroup = false;
    for m in spec.mounts().iter().flatten() {
        if m.typ().as_deref() == Some("cgroup") && !in_cgroup {
            in_cgroup_ns()?;
            in_cgroup = true;
        }
        mount_one(rootfs, m, host)?;
        if m.destination() == Path::new("/dev") && !is_bind(m) {
            dev_is_fresh = true;
        }
    }
    let devices = linux.and_then(|l| l.devices().clone()).unwrap_or_default();
    if dev_is_fresh {
        create_default_devices(rootfs)?;
    }
    for device in &devices {
        create_device(rootfs, device)?;
    }
    if !in_cgroup {
        in_cgroup_ns()?;
    }
    Ok(())
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn touch(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| fail(format!("mkdir {}", parent.display()), e))?;
    }
    if !path.exists() {
        std::fs::File::create(path).map_err(|e| fail(format!("create {}", path.display()), e))?;
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| fail(format!("mkdir {}", path.display()), e))
}

fn mount_one(rootfs: &Path, m: &Mount, host: &HostView) -> Result<()> {
    let dest = resolve_in_root(rootfs, m.destination()).map_err(|e| {
        fail(
            format!("resolve mount destination {}", m.destination().display()),
            e,
        )
    })?;
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let data = options.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let typ = m.typ().as_deref().unwrap_or("none");

    if is_bind(m) {
        let source = m.source().as_deref().ok_or_else(|| {
            SetupError::other(format!(
                "bind mount on {} has no source",
                m.destination().display()
            ))
        })?;
        let meta = std::fs::metadata(source).map_err(|e| {
            fail(
                format!(
                    "mount source {} for {}",
                    source.display(),
                    m.destination().display()
                ),
                e,
            )
        })?;
        if meta.is_dir() {
            mkdir(&dest)?;
        } else {
            touch(&dest)?;
        }
        let rec = options.flags & MsFlags::MS_REC;
        mount(
            Some(source),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .map_err(|e| {
            fail(
                format!("bind {} on {}", source.display(), m.destination().display()),
                e,
            )
        })?;
        // Bind mounts take their flags only from a remount (mount(2) "MS_BIND").
        let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            remount_bind(&dest, extra)?;
        }
    } else if typ == "cgroup" {
        mount_cgroups(&dest, &options, host)?;
    } else {
        mkdir(&dest)?;
        let source = m
            .source()
            .as_deref()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(typ));
        let result = mount(
            Some(source.as_path()),
            &dest,
            Some(typ),
            options.flags,
            data,
        );
        match result {
            // sysfs belongs to a network namespace; without our own one the kernel may refuse a
            // new instance, and the host's /sys is bound instead (as runc does).
            Err(nix::Error::EPERM) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| fail("bind /sys", e))?;
                remount_bind(&dest, options.flags)?;
            }
            Err(e) => {
                return Err(fail(
                    format!("mount {typ} on {}", m.destination().display()),
                    e,
                ))
            }
            Ok(()) => {}
        }
    }
    if !options.propagation.is_empty() {
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .map_err(|e| {
            fail(
                format!("set propagation of {}", m.destination().display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locked on it (nodev,
/// nosuid, noexec of the source mount), which a remount may not clear.
fn remount_bind(dest: &Path, flags: MsFlags) -> Result<()> {
    let mut locked = MsFlags::empty();
    if let Ok(st) = statvfs(dest) {
        let f = st.flags();
        for (fs, ms) in [
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                locked |= ms;
            }
        }
    }
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount(
        None::<&str>,
        dest,
        None::<&str>,
        remount | flags,
        None::<&str>,
    )
    .or_else(|_| {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            remount | flags | locked,
            None::<&str>,
        )
    })
    .map_err(|e| fail(format!("remount {} with {flags:?}", dest.display()), e))
}

/// The Spec's `cgroup` mount: on a pure v2 host one cgroup2 mount; on v1 (and hybrid) hosts a
/// tmpfs holding one mount per host hierarchy. Mounted from inside the container's cgroup
/// namespace, each shows the container's cgroup as its root.
fn mount_cgroups(dest: &Path, options: &MountOptions, host: &HostView) -> Result<()> {
    mkdir(dest)?;
    let only_v2 = host.cgroup_mounts.iter().all(|m| m.fstype == "cgroup2");
    if only_v2 {
        return mount(
            Some("cgroup2"),
            dest,
            Some("cgroup2"),
            options.flags,
            None::<&str>,
        )
        .map_err(|e| fail("mount cgroup2", e));
    }
    let base = options.flags - MsFlags::MS_RDONLY;
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755"))
        .map_err(|e| fail("mount tmpfs for cgroups", e))?;
    // On a hybrid host the v2 hierarchy holds no controllers; like runc, show only v1.
    for hierarchy in host.cgroup_mounts.iter().filter(|m| m.fstype == "cgroup") {
        let name = &hierarchy.name;
        let dir = dest.join(name);
        mkdir(&dir)?;
        let data: Vec<&str> = hierarchy
            .superopts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        let mounted = mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            options.flags,
            Some(data.join(",").as_str()),
        );
        match mounted {
            // A user namespace without its own cgroup namespace may not mount cgroup v1:
            // bind our own cgroup of the host's hierarchy instead, as runc does.
            Err(nix::Error::EPERM) => {
                let own = own_cgroup_in(&hierarchy.superopts).unwrap_or_default();
                let source = hierarchy.mount_point.join(own);
                mount(
                    Some(source.as_path()),
                    &dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| fail(format!("bind cgroup {}", source.display()), e))?;
                remount_bind(&dir, options.flags)?;
            }
            Err(e) => return Err(fail(format!("mount cgroup {name}"), e)),
            Ok(()) => {}
        }
        // Co-mounted controllers ("cpu,cpuacct") are also reachable by each name.
        if name.contains(',') {
            for part in name.split(',') {
                let _ = symlink(name, dest.join(part));
            }
        }
    }
    if options.flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            MsFlags::MS_REMOUNT | options.flags,
            Some("mode=755"),
        )
        .map_err(|e| fail("remount cgroup tmpfs read-only", e))?;
    }
    Ok(())
}

/// The devices every container gets (runtime-spec config-linux.md "Default Devices") and the
/// links docker and runc make.
fn create_default_devices(rootfs: &Path) -> Result<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        make_node(
            &rootfs.join("dev").join(name),
            SFlag::S_IFCHR,
            0o666,
            major,
            minor,
            0,
            0,
        )?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        let link = rootfs.join("dev").join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(target, &link).map_err(|e| fail(format!("symlink /dev/{name}"), e))?;
        }
    }
    // The devpts instance mounted on /dev/pts has its own ptmx; /dev/ptmx must lead there.
    let ptmx = rootfs.join("dev/ptmx");
    let _ = std::fs::remove_file(&ptmx);
    symlink("pts/ptmx", &ptmx).map_err(|e| fail("symlink /dev/ptmx", e))
}

fn create_device(rootfs: &Path, device: &LinuxDevice) -> Result<()> {
    let path = resolve_in_root(rootfs, device.path())
        .map_err(|e| fail(format!("resolve {}", device.path().display()), e))?;
    let kind = match device.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::A => {
            return Err(SetupError::other(format!(
                "device {} has type `a`, which only cgroup rules may use",
                device.path().display()
            )))
        }
    };
    let _ = std::fs::remove_file(&path);
    make_node(
        &path,
        kind,
        device.file_mode().unwrap_or(0o666),
        device.major() as u64,
        device.minor() as u64,
        device.uid().unwrap_or(0),
        device.gid().unwrap_or(0),
    )
}

/// mknod, or in a user namespace (where mknod is refused) a bind mount of the host's node.
fn make_node(
    path: &Path,
    kind: SFlag,
    perm: u32,
    major: u64,
    minor: u64,
    uid: u32,
    gid: u32,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let mode = Mode::from_bits_truncate(perm & 0o7777);
    match mknod(path, kind, mode, makedev(major, minor)) {
        Ok(()) => {
            // mknod applies the umask; the Spec's mode is exact.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                path,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fail(format!("chmod {}", path.display()), e))?;
            nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                .map_err(|e| fail(format!("chown {}", path.display()), e))
        }
        Err(nix::Error::EPERM) => {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            let host = Path::new("/dev").join(name);
            touch(path)?;
            mount(
                Some(host.as_path()),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| fail(format!("bind {} (mknod refused)", host.display()), e))
        }
        Err(e) => Err(fail(format!("mknod {}", path.display()), e)),
    }
}

/// pivot_root(".", ".") then a lazy unmount of the old root stacked under the new one: no
/// temporary directory in the image is needed (runc's trick, pivot_root(2) NOTES).
pub(crate) fn pivot_root(rootfs: &Path) -> Result<()> {
    use nix::fcntl::{open, OFlag};
    let old_root = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open /", e))?;
    nix::unistd::chdir(rootfs).map_err(|e| fail(format!("chdir {}", rootfs.display()), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| fail(format!("pivot_root into {}", rootfs.display()), e))?;
    nix::unistd::fchdir(&old_root).map_err(|e| fail("fchdir old root", e))?;
    // The old root must not propagate the unmount back to the host.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail("make old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))
}

/// After pivot_root: sysctls, masked paths, read-only paths, read-only root.
pub(crate) fn finish_rootfs(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    for (key, value) in linux.sysctl().iter().flatten() {
        if key.contains("..") || key.contains('/') {
            return Err(SetupError::other(format!("invalid sysctl name {key:?}")));
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| fail(format!("sysctl {key}={value}"), e))?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        let path = Path::new(path);
        if !path.exists() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| fail(format!("bind read-only path {}", path.display()), e))?;
        remount_bind(path, MsFlags::MS_RDONLY)?;
    }
    for path in linux.masked_paths().iter().flatten() {
        let path = Path::new(path);
        match std::fs::metadata(path) {
            Err(_) => continue,
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            ),
            Ok(_) => mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        }
        .map_err(|e| fail(format!("mask {}", path.display()), e))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_bind(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// A C string for a path, for the few raw syscalls.
pub(crate) fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| SetupError::other(format!("path {path:?} contains NUL")))
}
