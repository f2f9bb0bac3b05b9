//! `process.terminal: true`, as runc does it: the container's init allocates the pty from the
//! container's own devpts after pivot_root, binds the slave on /dev/console, makes it its
//! stdio (so `tty` says /dev/pts/0, as under docker and runc), and sends the master to the
//! caller over the console socket (SCM_RIGHTS). The caller relays between its own stdio and
//! the master, with its own terminal in raw mode while the container runs.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::pty::Winsize;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use crate::error::{Error, Result};

/// The master of the running container's pty, for the SIGWINCH handler (-1: none).
pub(crate) static MASTER_FD: AtomicI32 = AtomicI32::new(-1);

/// The size of the caller's terminal (its stdin), if it is one.
pub(crate) fn stdin_size() -> Option<Winsize> {
    let mut size: Winsize = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the live struct it is given.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

/// In the container init, after pivot_root: a pty from the container's /dev/ptmx of
/// `rows`x`cols`, its slave bound on /dev/console and made fds 0, 1 and 2; returns the master.
pub(crate) fn open_console(rows: u16, cols: u16) -> std::io::Result<OwnedFd> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    // TIOCGPTN through ptsname_r: the number in *this* devpts instance, e.g. /dev/pts/0.
    let slave_path = PathBuf::from(nix::pty::ptsname_r(&master)?);
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the live struct it is given.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    let console = std::path::Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::File::create(console)?;
    }
    nix::mount::mount(
        Some(slave_path.as_path()),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(OwnedFd::from(master))
}

/// Sends the pty master over the console socket (one byte of payload, the fd as SCM_RIGHTS).
pub(crate) fn send_master(socket: &OwnedFd, master: &OwnedFd) -> std::io::Result<()> {
    let fds = [master.as_raw_fd()];
    let payload = [IoSlice::new(b"m")];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &payload,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// The pty master from the console socket, or None when every sender closed it first (the
/// container failed before its terminal existed; the helper reports why).
pub(crate) fn receive_master(socket: &OwnedFd) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut payload = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut payload,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(|e| Error::sys("receive the container's terminal", e))?,
        }
    };
    let fd = message
        .cmsgs()
        .map_err(|e| Error::sys("receive the container's terminal", e))?
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        });
    // SAFETY: the fd arrived with this message and belongs to nothing else in this process.
    Ok(fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Copies our terminal's size onto the container's pty; called from the SIGWINCH handler, so it
/// uses only ioctl(2), which is async-signal-safe.
pub(crate) fn sync_size() {
    let master = MASTER_FD.load(Ordering::Relaxed);
    if master < 0 {
        return;
    }
    if let Some(size) = stdin_size() {
        // SAFETY: TIOCSWINSZ reads the live struct it is given.
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) };
    }
}

/// Our stdin in raw mode (when it is a terminal) until dropped.
pub(crate) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Starts the relays: stdin → master on a detached thread (it may stay blocked reading our
/// stdin after the container ended), master → stdout on the returned thread, which ends when
/// the last holder of the slave closes it (EIO).
pub(crate) fn relay(master: OwnedFd) -> Result<JoinHandle<()>> {
    let input = master
        .try_clone()
        .map_err(|e| Error::io("dup pty master", e))?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut out = std::fs::File::from(input);
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    MASTER_FD.store(master.as_raw_fd(), Ordering::Relaxed);
    Ok(std::thread::spawn(move || {
        let mut from = std::fs::File::from(master);
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
        MASTER_FD.store(-1, Ordering::Relaxed);
    }))
}

pub(crate) fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}
