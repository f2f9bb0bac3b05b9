//! The container's first process, from clone(2) to execve(2). It runs in the single-threaded
//! helper's copy of memory, inside the new namespaces, and reports any failure on the sync
//! socket before exiting; a successful execve closes that socket (it is close-on-exec), which
//! is how the helper learns the user's process started.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Spec};

use crate::capabilities::Masks;
use crate::error::{SetupError, SetupErrorKind};
use crate::hooks::{self, Lifecycle, Phase};
use crate::mounts::{self, HostView};
use crate::protocol::{self, ChildMessage};

type Result<T> = std::result::Result<T, SetupError>;

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SetupError {
    SetupError::other(format!("{what}: {e}"))
}

/// What the helper prepared for the container's init before clone(2).
pub(crate) struct ChildContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub overlay: Option<&'a str>,
    pub init: bool,
    /// The Spec's seccomp profile, compiled by the helper.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
    pub new_cgroup_ns: bool,
    /// A new user namespace was cloned; the helper writes its id maps before "go".
    pub new_user_ns: bool,
    /// A new network namespace was cloned: its loopback starts down.
    pub new_net_ns: bool,
    /// Namespaces to join (setns) instead of creating: (CLONE_NEW* flag, open namespace file).
    pub join: &'a [(nix::sched::CloneFlags, OwnedFd)],
    pub sync: &'a OwnedFd,
    /// With `process.terminal`: where the pty master goes (to the caller).
    pub console: Option<&'a OwnedFd>,
    /// When the Spec has hooks: what they are told.
    pub lifecycle: Option<&'a Lifecycle<'a>>,
}

/// Never returns: execs the user's process or exits after reporting the failure.
pub(crate) fn main(ctx: ChildContext<'_>) -> ! {
    let error = match run(&ctx) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = protocol::send_child(ctx.sync, &ChildMessage::Failed(error));
    // SAFETY: _exit skips the atexit handlers and destructors of the helper we were cloned from.
    unsafe { libc::_exit(1) }
}

enum Never {}

fn run(ctx: &ChildContext<'_>) -> Result<Never> {
    // If the helper dies, so does the container: PID 1's death empties the namespace.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // The helper writes our uid/gid maps (if any) and says go; it moves us into the cgroup
    // meanwhile and says so later (see `mounts::prepare_rootfs`).
    if !matches!(protocol::recv_go(ctx.sync), Ok(true)) {
        // SAFETY: see main().
        unsafe { libc::_exit(1) }
    }
    if ctx.new_user_ns {
        // Our credentials are still the host's root, which the new namespace does not map:
        // become the namespace's root (now mapped by the helper) before creating any file.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| fail("setgid 0 in the user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| fail("setuid 0 in the user namespace", e))?;
    }
    for (flag, fd) in ctx.join {
        nix::sched::setns(fd, *flag).map_err(|e| fail(format!("join namespace {flag:?}"), e))?;
    }
    if ctx.new_net_ns {
        bring_up_loopback().map_err(|e| fail("bring up lo", e))?;
    }
    let process = ctx
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| SetupError::other("the Spec has no process"))?;
    let terminal = process.terminal() == Some(true);
    let host = HostView::read();
    let masks = Masks::from_spec(process.capabilities().as_ref());
    let has_mount_ns = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount)
        });
    if !has_mount_ns {
        return Err(SetupError::other(
            "the Spec has no mount namespace; this executor always needs one",
        ));
    }
    let mut in_cgroup_ns = || {
        if !matches!(protocol::recv_go(ctx.sync), Ok(true)) {
            return Err(SetupError::other(
                "the helper did not move the container into its cgroup",
            ));
        }
        if ctx.new_cgroup_ns {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| fail("unshare cgroup namespace", e))?;
        }
        Ok(())
    };
    mounts::prepare_rootfs(ctx.spec, ctx.rootfs, ctx.overlay, &host, &mut in_cgroup_ns)?;
    if let Some(lifecycle) = ctx.lifecycle {
        if hooks::any(ctx.spec, &[Phase::Prestart, Phase::CreateRuntime]) {
            protocol::send_child(ctx.sync, &ChildMessage::RunRuntimeHooks)
                .map_err(|e| fail("ask for the createRuntime hooks", e))?;
            if !matches!(protocol::recv_go(ctx.sync), Ok(true)) {
                // The helper reports the hook's failure itself.
                // SAFETY: see main().
                unsafe { libc::_exit(1) }
            }
        }
        lifecycle.run(
            Phase::CreateContainer,
            Some(std::process::id() as i32),
            None,
        )?;
    }
    mounts::pivot_root(ctx.rootfs)?;
    if terminal {
        // After pivot_root, so the pty comes from the container's own devpts (runc's order).
        let console = ctx
            .console
            .ok_or_else(|| SetupError::other("process.terminal without a console socket"))?;
        let (rows, cols) = process
            .console_size()
            .map_or((24, 80), |b| (b.height() as u16, b.width() as u16));
        let master = crate::terminal::open_console(rows, cols)
            .map_err(|e| fail("set up the terminal", e))?;
        crate::terminal::send_master(console, &master)
            .map_err(|e| fail("send the terminal to the caller", e))?;
    }
    if let Some(hostname) = ctx.spec.hostname() {
        nix::unistd::sethostname(hostname).map_err(|e| fail("sethostname", e))?;
    }
    if let Some(domainname) = ctx.spec.domainname() {
        // SAFETY: pointer and length of a live byte slice.
        let rc = unsafe { libc::setdomainname(domainname.as_ptr().cast(), domainname.len()) };
        if rc != 0 {
            return Err(fail("setdomainname", std::io::Error::last_os_error()));
        }
    }
    mounts::finish_rootfs(ctx.spec)?;

    for rlimit in process.rlimits().iter().flatten() {
        set_rlimit(rlimit.typ(), rlimit.soft(), rlimit.hard())?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| fail("oom_score_adj", e))?;
    }
    // Own session: the caller's terminal signals (^C) reach the container only as forwarded.
    nix::unistd::setsid().map_err(|e| fail("setsid", e))?;
    if terminal {
        // SAFETY: ioctl on our stdin, which the caller made the pty slave.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(fail(
                "make the pty the controlling terminal",
                std::io::Error::last_os_error(),
            ));
        }
    }

    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        // runc and docker set HOME from the image's passwd entry for the uid, else `/`.
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    let args = process.args().clone().unwrap_or_default();
    let program = args
        .first()
        .ok_or_else(|| SetupError::other("process.args is empty"))?;
    let executable = find_executable(program, &env)?;

    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail("no_new_privs", std::io::Error::last_os_error()));
        }
    }
    // runc's order: with no_new_privs the filter goes on last, so that it never has to allow
    // the init's own setup syscalls; without, it needs CAP_SYS_ADMIN, so it goes on before
    // the capabilities are dropped (and must then allow setuid/capset, as docker's does).
    let no_new_privs = process.no_new_privileges() == Some(true);
    if let (Some(filter), false) = (ctx.seccomp, no_new_privs) {
        filter
            .install()
            .map_err(|e| fail("install the seccomp filter", e))?;
    }
    masks
        .drop_bounding()
        .map_err(|e| fail("drop bounding capabilities", e))?;
    set_user(process.user())?;
    masks.apply().map_err(|e| fail("set capabilities", e))?;
    if let Some(umask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|e| {
        fail(
            format!("chdir to cwd {:?} set in config.json", cwd.display()),
            e,
        )
    })?;

    if let (Some(filter), true) = (ctx.seccomp, no_new_privs) {
        filter
            .install()
            .map_err(|e| fail("install the seccomp filter", e))?;
    }
    if let Some(lifecycle) = ctx.lifecycle {
        // Where runc runs them: as the container's user, under its seccomp filter, in its cwd.
        lifecycle.run(
            Phase::StartContainer,
            Some(std::process::id() as i32),
            Some(&env),
        )?;
    }
    if ctx.init {
        crate::reaper::become_reaper(ctx.sync);
    }
    exec(&executable, &args, &env)
}

