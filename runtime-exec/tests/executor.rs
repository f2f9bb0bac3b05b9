//! The executor against the real kernel, as root: namespaces, mounts, cgroups (v1 on this
//! host, and the v2 manager on the host's cgroup2 mount), capabilities, exit statuses and
//! bad input. `harness = false`: `main` must first give the executor's helper its chance
//! (the helper is a re-exec of this very binary), then runs the tests one after another.

mod common;

use std::path::{Path, PathBuf};

use common::{
    busybox_rootfs, fork_bomb_is_stopped, memory_hog_is_reported_as_oom, run_spec, set_resources,
    sh, status, unique_id,
};

use runtime_exec::spec::{LinuxCpuBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, Spec};
use runtime_exec::{
    capabilities, defaults, CgroupChoice, Error, ExitStatus, OverlayRootfs, RunOptions,
    SetupErrorKind,
};

fn pid1_hostname_and_isolation() {
    let o = sh(
        "iso",
        "echo pid=$$; hostname; ps -o pid,comm | tail -n +2 | wc -l; ip -o link | cut -d: -f2",
        |spec, _| {
            spec.set_hostname(Some("box1".into()));
        },
    );
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "box1");
    // ps sees only the shell, ps itself and the pipeline's other members: no host process.
    let visible: usize = lines[2].parse().unwrap();
    assert!(visible <= 4, "host processes visible: {visible}");
    assert_eq!(&lines[3..], ["lo"], "a new network namespace has only lo");
}

/// Pids of host processes whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<i32> {
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

