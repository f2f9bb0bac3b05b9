//! Device rules on cgroup v2: v2 has no devices controller, so the rules become an eBPF
//! program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup, as runc
//! does (libcontainer/cgroups/devices/devicefilter.go). Without it a container with
//! CAP_MKNOD (docker's default set) could make a node for the host's disk and read it.
//!
//! A Spec rule is read as the v1 manager writes it ([`device_rule`]: type `a`, or none, is
//! every device), and the rules are then reduced the way cgroup v1 applies them (runc's
//! devices emulator): a rule for every device sets the default and drops what came before;
//! any other rule is an exception to the default, or withdraws one. The program then checks
//! the exceptions and else answers the default.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::device_rule;
use crate::error::{Error, Result};
use crate::spec::LinuxDeviceCgroup;

/// One device rule in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None`: block and character devices alike.
    kind: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    /// BPF_DEVCG_ACC_* bits.
    access: u32,
}

// include/uapi/linux/bpf.h
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ALL_ACCESS: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

impl Rule {
    /// `TYPE MAJOR:MINOR ACCESS`, the devices.allow syntax of cgroup v1 ([`device_rule`]),
    /// where `a` alone is every device.
    fn parse_v1(text: &str) -> Result<Rule> {
        if text == "a" {
            return Rule::parse_v1("a *:* rwm");
        }
        let invalid = || Error::InvalidSpec(format!("device rule {text:?}"));
        let mut fields = text.split(' ');
        let kind = match fields.next() {
            Some("a") => None,
            Some("b") => Some(DEV_BLOCK),
            Some("c") => Some(DEV_CHAR),
            _ => return Err(invalid()),
        };
        let (major, minor) = fields
            .next()
            .and_then(|n| n.split_once(':'))
            .ok_or_else(invalid)?;
        let number = |n: &str| match n {
            "*" => Ok(None),
            n => n.parse().map(Some).map_err(|_| invalid()),
        };
        Ok(Rule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: access_bits(fields.next().ok_or_else(invalid)?)?,
        })
    }

    fn is_every_device(&self) -> bool {
        self.kind.is_none()
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ALL_ACCESS
    }
}

fn access_bits(access: &str) -> Result<u32> {
    access.chars().try_fold(0, |bits, c| {
        Ok(bits
            | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(Error::InvalidSpec(format!(
                        "linux.resources.devices: access {access:?}"
                    )))
                }
            })
    })
}

/// The rules as cgroup v1 would hold them after applying them in order: the default answer
/// and its exceptions.
fn reduce(rules: &[(bool, Rule)]) -> (bool, Vec<Rule>) {
    // A new v1 cgroup allows everything until a rule for every device says otherwise.
    let mut default_allow = true;
    let mut exceptions: Vec<Rule> = Vec::new();
    for (allow, rule) in rules {
        if rule.is_every_device() {
            default_allow = *allow;
            exceptions.clear();
        } else if *allow != default_allow {
            if !exceptions.contains(rule) {
                exceptions.push(rule.clone());
            }
        } else {
            exceptions.retain(|e| e != rule);
        }
    }
    (default_allow, exceptions)
}

/// An eBPF instruction (struct bpf_insn).
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV32_IMM: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const MOV32_REG: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const AND32_IMM: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_IMM: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_IMM: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx);
/// then one block per exception that jumps past itself unless the request matches; else the
/// default. Allowed exceptions must cover every access asked for, denied ones any of them.
fn program(default_allow: bool, exceptions: &[Rule]) -> Vec<Insn> {
    let mut code = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV32_REG, 3, 2, 0, 0),
        insn(RSH32_IMM, 3, 0, 0, 16),
        insn(AND32_IMM, 2, 0, 0, 0xffff),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in exceptions {
        let mut checks: Vec<(u8, u8, i32)> = Vec::new(); // (jump opcode, register, value)
        if let Some(kind) = rule.kind {
            checks.push((JNE_IMM, 2, kind as i32));
        }
        if let Some(major) = rule.major {
            checks.push((JNE_IMM, 4, major as i32));
        }
        if let Some(minor) = rule.minor {
            checks.push((JNE_IMM, 5, minor as i32));
        }
        // Access: 3 instructions (r1 = r3 masked, then a jump).
        let remaining_after = |i: usize| -> i16 {
            // From check i: the later checks, the access test, then mov and exit.
            ((checks.len() - i - 1) + 3 + 2) as i16
        };
        for (i, (op, reg, value)) in checks.iter().enumerate() {
            code.push(insn(*op, *reg, 0, remaining_after(i), *value));
        }
        code.push(insn(MOV32_REG, 1, 3, 0, 0));
        if default_allow {
            // A denied exception matches when any of its accesses is asked for.
            code.push(insn(AND32_IMM, 1, 0, 0, rule.access as i32));
            code.push(insn(JEQ_IMM, 1, 0, 2, 0));
        } else {
            // An allowed one only when it covers all of them.
            code.push(insn(AND32_IMM, 1, 0, 0, (!rule.access & ALL_ACCESS) as i32));
            code.push(insn(JNE_IMM, 1, 0, 2, 0));
        }
        code.push(insn(MOV32_IMM, 0, 0, 0, i32::from(!default_allow)));
        code.push(insn(EXIT, 0, 0, 0, 0));
    }
    code.push(insn(MOV32_IMM, 0, 0, 0, i32::from(default_allow)));
    code.push(insn(EXIT, 0, 0, 0, 0));
    code
}

