//! cgroup v2: one directory in the unified hierarchy (kernel Documentation/admin-guide/
//! cgroup-v2.rst). Controllers must be enabled in every ancestor's cgroup.subtree_control;
//! a controller the hierarchy does not offer (on a hybrid host it is bound to v1) is an error.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{
    cgroup_error, create_leaf, kill_procs, read_key, refuse_unsupported, remove_dir, write_file,
    CgroupManager,
};
use crate::error::{Error, Result};

pub struct V2Manager {
    root: PathBuf,
    dir: PathBuf,
}

impl V2Manager {
    pub fn new(root: &Path, relative: &Path) -> Result<Self> {
        if !super::is_cgroup2(root) {
            return Err(cgroup_error(root, "not a cgroup2 mount"));
        }
        Ok(V2Manager {
            root: root.to_path_buf(),
            dir: root.join(relative),
        })
    }

    /// Writes `+controller` into the subtree_control of the root and of every ancestor of
    /// our cgroup, so that its interface files exist.
    fn enable(&self, controllers: &[&str]) -> Result<()> {
        if controllers.is_empty() {
            return Ok(());
        }
        let available = std::fs::read_to_string(self.root.join("cgroup.controllers"))
            .map_err(|e| cgroup_error(&self.root, format!("read cgroup.controllers: {e}")))?;
        for controller in controllers {
            if !available.split_whitespace().any(|c| c == *controller) {
                return Err(Error::Unsupported(format!(
                    "the Spec sets {controller} limits but the cgroup2 hierarchy at {} does not offer the {controller} controller (available: {:?}; on a hybrid host it is bound to cgroup v1)",
                    self.root.display(),
                    available.trim()
                )));
            }
        }
        let change: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        let mut ancestor = self.root.clone();
        let relative = self.dir.strip_prefix(&self.root).unwrap_or(&self.dir);
        let mut components = relative.components().peekable();
        loop {
            write_file(&ancestor, "cgroup.subtree_control", &change.join(" "))?;
            match components.next() {
                Some(c) if components.peek().is_some() => ancestor.push(c),
                _ => return Ok(()),
            }
        }
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        refuse_unsupported(resources)?;
        let mut needed = Vec::new();
        if resources.memory().is_some() {
            needed.push("memory");
        }
        if resources.pids().is_some() {
            needed.push("pids");
        }
        if resources.cpu().is_some() {
            needed.push("cpu");
        }
        self.enable(&needed)?;
        let dir = &self.dir;
        if let Some(memory) = resources.memory() {
            if memory.kernel().is_some() || memory.kernel_tcp().is_some() {
                return Err(Error::Unsupported(
                    "linux.resources.memory.kernel/kernelTCP (removed from the kernel)".into(),
                ));
            }
            if memory.disable_oom_killer() == Some(true) {
                return Err(Error::Unsupported(
                    "linux.resources.memory.disableOOMKiller does not exist on cgroup v2".into(),
                ));
            }
            if let Some(limit) = memory.limit() {
                write_file(dir, "memory.max", &max_or(limit))?;
            }
            if let Some(reservation) = memory.reservation() {
                write_file(dir, "memory.low", &max_or(reservation))?;
            }
            // The Spec's swap is memory+swap (the v1 meaning); memory.swap.max is swap alone.
            if let Some(swap) = memory.swap() {
                let value = match (swap, memory.limit()) {
                    (-1, _) => "max".to_string(),
                    (swap, Some(limit)) if limit > 0 && swap >= limit => (swap - limit).to_string(),
                    _ => {
                        return Err(Error::InvalidSpec(
                            "memory.swap must be -1 or at least memory.limit".into(),
                        ))
                    }
                };
                if dir.join("memory.swap.max").exists() {
                    write_file(dir, "memory.swap.max", &value)?;
                } else {
                    tracing::warn!("kernel has no swap accounting: memory.swap limit not applied");
                }
            }
            if memory.swappiness().is_some() {
                return Err(Error::Unsupported(
                    "linux.resources.memory.swappiness does not exist on cgroup v2".into(),
                ));
            }
        }
        if let Some(pids) = resources.pids() {
            write_file(dir, "pids.max", &max_or(pids.limit()))?;
        }
        if let Some(cpu) = resources.cpu() {
            if let Some(shares) = cpu.shares() {
                write_file(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = cpu.quota().map_or("max".to_string(), max_or);
                let period = cpu.period().unwrap_or(100_000);
                write_file(dir, "cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(burst) = cpu.burst() {
                write_file(dir, "cpu.max.burst", &burst.to_string())?;
            }
            if let Some(idle) = cpu.idle() {
                write_file(dir, "cpu.idle", &idle.to_string())?;
            }
        }
        if let Some(unified) = resources.unified() {
            for (file, value) in unified {
                if file.contains('/') || file.starts_with('.') {
                    return Err(Error::InvalidSpec(format!(
                        "linux.resources.unified key {file:?} is not a cgroup file name"
                    )));
                }
                write_file(dir, file, value)?;
            }
        }
        if let Some(rules) = resources.devices().as_ref().filter(|d| !d.is_empty()) {
            super::device_filter::attach(dir, rules, &super::DEFAULT_ALLOWED_DEVICES)?;
        }
        Ok(())
    }
}

/// cgroup v2 writes "max" where v1 and the Spec use -1 (or 0 for pids) for "no limit".
fn max_or(value: i64) -> String {
    if value > 0 {
        value.to_string()
    } else {
        "max".to_string()
    }
}

/// The conversion runc and crun use from v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000].
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl CgroupManager for V2Manager {
    fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        create_leaf(&self.dir)?;
        if let Some(resources) = resources {
            if let Err(e) = self.apply(resources) {
                let _ = self.destroy();
                return Err(e);
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn oom_killed(&self) -> bool {
        read_key(&self.dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
    }

    fn kill_all(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        // cgroup.kill (Linux 5.14) kills the whole subtree atomically, also a fork bomb.
        if self.dir.join("cgroup.kill").exists() {
            write_file(&self.dir, "cgroup.kill", "1")?;
        }
        kill_procs(&self.dir)
    }

    fn destroy(&self) -> Result<()> {
        remove_dir(&self.dir)
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::shares_to_weight;

    #[test]
    fn shares_map_onto_weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
