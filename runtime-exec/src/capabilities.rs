//! Linux capabilities: Docker's default set, --cap-add/--cap-drop, and applying a Spec's
//! `process.capabilities` (runtime-spec config.md "capabilities"; capabilities(7)).

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Error, Result};

/// Kernel numbers of the capabilities (linux/capability.h), by their name without `CAP_`.
const NUMBERS: [(&str, u32); 41] = [
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// Docker's default capability set (moby oci/caps/defaults.go).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Parses `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin`.
pub fn parse(name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map_err(|_| Error::InvalidSpec(format!("unknown capability {name:?}")))
}

/// Docker's rule for `--cap-add`/`--cap-drop` over its default set: `ALL` in add means every
/// capability this process can grant (those in its bounding set, as moby's caps package
/// does), `ALL` in drop removes all but those named in add.
pub fn docker_set(add: &[String], drop: &[String]) -> Result<Capabilities> {
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut set: Capabilities = if add.iter().any(is_all) {
        let bounding = own_bounding_set();
        NUMBERS
            .iter()
            .filter(|(_, bit)| bounding & (1u64 << bit) != 0)
            .filter_map(|(n, _)| parse(n).ok())
            .collect()
    } else if drop.iter().any(is_all) {
        HashSet::new()
    } else {
        DOCKER_DEFAULT
            .iter()
            .filter_map(|n| parse(n).ok())
            .collect()
    };
    for name in drop.iter().filter(|s| !is_all(s)) {
        set.remove(&parse(name)?);
    }
    for name in add.iter().filter(|s| !is_all(s)) {
        set.insert(parse(name)?);
    }
    Ok(set)
}

/// The same set in all of bounding, effective, permitted (and none inheritable or ambient),
/// as docker writes process.capabilities for root.
pub fn linux_capabilities(set: &Capabilities) -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set.clone()))
        .set_inheritable(Some(HashSet::new()))
        .set_ambient(Some(HashSet::new()));
    caps
}

fn number(cap: &Capability) -> Option<u32> {
    let name = cap.to_string();
    NUMBERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A set as the kernel's bit mask; capabilities newer than the running kernel are dropped,
/// as runc does, since they cannot be granted anyway.
fn mask(set: &Option<Capabilities>, last_cap: u32) -> u64 {
    set.iter()
        .flatten()
        .filter_map(number)
        .filter(|n| *n <= last_cap)
        .fold(0u64, |m, n| m | (1u64 << n))
}

/// This process's bounding set (`CapBnd` in /proc/self/status); every bit when unreadable.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
            u64::from_str_radix(line["CapBnd:".len()..].trim(), 16).ok()
        })
        .unwrap_or(u64::MAX)
}

/// The highest capability number this kernel knows.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The bit masks the container's process gets, computed before pivot_root while the host's
/// /proc/sys/kernel/cap_last_cap is at hand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Masks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last_cap: u32,
}

impl Masks {
    pub(crate) fn from_spec(caps: Option<&LinuxCapabilities>) -> Masks {
        let last_cap = last_cap();
        match caps {
            Some(c) => Masks {
                bounding: mask(c.bounding(), last_cap),
                effective: mask(c.effective(), last_cap),
                permitted: mask(c.permitted(), last_cap),
                inheritable: mask(c.inheritable(), last_cap),
                ambient: mask(c.ambient(), last_cap),
                last_cap,
            },
            // No capabilities object: the process gets none (runtime-spec leaves it to the
            // runtime; runc grants none either).
            None => Masks {
                bounding: 0,
                effective: 0,
                permitted: 0,
                inheritable: 0,
                ambient: 0,
                last_cap,
            },
        }
    }

    /// Drops from the bounding set every capability not in it. Needs CAP_SETPCAP, so it runs
    /// while the process is still root with all capabilities.
    pub(crate) fn drop_bounding(&self) -> std::io::Result<()> {
        for cap in 0..=self.last_cap {
            if self.bounding & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                let rc =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable (capset(2)), then raises the ambient ones.
    /// Runs after setuid, which the caller did with PR_SET_KEEPCAPS so permitted survived.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
        let data = [false, true].map(|hi| Data {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        });
        // SAFETY: header and a two-element data array laid out as linux/capability.h v3 wants.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The kernel raises an ambient capability only if it is permitted and inheritable;
        // runc skips the others the same way (`runc spec` lists ambient caps it cannot raise).
        let ambient = self.ambient & self.permitted & self.inheritable;
        for cap in 0..=self.last_cap {
            if ambient & (1u64 << cap) != 0 {
                // SAFETY: prctl with integer arguments only.
                let rc = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_with_add_and_drop() {
        let set = docker_set(&["NET_ADMIN".into()], &["cap_chown".into()]).unwrap();
        assert!(set.contains(&Capability::NetAdmin));
        assert!(!set.contains(&Capability::Chown));
        assert_eq!(set.len(), 14);
        assert!(docker_set(&[], &["ALL".into()]).unwrap().is_empty());
        let all = docker_set(&["ALL".into()], &[]).unwrap();
        let bounding = own_bounding_set();
        assert!(all
            .iter()
            .all(|c| bounding & (1u64 << number(c).unwrap()) != 0));
        assert!(all.contains(&Capability::SysAdmin));
        assert!(parse("CAP_NOPE").is_err());
    }

    #[test]
    fn every_oci_name_has_a_number() {
        for (name, n) in NUMBERS {
            assert_eq!(number(&parse(name).unwrap()), Some(n), "{name}");
        }
    }
}
