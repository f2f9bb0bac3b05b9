//! OCI hooks (runtime-spec config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): programs
//! run at points of the container's life with its state (runtime.md "State") on stdin.
//!
//! Where each phase runs, as under runc:
//! - `prestart` and `createRuntime`: the helper, once the init has made its mounts and before
//!   it pivots (the init asks for them on the sync socket); pid is the init's host pid;
//! - `createContainer`: the init itself, in the container's namespaces before pivot_root, so
//!   paths still resolve on the host; pid as the container sees it;
//! - `startContainer`: the init after pivot_root, as the container's user, just before execve;
//! - `poststart`: the helper once the user's process runs; a failure stops the container;
//! - `poststop`: the helper after the container is gone; a failure is only a warning.
//!
//! Hooks read the container's config from `bundle/config.json` (nvidia-ctk's do). A caller
//! without a bundle of its own (a build step, `rbuild run`) gets one written for the run.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

use crate::error::SetupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Phase {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }

    /// runtime.md "State": the status a hook of this phase sees.
    fn status(self) -> &'static str {
        match self {
            Phase::Prestart | Phase::CreateRuntime | Phase::CreateContainer => "creating",
            Phase::StartContainer => "created",
            Phase::Poststart => "running",
            Phase::Poststop => "stopped",
        }
    }

    pub(crate) fn hooks(self, spec: &Spec) -> &[Hook] {
        let Some(hooks) = spec.hooks() else {
            return &[];
        };
        #[allow(deprecated)] // prestart is deprecated in the spec, and still run by runc
        let list = match self {
            Phase::Prestart => hooks.prestart(),
            Phase::CreateRuntime => hooks.create_runtime(),
            Phase::CreateContainer => hooks.create_container(),
            Phase::StartContainer => hooks.start_container(),
            Phase::Poststart => hooks.poststart(),
            Phase::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// Whether the Spec has hooks of any of these phases.
pub(crate) fn any(spec: &Spec, phases: &[Phase]) -> bool {
    phases.iter().any(|p| !p.hooks(spec).is_empty())
}

pub(crate) const ALL: [Phase; 6] = [
    Phase::Prestart,
    Phase::CreateRuntime,
    Phase::CreateContainer,
    Phase::StartContainer,
    Phase::Poststart,
    Phase::Poststop,
];

/// runtime.md "State", as hooks read it.
#[derive(Serialize)]
struct State<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    bundle: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a HashMap<String, String>>,
}

/// What every hook of one container is told.
#[derive(Clone, Copy)]
pub(crate) struct Lifecycle<'a> {
    pub spec: &'a Spec,
    pub id: &'a str,
    pub bundle: &'a Path,
}

impl Lifecycle<'_> {
    /// Runs the phase's hooks in order; the first failure stops them. `pid` is the container
    /// process as the hooks' namespace sees it. `env` is what a hook without `env` of its own
    /// gets (None: this process's environment, as runc's hooks inherit runc's).
    pub(crate) fn run(
        &self,
        phase: Phase,
        pid: Option<i32>,
        env: Option<&[String]>,
    ) -> Result<(), SetupError> {
        let hooks = phase.hooks(self.spec);
        if hooks.is_empty() {
            return Ok(());
        }
        let state = State {
            oci_version: self.spec.version(),
            id: self.id,
            status: phase.status(),
            pid,
            bundle: self.bundle,
            annotations: self.spec.annotations().as_ref(),
        };
        let state = serde_json::to_vec(&state)
            .map_err(|e| SetupError::other(format!("{} hooks: state: {e}", phase.name())))?;
        for hook in hooks {
            run_one(hook, &state, env).map_err(|e| {
                SetupError::other(format!(
                    "{} hook {}: {e}",
                    phase.name(),
                    hook.path().display()
                ))
            })?;
        }
        Ok(())
    }
}

/// How much of a failed hook's output the error quotes.
const OUTPUT_TAIL: usize = 2048;

