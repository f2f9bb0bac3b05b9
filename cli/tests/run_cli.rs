//! `rbuild run` through the CLI (as root): docker's command, environment, user and working
//! directory rules, mounts, network, limits, exit codes, and that a run leaves nothing behind.
//!
//! One test function runs the checks in sequence on one store, then checks that no mount and
//! nothing under the store's scratch directory was left behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use common::{busybox_archive, ok, rbuild};
use oci::archive::ArchiveFormat;

/// An image with every setting `rbuild run` takes from the config.
const IMAGE_DOCKERFILE: &str = r#"
FROM bb:1
ENV GREETING=hello FROM_IMAGE=yes
WORKDIR /app/sub
USER nobody
ENTRYPOINT ["echo", "ep"]
CMD ["cmd"]
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

fn setup() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let archive = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&archive));
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), IMAGE_DOCKERFILE).unwrap();
    ok(rbuild(&root)
        .args(["build", "-q", "-t", "ep:1"])
        .arg(&ctx)
        .stderr(Stdio::null()));
    Fixture {
        dir: tmp.path().to_path_buf(),
        root,
        _tmp: tmp,
    }
}

/// `rbuild run ARGS...` with stdin from /dev/null.
fn run(f: &Fixture, args: &[&str]) -> Output {
    rbuild(&f.root)
        .arg("run")
        .args(args)
        .output()
        .expect("spawn rbuild")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires a failure: exit code `exit` (any but 0 when `None`), and `message` in
/// what it wrote to stderr.
fn run_failing(f: &Fixture, args: &[&str], exit: Option<i32>, message: &str) {
    let o = run(f, args);
    match exit {
        Some(exit) => assert_eq!(code(&o), exit, "rbuild run {args:?}: {}", stderr(&o)),
        None => assert_ne!(code(&o), 0, "rbuild run {args:?} succeeded"),
    }
    assert!(
        stderr(&o).contains(message),
        "rbuild run {args:?}: {message:?} not in {}",
        stderr(&o)
    );
}

/// Runs and requires exit 0; returns stdout.
fn run_ok(f: &Fixture, args: &[&str]) -> String {
    let o = run(f, args);
    assert_eq!(code(&o), 0, "rbuild run {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn run_cli() {
    let before = mounts();
    let f = setup();
    exit_codes(&f);
    rbuild_errors_exit_125(&f);
    entrypoint_and_cmd(&f);
    environment(&f);
    workdir_and_user(&f);
    stdin(&f);
    volumes_and_tmpfs(&f);
    network_hostname_and_etc_files(&f);
    limits(&f);
    capabilities_and_read_only(&f);
    security_options_and_tty(&f);

    // Other tests on this machine mount and unmount at the same time: only new mounts that
    // touch this test's directory (rootfs, overlay layers, binds) can be ours.
    let ours = f.dir.to_string_lossy().into_owned();
    let left: Vec<String> = mounts()
        .into_iter()
        .filter(|m| !before.contains(m) && m.contains(&ours))
        .collect();
    assert!(
        left.is_empty(),
        "mounts left in the host namespace: {left:?}"
    );
    let leftovers: Vec<PathBuf> = fs::read_dir(f.root.join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left under ROOT/tmp: {leftovers:?}");
}

fn exit_codes(f: &Fixture) {
    assert_eq!(run_ok(f, &["bb:1", "echo", "hi"]), "hi\n");
    assert_eq!(code(&run(f, &["bb:1", "sh", "-c", "exit 3"])), 3);
    // With --init the shell is not PID 1, so it can die of its own SIGKILL.
    assert_eq!(
        code(&run(f, &["--init", "bb:1", "sh", "-c", "kill -9 $$"])),
        137
    );
    // Without --init, a child killing itself (`exit $?` keeps sh from exec'ing it as PID 1,
    // which ignores its own SIGKILL): the shell reports 128+9 as its own code.
    assert_eq!(
        code(&run(
            f,
            &["bb:1", "sh", "-c", "sh -c 'kill -9 $$'; exit $?"]
        )),
        137
    );
    let not_executable = run(f, &["bb:1", "/etc/passwd"]);
    assert_eq!(code(&not_executable), 126, "{}", stderr(&not_executable));
    run_failing(
        f,
        &["bb:1", "no-such-command"],
        Some(127),
        "no-such-command",
    );
}

fn rbuild_errors_exit_125(f: &Fixture) {
    run_failing(
        f,
        &["nope:1", "true"],
        Some(125),
        "Unable to find image 'nope:1' locally",
    );
    // --entrypoint "" clears the ENTRYPOINT and the CMD: nothing is left to run.
    run_failing(
        f,
        &["--entrypoint", "", "bb:1"],
        Some(125),
        "No command specified",
    );
    for bad in [
        &["--memory", "lots", "bb:1", "true"][..],
        &["--memory", "1k", "bb:1", "true"],
        &["--cpus", "many", "bb:1", "true"],
        &["--cpus", "1000", "bb:1", "true"],
        &["--cap-add", "NOT_A_CAP", "bb:1", "true"],
        &["-v", "relative:/x", "bb:1", "true"],
        &["-w", "relative", "bb:1", "true"],
        &["-u", "nosuchuser", "bb:1", "true"],
    ] {
        let o = run(f, bad);
        assert_eq!(code(&o), 125, "{bad:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("rbuild: "),
            "{bad:?}: {}",
            stderr(&o)
        );
    }
    run_failing(
        f,
        &["-v", "/no/such/dir:/data", "bb:1", "true"],
        Some(125),
        "/no/such/dir",
    );
}

fn entrypoint_and_cmd(f: &Fixture) {
    assert_eq!(run_ok(f, &["ep:1"]), "ep cmd\n");
    // Arguments replace CMD and follow the ENTRYPOINT.
    assert_eq!(run_ok(f, &["ep:1", "x", "-y"]), "ep x -y\n");
    // --entrypoint replaces the ENTRYPOINT and drops the image's CMD.
    assert_eq!(run_ok(f, &["--entrypoint", "echo", "ep:1"]), "\n");
    assert_eq!(run_ok(f, &["--entrypoint", "echo", "ep:1", "hi"]), "hi\n");
}

fn environment(f: &Fixture) {
    let env_file = f.dir.join("env.list");
    fs::write(
        &env_file,
        "# a comment\n\nFROM_FILE=1\nGREETING=from-file\nPASSED\n",
    )
    .unwrap();
    let o = rbuild(&f.root)
        .env("PASSED", "host-value")
        .env("ALSO_PASSED", "host-too")
        .args(["run", "--env-file"])
        .arg(&env_file)
        .args(["-e", "CLI=2", "-e", "ALSO_PASSED", "-e", "UNSET_ON_HOST"])
        .args(["--entrypoint", "env", "ep:1"])
        .env_remove("UNSET_ON_HOST")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let env = stdout(&o);
    for expected in [
        "FROM_IMAGE=yes",
        "GREETING=from-file",
        "FROM_FILE=1",
        "PASSED=host-value",
        "ALSO_PASSED=host-too",
        "CLI=2",
        "HOME=/nonexistent",
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing:\n{env}"
        );
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=/")), "{env}");
    assert!(!env.contains("UNSET_ON_HOST"), "{env}");
    // -e wins over the image's Env.
    let o = run_ok(
        f,
        &[
            "-e",
            "GREETING=bye",
            "--entrypoint",
            "sh",
            "ep:1",
            "-c",
            "echo $GREETING",
        ],
    );
    assert_eq!(o, "bye\n");
}

fn workdir_and_user(f: &Fixture) {
    let script = ["-c", "id -u; id -g; pwd"];
    let image = run_ok(f, &[&["--entrypoint", "sh", "ep:1"][..], &script].concat());
    assert_eq!(image, "65534\n65534\n/app/sub\n");
    let overridden = run_ok(
        f,
        &[
            &["-u", "0", "-w", "/new/dir", "--entrypoint", "sh", "ep:1"][..],
            &script,
        ]
        .concat(),
    );
    assert_eq!(overridden, "0\n0\n/new/dir\n");
    let nobody = run_ok(
        f,
        &[
            "-u",
            "nobody",
            "bb:1",
            "sh",
            "-c",
            "id -un; touch /x 2>/dev/null || echo refused",
        ],
    );
    assert_eq!(nobody, "nobody\nrefused\n");
}

fn stdin(f: &Fixture) {
    // Without -i the container reads /dev/null, whatever rbuild's own stdin holds.
    for (flags, expected) in [(&[][..], ""), (&["-i"][..], "piped in\n")] {
        let mut child = rbuild(&f.root)
            .arg("run")
            .args(flags)
            .args(["bb:1", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"piped in\n").unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{flags:?}");
        assert_eq!(stdout(&out), expected, "{flags:?}");
    }
}

fn volumes_and_tmpfs(f: &Fixture) {
    let host = f.dir.join("shared");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("in.txt"), "from host\n").unwrap();
    let ro = format!("{}:/data:ro", host.display());
    let o = run(
        f,
        &[
            "-v",
            &ro,
            "bb:1",
            "sh",
            "-c",
            "cat /data/in.txt; touch /data/new",
        ],
    );
    assert_ne!(code(&o), 0);
    assert_eq!(stdout(&o), "from host\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!host.join("new").exists());

    let rw = format!("{}:/data", host.display());
    run_ok(
        f,
        &[
            "-v",
            &rw,
            "bb:1",
            "sh",
            "-c",
            "echo written > /data/out.txt",
        ],
    );
    assert_eq!(
        fs::read_to_string(host.join("out.txt")).unwrap(),
        "written\n"
    );

    let mounts = run_ok(
        f,
        &[
            "--tmpfs",
            "/scratch:size=1m",
            "bb:1",
            "grep",
            " /scratch ",
            "/proc/mounts",
        ],
    );
    assert!(mounts.starts_with("tmpfs /scratch tmpfs"), "{mounts}");
    assert!(mounts.contains("noexec"), "{mounts}");
}

fn network_hostname_and_etc_files(f: &Fixture) {
    assert_eq!(run_ok(f, &["bb:1", "ls", "/sys/class/net"]), "lo\n");
    assert_eq!(
        run_ok(f, &["--network", "none", "bb:1", "ls", "/sys/class/net"]),
        "lo\n"
    );
    let host_links = fs::read_dir("/sys/class/net").unwrap().count();
    let links = run_ok(f, &["--network", "host", "bb:1", "ls", "/sys/class/net"]);
    assert_eq!(links.lines().count(), host_links, "{links}");

    let named = run_ok(
        f,
        &[
            "--hostname",
            "box1",
            "bb:1",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; grep -c box1 /etc/hosts",
        ],
    );
    assert_eq!(named, "box1\nbox1\n1\n");
    let default = run_ok(
        f,
        &[
            "bb:1",
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo $HOSTNAME",
        ],
    );
    let lines: Vec<&str> = default.lines().collect();
    assert_eq!(lines.len(), 3, "{default}");
    assert_eq!(lines[0].len(), 12, "{default}");
    assert!(lines[0].bytes().all(|b| b.is_ascii_hexdigit()), "{default}");
    assert!(lines.iter().all(|l| *l == lines[0]), "{default}");
    let resolv = run_ok(f, &["bb:1", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, fs::read_to_string("/etc/resolv.conf").unwrap());
}

fn limits(f: &Fixture) {
    let hog = run(
        f,
        &[
            "--memory",
            "32m",
            "bb:1",
            "sh",
            "-c",
            "a=xxxxxxxxxxxxxxxx; while true; do a=$a$a; done",
        ],
    );
    assert_eq!(code(&hog), 137, "{}", stderr(&hog));

    // Builtins only after the bomb: a fork would fail while the bomb holds every pid.
    let bomb = "f(){ f | f & }; f; i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; \
                read n < /sys/fs/cgroup/pids/pids.current; read e < /sys/fs/cgroup/pids/pids.events; echo \"$n $e\"";
    let out = run_ok(f, &["--pids-limit", "16", "bb:1", "sh", "-c", bomb]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{out}");
    assert!(fields[0].parse::<u32>().unwrap() <= 16, "{out}");
    assert!(
        fields[2].parse::<u64>().unwrap() > 0,
        "no fork was refused: {out}"
    );

    let cpu = run_ok(
        f,
        &[
            "--cpus",
            "0.5",
            "bb:1",
            "cat",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
        ],
    );
    assert_eq!(cpu, "50000\n100000\n");
}

fn capabilities_and_read_only(f: &Fixture) {
    let cap_eff = |args: &[&str]| {
        let out = run_ok(
            f,
            &[args, &["bb:1", "grep", "CapEff", "/proc/self/status"]].concat(),
        );
        let hex = out.split_whitespace().nth(1).unwrap().to_string();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    const NET_RAW: u64 = 1 << 13;
    const NET_ADMIN: u64 = 1 << 12;
    assert_ne!(cap_eff(&[]) & NET_RAW, 0);
    assert_eq!(cap_eff(&["--cap-drop", "NET_RAW"]) & NET_RAW, 0);
    assert_eq!(cap_eff(&[]) & NET_ADMIN, 0);
    assert_ne!(cap_eff(&["--cap-add", "net_admin"]) & NET_ADMIN, 0);

    run_failing(
        f,
        &["--read-only", "bb:1", "touch", "/x"],
        None,
        "Read-only file system",
    );
    // The generated /etc files and tmpfs mounts stay writable, as in docker.
    run_ok(
        f,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp",
            "bb:1",
            "sh",
            "-c",
            "touch /tmp/x && echo ok >> /etc/hosts",
        ],
    );
}

/// Docker's default seccomp profile is on unless `--security-opt seccomp=unconfined` or
/// `--privileged`; a profile file replaces it; options rbuild does not apply are refused; `-t` gives the
/// container a pty of its own devpts, as docker does.
fn security_options_and_tty(f: &Fixture) {
    let seccomp_mode = |args: &[&str]| {
        let status = [
            args,
            &[
                "bb:1",
                "grep",
                "-E",
                "^(Seccomp|NoNewPrivs):",
                "/proc/self/status",
            ],
        ]
        .concat();
        run_ok(f, &status).replace('\t', " ")
    };
    assert_eq!(seccomp_mode(&[]), "NoNewPrivs: 0\nSeccomp: 2\n");
    assert_eq!(
        seccomp_mode(&["--security-opt", "seccomp=unconfined"]),
        "NoNewPrivs: 0\nSeccomp: 0\n"
    );
    assert_eq!(
        seccomp_mode(&["--security-opt", "no-new-privileges"]),
        "NoNewPrivs: 1\nSeccomp: 2\n"
    );
    // --privileged: no filter, every capability (CAP_SYS_ADMIN among them), /sys writable.
    assert_eq!(
        seccomp_mode(&["--privileged"]),
        "NoNewPrivs: 0\nSeccomp: 0\n"
    );
    let privileged = run_ok(
        f,
        &[
            "--privileged",
            "bb:1",
            "sh",
            "-c",
            "grep CapEff /proc/self/status; grep ' /sys ' /proc/mounts; : </dev/kmsg && echo kmsg opened",
        ],
    );
    let caps = privileged
        .lines()
        .next()
        .unwrap_or_default()
        .replace("CapEff:", "");
    let caps = u64::from_str_radix(caps.trim(), 16).unwrap();
    assert!(caps & (1 << 21) != 0, "{privileged}");
    assert!(privileged.contains(" rw,"), "{privileged}");
    // The host's devices are in its /dev, as docker gives them; not without --privileged.
    assert!(privileged.contains("kmsg opened"), "{privileged}");
    assert_eq!(
        run_ok(
            f,
            &["bb:1", "sh", "-c", "test -e /dev/kmsg || echo no kmsg"]
        ),
        "no kmsg\n"
    );
    // --device: one host device, under another name, opened for writing (nothing written).
    assert_eq!(
        run_ok(
            f,
            &[
                "--device",
                "/dev/kmsg:/dev/k",
                "bb:1",
                "sh",
                "-c",
                ": > /dev/k && echo opened"
            ]
        ),
        "opened\n"
    );
    // Allowed for reading only: the device cgroup refuses the open for writing.
    run_failing(
        f,
        &[
            "--device",
            "/dev/kmsg:/dev/k:r",
            "bb:1",
            "sh",
            "-c",
            ": > /dev/k",
        ],
        None,
        "Operation not permitted",
    );
    run_failing(
        f,
        &["--device", "/etc/hostname", "bb:1", "true"],
        Some(125),
        "not a device",
    );
    // A CDI device, as docker run --device vendor.com/class=name: its spec's environment and
    // device node.
    let cdi = f.dir.join("cdi");
    fs::create_dir_all(&cdi).unwrap();
    fs::write(
        cdi.join("kmsg.yaml"),
        "cdiVersion: 0.6.0\nkind: test.rbuild.dev/kmsg\ndevices:\n- name: k\n  containerEdits:\n    \
         env: [CDI=yes]\n    deviceNodes: [{path: /dev/k, hostPath: /dev/kmsg, permissions: rw}]\n",
    )
    .unwrap();
    let cdi_dir = cdi.to_str().unwrap();
    let with_cdi = |name: &str| {
        let args = [
            "--cdi-spec-dir",
            cdi_dir,
            "--device",
            name,
            "bb:1",
            "sh",
            "-c",
        ];
        run(
            f,
            &[&args[..], &["echo $CDI; : > /dev/k && echo opened"]].concat(),
        )
    };
    let cdi_device = with_cdi("test.rbuild.dev/kmsg=k");
    assert_eq!(
        stdout(&cdi_device),
        "yes\nopened\n",
        "{}",
        stderr(&cdi_device)
    );
    let unregistered = with_cdi("test.rbuild.dev/kmsg=nope");
    assert_eq!(code(&unregistered), 125);
    assert!(
        stderr(&unregistered).contains("\"test.rbuild.dev/kmsg=nope\" is not registered"),
        "{}",
        stderr(&unregistered)
    );

    let profile = f.dir.join("no-mkdir.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    run_failing(
        f,
        &["--security-opt", &opt, "bb:1", "mkdir", "/tmp/d"],
        Some(1),
        "Operation not permitted",
    );

    run_failing(
        f,
        &["--security-opt", "apparmor=unconfined", "bb:1", "true"],
        Some(125),
        "--security-opt",
    );
    run_failing(
        f,
        &[
            "--security-opt",
            "seccomp=/nonexistent.json",
            "bb:1",
            "true",
        ],
        Some(125),
        "/nonexistent.json",
    );

    let tty = run_ok(f, &["-t", "bb:1", "tty"]);
    assert_eq!(tty.trim_end(), "/dev/pts/0");
}

/// A flag `rbuild run` does not know is rbuild's error, not the container's: exit 125.
#[test]
fn unknown_run_flag_exits_125() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::rbuild(&tmp.path().join("store"))
        .args(["run", "--no-such-flag", "bb:1", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
