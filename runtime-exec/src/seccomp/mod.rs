//! `linux.seccomp` (runtime-spec config-linux.md "Seccomp"): the Spec's profile compiled to a
//! classic BPF filter in pure Rust and installed by the container init right before execve.
//!
//! Semantics follow libseccomp as runc drives it:
//! - `architectures` lists the ABIs the filter accepts (none: the native one); a syscall made
//!   through any other ABI this kernel runs (i386, x32 on x86-64) kills the process, as
//!   libseccomp's default bad-arch action does. Listed ABIs this kernel cannot run are moot.
//! - For each syscall, its rules with `args` are tried in the Spec's order (all conditions of
//!   a rule must hold; conditions repeating an argument index become separate rules, as runc
//!   splits them), then its first rule without `args`, then `defaultAction`.
//! - A name the filter's ABIs do not have is skipped, as runc skips it: no such syscall can be
//!   made here. A name no Linux architecture has is a typo: an error in a restrictive rule
//!   (never a filter quietly weaker than the Spec), skipped in an ALLOW/LOG one.
//! - SCMP_ACT_ERRNO returns `errnoRet` (or `defaultErrnoRet` for the default), else EPERM.
//!
//! Why not libseccomp: it needs libseccomp-dev at build time and a C library at run time for
//! what is ~300 lines of straightforward code here; the unit tests run the compiled program
//! through a BPF interpreter, and the executor tests run it in the kernel.

mod arch;
mod bpf;
pub mod profile;

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};
use arch::{Abi, X32_SYSCALL_BIT};
use bpf::{Assembler, Cond, Label, Target};

// seccomp return values (linux/seccomp.h).
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in `struct seccomp_data` (linux/seccomp.h); arguments are little-endian u64s.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

// seccomp(2) flags.
const FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const FILTER_FLAG_LOG: libc::c_ulong = 2;
const FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 4;

/// A compiled filter, ready for seccomp(2).
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Filter {
    /// Number of BPF instructions (for diagnostics and tests).
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the filter on the calling thread (and so on everything it execs). Needs
    /// no_new_privs or CAP_SYS_ADMIN (seccomp(2)).
    pub fn install(&self) -> std::io::Result<()> {
        let fprog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: fprog points at our live program for the duration of the call; the kernel
        // copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// One rule for one syscall of one ABI.
struct Rule<'a> {
    conditions: Vec<&'a LinuxSeccompArg>,
    action: u32,
}

/// What one syscall of one ABI does: its rules with conditions in order, then the first
/// rule without (else the default action).
#[derive(Default)]
struct SyscallRules<'a> {
    conditional: Vec<Rule<'a>>,
    unconditional: Option<u32>,
}

/// Syscall number → its rules, for one ABI.
type AbiTable<'a> = BTreeMap<u32, SyscallRules<'a>>;

