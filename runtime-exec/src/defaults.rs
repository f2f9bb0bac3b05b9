//! A Spec with docker's defaults (moby oci/defaults.go, daemon/oci_linux.go): the mounts,
//! masked and read-only paths, namespaces and capabilities `docker run` gives a container.
//! Callers (the builder's RUN, `rbuild run`) start from it and change what they need.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::capabilities;
use crate::error::{Error, Result};

/// Docker's masked paths: hidden behind /dev/null or an empty read-only tmpfs.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A Spec like docker's for `args` in `rootfs`: root user, PATH set, cwd `/`, new pid, net
/// (only `lo`), ipc, uts, mount and cgroup namespaces, docker's default capabilities.
pub fn docker_spec(rootfs: &Path, args: &[String]) -> Result<Spec> {
    let caps: Vec<String> = capabilities::DOCKER_DEFAULT
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let value = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs, "readonly": false },
        "hostname": "rbuild",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": []
            },
            "noNewPrivileges": false
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" },
                { "type": "mount" }, { "type": "cgroup" }
            ],
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS
        }
    });
    serde_json::from_value(value).map_err(|e| Error::InvalidSpec(format!("default spec: {e}")))
}

/// What `docker run --privileged` (and BuildKit's `RUN --security=insecure`) changes: every
/// capability this process can grant, no seccomp filter, nothing masked or read-only, sysfs
/// and the cgroup filesystem writable, every device allowed by the device cgroup, and the
/// host's devices made in the container's /dev.
pub fn make_privileged(spec: &mut Spec) -> Result<()> {
    let all = capabilities::docker_set(&["ALL".to_string()], &[])?;
    let invalid = |e: serde_json::Error| Error::InvalidSpec(format!("privileged spec: {e}"));
    let mut value = serde_json::to_value(&*spec).map_err(invalid)?;
    value["process"]["capabilities"] =
        serde_json::to_value(capabilities::linux_capabilities(&all)).map_err(invalid)?;
    let linux = &mut value["linux"];
    if let Some(linux) = linux.as_object_mut() {
        linux.remove("seccomp");
    }
    linux["maskedPaths"] = serde_json::json!([]);
    linux["readonlyPaths"] = serde_json::json!([]);
    linux["resources"]["devices"] = serde_json::json!([{ "allow": true, "access": "rwm" }]);
    let mut devices = linux["devices"].as_array().cloned().unwrap_or_default();
    for device in host_devices(Path::new("/dev")) {
        if !devices.iter().any(|d| d["path"] == device["path"]) {
            devices.push(device);
        }
    }
    linux["devices"] = serde_json::Value::Array(devices);
    for mount in value["mounts"].as_array_mut().into_iter().flatten() {
        if mount["destination"] == "/sys" || mount["destination"] == "/sys/fs/cgroup" {
            if let Some(options) = mount["options"].as_array_mut() {
                options.retain(|o| o != "ro");
                options.push(serde_json::json!("rw"));
            }
        }
    }
    *spec = serde_json::from_value(value).map_err(invalid)?;
    Ok(())
}

/// `docker run --device HOST[:CONTAINER[:PERMS]]`: the device node at `host` (a symlink is
/// followed, as docker does), or every device under it when it is a directory, made at
/// `container` with the host's mode and owner and allowed by the device cgroup for `access`
/// (some of `rwm`).
pub fn add_device(spec: &mut Spec, host: &Path, container: &Path, access: &str) -> Result<()> {
    let invalid = |m: String| Error::InvalidSpec(m);
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(invalid(format!(
            "device permissions {access:?}: only r, w and m"
        )));
    }
    if !container.is_absolute() {
        return Err(invalid(format!(
            "device path {} in the container is not absolute",
            container.display()
        )));
    }
    let resolved = std::fs::canonicalize(host)
        .map_err(|e| invalid(format!("device {}: {e}", host.display())))?;
    let mut found = Vec::new();
    if resolved.is_dir() {
        walk_devices(&resolved, container, &mut found);
    } else if let Some(device) = std::fs::metadata(&resolved)
        .ok()
        .and_then(|m| HostDevice::of(container, &m))
    {
        found.push(device);
    }
    if found.is_empty() {
        return Err(invalid(format!(
            "{} is not a device, nor a directory holding any",
            host.display()
        )));
    }
    let encode = |e: serde_json::Error| invalid(format!("device spec: {e}"));
    let mut value = serde_json::to_value(&*spec).map_err(encode)?;
    let linux = &mut value["linux"];
    for device in &found {
        json_array(&mut linux["devices"]).push(device.spec_entry());
        json_array(&mut linux["resources"]["devices"]).push(serde_json::json!({
            "allow": true, "type": device.typ, "major": device.major,
            "minor": device.minor, "access": access,
        }));
    }
    *spec = serde_json::from_value(value).map_err(encode)?;
    Ok(())
}

