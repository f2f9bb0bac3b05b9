//! Helpers shared by the executor's test binaries (each includes this as `mod common`).
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use runtime_exec::spec::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, Spec};
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

/// A shell that doubles a string forever under a 32 MiB limit is reported as OOM-killed.
pub fn memory_hog_is_reported_as_oom() {
    let o = sh(
        "oom",
        "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done",
        |spec, _| {
            let memory = LinuxMemoryBuilder::default()
                .limit(32 * 1024 * 1024)
                .swap(32 * 1024 * 1024)
                .build()
                .unwrap();
            set_resources(
                spec,
                LinuxResourcesBuilder::default()
                    .memory(memory)
                    .build()
                    .unwrap(),
            );
        },
    );
    assert_eq!(status(&o), ExitStatus::OomKilled, "{}", o.stderr);
}

/// A fork bomb under pids.max = 16 is held there; `pids_dir` is where the container sees its
/// pids cgroup files (`/sys/fs/cgroup/pids` on v1, `/sys/fs/cgroup` on v2).
pub fn fork_bomb_is_stopped(pids_dir: &str) {
    // Builtins only after the bomb: a fork would fail while the bomb holds every pid.
    let script = format!(
        "f(){{ f | f & }}; f; i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; \
         read n < {pids_dir}/pids.current; read e < {pids_dir}/pids.events; echo \"$n $e\""
    );
    let o = sh("bomb", &script, |spec, _| {
        let pids = LinuxPidsBuilder::default().limit(16).build().unwrap();
        set_resources(
            spec,
            LinuxResourcesBuilder::default().pids(pids).build().unwrap(),
        );
    });
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    let fields: Vec<&str> = o.stdout.split_whitespace().collect();
    let current: u32 = fields[0].parse().unwrap();
    assert!(current <= 16, "pids.current {current} above the limit");
    assert_eq!(fields[1], "max");
    assert!(
        fields[2].parse::<u64>().unwrap() > 0,
        "no fork was refused: {}",
        o.stdout
    );
}

/// Ends a hand-rolled test binary (these run without libtest's harness: the executor needs a
/// single-threaded main) with libtest's summary line, which .ci/run counts, and its exit code.
pub fn finish(passed: usize, failed: usize) {
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out");
    if failed > 0 {
        std::process::exit(1);
    }
}
