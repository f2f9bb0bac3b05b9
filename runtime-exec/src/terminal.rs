//! `process.terminal: true`: the caller allocates a pty, gives its slave to the container as
//! stdio (and /dev/console), and relays between its own stdio and the master, with its own
//! terminal in raw mode while the container runs.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use crate::error::{Error, Result};

pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// The master of the running container's pty, for the SIGWINCH handler (-1: none).
pub(crate) static MASTER_FD: AtomicI32 = AtomicI32::new(-1);

fn stdin_size() -> Option<Winsize> {
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

/// A pty sized like our terminal, else like the Spec's consoleSize, else 80x24.
pub(crate) fn open(console: Option<(u16, u16)>) -> Result<Pty> {
    let size = stdin_size().unwrap_or(Winsize {
        ws_row: console.map_or(24, |c| c.0),
        ws_col: console.map_or(80, |c| c.1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = openpty(Some(&size), None).map_err(|e| Error::sys("allocate a pty", e))?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
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
