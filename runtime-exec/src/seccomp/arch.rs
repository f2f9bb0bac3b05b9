//! The architectures a filter can see in `seccomp_data.arch` on this machine, and their
//! syscall numbers (from the `syscalls` crate's tables, generated from the kernel's).
//! An x86-64 kernel also runs i386 and x32 processes; an arm64 kernel also runs 32-bit arm.

use std::str::FromStr;

use oci_spec::runtime::Arch;

/// x32 syscalls are x86-64 ones with this bit set (arch/x86/include/uapi/asm/unistd.h).
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An ABI this kernel can run, as the filter dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abi {
    X86_64,
    X86,
    X32,
    Aarch64,
    Arm,
}

impl Abi {
    /// The ABIs processes on this machine can use, the native one first.
    pub(crate) fn runnable() -> &'static [Abi] {
        if cfg!(target_arch = "x86_64") {
            &[Abi::X86_64, Abi::X86, Abi::X32]
        } else if cfg!(target_arch = "aarch64") {
            &[Abi::Aarch64, Abi::Arm]
        } else {
            &[]
        }
    }

    pub(crate) fn native() -> Option<Abi> {
        Abi::runnable().first().copied()
    }

    pub(crate) fn from_spec(arch: Arch) -> Option<Abi> {
        Some(match arch {
            Arch::ScmpArchNative => Abi::native()?,
            Arch::ScmpArchX86_64 => Abi::X86_64,
            Arch::ScmpArchX86 => Abi::X86,
            Arch::ScmpArchX32 => Abi::X32,
            Arch::ScmpArchAarch64 => Abi::Aarch64,
            Arch::ScmpArchArm => Abi::Arm,
            _ => return None,
        })
    }

    /// `seccomp_data.arch` (linux/audit.h AUDIT_ARCH_*); x32 shares x86-64's.
    pub(crate) fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => Arch::ScmpArchX86_64 as u32,
            Abi::X86 => Arch::ScmpArchX86 as u32,
            Abi::Aarch64 => Arch::ScmpArchAarch64 as u32,
            Abi::Arm => Arch::ScmpArchArm as u32,
        }
    }

    /// Whether syscall arguments are 64 bits wide (else only their low word is compared).
    pub(crate) fn wide_args(self) -> bool {
        matches!(self, Abi::X86_64 | Abi::Aarch64)
    }

    /// The syscall's number in this ABI, or None when the ABI has no such syscall.
    pub(crate) fn syscall(self, name: &str) -> Option<u32> {
        let id = match self {
            Abi::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            Abi::X32 => return Abi::X86_64.syscall(name).map(|n| n | X32_SYSCALL_BIT),
            Abi::X86 => syscalls::x86::Sysno::from_str(name).ok()?.id(),
            Abi::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
            Abi::Arm => syscalls::arm::Sysno::from_str(name).ok()?.id(),
        };
        u32::try_from(id).ok()
    }

    /// Whether any architecture Linux supports has a syscall of this name.
    pub(crate) fn known_anywhere(name: &str) -> bool {
        use syscalls::*;
        macro_rules! any_table {
            ($($arch:ident),*) => { false $(|| $arch::Sysno::from_str(name).is_ok())* };
        }
        any_table!(
            x86_64,
            x86,
            aarch64,
            arm,
            loongarch64,
            mips,
            mips64,
            powerpc,
            powerpc64,
            riscv32,
            riscv64,
            s390x,
            sparc,
            sparc64
        )
    }

    /// The name Go (and so docker's profile `arches` lists) gives the native ABI.
    pub(crate) fn go_name(self) -> &'static str {
        match self {
            Abi::X86_64 => "amd64",
            Abi::X86 => "x86",
            Abi::X32 => "x32",
            Abi::Aarch64 => "arm64",
            Abi::Arm => "arm",
        }
    }
}
