//! How a container ended.

use serde::{Deserialize, Serialize};

/// The end of the container's process, as the caller needs to report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The process called exit(code).
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
    /// The kernel's OOM killer killed a process of the container's memory cgroup, and the
    /// container's main process died of SIGKILL. Reported apart so that callers can say so.
    OomKilled,
}

impl ExitStatus {
    /// The shell convention docker and runc use: the exit code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
            ExitStatus::OomKilled => 128 + libc::SIGKILL,
        }
    }

    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitStatus::OomKilled => write!(f, "killed by the OOM killer (memory limit)"),
        }
    }
}
