//! The executor's error type. Setup failures inside the container are carried back to the
//! caller as [`SetupError`] so that the CLI can map them to docker's exit codes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What went wrong while preparing or starting the container process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Spec asks for something this executor does not do; it is refused rather than
    /// silently ignored (e.g. a seccomp profile, hooks, AppArmor).
    #[error("unsupported OCI runtime spec: {0}")]
    Unsupported(String),
    /// The Spec is malformed or inconsistent (missing process, empty args, ...).
    #[error("invalid OCI runtime spec: {0}")]
    InvalidSpec(String),
    /// A CDI device that is not registered, or whose spec cannot be applied.
    #[error("{0}")]
    Cdi(String),
    #[error("rootfs {0} does not exist or is not a directory")]
    MissingRootfs(PathBuf),
    /// `USER name[:group]` could not be resolved from the image's /etc/passwd and /etc/group.
    #[error("unable to find user {user}: {reason}")]
    UnknownUser { user: String, reason: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    /// The container process could not be set up or started (reported by the helper).
    #[error("{0}")]
    Setup(SetupError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }

    /// The exit code docker gives for this failure: 127 when the command is not found,
    /// 126 when it cannot be executed, 125 for every other failure to start.
    pub fn docker_exit_code(&self) -> u8 {
        match self {
            Error::Setup(SetupError {
                kind: SetupErrorKind::CommandNotFound,
                ..
            }) => 127,
            Error::Setup(SetupError {
                kind: SetupErrorKind::NotExecutable,
                ..
            }) => 126,
            _ => 125,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure inside the helper or the container before the user's process started.
/// Serializable because it crosses the process boundary from the helper to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SetupError {
    pub kind: SetupErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetupErrorKind {
    /// args[0] is absent from the rootfs or from every $PATH entry (docker: 127).
    CommandNotFound,
    /// args[0] exists but execve refused it (permission, format; docker: 126).
    NotExecutable,
    Other,
}

impl SetupError {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        SetupError {
            kind: SetupErrorKind::Other,
            message: message.into(),
        }
    }
}

impl From<SetupError> for Error {
    fn from(e: SetupError) -> Self {
        Error::Setup(e)
    }
}
