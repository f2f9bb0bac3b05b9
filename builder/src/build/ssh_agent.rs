//! `RUN --mount=type=ssh`: the step reaches an ssh-agent of the host through a socket of its
//! own (reference.md, "RUN --mount=type=ssh").
//!
//! BuildKit serves each ssh mount from a fresh socket that relays to the client's agent; so
//! does this. The host's agent socket is never mounted itself: the step's socket gets the
//! mount's `mode`, `uid` and `gid` without touching the agent's, and the agent's directory
//! stays out of the container. The relay lives as long as the step: [`AgentRelay`]'s drop
//! stops it and removes its socket. The socket is made in a private directory of the system's
//! temporary directory, not in the store: a socket's path must fit in 108 bytes.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const SOCKET_NAME: &str = "agent.sock";

/// A listening socket that relays every connection to an ssh-agent socket.
pub(crate) struct AgentRelay {
    /// Holds the socket; removed with it on drop.
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl AgentRelay {
    /// Listens on a new socket (owned by `uid`:`gid`, with `mode`) and relays to `agent`.
    pub(crate) fn start(agent: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<AgentRelay> {
        // Fail now, with the agent's path, rather than in the step with a closed connection.
        UnixStream::connect(agent)
            .map_err(|e| io::Error::new(e.kind(), format!("ssh agent {}: {e}", agent.display())))?;
        let dir = tempfile::Builder::new().prefix("rbuild-ssh-").tempdir()?;
        let path = dir.path().join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                // A client the agent refuses sees its connection closed, as with a dead agent.
                if let (Ok(client), Ok(upstream)) = (client, UnixStream::connect(&agent)) {
                    std::thread::spawn(move || relay(client, upstream));
                }
            }
        });
        Ok(AgentRelay {
            dir,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The socket to mount in the step.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join(SOCKET_NAME)
    }
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the acceptor, which then sees `stop`.
        let _ = UnixStream::connect(self.socket());
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // `dir` goes next, with the socket.
    }
}

/// Copies both ways; when the agent's side ends, the client's connection is closed.
fn relay(client: UnixStream, upstream: UnixStream) {
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let requests = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    let _ = io::copy(&mut upstream_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Both);
    let _ = requests.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A stand-in agent that answers one request with its bytes reversed.
    fn echo_agent(path: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            // The relay's first connection is its check that the agent answers: no request.
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 5];
                if conn.read_exact(&mut buf).is_ok() {
                    buf.reverse();
                    conn.write_all(&buf).unwrap();
                    return;
                }
            }
        })
    }

    #[test]
    fn relays_with_its_own_mode_and_stops_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent.sock");
        let served = echo_agent(&agent);
        let relay = AgentRelay::start(&agent, 0o640, 0, 0).unwrap();
        let path = relay.socket();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let mut conn = UnixStream::connect(&path).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut answer = [0u8; 5];
        conn.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"olleh");
        drop(relay);
        served.join().unwrap();
        assert!(!path.exists(), "the relay's socket outlived it");
        assert!(UnixStream::connect(&path).is_err());
    }
}