/// The array at `value` of a spec's JSON, made one if it is absent.
pub(crate) fn json_array(value: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    if !value.is_array() {
        *value = serde_json::Value::Array(Vec::new());
    }
    value.as_array_mut().expect("just made an array")
}

/// A device node of the host, and where it goes in the container.
struct HostDevice {
    path: std::path::PathBuf,
    typ: &'static str,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl HostDevice {
    /// The node `meta` describes, at `path` in the container; None for anything but a
    /// character or block device.
    fn of(path: &Path, meta: &std::fs::Metadata) -> Option<HostDevice> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let kind = meta.file_type();
        let typ = if kind.is_char_device() {
            "c"
        } else if kind.is_block_device() {
            "b"
        } else {
            return None;
        };
        Some(HostDevice {
            path: path.to_path_buf(),
            typ,
            major: nix::sys::stat::major(meta.rdev()),
            minor: nix::sys::stat::minor(meta.rdev()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    fn spec_entry(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path, "type": self.typ, "major": self.major, "minor": self.minor,
            "fileMode": self.mode, "uid": self.uid, "gid": self.gid,
        })
    }
}

/// The host's devices, at their own paths: what `--privileged` gives a container.
fn host_devices(dir: &Path) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    walk_devices(dir, dir, &mut found);
    found.iter().map(HostDevice::spec_entry).collect()
}

/// The character and block devices under `dir`, placed under `into`. The same walk as runc's
/// and containerd's HostDevices: not the pseudo-filesystems (pts, shm, mqueue), nor lxc's and
/// udev's bookkeeping, nor the console, nor symlinks; and not /dev/ptmx.
fn walk_devices(dir: &Path, into: &Path, found: &mut Vec<HostDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let target = into.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            let skipped = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
            if !skipped.iter().any(|s| name == *s) {
                walk_devices(&entry.path(), &target, found);
            }
        } else if name == "console" || target == Path::new("/dev/ptmx") {
            // The container's /dev/ptmx stays the link to its own devpts (runc's setupPtmx).
        } else if let Some(device) = HostDevice::of(&target, &meta) {
            found.push(device);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_spec_parses_and_passes_validation() {
        let spec =
            super::docker_spec(std::path::Path::new("/tmp/rootfs"), &["sh".to_string()]).unwrap();
        crate::validate::check(&spec).unwrap();
        assert_eq!(spec.mounts().as_ref().map(Vec::len), Some(7));
    }

    #[test]
    fn privileged_specs_list_the_hosts_devices() {
        let mut spec =
            super::docker_spec(std::path::Path::new("/tmp/rootfs"), &["sh".to_string()]).unwrap();
        super::make_privileged(&mut spec).unwrap();
        crate::validate::check(&spec).unwrap();
        let devices = spec.linux().as_ref().unwrap().devices().clone().unwrap();
        let null = devices
            .iter()
            .find(|d| d.path() == std::path::Path::new("/dev/null"))
            .expect("/dev/null");
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert!(devices.iter().all(|d| !d.path().starts_with("/dev/pts")
            && d.path() != std::path::Path::new("/dev/console")));
    }
}
