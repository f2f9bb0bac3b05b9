//! Messages between the three processes of a run:
//! caller (`run`) ⇄ helper: a stream socket; the caller writes one JSON [`Request`] and shuts
//! its side, the helper answers with newline-delimited JSON [`Report`]s.
//! helper ⇄ container init: a seqpacket socket; the helper sends "go" once the init is in its
//! cgroup; the init answers on failure, or asks for the helper's createRuntime hooks, which a
//! "go" ends ([`ChildMessage`]); EOF means execve succeeded.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::SetupError;
use crate::options::RunOptions;
use crate::status::ExitStatus;

#[derive(Serialize, Deserialize)]
pub(crate) struct Request {
    pub spec: Spec,
    pub options: RunOptions,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The user's process was exec'd; `pid` is its pid in the caller's PID namespace.
    Started {
        pid: i32,
    },
    Exited {
        status: ExitStatus,
    },
    Failed {
        error: SetupError,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildMessage {
    Failed(SetupError),
    /// The mounts are made: run the prestart and createRuntime hooks, then say go.
    RunRuntimeHooks,
}

const GO: &[u8] = b"go";

fn write_all(fd: &OwnedFd, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::from(fd.try_clone()?);
    file.write_all(bytes)
}

/// MSG_NOSIGNAL: a caller that died must not kill the helper with SIGPIPE before it cleans up.
pub(crate) fn send_report(fd: &OwnedFd, report: &Report) -> std::io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut rest = line.as_slice();
    while !rest.is_empty() {
        match send(fd.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads reports until the helper closes its side; calls `seen` for each.
pub(crate) fn read_reports(fd: OwnedFd, mut seen: impl FnMut(Report)) -> std::io::Result<()> {
    let reader = std::io::BufReader::new(std::fs::File::from(fd));
    for line in reader.lines() {
        let line = line?;
        let report = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("bad report from helper: {e}")))?;
        seen(report);
    }
    Ok(())
}

pub(crate) fn send_request(fd: &OwnedFd, request: &Request) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    write_all(fd, &bytes)?;
    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(std::io::Error::from)
}

pub(crate) fn read_request(fd: &OwnedFd) -> std::io::Result<Request> {
    let file = std::fs::File::from(fd.try_clone()?);
    serde_json::from_reader(std::io::BufReader::new(file))
        .map_err(|e| std::io::Error::other(format!("bad request: {e}")))
}

pub(crate) fn send_go(fd: &OwnedFd) -> std::io::Result<()> {
    nix::unistd::write(fd.as_fd(), GO)
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Whether the helper said go (false when it closed the socket instead).
pub(crate) fn recv_go(fd: &OwnedFd) -> std::io::Result<bool> {
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(fd, &mut buf).map_err(std::io::Error::from)?;
    Ok(&buf[..n] == GO)
}

pub(crate) fn send_child(fd: &OwnedFd, message: &ChildMessage) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    nix::unistd::write(fd.as_fd(), &bytes)
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// The init's next message, or None when the socket closed: its execve succeeded.
pub(crate) fn recv_child(fd: &OwnedFd) -> std::io::Result<Option<ChildMessage>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                return serde_json::from_slice(&buf[..n]).map(Some).map_err(|e| {
                    std::io::Error::other(format!("bad message from container init: {e}"))
                })
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