/// Compiles the Spec's profile for this machine.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
    let invalid = |m: String| Error::InvalidSpec(format!("linux.seccomp: {m}"));
    if seccomp.listener_path().is_some() || seccomp.listener_metadata().is_some() {
        return Err(Error::Unsupported(
            "linux.seccomp.listenerPath (seccomp notify agents)".into(),
        ));
    }
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FILTER_FLAG_SPEC_ALLOW,
        };
    }
    let default = action_value(seccomp.default_action(), seccomp.default_errno_ret())?;

    let runnable = Abi::runnable();
    let Some(native) = Abi::native() else {
        return Err(Error::Unsupported(
            "linux.seccomp on this CPU architecture".into(),
        ));
    };
    let mut abis: Vec<Abi> = Vec::new();
    for arch in seccomp.architectures().iter().flatten() {
        if let Some(abi) = Abi::from_spec(*arch).filter(|a| runnable.contains(a)) {
            if !abis.contains(&abi) {
                abis.push(abi);
            }
        }
    }
    if abis.is_empty() {
        abis.push(native);
    }

    let mut table: Vec<AbiTable> = abis.iter().map(|_| BTreeMap::new()).collect();
    for (i, syscall) in seccomp.syscalls().iter().flatten().enumerate() {
        let action = action_value(syscall.action(), syscall.errno_ret())?;
        let args: Vec<&LinuxSeccompArg> = syscall.args().iter().flatten().collect();
        for arg in &args {
            if arg.index() > 5 {
                return Err(invalid(format!(
                    "syscalls[{i}]: argument index {} (a syscall has 6)",
                    arg.index()
                )));
            }
        }
        let rules = split_conditions(&args);
        let permissive = matches!(
            syscall.action(),
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        );
        for name in syscall.names() {
            let mut known = false;
            for (abi, syscalls) in abis.iter().zip(table.iter_mut()) {
                let Some(nr) = abi.syscall(name) else {
                    continue;
                };
                known = true;
                let entry = syscalls.entry(nr).or_default();
                if rules.is_empty() {
                    entry.unconditional.get_or_insert(action);
                }
                for conditions in &rules {
                    entry.conditional.push(Rule {
                        conditions: conditions.clone(),
                        action,
                    });
                }
            }
            if !known && !permissive && !Abi::known_anywhere(name) {
                return Err(invalid(format!(
                    "syscalls[{i}]: unknown syscall {name:?} in a {:?} rule (refused rather than left unfiltered)",
                    syscall.action()
                )));
            }
        }
    }

    let mut asm = Assembler::default();
    let blocks: Vec<Label> = abis.iter().map(|_| asm.label()).collect();
    asm.load(DATA_ARCH);
    let mut dispatched: Vec<u32> = Vec::new();
    for (abi, block) in abis.iter().zip(&blocks) {
        // x32 shares x86-64's audit arch: the x86-64 block tells them apart by the number.
        let arch = abi.audit_arch();
        if dispatched.contains(&arch) {
            continue;
        }
        dispatched.push(arch);
        let x86_64_block = abis
            .iter()
            .zip(&blocks)
            .find(|(a, _)| **a == Abi::X86_64)
            .map(|(_, b)| *b);
        let target = if *abi == Abi::X32 {
            x86_64_block.unwrap_or(*block)
        } else {
            *block
        };
        let skip = asm.label();
        asm.jump(Cond::Eq, arch, Target::Next, Target::To(skip));
        asm.goto(target);
        asm.bind(skip);
    }
    // An ABI the filter does not accept (libseccomp's bad-arch action).
    asm.ret(RET_KILL_PROCESS);

    for ((abi, block), syscalls) in abis.iter().zip(&blocks).zip(&table) {
        asm.bind(*block);
        asm.load(DATA_NR);
        if *abi == Abi::X86_64 {
            let x32 = abis
                .iter()
                .zip(&blocks)
                .find(|(a, _)| **a == Abi::X32)
                .map(|(_, b)| *b);
            let not_x32 = asm.label();
            asm.jump(
                Cond::Set,
                X32_SYSCALL_BIT,
                Target::Next,
                Target::To(not_x32),
            );
            match x32 {
                Some(x32) => asm.goto(x32),
                None => asm.ret(RET_KILL_PROCESS),
            }
            asm.bind(not_x32);
        } else if *abi == Abi::X32 {
            let is_x32 = asm.label();
            asm.jump(Cond::Set, X32_SYSCALL_BIT, Target::To(is_x32), Target::Next);
            asm.ret(RET_KILL_PROCESS);
            asm.bind(is_x32);
        }
        emit_abi(&mut asm, *abi, syscalls, default);
    }
    let program = asm.assemble().map_err(invalid)?;
    Ok(Filter { program, flags })
}

/// The dispatch on the syscall number (A holds it), then one body per syscall.
fn emit_abi(asm: &mut Assembler, abi: Abi, syscalls: &AbiTable, default: u32) {
    let bodies: Vec<Label> = syscalls.keys().map(|_| asm.label()).collect();
    for (nr, body) in syscalls.keys().zip(&bodies) {
        let skip = asm.label();
        asm.jump(Cond::Eq, *nr, Target::Next, Target::To(skip));
        asm.goto(*body);
        asm.bind(skip);
    }
    asm.ret(default);
    for (rules, body) in syscalls.values().zip(&bodies) {
        asm.bind(*body);
        for rule in &rules.conditional {
            let fail = asm.label();
            for arg in &rule.conditions {
                emit_condition(asm, arg, abi.wide_args(), fail);
            }
            asm.ret(rule.action);
            asm.bind(fail);
        }
        asm.ret(rules.unconditional.unwrap_or(default));
    }
}

