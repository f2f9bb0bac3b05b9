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
/// and the cgroup filesystem writable, every device allowed by the device cgroup.
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_spec_parses_and_passes_validation() {
        let spec =
            super::docker_spec(std::path::Path::new("/tmp/rootfs"), &["sh".to_string()]).unwrap();
        crate::validate::check(&spec).unwrap();
        assert_eq!(spec.mounts().as_ref().map(Vec::len), Some(7));
    }
}
