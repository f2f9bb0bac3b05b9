//! The optional init (`RunOptions::init`, what `docker run --init` gives with tini): PID 1
//! stays ours, forwards signals to the user's process and reaps every orphan, so zombies
//! cannot pile up under a main process that never calls wait().

use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::helper::FORWARDED_SIGNALS;

/// Forks: the child returns and goes on to exec the user's process; PID 1 never returns.
/// PID 1 closes its copy of the sync socket so that the child's exec alone closes it.
pub(crate) fn become_reaper(sync: &OwnedFd) {
    // SAFETY: the process is single-threaded (a clone of the single-threaded helper).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: closing our copy of the sync socket; the OwnedFd is never used again here.
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(sync)) };
            let code = reap(child);
            // SAFETY: _exit without running the helper's destructors.
            unsafe { libc::_exit(code) }
        }
        Err(e) => {
            eprintln!("rbuild init: fork: {e}");
            // SAFETY: as above.
            unsafe { libc::_exit(125) }
        }
    }
}

/// Reaps every child; returns the main child's status as a shell exit code (128 + signal,
/// since PID 1 cannot die of its own signal the way the main process did).
fn reap(main: Pid) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for sig in FORWARDED_SIGNALS {
        mask.add(sig);
    }
    // The helper already blocked these signals and we inherited its mask.
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) else {
        return 125;
    };
    loop {
        let Ok(Some(info)) = signals.read_signal() else {
            continue;
        };
        let signo = info.ssi_signo as i32;
        if signo != libc::SIGCHLD {
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = kill(main, sig);
            }
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == main => return code,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
