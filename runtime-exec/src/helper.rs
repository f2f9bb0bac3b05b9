//! The helper: a re-exec of the caller's own binary (`/proc/self/exe`, like `runc init`), so
//! that clone(2) with namespace flags happens in a fresh single-threaded process, never in a
//! fork of a multi-threaded one. It stays outside the container as its parent and monitor:
//! creates the cgroup, clones the container init, forwards signals, reaps it, reports the
//! status, and removes the cgroup — also when the caller was killed (PR_SET_PDEATHSIG).

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::cgroups::{self, CgroupManager};
use crate::container::{self, ChildContext};
use crate::error::SetupError;
use crate::hooks::{self, Bundle, Lifecycle, Phase};
use crate::protocol::{self, ChildMessage, Report, Request};
use crate::status::ExitStatus;

/// Set in the helper's environment to the fd number of its socket to the caller.
pub(crate) const HELPER_FD_ENV: &str = "_RBUILD_RUNTIME_HELPER_FD";
/// Set to the fd number of the console socket when the container has a terminal: its init
/// sends the pty master to the caller through it.
pub(crate) const CONSOLE_FD_ENV: &str = "_RBUILD_RUNTIME_CONSOLE_FD";
/// The caller's pid: a helper whose parent is already someone else must not start anything.
pub(crate) const PARENT_ENV: &str = "_RBUILD_RUNTIME_PARENT";

