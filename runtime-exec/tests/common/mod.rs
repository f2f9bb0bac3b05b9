//! Helpers shared by the executor's test binaries (each includes this as `mod common`).
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use runtime_exec::spec::Spec;
use runtime_exec::{defaults, run_with_stdio, ContainerStdio, Error, ExitStatus, RunOptions};

/// A busybox image: /bin/busybox from Debian's busybox-static plus its applet links.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = conformance::peers::require("busybox");
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwww:x:33:\nwheel:x:10:www\n",
    )
    .unwrap();
    rootfs
}

pub struct Outcome {
    pub result: Result<ExitStatus, Error>,
    pub stdout: String,
    pub stderr: String,
}

pub fn capture() -> (OwnedFd, std::fs::File) {
    let file = tempfile::tempfile().unwrap();
    (OwnedFd::from(file.try_clone().unwrap()), file)
}

pub fn read_all(mut file: std::fs::File) -> String {
    use std::io::Seek;
    file.rewind().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}

pub fn unique_id(name: &str) -> String {
    format!("t-{name}-{}", std::process::id())
}

pub fn run_spec(spec: &Spec, options: &RunOptions) -> Outcome {
    let (out_fd, out) = capture();
    let (err_fd, err) = capture();
    let stdio = ContainerStdio {
        stdin: None,
        stdout: Some(out_fd),
        stderr: Some(err_fd),
    };
    let result = run_with_stdio(spec, options, stdio);
    Outcome {
        result,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

/// `sh -c script` in a docker-like Spec over a fresh busybox rootfs, after `adjust`.
pub fn sh(name: &str, script: &str, adjust: impl FnOnce(&mut Spec, &Path)) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let mut spec = defaults::docker_spec(&rootfs, &args).unwrap();
    adjust(&mut spec, &rootfs);
    run_spec(&spec, &RunOptions::new(unique_id(name)))
}

pub fn set_resources(spec: &mut Spec, resources: runtime_exec::spec::LinuxResources) {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

pub fn status(o: &Outcome) -> ExitStatus {
    match &o.result {
        Ok(s) => *s,
        Err(e) => panic!(
            "run failed: {e}\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        ),
    }
}
