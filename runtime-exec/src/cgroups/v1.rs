//! cgroup v1: one directory per controller hierarchy (kernel Documentation/admin-guide/
//! cgroup-v1/{memory,pids,cpu,devices}.rst). Only the hierarchies whose limits the Spec can
//! express are joined; the container stays in its parent's cgroup for the others.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{
    cgroup_error, create_leaf, device_rule, kill_procs, read_key, refuse_unsupported, remove_dir,
    write_file, CgroupManager, DEFAULT_ALLOWED_DEVICES,
};
use crate::error::{Error, Result};

/// Controllers joined, in the order their directories are created.
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "devices"];

pub struct V1Manager {
    /// (controller, directory of our cgroup in that controller's hierarchy)
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1Manager {
    /// `root` holds one mount per controller (`root/memory`, `root/cpu`, ...); with
    /// `below_own`, `relative` is taken from this process's cgroup in each hierarchy.
    pub fn new(root: &Path, relative: &Path, below_own: bool) -> Result<Self> {
        let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
        for controller in CONTROLLERS {
            // `cpu` and `cpuacct` are often one hierarchy reached through symlinks; join it once.
            let Ok(mount) = root.join(controller).canonicalize() else {
                continue;
            };
            if dirs
                .iter()
                .any(|(c, _)| root.join(c).canonicalize().ok().as_ref() == Some(&mount))
            {
                continue;
            }
            let base = if below_own {
                mount.join(super::own_v1_cgroup(controller))
            } else {
                mount
            };
            dirs.push((controller, base.join(relative)));
        }
        if !dirs.iter().any(|(c, _)| *c == "memory") {
            return Err(cgroup_error(
                root,
                "no cgroup v1 memory hierarchy mounted here (is this a cgroup v2 host?)",
            ));
        }
        Ok(V1Manager { dirs })
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn require(&self, controller: &str) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| {
            Error::Unsupported(format!(
                "the Spec sets {controller} limits but no cgroup v1 {controller} hierarchy is mounted"
            ))
        })
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        refuse_unsupported(resources)?;
        if let Some(memory) = resources.memory() {
            let dir = self.require("memory")?;
            if memory.kernel().is_some() || memory.kernel_tcp().is_some() {
                return Err(Error::Unsupported(
                    "linux.resources.memory.kernel/kernelTCP (removed from the kernel)".into(),
                ));
            }
            if let Some(limit) = memory.limit() {
                write_file(dir, "memory.limit_in_bytes", &limit.to_string())?;
            }
            if let Some(reservation) = memory.reservation() {
                write_file(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
            }
            if let Some(swap) = memory.swap() {
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write_file(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                } else {
                    // docker does the same on kernels booted without swap accounting.
                    tracing::warn!("kernel has no swap accounting: memory.swap limit not applied");
                }
            }
            if let Some(swappiness) = memory.swappiness() {
                write_file(dir, "memory.swappiness", &swappiness.to_string())?;
            }
            if memory.disable_oom_killer() == Some(true) {
                write_file(dir, "memory.oom_control", "1")?;
            }
        }
        if let Some(pids) = resources.pids() {
            let dir = self.require("pids")?;
            let value = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_string()
            };
            write_file(dir, "pids.max", &value)?;
        }
        if let Some(cpu) = resources.cpu() {
            if cpu.burst().is_some() || cpu.idle().is_some() {
                return Err(Error::Unsupported(
                    "linux.resources.cpu.burst/idle on cgroup v1".into(),
                ));
            }
            let dir = self.require("cpu")?;
            if let Some(shares) = cpu.shares() {
                write_file(dir, "cpu.shares", &shares.to_string())?;
            }
            // The period first: a quota is checked against the current period.
            if let Some(period) = cpu.period() {
                write_file(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(rules) = resources.devices() {
            let dir = self.require("devices")?;
            for rule in rules {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(dir, file, &device_rule(rule))?;
            }
            for rule in DEFAULT_ALLOWED_DEVICES {
                write_file(dir, "devices.allow", rule)?;
            }
        }
        Ok(())
    }
}

impl CgroupManager for V1Manager {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        for (i, (_, dir)) in self.dirs.iter().enumerate() {
            if let Err(e) = create_leaf(dir) {
                // Undo what this call made, never a cgroup that existed before.
                for (_, made) in &self.dirs[..i] {
                    let _ = remove_dir(made);
                }
                return Err(e);
            }
        }
        if let Some(resources) = resources {
            if let Err(e) = self.apply(resources) {
                let _ = self.destroy();
                return Err(e);
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for (_, dir) in &self.dirs {
            write_file(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        self.dir("memory")
            .and_then(|dir| read_key(&dir.join("memory.oom_control"), "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    fn kill_all(&self) -> Result<()> {
        for (_, dir) in &self.dirs {
            if dir.exists() {
                kill_procs(dir)?;
            }
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        let mut first_error = None;
        for (_, dir) in &self.dirs {
            if let Err(e) = remove_dir(dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}