/// Falls through when the condition holds, jumps to `fail` otherwise. 64-bit comparisons
/// are made on the high word first, then the low word (as libseccomp generates them).
fn emit_condition(asm: &mut Assembler, arg: &LinuxSeccompArg, wide: bool, fail: Label) {
    let offset = DATA_ARGS + 8 * arg.index() as u32;
    let (lo_off, hi_off) = (offset, offset + 4);
    let value = arg.value();
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ok = asm.label();
    let fail_to = Target::To(fail);
    let ok_to = Target::To(ok);
    use LinuxSeccompOperator as Op;
    match arg.op() {
        Op::ScmpCmpEq => {
            if wide {
                asm.load(hi_off);
                asm.jump(Cond::Eq, hi, Target::Next, fail_to);
            }
            asm.load(lo_off);
            asm.jump(Cond::Eq, lo, Target::Next, fail_to);
        }
        Op::ScmpCmpNe => {
            if wide {
                asm.load(hi_off);
                asm.jump(Cond::Eq, hi, Target::Next, ok_to);
            }
            asm.load(lo_off);
            asm.jump(Cond::Eq, lo, fail_to, Target::Next);
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            if wide {
                asm.load(hi_off);
                asm.jump(Cond::Gt, hi, ok_to, Target::Next);
                asm.jump(Cond::Eq, hi, Target::Next, fail_to);
            }
            asm.load(lo_off);
            let cond = if arg.op() == Op::ScmpCmpGt {
                Cond::Gt
            } else {
                Cond::Ge
            };
            asm.jump(cond, lo, Target::Next, fail_to);
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            if wide {
                asm.load(hi_off);
                asm.jump(Cond::Gt, hi, fail_to, Target::Next);
                asm.jump(Cond::Eq, hi, Target::Next, ok_to);
            }
            asm.load(lo_off);
            // a < v ⇔ !(a >= v); a <= v ⇔ !(a > v)
            let cond = if arg.op() == Op::ScmpCmpLt {
                Cond::Ge
            } else {
                Cond::Gt
            };
            asm.jump(cond, lo, fail_to, Target::Next);
        }
        Op::ScmpCmpMaskedEq => {
            // (arg & value) == valueTwo
            let want = arg.value_two().unwrap_or(0);
            if wide {
                asm.load(hi_off);
                asm.and(hi);
                asm.jump(Cond::Eq, (want >> 32) as u32, Target::Next, fail_to);
            }
            asm.load(lo_off);
            asm.and(lo);
            asm.jump(Cond::Eq, want as u32, Target::Next, fail_to);
        }
    }
    asm.bind(ok);
}

/// runc's rule: conditions on distinct arguments form one rule (all must hold); conditions
/// that repeat an argument index each become a rule of their own.
fn split_conditions<'a>(args: &[&'a LinuxSeccompArg]) -> Vec<Vec<&'a LinuxSeccompArg>> {
    if args.is_empty() {
        return Vec::new();
    }
    let repeated = |index: usize| args.iter().filter(|a| a.index() == index).count() > 1;
    let mut rules: Vec<Vec<&LinuxSeccompArg>> = args
        .iter()
        .filter(|a| repeated(a.index()))
        .map(|a| vec![*a])
        .collect();
    let together: Vec<&LinuxSeccompArg> = args
        .iter()
        .filter(|a| !repeated(a.index()))
        .copied()
        .collect();
    if !together.is_empty() {
        rules.push(together);
    }
    rules
}

