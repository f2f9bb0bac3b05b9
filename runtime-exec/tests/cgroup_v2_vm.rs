//! cgroup v2 limits on a pure-v2 kernel. This host is hybrid (memory, pids and cpu are bound
//! to v1, so no cgroup2 mount can offer them), so the test boots a small qemu VM: Debian's
//! cloud kernel (scripts/fetch-vm-kernel.sh) with `cgroup_no_v1=all`, and an initramfs made
//! here from busybox, this very test binary and the shared libraries it has loaded. The VM's
//! init mounts cgroup2 on /sys/fs/cgroup and runs this binary again as the guest, which runs
//! the checks through the executor (CgroupChoice::Auto, so the v2 manager) and prints one
//! `RBUILD-VM-CHECK` line per check on the serial console; the host side parses them.
//!
//! Why an initramfs and not the host's / over virtio-9p: the cloud kernel has no 9p, and the
//! payload is one binary plus libc. KVM is used when the CPU offers it (vmx/svm in
//! /proc/cpuinfo; nested KVM in this Firecracker VM does not work), TCG otherwise.
//! `harness = false`: the guest and the executor's helper are re-execs of this binary.

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fork_bomb_is_stopped, memory_hog_is_reported_as_oom, set_resources, sh, status};
use runtime_exec::spec::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use runtime_exec::ExitStatus;

/// Set by the VM's init: this process is the guest side.
const GUEST_ENV: &str = "RBUILD_CGROUP_V2_GUEST";
const CHECK: &str = "RBUILD-VM-CHECK";
/// Checks the guest runs; the host expects an `ok` line for each.
const CHECKS: [(&str, fn()); 5] = [
    ("limits_are_written_as_the_spec_says", limits_are_written),
    (
        "devices_beyond_the_defaults_are_refused",
        devices_beyond_the_defaults_are_refused,
    ),
    (
        "memory_hog_is_reported_as_oom",
        memory_hog_is_reported_as_oom,
    ),
    ("fork_bomb_is_stopped_by_pids_max", || {
        fork_bomb_is_stopped("/sys/fs/cgroup")
    }),
    ("cgroups_are_removed_after_exit", cgroups_are_removed),
];
/// The whole VM run, boot included (TCG on a loaded 2-core machine).
const VM_TIMEOUT: Duration = Duration::from_secs(150);

fn main() {
    runtime_exec::run_helper_if_requested();
    if std::env::var_os(GUEST_ENV).is_some() {
        guest();
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let name = "cgroup_v2_limits_in_a_pure_v2_vm";
    if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
        common::finish(0, 0);
        return;
    }
    match std::panic::catch_unwind(host) {
        Ok(()) => {
            println!("test {name} ... ok");
            common::finish(1, 0);
        }
        Err(_) => {
            println!("test {name} ... FAILED");
            common::finish(0, 1);
        }
    }
}

// ---- the guest side, inside the VM ----------------------------------------------------

fn guest() {
    for (name, check) in CHECKS {
        let outcome = std::panic::catch_unwind(check);
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("{CHECK} {name} {verdict}");
        let _ = std::io::stdout().flush();
    }
}

fn limits_are_written() {
    let script = "cd /sys/fs/cgroup && cat memory.max memory.swap.max pids.max cpu.max cpu.weight";
    let o = sh("limits", script, |spec, _| {
        let memory = LinuxMemoryBuilder::default()
            .limit(64 * 1024 * 1024)
            .swap(96 * 1024 * 1024)
            .build()
            .unwrap();
        let cpu = LinuxCpuBuilder::default()
            .quota(50_000)
            .period(100_000u64)
            .shares(512u64)
            .build()
            .unwrap();
        let pids = LinuxPidsBuilder::default().limit(32).build().unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(memory)
            .cpu(cpu)
            .pids(pids)
            .build()
            .unwrap();
        set_resources(spec, resources);
    });
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    let values: Vec<&str> = o.stdout.lines().collect();
    // swap is memory+swap in the Spec, swap alone in memory.swap.max; the weight is runc's
    // conversion of 512 shares: 1 + (512 - 2) * 9999 / 262142 = 20.
    assert_eq!(
        values,
        ["67108864", "33554432", "32", "50000 100000", "20"],
        "{}",
        o.stderr
    );
}

