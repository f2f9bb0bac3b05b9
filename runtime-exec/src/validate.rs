//! What the executor refuses up front, with a clear error, rather than run a container that
//! is less confined than its Spec says (runtime-spec config.md: a runtime MUST error on
//! settings it cannot apply).

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

pub(crate) fn check(spec: &Spec) -> Result<()> {
    let unsupported = |what: &str| Err(Error::Unsupported(what.to_string()));
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("no process".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidSpec("process.args is empty".into()));
    }
    if spec.root().is_none() {
        return Err(Error::InvalidSpec("no root".into()));
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return unsupported("process.apparmorProfile (AppArmor is not applied by this executor)");
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return unsupported("process.selinuxLabel (SELinux is not applied by this executor)");
    }
    if process.io_priority().is_some()
        || process.scheduler().is_some()
        || process.exec_cpu_affinity().is_some()
    {
        return unsupported("process.ioPriority / scheduler / execCPUAffinity");
    }
    for phase in crate::hooks::ALL {
        for hook in phase.hooks(spec) {
            // config.md "POSIX-platform Hooks": path MUST be absolute, timeout greater than 0.
            if !hook.path().is_absolute() {
                return Err(Error::InvalidSpec(format!(
                    "hooks.{}: path {} is not absolute",
                    phase.name(),
                    hook.path().display()
                )));
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                return Err(Error::InvalidSpec(format!(
                    "hooks.{}: timeout of {} must be greater than zero",
                    phase.name(),
                    hook.path().display()
                )));
            }
        }
    }
    let Some(linux) = spec.linux() else {
        return Err(Error::InvalidSpec(
            "no linux section: namespaces are required".into(),
        ));
    };
    if let Some(seccomp) = linux.seccomp() {
        // Compiled here too so that a bad profile is reported before anything starts.
        crate::seccomp::compile(seccomp)?;
    }
    if linux.intel_rdt().is_some()
        || linux.personality().is_some()
        || linux.memory_policy().is_some()
        || linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
        || linux.net_devices().as_ref().is_some_and(|n| !n.is_empty())
    {
        return unsupported(
            "linux.intelRdt / personality / memoryPolicy / timeOffsets / netDevices",
        );
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return unsupported("linux.mountLabel (SELinux)");
    }
    for ns in linux.namespaces().iter().flatten() {
        let joinable = matches!(
            ns.typ(),
            LinuxNamespaceType::Network | LinuxNamespaceType::Uts | LinuxNamespaceType::Ipc
        );
        if ns.path().is_some() && !joinable {
            return Err(Error::Unsupported(format!(
                "joining an existing {:?} namespace by path (only network, uts and ipc can be joined)",
                ns.typ()
            )));
        }
        if ns.typ() == LinuxNamespaceType::Time {
            return unsupported("time namespaces");
        }
    }
    Ok(())
}