fn exit_codes_and_signals() {
    assert_eq!(
        status(&sh("exit", "exit 3", |_, _| {})),
        ExitStatus::Exited(3)
    );
    // A process killed by a signal: its shell sees 128+9.
    let o = sh("kill", "sh -c 'kill -9 $$'; echo inner=$?", |_, _| {});
    assert_eq!(o.stdout.trim(), "inner=137");
    // PID 1 itself killed by a signal (from outside: inside, PID 1 ignores SIGKILL).
    let marker = unique_id("killme");
    let script = format!("sleep 30; : {marker}");
    let killer = std::thread::spawn(move || {
        for _ in 0..200 {
            let pids: Vec<i32> = pids_with(&marker)
                .into_iter()
                .filter(|p| *p != std::process::id() as i32)
                .collect();
            // The helper's argv does not carry the script; only the container's sh does.
            if let Some(pid) = pids.first() {
                // SAFETY: kill(2) on the container process this test started.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    });
    let o = sh("kill1", &script, |_, _| {});
    assert!(killer.join().unwrap(), "container process not found");
    let killed = status(&o);
    assert_eq!(killed, ExitStatus::Signaled(9));
    assert_eq!(killed.code(), 137);
}

fn cpu_quota_and_shares_are_applied() {
    let script = "cd /sys/fs/cgroup/cpu && cat cpu.cfs_quota_us cpu.cfs_period_us cpu.shares";
    let o = sh("cpu", script, |spec, _| {
        let cpu = LinuxCpuBuilder::default()
            .quota(50_000)
            .period(100_000u64)
            .shares(512u64)
            .build()
            .unwrap();
        set_resources(
            spec,
            LinuxResourcesBuilder::default().cpu(cpu).build().unwrap(),
        );
    });
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        ["50000", "100000", "512"]
    );
}

fn proc_sys_is_read_only() {
    let o = sh("procsys", "echo 1 > /proc/sys/kernel/domainname", |_, _| {});
    assert_ne!(status(&o), ExitStatus::Exited(0));
    assert!(o.stderr.contains("Read-only file system"), "{}", o.stderr);
}

fn dropped_capability_is_absent() {
    let o = sh("caps", "grep CapEff /proc/self/status", |spec, _| {
        let set = capabilities::docker_set(&[], &["NET_RAW".into()]).unwrap();
        let mut process = spec.process().clone().unwrap();
        process.set_capabilities(Some(capabilities::linux_capabilities(&set)));
        spec.set_process(Some(process));
    });
    let hex = o.stdout.split_whitespace().nth(1).unwrap();
    let eff = u64::from_str_radix(hex, 16).unwrap();
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW still effective: {hex}");
    assert_ne!(eff & 1, 0, "CAP_CHOWN (docker default) missing: {hex}");
}

fn user_and_groups_from_the_image() {
    let o = sh("user", "id -u; id -g; id -G; umask", |spec, rootfs| {
        let (uid, gid, extra) = runtime_exec::user::resolve(rootfs, "www").unwrap();
        let mut process = spec.process().clone().unwrap();
        let mut user = process.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        user.set_additional_gids(Some(extra));
        user.set_umask(Some(0o027));
        process.set_user(user);
        spec.set_process(Some(process));
    });
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        ["33", "33", "33", "10", "0027"]
    );
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    assert!(matches!(
        runtime_exec::user::resolve(&rootfs, "nobody"),
        Err(Error::UnknownUser { .. })
    ));
}

fn bad_input_gets_clear_errors() {
    let missing = sh("nocmd", "unused", |spec, _| {
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["no-such-command".into()]));
        spec.set_process(Some(process));
    });
    let err = missing.result.unwrap_err();
    assert!(
        matches!(&err, Error::Setup(e) if e.kind == SetupErrorKind::CommandNotFound),
        "{err}"
    );
    assert_eq!(err.docker_exit_code(), 127);
    assert!(err.to_string().contains("no-such-command"), "{err}");

    let not_exec = sh("noexec", "unused", |spec, rootfs| {
        std::fs::write(rootfs.join("bin/data"), "not a program").unwrap();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["/bin/data".into()]));
        spec.set_process(Some(process));
    });
    let err = not_exec.result.unwrap_err();
    assert_eq!(err.docker_exit_code(), 126, "{err}");

    let no_rootfs = sh("norootfs", "true", |spec, rootfs| {
        let mut root = spec.root().clone().unwrap();
        root.set_path(rootfs.join("absent"));
        spec.set_root(Some(root));
    });
    assert!(matches!(no_rootfs.result, Err(Error::MissingRootfs(_))));

    let notify = sh("seccomp", "true", |spec, _| {
        set_seccomp(
            spec,
            serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
        );
    });
    assert!(
        matches!(&notify.result, Err(Error::Unsupported(m)) if m.contains("NOTIFY")),
        "{:?}",
        notify.result
    );

    let bad_mount = sh("badmount", "true", |spec, _| {
        let mut mounts = spec.mounts().clone().unwrap();
        let mount: runtime_exec::spec::Mount = serde_json::from_value(serde_json::json!({
            "destination": "/data", "type": "bind", "source": "/nonexistent/rbuild-src", "options": ["rbind"]
        }))
        .unwrap();
        mounts.push(mount);
        spec.set_mounts(Some(mounts));
    });
    let err = bad_mount.result.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/rbuild-src"), "{err}");
}

fn set_seccomp(spec: &mut Spec, profile: serde_json::Value) {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(serde_json::from_value(profile).unwrap()));
    spec.set_linux(Some(linux));
}

/// A small profile in the kernel: an ERRNO rule, a KILL_PROCESS rule, everything else
/// allowed; with and without no_new_privileges (the filter goes on at different points).
fn seccomp_profile_is_enforced() {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    });
    for no_new_privileges in [false, true] {
        let script = "mkdir /tmp/d; echo mkdir=$?; sh -c 'hostname x'; echo hostname=$?; \
                      grep Seccomp: /proc/self/status | tr -d '\t'";
        let o = sh("seccomp", script, |spec, _| {
            set_seccomp(spec, profile.clone());
            let mut process = spec.process().clone().unwrap();
            process.set_no_new_privileges(Some(no_new_privileges));
            spec.set_process(Some(process));
        });
        assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
        // 159 = 128 + SIGSYS: the kernel killed the process that called sethostname.
        assert_eq!(
            o.stdout, "mkdir=1\nhostname=159\nSeccomp:2\n",
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("Operation not permitted"), "{}", o.stderr);
    }
}