/// Signals a caller forwards to the container (and the helper and init relay).
pub(crate) const FORWARDED_SIGNALS: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Call first thing in `main`: when this process is the executor's helper, it does the helper's
/// job and exits; otherwise it returns at once.
pub fn run_helper_if_requested() {
    let Some(fd) = std::env::var(HELPER_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let console = std::env::var(CONSOLE_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    std::env::remove_var(HELPER_FD_ENV);
    std::env::remove_var(PARENT_ENV);
    std::env::remove_var(CONSOLE_FD_ENV);
    let inherited = |fd: i32| {
        // SAFETY: the caller passed this fd to us open and for our exclusive use.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Close-on-exec: the user's process must not inherit it.
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        fd
    };
    let socket = inherited(fd);
    let console = console.map(inherited);
    std::process::exit(helper_main(socket, console, parent.unwrap_or(0)))
}

fn helper_main(socket: OwnedFd, console: Option<OwnedFd>, parent: i32) -> i32 {
    // Block before anything else: from here on every signal is read from a signalfd, so the
    // caller's death (SIGTERM via PDEATHSIG) cannot kill us before the cleanup.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for sig in FORWARDED_SIGNALS {
        mask.add(sig);
    }
    if nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_err() {
        return 1;
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if nix::unistd::getppid().as_raw() != parent {
        return 1;
    }
    let request = match protocol::read_request(&socket) {
        Ok(r) => r,
        Err(e) => {
            let error = SetupError::other(format!("executor helper: {e}"));
            let _ = protocol::send_report(&socket, &Report::Failed { error });
            return 1;
        }
    };
    let bundle = if hooks::any(&request.spec, &hooks::ALL) {
        match Bundle::prepare(
            &request.spec,
            &request.options.id,
            request.options.bundle.as_deref(),
        ) {
            Ok(bundle) => Some(bundle),
            Err(e) => {
                let error = SetupError::other(format!("write the bundle for the hooks: {e}"));
                let _ = protocol::send_report(&socket, &Report::Failed { error });
                return 1;
            }
        }
    } else {
        None
    };
    let lifecycle = bundle.as_ref().map(|bundle| Lifecycle {
        spec: &request.spec,
        id: &request.options.id,
        bundle: bundle.path(),
    });
    let mut created = false;
    let report = match supervise(
        &request,
        &mask,
        &socket,
        console,
        parent,
        lifecycle.as_ref(),
        &mut created,
    ) {
        Ok(status) => Report::Exited { status },
        Err(error) => Report::Failed { error },
    };
    if let (Some(lifecycle), true) = (&lifecycle, created) {
        // runtime.md "Lifecycle" step 13: after the container is destroyed, also after a
        // failed start; a failure is a warning only.
        if let Err(e) = lifecycle.run(Phase::Poststop, None, None) {
            eprintln!("rbuild executor: warning: {e}");
        }
    }
    let _ = protocol::send_report(&socket, &report);
    0
}

/// Kills and removes the cgroup however `supervise` ends.
struct CgroupGuard(Box<dyn CgroupManager>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // destroy() kills what is left only when a plain rmdir fails: after a normal exit
        // the PID namespace is already empty, and the cheap path is the common one.
        if let Err(e) = self.0.destroy() {
            eprintln!("rbuild executor: {e}");
        }
    }
}

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SetupError {
    SetupError::other(format!("{what}: {e}"))
}

/// Runs the container to its end; `created` is set once it exists (poststop hooks are due).
fn supervise(
    request: &Request,
    mask: &SigSet,
    socket: &OwnedFd,
    console: Option<OwnedFd>,
    parent: i32,
    lifecycle: Option<&Lifecycle<'_>>,
    created: &mut bool,
) -> Result<ExitStatus, SetupError> {
    let spec = &request.spec;
    let options = &request.options;
    let signals =
        SignalFd::with_flags(mask, SfdFlags::SFD_CLOEXEC).map_err(|e| fail("signalfd", e))?;

    let linux = spec.linux().as_ref();
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from("rbuild").join(&options.id));
    let manager = cgroups::manager_for(&options.cgroups, &cgroups_path)
        .map_err(|e| SetupError::other(e.to_string()))?;
    manager
        .create(linux.and_then(|l| l.resources().as_ref()))
        .map_err(|e| SetupError::other(e.to_string()))?;
    let cgroup = CgroupGuard(manager);

    let plan = NamespacePlan::from_spec(spec)?;
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| SetupError::other("the Spec has no root"))?;
    let overlay = match &options.overlay {
        Some(o) => Some(
            crate::overlay::mount_options(&o.lower, &o.upper, &o.work, o.volatile)
                .map_err(|e| SetupError::other(e.to_string()))?,
        ),
        None => None,
    };
    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => {
            Some(crate::seccomp::compile(profile).map_err(|e| SetupError::other(e.to_string()))?)
        }
        None => None,
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| fail("socketpair", e))?;

    let child = clone_process(plan.clone_flags).map_err(|e| fail("clone the container init", e))?;
    if child == 0 {
        drop(ours);
        container::main(ChildContext {
            spec,
            rootfs: &rootfs,
            overlay: overlay.as_deref(),
            init: options.init,
            seccomp: seccomp.as_ref(),
            new_cgroup_ns: plan.new_cgroup_ns,
            new_net_ns: plan.clone_flags.contains(CloneFlags::CLONE_NEWNET),
            new_user_ns: plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER),
            join: &plan.join,
            sync: &theirs,
            console: console.as_ref(),
            lifecycle,
        });
    }
    *created = true;
    drop(theirs);
    // The init has its copy; the caller must see EOF if the init dies before sending.
    drop(console);
    let child = Pid::from_raw(child);
    let started = start_child(
        child,
        &ours,
        &*cgroup.0,
        spec,
        plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER),
        lifecycle,
    )
    .and_then(|()| match lifecycle {
        // runtime.md "Lifecycle" step 9: a failing poststart hook stops the container.
        Some(lifecycle) => lifecycle.run(Phase::Poststart, Some(child.as_raw()), None),
        None => Ok(()),
    });
    if let Err(e) = started {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    let _ = protocol::send_report(
        socket,
        &Report::Started {
            pid: child.as_raw(),
        },
    );

    let status = wait_forwarding(child, signals, parent)?;
    Ok(match status {
        ExitStatus::Signaled(libc::SIGKILL) | ExitStatus::Exited(137) if cgroup.0.oom_killed() => {
            ExitStatus::OomKilled
        }
        other => other,
    })
}