fn action_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    let data = errno.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(match action {
        A::ScmpActKill | A::ScmpActKillThread => RET_KILL_THREAD,
        A::ScmpActKillProcess => RET_KILL_PROCESS,
        A::ScmpActTrap => RET_TRAP,
        A::ScmpActErrno => RET_ERRNO | data,
        A::ScmpActTrace => RET_TRACE | data,
        A::ScmpActLog => RET_LOG,
        A::ScmpActAllow => RET_ALLOW,
        A::ScmpActNotify => {
            return Err(Error::Unsupported(
                "linux.seccomp action SCMP_ACT_NOTIFY (seccomp notify agents)".into(),
            ))
        }
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    /// Runs the filter for a syscall of `arch` with `args`.
    fn verdict(filter: &Filter, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = vec![nr, arch, 0, 0];
        for a in args {
            data.push(a as u32);
            data.push((a >> 32) as u32);
        }
        bpf::interpret(&filter.program, &data)
    }

    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;

    #[test]
    fn names_actions_and_default() {
        let filter = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["getpid"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}
            ]
        })))
        .unwrap();
        let nr = |n: &str| Abi::X86_64.syscall(n).unwrap();
        assert_eq!(verdict(&filter, X86_64, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&filter, X86_64, nr("write"), [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&filter, X86_64, nr("mkdir"), [0; 6]), RET_ERRNO | 1);
        assert_eq!(
            verdict(&filter, X86_64, nr("getpid"), [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            verdict(&filter, X86_64, nr("uname"), [0; 6]),
            RET_ERRNO | 38
        );
        // Not in `architectures` (none: native only): i386 and x32 calls are killed.
        assert_eq!(verdict(&filter, I386, 3, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(
            verdict(&filter, X86_64, nr("read") | X32_SYSCALL_BIT, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn compat_abis_use_their_own_numbers() {
        let filter = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        })))
        .unwrap();
        assert_eq!(verdict(&filter, I386, 3, [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&filter, I386, 0, [0; 6]), RET_ERRNO | 1);
        assert_eq!(verdict(&filter, X86_64, X32_SYSCALL_BIT, [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&filter, X86_64, 0, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn argument_comparisons_on_64_bits() {
        let rule = |op: &str, value: u64| {
            compile(&profile(serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 1, "value": value, "valueTwo": 0x1_0000_0002u64, "op": op}]}]
            })))
            .unwrap()
        };
        let nr = Abi::X86_64.syscall("personality").unwrap();
        let allowed =
            |f: &Filter, arg: u64| verdict(f, X86_64, nr, [0, arg, 0, 0, 0, 0]) == RET_ALLOW;
        let big = 0x1_0000_0005u64;
        type Expected = fn(u64, u64) -> bool;
        let cases: [(&str, Expected); 6] = [
            ("SCMP_CMP_EQ", |a, v| a == v),
            ("SCMP_CMP_NE", |a, v| a != v),
            ("SCMP_CMP_LT", |a, v| a < v),
            ("SCMP_CMP_LE", |a, v| a <= v),
            ("SCMP_CMP_GT", |a, v| a > v),
            ("SCMP_CMP_GE", |a, v| a >= v),
        ];
        let probes = [
            0,
            4,
            5,
            6,
            big - 1,
            big,
            big + 1,
            0x2_0000_0000,
            0x5,
            u64::MAX,
        ];
        for (op, expected) in cases {
            let filter = rule(op, big);
            for arg in probes {
                assert_eq!(allowed(&filter, arg), expected(arg, big), "{op} {arg:#x}");
            }
        }
        let masked = rule("SCMP_CMP_MASKED_EQ", 0xf_0000_000f);
        for arg in probes {
            let expected = arg & 0xf_0000_000f == 0x1_0000_0002;
            assert_eq!(allowed(&masked, arg), expected, "masked {arg:#x}");
        }
        assert!(allowed(&masked, 0x31_0000_0012));
    }

    #[test]
    fn repeated_argument_indexes_are_alternatives() {
        let filter = compile(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap();
        let nr = Abi::X86_64.syscall("personality").unwrap();
        assert_eq!(verdict(&filter, X86_64, nr, [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&filter, X86_64, nr, [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict(&filter, X86_64, nr, [9, 0, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
    }

    #[test]
    fn bad_profiles_are_refused() {
        let err = |json| compile(&profile(json)).unwrap_err().to_string();
        assert!(err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]}))
        .contains("no_such_call"));
        assert!(err(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"})).contains("NOTIFY"));
        assert!(err(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}))
        .contains("index"));
    }
}
