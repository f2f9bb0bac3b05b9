//! The caller's side of a run: validate, spawn the helper (a re-exec of our own binary), hand
//! it the Spec, relay the terminal and signals, and turn its reports into a result.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::helper::{CONSOLE_FD_ENV, FORWARDED_SIGNALS, HELPER_FD_ENV, PARENT_ENV};
use crate::options::RunOptions;
use crate::protocol::{self, Report, Request};
use crate::status::ExitStatus;
use crate::{cgroups, terminal, validate};

/// The running helper, for the signal handlers (0: none).
static HELPER_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    if sig == libc::SIGWINCH {
        terminal::sync_size();
        return;
    }
    let pid = HELPER_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Installs the forwarding handlers for the run and restores the previous ones on drop.
struct SignalForwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl SignalForwarding {
    fn install(signals: &[Signal]) -> SignalForwarding {
        let action = SigAction::new(
            SigHandler::Handler(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let previous = signals
            .iter()
            // SAFETY: the handler only calls async-signal-safe functions.
            .filter_map(|sig| {
                unsafe { sigaction(*sig, &action) }
                    .ok()
                    .map(|old| (*sig, old))
            })
            .collect();
        SignalForwarding { previous }
    }
}

impl Drop for SignalForwarding {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restoring the action that was installed before.
            let _ = unsafe { sigaction(*sig, old) };
        }
    }
}

/// The container's standard streams; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Runs the Spec's process in a new container with the caller's stdio and waits for it.
/// See [`run_with_stdio`].
pub fn run(spec: &Spec, options: &RunOptions) -> Result<ExitStatus> {
    run_with_stdio(spec, options, ContainerStdio::default())
}

/// Runs the Spec's process in a new container and waits for it to end.
///
/// The calling thread is blocked for the container's lifetime, which keeps the helper's
/// PR_SET_PDEATHSIG (tied to the thread that spawned it) meaningful. `spec.root.path` must
/// be absolute or relative to the current directory. With `process.terminal` the container
/// gets a pty relayed to the caller's own stdin/stdout, and `stdio` must be empty.
pub fn run_with_stdio(
    spec: &Spec,
    options: &RunOptions,
    stdio: ContainerStdio,
) -> Result<ExitStatus> {
    validate::check(spec)?;
    let mut spec = spec.clone();
    let root = spec
        .root()
        .clone()
        .ok_or_else(|| Error::InvalidSpec("no root".into()))?;
    let rootfs = root
        .path()
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| Error::MissingRootfs(root.path().clone()))?;
    let mut root = root;
    root.set_path(rootfs);
    spec.set_root(Some(root));

    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::InvalidSpec("no process".into()))?;
    let terminal = process.terminal() == Some(true);
    if terminal {
        // The init sizes the pty it allocates like our terminal, else like the Spec says.
        if let Some(size) = terminal::stdin_size() {
            let console = oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(size.ws_row))
                .width(u64::from(size.ws_col))
                .build()
                .map_err(|e| Error::InvalidSpec(e.to_string()))?;
            process.set_console_size(Some(console));
        }
        spec.set_process(Some(process));
    }
    // The container's init sends its pty master back over this socket.
    let console = if terminal {
        Some(
            socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| Error::sys("socketpair", e))?,
        )
    } else {
        None
    };

    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", e))?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("rbuild-runtime-helper")
        .env(HELPER_FD_ENV, theirs.as_raw_fd().to_string())
        .env(PARENT_ENV, std::process::id().to_string());
    if terminal && (stdio.stdin.is_some() || stdio.stdout.is_some() || stdio.stderr.is_some()) {
        return Err(Error::InvalidSpec(
            "process.terminal relays the caller's own stdio; do not pass other streams".into(),
        ));
    }
    let console_fd = console.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    if let Some(fd) = console_fd {
        command.env(CONSOLE_FD_ENV, fd.to_string());
    }
    if let Some(fd) = stdio.stdin {
        command.stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        command.stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        command.stderr(fd);
    }
    let helper_fd = theirs.as_raw_fd();
    // SAFETY: between fork and exec only fcntl(2), which is async-signal-safe, is called.
    unsafe {
        command.pre_exec(move || {
            for fd in std::iter::once(helper_fd).chain(console_fd) {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let mut forwarded: Vec<Signal> = if options.forward_signals {
        FORWARDED_SIGNALS.to_vec()
    } else {
        Vec::new()
    };
    if terminal {
        forwarded.push(Signal::SIGWINCH);
    }
    let _handlers = SignalForwarding::install(&forwarded);
    let mut helper = command
        .spawn()
        .map_err(|e| Error::io("start the executor helper (/proc/self/exe)", e))?;
    HELPER_PID.store(helper.id() as i32, Ordering::Relaxed);
    drop(theirs);
    drop(command);
    // Only the helper and the init may hold the console socket's other end now, so that a
    // failure before the pty exists ends the wait for it with EOF.
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });

    let request = Request {
        spec: spec.clone(),
        options: options.clone(),
    };
    let sent = protocol::send_request(&ours, &request);
    let mut outcome: Option<Result<ExitStatus>> = None;
    let mut killed = false;
    let (raw_mode, output) = match (&console, &sent) {
        (Some(console), Ok(())) => match start_terminal(console) {
            Ok(relay) => relay,
            Err(e) => {
                // No terminal, no container: its helper's death takes the init along.
                let _ = helper.kill();
                killed = true;
                outcome = Some(Err(e));
                (None, None)
            }
        },
        _ => (None, None),
    };
    if sent.is_ok() && outcome.is_none() {
        let read = protocol::read_reports(ours, |report| match report {
            Report::Started { .. } => {}
            Report::Exited { status } => outcome = Some(Ok(status)),
            Report::Failed { error } => outcome = Some(Err(Error::Setup(error))),
        });
        if let Err(e) = read {
            outcome.get_or_insert(Err(Error::io("read the executor helper's reports", e)));
        }
    }
    let waited = helper.wait();
    HELPER_PID.store(0, Ordering::Relaxed);
    if let Some(output) = output {
        let _ = output.join();
    }
    drop(raw_mode);
    if killed {
        cleanup_cgroup(&spec, options);
    }

    match outcome {
        Some(result) => result,
        None => {
            // The helper died without reporting (killed): its container died with it
            // (PDEATHSIG), but the cgroup is ours to remove.
            cleanup_cgroup(&spec, options);
            let status = waited
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            Err(Error::Setup(crate::error::SetupError::other(match sent {
                Err(e) => format!("executor helper did not take the Spec: {e} (helper {status})"),
                Ok(()) => format!("executor helper ended without a report ({status})"),
            })))
        }
    }
}

/// Waits for the pty master from the container's init and starts relaying it: our terminal
/// in raw mode, the relay threads. Nothing when the init failed before its terminal existed.
fn start_terminal(
    console: &OwnedFd,
) -> Result<(
    Option<terminal::RawMode>,
    Option<std::thread::JoinHandle<()>>,
)> {
    let Some(master) = terminal::receive_master(console)? else {
        return Ok((None, None));
    };
    let raw = terminal::is_terminal(std::io::stdin().as_fd()).then(terminal::RawMode::enter);
    Ok((raw, Some(terminal::relay(master)?)))
}

fn cleanup_cgroup(spec: &Spec, options: &RunOptions) {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| std::path::PathBuf::from("rbuild").join(&options.id));
    if let Ok(manager) = cgroups::manager_for(&options.cgroups, &path) {
        let _ = manager.kill_all();
        let _ = manager.destroy();
    }
}
