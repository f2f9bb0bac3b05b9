//! What the caller decides beside the Spec.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Options of one run that are not part of the OCI Spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Container id: names the cgroup when the Spec has no `linux.cgroupsPath`.
    pub id: String,
    /// Which cgroup hierarchy to use; `Auto` picks v2 when /sys/fs/cgroup is cgroup2, else v1.
    pub cgroups: CgroupChoice,
    /// Run a minimal init as PID 1 that forwards signals to the user's process and reaps
    /// orphans (what `docker run --init` does). Without it the user's process is PID 1.
    pub init: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by the calling
    /// process to the container while it runs (installs process-wide handlers for the run;
    /// meant for a CLI whose only job is this container).
    pub forward_signals: bool,
    /// Mount the rootfs (the Spec's `root.path`) as an overlay of these layer directories
    /// inside the container's own mount namespace, so it disappears with the container.
    pub overlay: Option<OverlayRootfs>,
    /// The bundle directory the Spec's hooks are told about (runtime-spec bundle.md). None:
    /// when the Spec has hooks, a temporary one holding its config.json is written.
    pub bundle: Option<PathBuf>,
}

impl RunOptions {
    pub fn new(id: impl Into<String>) -> Self {
        RunOptions {
            id: id.into(),
            cgroups: CgroupChoice::Auto,
            init: false,
            forward_signals: false,
            overlay: None,
            bundle: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupChoice {
    Auto,
    /// cgroup v1 controllers mounted under this directory (normally /sys/fs/cgroup).
    V1 {
        root: PathBuf,
    },
    /// A cgroup2 hierarchy mounted at this directory (/sys/fs/cgroup on pure v2 hosts,
    /// /sys/fs/cgroup/unified on hybrid ones).
    V2 {
        root: PathBuf,
    },
}

/// An overlayfs rootfs: read-only layers plus a writable upper directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayRootfs {
    /// Layer directories from the bottom (base image) to the top.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Mount with overlayfs's `volatile`: the container's fsync calls return at once and the
    /// end of the mount does not write the upper directory back. For an upper directory that
    /// is thrown away afterwards, or that the caller syncs once itself when it keeps it (a
    /// build step's layer): per-file durability inside such a container buys nothing.
    pub volatile: bool,
}