fn run_one(hook: &Hook, state: &[u8], env: Option<&[String]>) -> Result<(), String> {
    // Files, not pipes: the state may exceed a pipe's buffer and nobody reads the hook's
    // output while it runs. memfds need no writable directory, also inside the container.
    let mut stdin = memfd(c"oci-hook-state").map_err(|e| format!("memfd: {e}"))?;
    stdin
        .write_all(state)
        .and_then(|()| stdin.rewind())
        .map_err(|e| format!("write the state: {e}"))?;
    let mut output = memfd(c"oci-hook-output").map_err(|e| format!("memfd: {e}"))?;
    let output_for = || {
        output
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| e.to_string())
    };
    let (stdout, stderr) = (output_for()?, output_for()?);

    let mut command = Command::new(hook.path());
    // config.md: args has execv's argv semantics, so its first entry is argv[0].
    if let Some([argv0, rest @ ..]) = hook.args().as_deref() {
        command.arg0(argv0).args(rest);
    }
    let env = hook.env().as_deref().or(env);
    if let Some(env) = env {
        command.env_clear();
        command.envs(env.iter().filter_map(|e| e.split_once('=')));
    }
    command
        .stdin(Stdio::from(stdin))
        .stdout(stdout)
        .stderr(stderr);
    let mut child = command.spawn().map_err(|e| format!("start: {e}"))?;
    drop(command);

    let status = match hook.timeout() {
        Some(seconds) if seconds > 0 => {
            let deadline = Instant::now() + Duration::from_secs(seconds as u64);
            loop {
                if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                    break status;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("ran past its timeout of {seconds} s"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        _ => child.wait().map_err(|e| e.to_string())?,
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = output.rewind();
    let _ = output.read_to_string(&mut text);
    let text = text.trim_end();
    let tail = &text[text.floor_char_boundary(text.len().saturating_sub(OUTPUT_TAIL))..];
    Err(if tail.is_empty() {
        format!("{status}")
    } else {
        format!("{status}; its output:\n{tail}")
    })
}

fn memfd(name: &CStr) -> std::io::Result<File> {
    // SAFETY: a NUL-terminated name and integer flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The bundle directory hooks are told about: the caller's, or one written for this run
/// (config.json only; the rootfs stays where `root.path` says) and removed with it.
pub(crate) enum Bundle {
    Given(PathBuf),
    /// Removed on drop. The flock held on the directory tells later runs that it is in use,
    /// whatever PID namespace they are in, so that they remove only orphans.
    Written {
        dir: tempfile::TempDir,
        _in_use: File,
    },
}

impl Bundle {
    pub(crate) fn prepare(spec: &Spec, id: &str, given: Option<&Path>) -> std::io::Result<Self> {
        if let Some(path) = given {
            return Ok(Bundle::Given(path.to_path_buf()));
        }
        let temp = std::env::temp_dir();
        remove_orphaned_bundles(&temp);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{BUNDLE_PREFIX}{}-", id.replace('/', "_")))
            .tempdir_in(&temp)?;
        let in_use = File::open(dir.path())?;
        flock(&in_use, libc::LOCK_EX)?;
        // Written after the lock: a bundle with config.json and no lock is an orphan.
        let config = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
        std::fs::write(dir.path().join(BUNDLE_CONFIG), config)?;
        Ok(Bundle::Written {
            dir,
            _in_use: in_use,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Bundle::Given(path) => path,
            Bundle::Written { dir, .. } => dir.path(),
        }
    }
}

const BUNDLE_PREFIX: &str = "rbuild-bundle-";
const BUNDLE_CONFIG: &str = "config.json";

/// Removes the temporary bundles of runs killed before they could remove their own: those
/// with a config.json whose directory nobody holds a lock on.
fn remove_orphaned_bundles(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(BUNDLE_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = File::open(&path) else {
            continue;
        };
        if flock(&dir, libc::LOCK_EX | libc::LOCK_NB).is_ok() && path.join(BUNDLE_CONFIG).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor `file` owns.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
