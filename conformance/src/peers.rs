//! Real peer processes: dockerd, containerd, CNCF distribution (`docker-registry`), and
//! checks for the command-line peers (skopeo, umoci, podman, buildah, runc).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Fails loudly when a peer program is missing: tests never skip for want of a peer.
pub fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("peer program `{program}` is not installed; run .ci/run (or the README's test command) to install the test dependencies");
}

/// A free TCP port on 127.0.0.1, never the same twice in one test process: tests run in
/// parallel, and the kernel may hand a port out again before the first peer has bound it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Waits until `ready` holds, or fails after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} not ready after {timeout:?}")
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped; only the processes a test
/// started are ever signalled.
pub struct PeerProcess {
    child: Child,
    name: String,
    /// Set once the child is reaped: its PID may belong to another process after that.
    reaped: bool,
}

impl PeerProcess {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("create {log:?}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(PeerProcess {
            child,
            name: name.to_string(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited (it crashed at start).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.reaped {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            self.reaped = true;
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private dockerd (Debian's docker.io) with its own data root, exec root and socket,
/// started as DESIGN.md says: no bridge, no iptables. Containers must use `--network host`.
pub struct Dockerd {
    process: PeerProcess,
    pub dir: tempfile::TempDir,
    pub host: String,
}

impl Dockerd {
    pub fn start() -> Result<Self> {
        Self::launch(None)
    }

    /// Starts with `daemon_json` as its `--config-file` (e.g. `{"registry-mirrors": [...]}`);
    /// the host's /etc/docker/daemon.json is then not read.
    pub fn start_with_config(daemon_json: &str) -> Result<Self> {
        Self::launch(Some(daemon_json))
    }

    fn launch(daemon_json: Option<&str>) -> Result<Self> {
        let dockerd = require("dockerd");
        // Debian's 20.10 client matches the daemon; a newer client on PATH may not.
        let _ = Self::client_path();
        let dir = tempfile::Builder::new()
            .prefix("rbuild-dockerd-")
            .tempdir_in("/var/tmp")?;
        let sock = dir.path().join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let mut cmd = Command::new(dockerd);
        cmd.args([
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
        ])
        .arg("--host")
        .arg(&host)
        .arg("--data-root")
        .arg(dir.path().join("data"))
        .arg("--exec-root")
        .arg(dir.path().join("exec"))
        .arg("--pidfile")
        .arg(dir.path().join("docker.pid"))
        .args(["--storage-driver", "overlay2"]);
        if let Some(json) = daemon_json {
            let path = dir.path().join("daemon.json");
            std::fs::write(&path, json).with_context(|| format!("write {path:?}"))?;
            cmd.arg("--config-file").arg(path);
        }
        let process = PeerProcess::spawn("dockerd", &mut cmd, &dir.path().join("dockerd.log"))?;
        let d = Dockerd { process, dir, host };
        wait_for_daemon("dockerd", 60, &d.dir.path().join("dockerd.log"), || {
            d.docker()
        })?;
        Ok(d)
    }

    fn client_path() -> PathBuf {
        let debian = PathBuf::from("/usr/bin/docker");
        if debian.is_file() {
            debian
        } else {
            require("docker")
        }
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(Self::client_path());
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.path().join("client-config"));
        cmd
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for Dockerd {
    /// dockerd leaves a few mounts (its network namespace files) under its exec root; they are
    /// detached so that the state directory can be removed.
    fn drop(&mut self) {
        self.process.stop();
        detach_mounts_below(self.dir.path());
    }
}

/// Waits until `client() version` answers; fails with the daemon's log.
fn wait_for_daemon(
    name: &str,
    seconds: u64,
    log: &Path,
    client: impl Fn() -> Command,
) -> Result<()> {
    wait_until(name, Duration::from_secs(seconds), || {
        client()
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
    .with_context(|| std::fs::read_to_string(log).unwrap_or_default())
}

fn detach_mounts_below(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut below: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount_point in below {
        if let Ok(c_path) = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid path; MNT_DETACH never blocks.
            unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A private containerd (Debian's, which docker.io depends on) with its own root, state and
/// sockets and without the CRI plugin, for pulls with `ctr`.
pub struct Containerd {
    process: PeerProcess,
    pub dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Result<Self> {
        let containerd = require("containerd");
        let _ = require("ctr");
        let dir = tempfile::Builder::new()
            .prefix("rbuild-containerd-")
            .tempdir_in("/var/tmp")?;
        let at = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{debug}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = at("root"),
            state = at("state"),
            sock = at("containerd.sock"),
            debug = at("debug.sock"),
            opt = at("opt"),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).with_context(|| format!("write {config_path:?}"))?;
        let log = dir.path().join("containerd.log");
        let process = PeerProcess::spawn(
            "containerd",
            Command::new(containerd).arg("--config").arg(&config_path),
            &log,
        )?;
        let d = Containerd { process, dir };
        wait_for_daemon("containerd", 30, &log, || d.ctr())?;
        Ok(d)
    }

    /// A `ctr` command talking to this daemon.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(require("ctr"));
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"));
        cmd
    }

    /// A hosts directory for `ctr image pull --hosts-dir` (containerd's docs/hosts.md) in which
    /// each of `registries` has the plain-HTTP `mirror` as its one host for pulls.
    pub fn hosts_dir(&self, registries: &[&str], mirror: &str) -> Result<PathBuf> {
        let hosts = self.dir.path().join("certs.d");
        for registry in registries {
            let dir = hosts.join(registry);
            std::fs::create_dir_all(&dir)?;
            let toml = format!(
                "server = \"https://{registry}\"\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            );
            std::fs::write(dir.join("hosts.toml"), toml)?;
        }
        Ok(hosts)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.process.stop();
        detach_mounts_below(self.dir.path());
    }
}

/// CNCF distribution (`docker-registry` from Debian) on a free loopback port.
pub struct DockerRegistry {
    process: PeerProcess,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl DockerRegistry {
    /// Starts with a minimal config plus `extra_yaml` (top-level keys such as `auth:`).
    pub fn start(extra_yaml: &str) -> Result<Self> {
        let bin = require("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("rbuild-distribution-")
            .tempdir()?;
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&config_path);
        let mut process = PeerProcess::spawn(
            "docker-registry",
            &mut cmd,
            &dir.path().join("registry.log"),
        )?;
        wait_until("docker-registry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        process.check_alive()?;
        Ok(DockerRegistry { process, dir, port })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