/// Between clone and the user's process: id maps, go, cgroup, go, the createRuntime hooks
/// when the init asks for them, then the init's verdict.
fn start_child(
    child: Pid,
    sync: &OwnedFd,
    cgroup: &dyn CgroupManager,
    spec: &Spec,
    user_ns: bool,
    lifecycle: Option<&Lifecycle<'_>>,
) -> Result<(), SetupError> {
    if user_ns {
        let linux = spec.linux().as_ref();
        write_id_map(
            child,
            "uid_map",
            linux.and_then(|l| l.uid_mappings().as_ref()),
        )?;
        write_id_map(
            child,
            "gid_map",
            linux.and_then(|l| l.gid_mappings().as_ref()),
        )?;
    }
    protocol::send_go(sync).map_err(|e| fail("start the container init", e))?;
    // The init prepares its mounts meanwhile and waits for the second go before it enters
    // its cgroup namespace and before pivot_root (so always before execve).
    cgroup
        .add_process(child.as_raw())
        .map_err(|e| SetupError::other(e.to_string()))?;
    protocol::send_go(sync).map_err(|e| fail("start the container init", e))?;
    loop {
        match protocol::recv_child(sync).map_err(|e| fail("container init", e))? {
            None => return Ok(()),
            Some(ChildMessage::Failed(e)) => return Err(e),
            Some(ChildMessage::RunRuntimeHooks) => {
                let lifecycle = lifecycle.ok_or_else(|| {
                    SetupError::other("the container init asked for hooks the Spec lacks")
                })?;
                for phase in [Phase::Prestart, Phase::CreateRuntime] {
                    lifecycle.run(phase, Some(child.as_raw()), None)?;
                }
                protocol::send_go(sync).map_err(|e| fail("start the container init", e))?;
            }
        }
    }
}

fn write_id_map(
    child: Pid,
    file: &str,
    mappings: Option<&Vec<LinuxIdMapping>>,
) -> Result<(), SetupError> {
    let mappings = mappings.filter(|m| !m.is_empty()).ok_or_else(|| {
        SetupError::other(format!(
            "a user namespace needs linux.{}",
            if file == "uid_map" {
                "uidMappings"
            } else {
                "gidMappings"
            }
        ))
    })?;
    let text: String = mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = format!("/proc/{child}/{file}");
    std::fs::write(&path, text).map_err(|e| fail(format!("write {path}"), e))
}

/// Waits for the init, relaying signals. A signal that arrives after the caller died (its
/// PDEATHSIG) kills the container instead of being forwarded.
fn wait_forwarding(child: Pid, signals: SignalFd, parent: i32) -> Result<ExitStatus, SetupError> {
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(fail("read signals", e)),
        };
        let signo = info.ssi_signo as i32;
        if signo == libc::SIGCHLD {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig as i32)),
                _ => continue,
            }
        }
        if nix::unistd::getppid().as_raw() != parent {
            let _ = kill(child, Signal::SIGKILL);
        } else if let Ok(sig) = Signal::try_from(signo) {
            let _ = kill(child, sig);
        }
    }
}

/// Which namespaces clone(2) creates and which existing ones the init joins.
struct NamespacePlan {
    clone_flags: CloneFlags,
    /// The cgroup namespace is unshared by the init after it joined its cgroup, so that the
    /// cgroup becomes the namespace's root.
    new_cgroup_ns: bool,
    join: Vec<(CloneFlags, OwnedFd)>,
}

impl NamespacePlan {
    fn from_spec(spec: &Spec) -> Result<Self, SetupError> {
        let mut plan = NamespacePlan {
            clone_flags: CloneFlags::empty(),
            new_cgroup_ns: false,
            join: Vec::new(),
        };
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in namespaces {
            let flag = match ns.typ() {
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::Time => {
                    return Err(SetupError::other("time namespaces are not supported"))
                }
            };
            match ns.path() {
                Some(path) => {
                    let file = std::fs::File::open(path)
                        .map_err(|e| fail(format!("open namespace {}", path.display()), e))?;
                    plan.join.push((flag, OwnedFd::from(file)));
                }
                None if flag == CloneFlags::CLONE_NEWCGROUP => plan.new_cgroup_ns = true,
                None => plan.clone_flags |= flag,
            }
        }
        Ok(plan)
    }
}

/// clone(2) without a new stack: like fork(), but the child starts in the new namespaces
/// (and, with CLONE_NEWPID, as PID 1). Safe here because the helper is single-threaded.
fn clone_process(flags: CloneFlags) -> nix::Result<i32> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: raw clone with a null stack pointer behaves as fork (the child gets a copy of
    // our stack); no other thread exists whose locks could be copied held.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        Err(nix::Error::last())
    } else {
        Ok(rc as i32)
    }
}