fn set_rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<()> {
    let resource = match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    };
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid resource and a live struct.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(fail(
            format!("setrlimit {typ:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// setgroups, then setgid/setuid with PR_SET_KEEPCAPS so that the permitted capabilities
/// survive for capset (capabilities(7) "Effect of user ID changes on capabilities").
fn set_user(user: &oci_spec::runtime::User) -> Result<()> {
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| fail("setgroups", e))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail(format!("setgid {}", user.gid()), e))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail(format!("setuid {}", user.uid()), e))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// The home directory of `uid` in the container's /etc/passwd (read after pivot_root).
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
        })
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// args[0] as execve needs it: a path as given, or the first executable match in the
/// container's $PATH. Errors carry docker's distinction: absent (127) vs not executable (126).
fn find_executable(program: &str, env: &[String]) -> Result<PathBuf> {
    let not_found = |what: String| SetupError {
        kind: SetupErrorKind::CommandNotFound,
        message: what,
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if std::fs::symlink_metadata(&path).is_ok() {
            Ok(path)
        } else {
            Err(not_found(format!(
                "exec: {program:?}: no such file or directory"
            )))
        };
    }
    let search = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut first_existing = None;
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file()
                && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            {
                return Ok(candidate);
            }
            first_existing.get_or_insert(candidate);
        }
    }
    match first_existing {
        // Like execvp: a match that cannot be executed is reported as such (126).
        Some(path) => Ok(path),
        None => Err(not_found(format!(
            "exec: {program:?}: executable file not found in $PATH"
        ))),
    }
}

fn exec(executable: &Path, args: &[String], env: &[String]) -> Result<Never> {
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| SetupError::other(format!("{s:?} contains a NUL byte")))
    };
    let path = mounts::c_path(executable)?;
    let argv = args.iter().map(|a| cstr(a)).collect::<Result<Vec<_>>>()?;
    let envp = env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>>>()?;
    // The helper blocked these to read them from a signalfd; the user's process must not
    // inherit a blocked mask.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let err = match nix::unistd::execve(&path, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let kind = match err {
        nix::Error::ENOENT => SetupErrorKind::CommandNotFound,
        _ => SetupErrorKind::NotExecutable,
    };
    Err(SetupError {
        kind,
        message: format!("exec {:?}: {}", executable.display(), err.desc()),
    })
}

/// `ip link set lo up`: a new network namespace has only `lo`, and down (SIOCSIFFLAGS, netdevice(7)).
fn bring_up_loopback() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is wrapped at once so that it is closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read and write the live ifreq they are given.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