fn init_option_reaps_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    // The subshell exits at once, orphaning `sleep`, which dies soon after: only an init that
    // waits for everything can reap it. `ps` must show no zombie (state Z).
    let args = [
        "sh",
        "-c",
        "(sleep 0.2 &); sleep 1; echo pid=$$; ps -o stat | grep -c Z",
    ]
    .map(String::from);
    let spec = defaults::docker_spec(&rootfs, &args).unwrap();
    let mut options = RunOptions::new(unique_id("init"));
    options.init = true;
    let o = run_spec(&spec, &options);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines, ["pid=2", "0"], "{}", o.stderr);
}

fn overlay_rootfs_lives_only_in_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let (upper, work, target) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir(d).unwrap();
    }
    let script =
        "echo hi > /tmp/new; rm /etc/group; grep -q ' - overlay overlay .*volatile' /proc/self/mountinfo";
    let args = ["sh", "-c", script].map(String::from);
    let spec = defaults::docker_spec(&target, &args).unwrap();
    let mut options = RunOptions::new(unique_id("overlay"));
    options.overlay = Some(OverlayRootfs {
        lower: vec![lower.clone()],
        upper: upper.clone(),
        work: work.clone(),
        volatile: true,
    });
    let before = mount_count();
    let o = run_spec(&spec, &options);
    assert_eq!(
        status(&o),
        ExitStatus::Exited(0),
        "the rootfs is not a volatile overlay: {}",
        o.stderr
    );
    // The kernel marks a work directory that a volatile mount used (overlayfs.rst).
    assert!(work.join("work/incompat/volatile").exists());
    assert_eq!(
        std::fs::read_to_string(upper.join("tmp/new")).unwrap(),
        "hi\n"
    );
    assert!(
        lower.join("etc/group").exists(),
        "the lower layer was changed"
    );
    assert_eq!(mount_count(), before);
    assert!(
        std::fs::read_dir(&target).unwrap().next().is_none(),
        "overlay visible on the host"
    );
}

/// The host-side helpers (for callers that need the merged tree outside a container).
fn overlay_helpers_mount_and_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let lower = busybox_rootfs(dir.path());
    let top = dir.path().join("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/hostname"), "from-top\n").unwrap();
    let (upper, work, target) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir(d).unwrap();
    }
    let before = mount_count();
    runtime_exec::overlay::mount_overlay(&[lower.clone(), top], &upper, &work, &target).unwrap();
    let merged_host = std::fs::read_to_string(target.join("etc/hostname"));
    let merged_passwd = target.join("etc/passwd").exists();
    runtime_exec::overlay::unmount_overlay(&target).unwrap();
    assert_eq!(
        merged_host.unwrap(),
        "from-top\n",
        "the last layer is the top one"
    );
    assert!(merged_passwd, "lower layer not visible");
    assert_eq!(mount_count(), before);
    let bad = runtime_exec::overlay::mount_overlay(
        &[PathBuf::from("/a:b")],
        &upper,
        &dir.path().join("w2"),
        &target,
    );
    assert!(matches!(bad, Err(Error::InvalidSpec(_))));
}

fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

