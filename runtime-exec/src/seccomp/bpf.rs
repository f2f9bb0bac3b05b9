//! A small assembler for classic BPF as seccomp runs it (linux/filter.h, linux/bpf_common.h,
//! kernel Documentation/userspace-api/seccomp_filter.rst): forward jumps to labels, resolved
//! into the 8-bit conditional offsets and 32-bit `ja` offsets the kernel wants.

use libc::sock_filter;

// Opcodes as class | size/op | source (bpf_common.h); the zero parts are left out.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// The kernel's limit on one filter's length (BPF_MAXINSNS).
pub(crate) const MAX_INSNS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// The next instruction.
    Next,
    To(Label),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cond {
    Eq,
    Gt,
    Ge,
    /// `A & k != 0`
    Set,
}

struct Pending {
    code: u16,
    jt: Target,
    jf: Target,
    k: u32,
    /// `ja` to this label (its 32-bit k is the offset).
    goto: Option<Label>,
}

#[derive(Default)]
pub(crate) struct Assembler {
    insns: Vec<Pending>,
    labels: Vec<Option<usize>>,
}

impl Assembler {
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// The label names the next instruction emitted.
    pub(crate) fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn push(&mut self, code: u16, k: u32) {
        self.insns.push(Pending {
            code,
            jt: Target::Next,
            jf: Target::Next,
            k,
            goto: None,
        });
    }

    /// A = the 32-bit word at `offset` of `struct seccomp_data`.
    pub(crate) fn load(&mut self, offset: u32) {
        self.push(BPF_LD_W_ABS, offset);
    }

    pub(crate) fn and(&mut self, k: u32) {
        self.push(BPF_ALU_AND_K, k);
    }

    pub(crate) fn jump(&mut self, cond: Cond, k: u32, jt: Target, jf: Target) {
        let code = match cond {
            Cond::Eq => BPF_JMP_JEQ_K,
            Cond::Gt => BPF_JMP_JGT_K,
            Cond::Ge => BPF_JMP_JGE_K,
            Cond::Set => BPF_JMP_JSET_K,
        };
        self.insns.push(Pending {
            code,
            jt,
            jf,
            k,
            goto: None,
        });
    }

    pub(crate) fn goto(&mut self, label: Label) {
        self.insns.push(Pending {
            code: BPF_JMP_JA,
            jt: Target::Next,
            jf: Target::Next,
            k: 0,
            goto: Some(label),
        });
    }

    pub(crate) fn ret(&mut self, action: u32) {
        self.push(BPF_RET_K, action);
    }

    /// The program, or why the kernel would refuse it (too long, a jump too far, a label
    /// never bound — the last two are bugs of the compiler, reported rather than panicked).
    pub(crate) fn assemble(self) -> Result<Vec<sock_filter>, String> {
        if self.insns.len() > MAX_INSNS {
            return Err(format!(
                "the filter has {} instructions, more than the kernel's {MAX_INSNS}",
                self.insns.len()
            ));
        }
        let offset = |from: usize, label: Label| -> Result<usize, String> {
            let to = self.labels[label.0].ok_or("seccomp compiler: unbound label")?;
            to.checked_sub(from + 1)
                .ok_or_else(|| "seccomp compiler: backward jump".to_string())
        };
        let short = |from: usize, target: Target| -> Result<u8, String> {
            match target {
                Target::Next => Ok(0),
                Target::To(label) => u8::try_from(offset(from, label)?)
                    .map_err(|_| "seccomp compiler: conditional jump too far".to_string()),
            }
        };
        self.insns
            .iter()
            .enumerate()
            .map(|(i, insn)| {
                let k = match insn.goto {
                    Some(label) => u32::try_from(offset(i, label)?)
                        .map_err(|_| "seccomp compiler: jump too far".to_string())?,
                    None => insn.k,
                };
                Ok(sock_filter {
                    code: insn.code,
                    jt: short(i, insn.jt)?,
                    jf: short(i, insn.jf)?,
                    k,
                })
            })
            .collect()
    }
}

/// Runs a program on one `struct seccomp_data` (as 32-bit words), for the unit tests.
#[cfg(test)]
pub(crate) fn interpret(program: &[sock_filter], data: &[u32]) -> u32 {
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let insn = program[pc];
        pc += 1;
        let cond = |taken: bool| if taken { insn.jt } else { insn.jf } as usize;
        match insn.code {
            BPF_LD_W_ABS => a = data[insn.k as usize / 4],
            BPF_ALU_AND_K => a &= insn.k,
            BPF_JMP_JA => pc += insn.k as usize,
            BPF_JMP_JEQ_K => pc += cond(a == insn.k),
            BPF_JMP_JGT_K => pc += cond(a > insn.k),
            BPF_JMP_JGE_K => pc += cond(a >= insn.k),
            BPF_JMP_JSET_K => pc += cond(a & insn.k != 0),
            BPF_RET_K => return insn.k,
            other => panic!("unexpected BPF code {other:#x}"),
        }
    }
}
