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

/// Each hook records its state, its argv[0] (busybox picks the applet by it), its env and
/// whether it runs in the host's mount namespace; the process and startContainer run as uid
/// 1000. `failing` makes that phase's hook exit 3 after printing "boom".
fn set_hooks(bundle: &Path, log: &Path, failing: Option<&str>) {
    let busybox = require("busybox");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    std::fs::create_dir_all(log).unwrap();
    std::fs::set_permissions(log, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(log.join("order"), "").unwrap();
    std::fs::set_permissions(
        log.join("order"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let script = r#"cat > "$1/$0.json"; m=other; [ "$(readlink /proc/self/ns/mnt)" = "$2" ] && m=host
        echo "$0 X=${X:-unset} leak=${LEAK:-unset} uid=$(id -u) mnt=$m" >> "$1/order"
        if [ "$0" = "$3" ]; then echo boom; exit 3; fi"#;
    let hook = |phase: &str, path: &Path, log: &Path, env: bool| {
        let mut hook = serde_json::json!({
            "path": path,
            "args": ["sh", "-c", script, phase, log, host_mnt, failing.unwrap_or("")],
        });
        if env {
            hook["env"] = serde_json::json!(["X=1", "PATH=/usr/bin:/bin"]);
        }
        serde_json::json!([hook])
    };
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["hooks"] = serde_json::json!({
        "prestart": hook("prestart", &busybox, log, true),
        "createRuntime": hook("createRuntime", &busybox, log, true),
        "createContainer": hook("createContainer", &busybox, log, true),
        // Resolved in the container: its own busybox, its own view of the log directory.
        "startContainer": hook("startContainer", Path::new("/bin/busybox"), Path::new("/log"), true),
        // No env of its own: it inherits the runtime's, as runc's hooks do.
        "poststart": hook("poststart", &busybox, log, false),
        "poststop": hook("poststop", &busybox, log, true),
    });
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"destination": "/log", "type": "bind", "source": log, "options": ["rbind", "rw"]}
        ));
    config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    config["process"]["args"] =
        serde_json::json!(["sh", "-c", "echo \"process uid=$(id -u)\" >> /log/order"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// The log `set_hooks` asked for, with what differs between two runs (ids, host pids) named.
fn hook_log(log: &Path, bundle: &Path) -> Vec<String> {
    let order = std::fs::read_to_string(log.join("order")).unwrap();
    let mut lines: Vec<String> = order.lines().map(str::to_string).collect();
    for phase in order.lines().filter_map(|l| l.split(' ').next()) {
        let Ok(state) = std::fs::read(log.join(format!("{phase}.json"))) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        assert_eq!(
            state["bundle"],
            bundle.to_str().unwrap(),
            "{phase}: {state}"
        );
        assert!(
            state["id"].as_str().unwrap().starts_with("rt-hooks"),
            "{state}"
        );
        let pid = match state["pid"].as_i64() {
            Some(1) => "1",
            Some(_) => "host pid",
            None => "none",
        };
        lines.push(format!("{phase}: status={} pid={pid}", state["status"]));
    }
    lines
}

#[test]
fn hooks_run_where_and_when_runc_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), &["true"], false);
    let canonical = b.canonicalize().unwrap();
    let run = |runtime: &str, log: &Path, failing: Option<&str>| {
        set_hooks(&b, log, failing);
        let program = if runtime == "runc" {
            require("runc")
        } else {
            PathBuf::from(RBUILD)
        };
        let mut command = Command::new(program);
        if runtime != "runc" {
            command.arg("oci-runtime");
        }
        let out = command
            .args(["run", "--bundle"])
            .arg(&b)
            .arg(id(&format!("hooks-{runtime}")))
            .env("LEAK", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out, hook_log(log, &canonical))
    };

    let (reference, expected) = run("runc", &dir.path().join("runc"), None);
    assert!(reference.status.success(), "runc: {reference:?}");
    let (got, log) = run("ours", &dir.path().join("ours"), None);
    assert!(got.status.success(), "ours: {got:?}");
    // runc runs poststart as soon as it has released the init, racing its startContainer
    // hooks and execve, and tells it "created". Here it runs once the process has been
    // exec'd, "running", as runtime.md "Lifecycle" step 9 says. All else is runc's.
    let without_poststart = |log: &[String]| -> Vec<String> {
        log.iter()
            .filter(|l| !l.starts_with("poststart"))
            .cloned()
            .collect()
    };
    assert_eq!(without_poststart(&log), without_poststart(&expected));
    assert!(expected.contains(&"poststart X=unset leak=1 uid=0 mnt=host".to_string()));
    let mnt = |phase: &str| {
        log.iter()
            .find(|l| l.starts_with(&format!("{phase} ")))
            .unwrap_or_else(|| panic!("{phase} did not run: {log:?}"))
            .clone()
    };
    // The spec's order, namespaces and states, spelled out (and runc agrees, above).
    // poststart runs once the process has been exec'd; whether the process's shell has
    // written its line by then is a race the spec leaves open, so those two go in any order.
    let mut order: Vec<&str> = log
        .iter()
        .take(7)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    if order.len() == 7 {
        order[4..6].sort_unstable();
    }
    assert_eq!(
        order,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "process",
            "poststop"
        ],
        "{log:?}"
    );
    assert!(mnt("createRuntime").ends_with("uid=0 mnt=host"), "{log:?}");
    assert!(
        mnt("createContainer").ends_with("uid=0 mnt=other"),
        "{log:?}"
    );
    assert_eq!(
        mnt("startContainer"),
        "startContainer X=1 leak=unset uid=1000 mnt=other"
    );
    assert!(mnt("poststart").contains("X=unset leak=1"), "{log:?}");
    assert!(log.contains(&"createContainer: status=\"creating\" pid=1".to_string()));
    assert!(log.contains(&"poststart: status=\"running\" pid=host pid".to_string()));

    // A failing hook stops the container before its process runs, its output quoted; the
    // poststop hooks still run (runtime.md "Lifecycle" steps 5, 12, 13).
    let (failed, log) = run("ours", &dir.path().join("fail"), Some("createContainer"));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(125), "{failed:?}");
    assert!(
        stderr.contains("createContainer hook") && stderr.contains("boom"),
        "{stderr}"
    );
    assert!(!log.iter().any(|l| l.starts_with("process")), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("poststop ")), "{log:?}");

    // A failing poststop hook is only a warning.
    let (warned, _) = run("ours", &dir.path().join("warn"), Some("poststop"));
    assert!(warned.status.success(), "{warned:?}");
    assert!(String::from_utf8_lossy(&warned.stderr).contains("warning: poststop hook"));

    // A hook past its timeout is killed and fails the start; a relative path is refused.
    let set_create_runtime = |hook: serde_json::Value| {
        let path = b.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["hooks"] = serde_json::json!({ "createRuntime": [hook] });
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    };
    set_create_runtime(
        serde_json::json!({"path": require("busybox"), "args": ["sleep", "30"], "timeout": 1}),
    );
    let started = std::time::Instant::now();
    let slow = ours(&b, &id("hooks-slow"));
    assert_eq!(slow.status.code(), Some(125), "{slow:?}");
    assert!(
        String::from_utf8_lossy(&slow.stderr).contains("ran past its timeout of 1 s"),
        "{slow:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    set_create_runtime(serde_json::json!({"path": "busybox"}));
    let relative = ours(&b, &id("hooks-relative"));
    assert!(!relative.status.success());
    assert!(
        String::from_utf8_lossy(&relative.stderr).contains("is not absolute"),
        "{relative:?}"
    );
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
    // As under runc and docker: the pty comes from the container's own devpts, stdio is its
    // slave (so `tty` names /dev/pts/0), and /dev/console is that slave bound.
    let script = "test -t 0 && echo stdin-is-tty; test -t 1 && echo stdout-is-tty; tty; \
                  ls -l /dev/console | cut -c1; stat -c %t:%T /dev/console /dev/pts/0";
    let b = bundle(dir.path(), &["sh", "-c", script], true);
    let out = ours(&b, &id("tty"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Without \r (the pty's output processing) and script(1)'s echo of its empty stdin.
    let text = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .replace('\r', "")
            .replace("^@", "")
    };
    let expected = "stdin-is-tty\nstdout-is-tty\n/dev/pts/0\nc\n88:0\n88:0\n";
    assert_eq!(text(&out), expected);
    // runc wants a terminal of its own (it opens /dev/tty): both run under script(1)'s pty.
    let under_script = |command: String| {
        Command::new(require("script"))
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let bundle_arg = b.display();
    let reference = under_script(format!(
        "{} run --bundle {bundle_arg} {}",
        require("runc").display(),
        id("tty-runc")
    ));
    let got = under_script(format!(
        "{RBUILD} oci-runtime run --bundle {bundle_arg} {}",
        id("tty-script")
    ));
    assert_eq!(text(&reference), expected, "runc: {reference:?}");
    assert_eq!(text(&got), expected, "ours under script: {got:?}");
}

/// A static test program: the outcome of a syscall docker's default profile refuses
/// (add_key), of personality(2) with two arguments, and of mkdir.
const SYSCALL_PROBE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static void report(const char *what, long rc) {
    printf("%s: %s\n", what, rc < 0 ? strerror(errno) : "ok");
}
int main(void) {
    report("add_key", syscall(SYS_add_key, "user", "rbuild", "v", 1, -2));
    report("personality(query)", syscall(SYS_personality, 0xffffffffUL));
    report("personality(PER_LINUX32)", syscall(SYS_personality, 8UL));
    report("mkdir", mkdir("/probe-dir", 0755));
    return 0;
}
"#;

/// The same bundle with a seccomp profile, under runc (libseccomp) and under ours (our own
/// BPF compiler): docker's default profile as podman ships it, and a small profile whose
/// rule depends on an argument.
#[test]
fn seccomp_profiles_match_runc() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), &["/probe"], false);
    std::fs::write(dir.path().join("probe.c"), SYSCALL_PROBE).unwrap();
    conformance::peers::run_ok(
        Command::new(require("gcc"))
            .args(["-static", "-O", "-o"])
            .arg(b.join("rootfs/probe"))
            .arg(dir.path().join("probe.c")),
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let caps: runtime_exec::spec::Capabilities =
        serde_json::from_value(config["process"]["capabilities"]["bounding"].clone()).unwrap();
    let docker_default = runtime_exec::seccomp::profile::resolve(
        runtime_exec::seccomp::profile::DEFAULT_PROFILE,
        &caps,
    )
    .unwrap();
    let by_argument = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_NE"}]},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    // runc's spec makes the root read-only: mkdir meets EROFS unless the filter stops it first.
    let expected = [
        "add_key: Function not implemented\npersonality(query): ok\npersonality(PER_LINUX32): ok\nmkdir: Read-only file system\n",
        "add_key: ok\npersonality(query): ok\npersonality(PER_LINUX32): Permission denied\nmkdir: Operation not permitted\n",
    ];
    let profiles = [serde_json::to_value(&docker_default).unwrap(), by_argument];
    for (i, (profile, expected)) in profiles.into_iter().zip(expected).enumerate() {
        let path = b.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["linux"]["seccomp"] = profile;
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let reference = runc(&b, &id(&format!("seccomp{i}-runc")));
        let got = ours(&b, &id(&format!("seccomp{i}")));
        let text = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(reference.status.success(), "runc: {reference:?}");
        assert!(got.status.success(), "ours: {got:?}");
        assert_eq!(text(&got), text(&reference), "profile {i}");
        assert_eq!(text(&got), expected, "profile {i}");
    }
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