fn runs_leave_nothing_behind() {
    let before = mount_count();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let spec = defaults::docker_spec(&rootfs, &["true".to_string()]).unwrap();
    for i in 0..20 {
        let options = RunOptions::new(unique_id(&format!("leak{i}")));
        let o = run_spec(&spec, &options);
        assert_eq!(status(&o), ExitStatus::Exited(0));
    }
    assert_eq!(mount_count(), before, "mounts left in the host namespace");
    let leftovers: Vec<PathBuf> = ["memory", "pids", "cpu", "devices"]
        .iter()
        .filter_map(|c| std::fs::read_dir(Path::new("/sys/fs/cgroup").join(c)).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(&unique_id("leak")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The v2 manager on the host's cgroup2 mount. On this hybrid host that hierarchy has no
/// memory/pids/cpu controller (they are bound to v1): a run without limits must work and
/// clean up, a run with limits must be refused with a clear error.
fn cgroup_v2_manager_on_the_unified_hierarchy() {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    let root = if runtime_exec::cgroups::is_cgroup2(Path::new("/sys/fs/cgroup")) {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        unified
    };
    assert!(
        runtime_exec::cgroups::is_cgroup2(&root),
        "no cgroup2 hierarchy mounted at {root:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let args = ["sh", "-c", "cat /proc/self/cgroup | grep '^0::'"].map(String::from);
    let mut spec = defaults::docker_spec(&rootfs, &args).unwrap();
    let id = unique_id("v2");
    let mut options = RunOptions::new(&id);
    options.cgroups = CgroupChoice::V2 { root: root.clone() };
    let o = run_spec(&spec, &options);
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    // The container's cgroup namespace makes its own cgroup the root.
    assert_eq!(o.stdout.trim(), "0::/");
    assert!(
        !root.join("rbuild").join(&id).exists(),
        "v2 cgroup left behind"
    );

    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
    let limited = |spec: &mut Spec| {
        let pids = LinuxPidsBuilder::default().limit(10).build().unwrap();
        set_resources(
            spec,
            LinuxResourcesBuilder::default().pids(pids).build().unwrap(),
        );
    };
    limited(&mut spec);
    let o = run_spec(&spec, &options);
    if controllers.split_whitespace().any(|c| c == "pids") {
        assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    } else {
        let err = o.result.unwrap_err();
        assert!(err.to_string().contains("pids controller"), "{err}");
    }
    assert!(
        !root.join("rbuild").join(&id).exists(),
        "v2 cgroup left behind"
    );
}

fn main() {
    runtime_exec::run_helper_if_requested();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 16] = [
        (
            "overlay_helpers_mount_and_unmount",
            overlay_helpers_mount_and_unmount,
        ),
        (
            "cpu_quota_and_shares_are_applied",
            cpu_quota_and_shares_are_applied,
        ),
        ("pid1_hostname_and_isolation", pid1_hostname_and_isolation),
        ("exit_codes_and_signals", exit_codes_and_signals),
        (
            "memory_hog_is_reported_as_oom",
            memory_hog_is_reported_as_oom,
        ),
        ("fork_bomb_is_stopped_by_the_pids_limit", || {
            fork_bomb_is_stopped("/sys/fs/cgroup/pids")
        }),
        ("proc_sys_is_read_only", proc_sys_is_read_only),
        ("dropped_capability_is_absent", dropped_capability_is_absent),
        (
            "user_and_groups_from_the_image",
            user_and_groups_from_the_image,
        ),
        ("bad_input_gets_clear_errors", bad_input_gets_clear_errors),
        ("seccomp_profile_is_enforced", seccomp_profile_is_enforced),
        ("init_option_reaps_orphans", init_option_reaps_orphans),
        (
            "overlay_rootfs_lives_only_in_the_container",
            overlay_rootfs_lives_only_in_the_container,
        ),
        ("runs_leave_nothing_behind", runs_leave_nothing_behind),
        (
            "cgroup_v2_manager_on_the_unified_hierarchy",
            cgroup_v2_manager_on_the_unified_hierarchy,
        ),
        ("cgroups_path_is_validated", cgroups_path_is_validated),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    common::finish(passed, failed);
}

fn cgroups_path_is_validated() {
    let o = sh("cgpath", "true", |spec, _| {
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from("../escape")));
        spec.set_linux(Some(linux));
    });
    assert!(o.result.unwrap_err().to_string().contains("cgroupsPath"));
}
