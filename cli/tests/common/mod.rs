//! Shared pieces of the CLI's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::time::Duration;

use conformance::peers::{free_port, require, wait_until, PeerProcess};
use oci::archive::ArchiveFormat;

/// An `rbuild` command on a private store.
pub fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.env("RBUILD_ROOT", root).stdin(Stdio::null());
    cmd
}

/// Runs and requires success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and requires exit code 1 with a one-line error; returns that line.
pub fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?}: expected exit 1, got {}: {stderr}",
        out.status
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected a one-line error, got: {stderr}"
    );
    stderr.trim_end().to_string()
}

/// Writes the busybox fixture as an archive of `format` named `name`.
pub fn busybox_archive(dir: &Path, name: &str, format: ArchiveFormat) -> PathBuf {
    let rootfs = dir.join(format!("busybox-rootfs-{}", name.replace(['/', ':'], "_")));
    if !rootfs.exists() {
        fixtures::busybox_rootfs(&rootfs).expect("busybox rootfs");
    }
    let out = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let recipe = fixtures::ImageRecipe {
        layers: std::slice::from_ref(&rootfs),
        config: fixtures::busybox_config(),
        name: Some(oci::Reference::parse(name).expect("name")),
        compression: oci::compression::Compression::Gzip,
    };
    fixtures::write_image(&recipe, format, &out).expect("write fixture");
    out
}

/// Every file under `dir` with its size, to show that a failed command changed nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("meta");
            if entry.file_name().to_string_lossy().ends_with(".lock") {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

pub fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let out = ok(rbuild(root).args(["inspect", name]));
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].take()
}

/// A real ssh-agent (`ssh-agent -D`) listening on `socket`, stopped on drop.
pub fn ssh_agent(socket: &Path) -> PeerProcess {
    let log = socket.with_extension("log");
    let agent = PeerProcess::spawn(
        "ssh-agent",
        Command::new(require("ssh-agent"))
            .arg("-D")
            .arg("-a")
            .arg(socket),
        &log,
    )
    .expect("start ssh-agent");
    // The socket file appears at bind(), before listen(): only a connection says it is ready.
    wait_until("ssh-agent", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    })
    .expect("ssh-agent");
    agent
}

/// A server that `start` runs on a free loopback port, once it answers there, and the port.
pub fn listening(name: &str, start: impl Fn(u16) -> PeerProcess) -> (PeerProcess, u16) {
    let port = free_port();
    let server = start(port);
    wait_until(name, Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (server, port)
}

/// python's http.server on a loopback port, serving `dir`.
pub fn http_server(dir: &Path, log: &Path) -> (PeerProcess, u16) {
    listening("http.server", |port| {
        PeerProcess::spawn(
            "python3 http.server",
            Command::new(require("python3"))
                .args([
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    &port.to_string(),
                ])
                .current_dir(dir),
            log,
        )
        .expect("start http.server")
    })
}
