//! Docker's seccomp profile format (moby profiles/seccomp, containers/common pkg/seccomp):
//! the OCI `linux.seccomp` plus `archMap` and per-rule `includes`/`excludes` on capabilities,
//! architectures and kernel versions. [`resolve`] turns one into the OCI form for a container
//! with a given capability set, as docker and podman do before they hand the Spec to runc.
//!
//! The default profile is a copy of containers-common's /usr/share/containers/seccomp.json
//! (Debian 12, golang-github-containers-common 0.50; Apache-2.0), embedded so that `rbuild run`
//! confines containers the same way whether or not podman is installed.

use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSyscall,
};
use serde::Deserialize;

use super::arch::Abi;
use crate::error::{Error, Result};

/// The embedded default profile (docker's default, as podman ships it).
pub const DEFAULT_PROFILE: &str = include_str!("default-profile.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    names: Vec<String>,
    /// The older single-name form.
    name: Option<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// The OCI profile for a container whose bounding capabilities are `caps`, from a
/// docker-format profile (an OCI-format one is accepted as it is a subset).
pub fn resolve(json: &str, caps: &Capabilities) -> Result<LinuxSeccomp> {
    // Profiles name capabilities as the Spec serializes them: "CAP_SYS_ADMIN".
    let caps: Vec<String> = caps
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(String::from))
        .collect();
    let profile: Profile = serde_json::from_str(json)
        .map_err(|e| Error::InvalidSpec(format!("seccomp profile: {e}")))?;
    let native = Abi::native()
        .ok_or_else(|| Error::Unsupported("seccomp on this CPU architecture".into()))?;
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(Error::InvalidSpec(
            "seccomp profile: both architectures and archMap are set".into(),
        ));
    }
    let mut architectures = profile.architectures;
    for entry in &profile.arch_map {
        if Abi::from_spec(entry.architecture) == Some(native) {
            architectures.push(entry.architecture);
            architectures.extend(&entry.sub_architectures);
        }
    }
    let kernel = kernel_version();
    let arch = native.go_name();
    let mut syscalls = Vec::new();
    for call in profile.syscalls {
        let (inc, exc) = (&call.includes, &call.excludes);
        let excluded = exc.arches.iter().any(|a| a == arch)
            || exc.caps.iter().any(|c| caps.contains(c))
            || exc
                .min_kernel
                .as_deref()
                .is_some_and(|v| kernel >= parse_version(v));
        let included = (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch))
            && inc.caps.iter().all(|c| caps.contains(c))
            && inc
                .min_kernel
                .as_deref()
                .is_none_or(|v| kernel >= parse_version(v));
        if excluded || !included {
            continue;
        }
        let mut names = call.names;
        names.extend(call.name);
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(names);
        syscall.set_action(call.action);
        syscall.set_errno_ret(call.errno_ret);
        syscall.set_args(call.args.filter(|a| !a.is_empty()));
        syscalls.push(syscall);
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(profile.default_action);
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    seccomp.set_architectures((!architectures.is_empty()).then_some(architectures));
    seccomp.set_flags((!profile.flags.is_empty()).then_some(profile.flags));
    seccomp.set_syscalls(Some(syscalls));
    Ok(seccomp)
}

/// (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    nix::sys::utsname::uname()
        .map(|u| parse_version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn has(seccomp: &LinuxSeccomp, name: &str, action: LinuxSeccompAction) -> bool {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == action && s.names().iter().any(|n| n == name))
    }

    #[test]
    fn the_default_profile_follows_capabilities_and_arch() {
        use oci_spec::runtime::Capability;
        let plain = resolve(DEFAULT_PROFILE, &[Capability::Chown].into()).unwrap();
        let admin = resolve(DEFAULT_PROFILE, &[Capability::SysAdmin].into()).unwrap();
        use LinuxSeccompAction::*;
        assert!(!has(&plain, "bpf", ScmpActAllow) && has(&plain, "bpf", ScmpActErrno));
        assert!(has(&admin, "bpf", ScmpActAllow) && !has(&admin, "bpf", ScmpActErrno));
        assert!(
            has(&plain, "arch_prctl", ScmpActAllow),
            "amd64-only rule kept"
        );
        assert!(!has(&plain, "s390_runtime_instr", ScmpActAllow));
        assert_eq!(
            plain.architectures().clone().unwrap(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let filter = super::super::compile(&plain).unwrap();
        assert!(filter.len() < super::super::bpf::MAX_INSNS);
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("6.18.44-fc-v782"), (6, 18));
        assert!(parse_version("6.1.0") >= parse_version("5.8"));
        assert!(parse_version("4.9") < parse_version("4.14"));
    }
}