// bpf(2) commands, program and attach types, flags.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of the cgroups above (systemd's) keep running too; every one must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-filled union bpf_attr of its length with the command's fields set.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attaches a program enforcing `spec_rules` and then the devices every container may use
/// (`always_allowed`, v1 syntax) to the cgroup directory `dir`.
pub(super) fn attach(
    dir: &Path,
    spec_rules: &[LinuxDeviceCgroup],
    always_allowed: &[&str],
) -> Result<()> {
    let mut rules = Vec::new();
    for rule in spec_rules {
        rules.push((rule.allow(), Rule::parse_v1(&device_rule(rule))?));
    }
    for text in always_allowed {
        rules.push((true, Rule::parse_v1(text)?));
    }
    let (default_allow, exceptions) = reduce(&rules);
    let code: Vec<u8> = program(default_allow, &exceptions)
        .iter()
        .flat_map(Insn::bytes)
        .collect();
    let license = c"Apache";
    let failed = |what: &str, e: std::io::Error| {
        super::cgroup_error(dir, format!("device filter: {what}: {e}"))
    };

    let mut load = [0u8; 72];
    load[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    load[4..8].copy_from_slice(&((code.len() / 8) as u32).to_ne_bytes());
    load[8..16].copy_from_slice(&(code.as_ptr() as u64).to_ne_bytes());
    load[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    load[68..72].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    let prog = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => fd,
        // Without root there is no bpf(2); nor is there mknod, in the user namespace such a
        // run needs, so the rules have nothing left to stop (runc skips them rootless too).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() =>
        {
            tracing::warn!("cgroup v2: device rules not enforced without root: {e}");
            return Ok(());
        }
        Err(e) => return Err(failed("load", e)),
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };

    let cgroup = std::fs::File::open(dir).map_err(|e| failed("open the cgroup", e))?;
    let mut attach = [0u8; 20];
    attach[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attach[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attach[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attach[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(|e| failed("attach", e))?;
    // The attachment holds the program; closing our descriptor does not detach it, and the
    // kernel drops it with the cgroup.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(rules: &[(bool, &str)]) -> (bool, Vec<Rule>) {
        let rules: Vec<(bool, Rule)> = rules
            .iter()
            .map(|(allow, text)| (*allow, Rule::parse_v1(text).unwrap()))
            .collect();
        reduce(&rules)
    }

    /// Runs the program on one request, as the kernel would (only the opcodes it uses).
    fn verdict(code: &[Insn], kind: u32, major: u32, minor: u32, access: u32) -> u32 {
        let mut r = [0u64; 11];
        let ctx = [(access << 16) | kind, major, minor];
        let mut pc = 0usize;
        loop {
            let i = &code[pc];
            pc += 1;
            let (dst, src) = (i.dst as usize, i.src as usize);
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                MOV32_IMM => r[dst] = i.imm as u32 as u64,
                MOV32_REG => r[dst] = r[src] as u32 as u64,
                AND32_IMM => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_IMM => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                JNE_IMM if r[dst] != i.imm as u64 => pc += i.off as usize,
                JEQ_IMM if r[dst] == i.imm as u64 => pc += i.off as usize,
                JNE_IMM | JEQ_IMM => {}
                EXIT => return r[0] as u32,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn docker_defaults_allow_the_basics_and_mknod_only() {
        let mut rules = vec![(false, "a *:* rwm")];
        rules.extend(super::super::DEFAULT_ALLOWED_DEVICES.map(|r| (true, r)));
        let (allow, exceptions) = v1(&rules);
        assert!(!allow);
        let code = program(allow, &exceptions);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(verdict(&code, DEV_CHAR, 1, 3, rw), 1, "/dev/null");
        assert_eq!(verdict(&code, DEV_CHAR, 136, 4, rw), 1, "a pty");
        assert_eq!(verdict(&code, DEV_BLOCK, 8, 0, ACC_MKNOD), 1, "mknod sda");
        assert_eq!(verdict(&code, DEV_BLOCK, 8, 0, ACC_READ), 0, "read sda");
        assert_eq!(verdict(&code, DEV_CHAR, 1, 1, ACC_READ), 0, "/dev/mem");
        assert_eq!(verdict(&code, DEV_CHAR, 1, 3, rw | ACC_MKNOD), 1);
    }

    #[test]
    fn every_device_rules_reset_and_exceptions_withdraw() {
        let (allow, exceptions) = v1(&[(true, "a *:* rwm")]);
        assert!(allow && exceptions.is_empty());
        let code = program(allow, &exceptions);
        assert_eq!(verdict(&code, DEV_BLOCK, 8, 0, ACC_READ), 1);

        let (allow, exceptions) = v1(&[(false, "c 1:1 r"), (true, "c 1:1 r")]);
        assert!(allow && exceptions.is_empty());
        let (allow, exceptions) = v1(&[(false, "c 1:1 rw")]);
        let code = program(allow, &exceptions);
        assert_eq!(verdict(&code, DEV_CHAR, 1, 1, ACC_WRITE), 0);
        assert_eq!(verdict(&code, DEV_CHAR, 1, 1, ACC_MKNOD), 1);
        assert_eq!(verdict(&code, DEV_CHAR, 1, 3, ACC_WRITE), 1);
    }
}