/// docker's device rules hold on v2 too (an eBPF program on the container's cgroup): a node
/// made for /dev/kmsg (CAP_MKNOD is in the default set; writing to it needs no capability)
/// cannot be opened, /dev/zero can; with every device allowed, as `--privileged` asks, the
/// node opens.
fn devices_beyond_the_defaults_are_refused() {
    let script = "mknod /tmp/kmsg c 1 11 && echo made; \
                  echo rbuild-device-check > /tmp/kmsg && echo opened; \
                  head -c 3 /dev/zero | wc -c";
    let o = sh("devices", script, |_, _| {});
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    assert_eq!(o.stdout, "made\n3\n", "{}", o.stderr);
    assert!(o.stderr.contains("Operation not permitted"), "{}", o.stderr);

    let o = sh("privileged", script, |spec, _| {
        runtime_exec::defaults::make_privileged(spec).unwrap();
    });
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    assert_eq!(o.stdout, "made\nopened\n3\n", "{}", o.stderr);
}

/// After the runs above (and one more), /sys/fs/cgroup/rbuild holds no container's cgroup.
fn cgroups_are_removed() {
    let o = sh("gone", "true", |_, _| {});
    assert_eq!(status(&o), ExitStatus::Exited(0), "{}", o.stderr);
    let left: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup/rbuild")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

// ---- the host side: build the initramfs, boot, parse ----------------------------------

fn host() {
    let qemu = conformance::peers::require("qemu-system-x86_64");
    let busybox = conformance::peers::require("busybox");
    let cache = std::env::var_os("RBUILD_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rbuild-vm"));
    let kernel = cache.join("kernel/vmlinuz");
    assert!(
        kernel.is_file(),
        "no VM kernel at {}: run scripts/fetch-vm-kernel.sh (scripts/install-deps.sh does)",
        kernel.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("initramfs.cpio");
    build_initramfs(&initramfs, &busybox);

    let kvm = kvm_usable();
    let mut command = Command::new(&qemu);
    command
        .args(["-accel", if kvm { "kvm" } else { "tcg" }])
        .args(["-m", "1024", "-smp", "1", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args([
            "-append",
            "console=ttyS0 rdinit=/init panic=-1 quiet cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut vm = command.spawn().expect("start qemu");
    let stdout = vm.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let finished = loop {
        if let Some(status) = vm.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > VM_TIMEOUT {
            let _ = vm.kill();
            let _ = vm.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = reader.join().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = vm.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let log = console.join("\n");
    eprintln!(
        "VM ({}) ran {:.1}s",
        if kvm { "kvm" } else { "tcg" },
        started.elapsed().as_secs_f64()
    );
    for line in console.iter().filter(|l| l.starts_with("RBUILD-VM")) {
        eprintln!("  {line}");
    }
    assert!(
        finished.is_some(),
        "the VM did not finish within {VM_TIMEOUT:?}:\n{log}\n{stderr}"
    );
    for (name, _) in CHECKS {
        let line = console
            .iter()
            .find(|l| l.starts_with(&format!("{CHECK} {name} ")));
        assert_eq!(
            line.map(|l| l.trim_end().ends_with(" ok")),
            Some(true),
            "check {name} did not pass in the VM:\n{log}\n{stderr}"
        );
    }
}

/// KVM only when the CPU shows hardware virtualisation: /dev/kvm alone is not enough (here
/// it exists, but nested guests hang).
fn kvm_usable() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Path::new("/dev/kvm").exists()
        && flags
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The VM's init. Stage 1 runs from the initramfs, which pivot_root(2) refuses as the old
/// root: it copies the payload into a tmpfs and switch_roots there. Stage 2 mounts the
/// pure-v2 hierarchy and runs the guest, then powers off (-no-reboot makes qemu exit).
const INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin
if [ "$1" != stage2 ]; then
    /bin/busybox mkdir -p /newroot
    /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
    for d in /*; do
        case "$d" in /newroot|/dev|/proc|/sys|/root) ;; *) /bin/busybox cp -a "$d" /newroot/ ;; esac
    done
    exec /bin/busybox switch_root /newroot /init stage2
fi
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "RBUILD-VM controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
RBUILD_CGROUP_V2_GUEST=1 /rbuild-vm/test
echo "RBUILD-VM guest exited $?"
reboot -f
"#;

fn build_initramfs(out: &Path, busybox: &Path) {
    let mut cpio = Cpio::new(std::io::BufWriter::new(std::fs::File::create(out).unwrap()));
    // The kernel opens the init's stdio on /dev/console before any devtmpfs exists.
    cpio.dir("dev");
    cpio.header_rdev("dev/console", 0o020600, 0, (5, 1));
    cpio.dir("bin");
    cpio.file_from("bin/busybox", busybox, 0o755);
    cpio.data("init", INIT.as_bytes(), 0o755);
    cpio.dir("rbuild-vm");
    cpio.file_from("rbuild-vm/test", Path::new("/proc/self/exe"), 0o755);
    for library in loaded_libraries() {
        cpio.host_path(&library);
    }
    cpio.host_path(&interpreter());
    cpio.finish();
}

/// The shared objects this process has mapped (so exactly what the guest needs).
fn loaded_libraries() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut libraries: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libraries.sort();
    libraries.dedup();
    libraries
}

/// The ELF interpreter (PT_INTERP) of this binary, e.g. /lib64/ld-linux-x86-64.so.2.
fn interpreter() -> PathBuf {
    let elf = std::fs::read("/proc/self/exe").unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|ph| u32::from_le_bytes(elf[*ph..*ph + 4].try_into().unwrap()) == 3)
        .map(|ph| {
            let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let name = &elf[offset..offset + size];
            PathBuf::from(String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap()).as_ref())
        })
        .expect("this test binary has no ELF interpreter")
}

/// A newc ("070701") cpio archive, the format the kernel unpacks as initramfs
/// (kernel Documentation/driver-api/early-userspace/buffer-format.rst).
struct Cpio<W: Write> {
    out: W,
    inode: u32,
    added: Vec<PathBuf>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Cpio {
            out,
            inode: 1,
            added: Vec::new(),
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) {
        self.header_rdev(name, mode, size, (0, 0));
    }

    fn header_rdev(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) {
        let name_size = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode, mode, 0, 0, 1, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0
        );
        self.inode += 1;
        self.out.write_all(header.as_bytes()).unwrap();
        self.out.write_all(name.as_bytes()).unwrap();
        self.out.write_all(&[0]).unwrap();
        self.pad(110 + name_size as u64);
    }

    fn pad(&mut self, written: u64) {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding as usize]).unwrap();
    }

    fn dir(&mut self, name: &str) {
        self.header(name, 0o040755, 0);
        self.added.push(PathBuf::from("/").join(name));
    }

    fn data(&mut self, name: &str, data: &[u8], perm: u32) {
        self.header(name, 0o100000 | perm, data.len() as u64);
        self.out.write_all(data).unwrap();
        self.pad(data.len() as u64);
    }

    fn file_from(&mut self, name: &str, source: &Path, perm: u32) {
        let mut file = std::fs::File::open(source).unwrap();
        let size = file.metadata().unwrap().len();
        self.header(name, 0o100000 | perm, size);
        let copied = std::io::copy(&mut file, &mut self.out).unwrap();
        assert_eq!(
            copied,
            size,
            "{} changed while being copied",
            source.display()
        );
        self.pad(size);
    }

    fn symlink(&mut self, name: &str, target: &Path) {
        let target = target.as_os_str().as_encoded_bytes();
        self.header(name, 0o120777, target.len() as u64);
        self.out.write_all(target).unwrap();
        self.pad(target.len() as u64);
    }

    /// Adds a host file at the same path, with its parent directories and every symlink on
    /// the way (Debian's /lib → usr/lib, /lib64/ld-linux… → …), so the same path resolves.
    fn host_path(&mut self, path: &Path) {
        let mut current = PathBuf::from("/");
        let components: Vec<_> = path.components().skip(1).collect();
        for (i, component) in components.iter().enumerate() {
            current.push(component);
            if self.added.contains(&current) {
                continue;
            }
            let name = current
                .strip_prefix("/")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let meta = std::fs::symlink_metadata(&current).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&current).unwrap();
                self.symlink(&name, &target);
                self.added.push(current.clone());
                let resolved = current.parent().unwrap().join(&target);
                let rest: PathBuf = components[i + 1..].iter().collect();
                return self.host_path(&normalize(&resolved.join(rest)));
            }
            if meta.is_dir() {
                self.dir(&name);
            } else {
                self.file_from(&name, &current, 0o755);
                self.added.push(current.clone());
            }
        }
    }

    fn finish(mut self) {
        self.header("TRAILER!!!", 0, 0);
        self.out.flush().unwrap();
    }
}

/// `a/b/../c` → `a/c` (lexically: symlink targets here are plain relative paths).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
