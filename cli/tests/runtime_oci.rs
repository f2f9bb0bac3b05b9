//! `rbuild oci-runtime run --bundle DIR ID` against runc, the reference: the same bundle
//! gives the same output; exit codes, signals, the pty; and after 100 runs, some killed
//! midway, nothing is left behind. Run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use conformance::peers::{require, wait_until};

const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// A bundle made by `runc spec` (runc's own defaults) over a busybox rootfs.
fn bundle(dir: &Path, args: &[&str], terminal: bool) -> PathBuf {
    let busybox = require("busybox");
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("bin/data"), "not a program").unwrap();
    conformance::peers::run_ok(
        Command::new(require("runc"))
            .arg("spec")
            .current_dir(&bundle),
    )
    .unwrap();
    set_process(&bundle, |process| {
        process["terminal"] = terminal.into();
        process["args"] = serde_json::json!(args);
    });
    bundle
}

fn set_process(bundle: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    change(&mut config["process"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

fn id(name: &str) -> String {
    format!("rt-{name}-{}", std::process::id())
}

fn ours(bundle: &Path, id: &str) -> Output {
    Command::new(RBUILD)
        .args(["oci-runtime", "run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn runc(bundle: &Path, id: &str) -> Output {
    Command::new(require("runc"))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn same_bundle_same_output_as_runc() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo pid=$$; hostname; ip -o link | cut -d: -f2; ls /dev; id; grep Cap /proc/self/status; \
                  ls /; ls /proc/kcore /proc/keys; echo x > /proc/sys/kernel/domainname 2>&1; echo write=$?; \
                  cat /proc/self/attr/current 2>/dev/null; ulimit -n; umask; pwd; env | sort; exit 5";
    let b = bundle(dir.path(), &["sh", "-c", script], false);
    let reference = runc(&b, &id("cmp-runc"));
    let got = ours(&b, &id("cmp"));
    assert_eq!(
        reference.status.code(),
        Some(5),
        "runc: {}",
        String::from_utf8_lossy(&reference.stderr)
    );
    assert_eq!(
        got.status.code(),
        Some(5),
        "ours: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&reference.stdout)
    );
    assert!(String::from_utf8_lossy(&got.stdout).starts_with("pid=1\nrunc\n lo\n"));
}

#[test]
fn user_namespace_with_id_maps_matches_runc() {
    let dir = tempfile::tempdir().unwrap();
    let script = "id; cat /proc/self/uid_map /proc/self/gid_map; ls -ln /dev/null | cut -c1-40; \
                  grep CapEff /proc/self/status; touch /x 2>&1; echo $?";
    let b = bundle(dir.path(), &["sh", "-c", script], false);
    // The namespace's root is host uid 100000: it must reach the rootfs and find the mount
    // points there, as it cannot create them in directories owned by the host's root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for mount_point in ["proc", "dev", "sys"] {
        std::fs::create_dir_all(b.join("rootfs").join(mount_point)).unwrap();
    }
    let path = b.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let linux = &mut config["linux"];
    linux["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    linux["uidMappings"] = map.clone();
    linux["gidMappings"] = map;
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let reference = runc(&b, &id("userns-runc"));
    let got = ours(&b, &id("userns"));
    assert!(
        reference.status.success(),
        "runc: {}",
        String::from_utf8_lossy(&reference.stderr)
    );
    assert!(
        got.status.success(),
        "ours: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&reference.stdout)
    );
    assert!(String::from_utf8_lossy(&got.stdout).contains("0     100000      65536"));
}

#[test]
fn exit_codes_follow_docker() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), &["sh", "-c", "exit 3"], false);
    assert_eq!(ours(&b, &id("exit3")).status.code(), Some(3));

    // A process killed by SIGKILL: 128 + 9. (`; exit $?` keeps busybox from exec'ing the
    // inner shell as PID 1, which ignores signals sent from inside its namespace.)
    set_process(&b, |p| {
        p["args"] = serde_json::json!(["sh", "-c", "sh -c 'kill -9 $$'; exit $?"])
    });
    assert_eq!(ours(&b, &id("kill9")).status.code(), Some(137));

    set_process(&b, |p| p["args"] = serde_json::json!(["no-such-command"]));
    let out = ours(&b, &id("nocmd"));
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-command"),
        "{out:?}"
    );

    set_process(&b, |p| p["args"] = serde_json::json!(["/bin/data"]));
    assert_eq!(ours(&b, &id("noexec")).status.code(), Some(126));

    set_process(&b, |p| p["args"] = serde_json::json!(["true"]));
    std::fs::rename(b.join("rootfs"), b.join("elsewhere")).unwrap();
    let out = ours(&b, &id("norootfs"));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rootfs"),
        "{out:?}"
    );

    let out = Command::new(RBUILD)
        .args(["oci-runtime", "run", "--bundle", "/nonexistent-bundle", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config.json"),
        "{out:?}"
    );
}

#[test]
fn sigterm_is_forwarded_to_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done";
    let b = bundle(dir.path(), &["sh", "-c", script], false);
    let out_path = dir.path().join("out");
    let mut child = Command::new(RBUILD)
        .args(["oci-runtime", "run", "--bundle"])
        .arg(&b)
        .arg(id("term"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    wait_until("container ready", Duration::from_secs(10), || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains("ready")
    })
    .unwrap();
    // SAFETY: signalling the rbuild process this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("got-term"));
}

#[test]
fn terminal_true_gives_the_container_a_pty() {
    let dir = tempfile::tempdir().unwrap();
    let script = "test -t 0 && echo stdin-is-tty; test -t 1 && echo stdout-is-tty; ls -l /dev/console | cut -c1";
    let b = bundle(dir.path(), &["sh", "-c", script], true);
    let out = ours(&b, &id("tty"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(text, "stdin-is-tty\nstdout-is-tty\nc\n");
}

/// Directories named `<prefix>…` anywhere under the cgroup hierarchies we use.
fn cgroup_dirs(prefix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(entry.path());
            } else if depth > 0 {
                walk(&entry.path(), prefix, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    for hierarchy in ["memory", "pids", "cpu", "cpuacct", "devices", "unified"] {
        walk(
            &Path::new("/sys/fs/cgroup").join(hierarchy),
            prefix,
            5,
            &mut found,
        );
    }
    found
}

fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn hundred_runs_some_killed_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", std::process::id());
    let b = bundle(dir.path(), &["true"], false);
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let prefix = id("many");
    for i in 0..100 {
        let killed = i % 10 == 3;
        let args = if killed {
            serde_json::json!(["sh", "-c", format!("sleep 30; : {marker}")])
        } else {
            serde_json::json!(["true"])
        };
        set_process(&b, |p| p["args"] = args);
        let mut child = Command::new(RBUILD)
            .args(["oci-runtime", "run", "--bundle"])
            .arg(&b)
            .arg(format!("{prefix}-{i}"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        if killed {
            wait_until("container running", Duration::from_secs(10), || {
                !processes_with(&marker).is_empty()
            })
            .unwrap();
            // SIGKILL to rbuild itself: no cleanup code of its own can run.
            child.kill().unwrap();
            child.wait().unwrap();
        } else {
            assert!(child.wait().unwrap().success(), "run {i}");
        }
    }
    wait_until("killed containers gone", Duration::from_secs(20), || {
        processes_with(&marker).is_empty() && cgroup_dirs(&prefix).is_empty()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: processes {:?}, cgroups {:?}",
            processes_with(&marker),
            cgroup_dirs(&prefix)
        )
    });
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_after, mounts_before, "mounts left behind");
}
