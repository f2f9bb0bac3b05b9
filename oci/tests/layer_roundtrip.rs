//! Layer create → apply round trips (run as root: ownership, devices, trusted.* xattrs and
//! overlay mounts need it), determinism, overlayfs upper dirs and whiteouts, and checks of our
//! compressed output by the real gzip, pigz and zstd binaries.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use conformance::peers::{require, run_ok};
use oci::compression::{decompress, CompressOptions, Compression};
use oci::layer::{self, ApplyMode, CreateOptions, LayerInfo, SourceKind};
use oci::Digest;

// ---------------------------------------------------------------------------------------------
// Helpers

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {path:?}");
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                c.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0, "getxattr {path:?}");
        value.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {path:?}");
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn mknod(path: &Path, kind: libc::mode_t, perm: libc::mode_t, major: u32, minor: u32) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let rc = unsafe { libc::mknod(p.as_ptr(), kind | perm, libc::makedev(major, minor)) };
    assert_eq!(rc, 0, "mknod {path:?}: {}", std::io::Error::last_os_error());
}

/// Everything a layer must preserve about one file.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Option<i64>,
    rdev: u64,
    link: Option<PathBuf>,
    content: Option<Digest>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in sorted order) sharing this node's inode, for hardlinks.
    same_inode_as: Option<String>,
}

/// The tree below `root` (root excluded), keyed by relative path.
fn snapshot(root: &Path, dir_mtimes: bool) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.push(p.clone());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut map = BTreeMap::new();
    for p in paths {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let same_inode_as = if !ft.is_dir() && md.nlink() > 1 {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            (first != &rel).then(|| first.clone())
        } else {
            None
        };
        let content = ft.is_file().then(|| {
            let mut d = oci::Digester::new(oci::Algorithm::Sha256);
            std::io::copy(&mut File::open(&p).unwrap(), &mut d).unwrap();
            d.finish()
        });
        map.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_dir() { 0 } else { md.size() },
                mtime: (dir_mtimes || !ft.is_dir()).then(|| md.mtime()),
                rdev: md.rdev(),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                content,
                xattrs: xattrs(&p),
                same_inode_as,
            },
        );
    }
    map
}

fn assert_same_tree(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    for (path, node) in expected {
        match actual.get(path) {
            Some(got) => assert_eq!(got, node, "attributes of {path} differ"),
            None => panic!("{path} is missing after apply"),
        }
    }
    for path in actual.keys() {
        assert!(expected.contains_key(path), "{path} appeared after apply");
    }
}

/// A v2 file capability granting cap_net_bind_service, effective (linux/capability.h
/// struct vfs_cap_data).
fn capability_xattr() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // data[0].permitted: CAP_NET_BIND_SERVICE
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    v
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 3 == 0 {
                x as u8
            } else {
                b"layer data "[i % 11]
            }
        })
        .collect()
}

/// A source tree with every kind of file and attribute a layer must carry.
fn build_rich_tree(root: &Path) {
    let long_dir = root.join("d".repeat(120));
    fs::create_dir_all(long_dir.join("e".repeat(90)).join("f".repeat(90))).unwrap();
    fs::write(
        long_dir
            .join("e".repeat(90))
            .join("f".repeat(90))
            .join("g".repeat(100)),
        b"deep",
    )
    .unwrap();

    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("usr/bin/suid"), b"#!/bin/sh\n").unwrap();
    fs::write(root.join("usr/bin/sgid"), b"#!/bin/sh\n").unwrap();
    fs::write(root.join("usr/bin/ping"), b"ping binary").unwrap();
    fs::write(root.join("usr/bin/empty"), b"").unwrap();
    fs::write(root.join("big.bin"), pseudo_random(3 * 1024 * 1024 + 7, 1)).unwrap();
    lchown(&root.join("usr/bin/suid"), 0, 0);
    lchown(&root.join("usr/bin/sgid"), 1234, 5678);
    lchown(&root.join("usr/bin/ping"), 3_000_000, 4_000_000); // beyond ustar's octal ids
    fs::set_permissions(
        root.join("usr/bin/suid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(
        root.join("usr/bin/sgid"),
        fs::Permissions::from_mode(0o2711),
    )
    .unwrap();
    fs::set_permissions(
        root.join("usr/bin/empty"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    set_xattr(
        &root.join("usr/bin/ping"),
        "security.capability",
        &capability_xattr(),
    );
    set_xattr(&root.join("usr/bin/ping"), "user.comment", b"hello");
    set_xattr(
        &root.join("usr/bin/ping"),
        "trusted.note",
        b"\x00\x01binary\xff",
    );
    set_xattr(&root.join("usr"), "user.dir", b"on a dir");

    fs::create_dir(root.join("dev")).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR, 0o666, 1, 3);
    mknod(&root.join("dev/loop9"), libc::S_IFBLK, 0o660, 7, 9);
    mknod(&root.join("dev/fifo"), libc::S_IFIFO, 0o644, 0, 0);
    lchown(&root.join("dev/loop9"), 0, 6);

    symlink("../usr/bin/ping", root.join("dev/rel-link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("x".repeat(150), root.join("long-target-link")).unwrap(); // dangling, PAX linkpath
    lchown(&root.join("abs-link"), 42, 43);

    fs::write(root.join("hard-a"), b"shared inode").unwrap();
    fs::hard_link(root.join("hard-a"), root.join("usr/hard-b")).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("hard-c")).unwrap();
    fs::hard_link(root.join("dev/null"), root.join("dev/null-link")).unwrap();

    // mtimes last, children before parents.
    let mut all = Vec::new();
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                collect(&p, out);
            }
        }
    }
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000);
    }
}

fn create_to_file(src: &Path, kind: SourceKind, opts: &CreateOptions, out: &Path) -> LayerInfo {
    let mut file = File::create(out).unwrap();
    let info = layer::create(src, kind, opts, &mut file).unwrap();
    file.sync_all().unwrap();
    info
}

fn gzip_opts(threads: usize) -> CreateOptions {
    CreateOptions {
        compression: Compression::Gzip,
        compress: CompressOptions {
            level: None,
            threads,
        },
        source_date_epoch: None,
    }
}

fn tar_entries(blob: &Path, compression: Compression) -> Vec<(String, tar::Header)> {
    let reader = decompress(File::open(blob).unwrap(), compression).unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().clone(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Round trips and determinism

#[test]
fn round_trip_preserves_every_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    // Sockets cannot be stored in a tar: skipped, as Docker and BuildKit do.
    let _socket = std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
    let mut expected = snapshot(&src, true);
    assert_eq!(expected.remove("socket").map(|n| n.kind), Some("other"));

    for (compression, threads) in [
        (Compression::Gzip, 3),
        (Compression::Gzip, 1),
        (Compression::Zstd, 2),
        (Compression::None, 1),
    ] {
        let blob = tmp.path().join(format!("layer-{compression:?}-{threads}"));
        let opts = CreateOptions {
            compression,
            compress: CompressOptions {
                level: None,
                threads,
            },
            source_date_epoch: None,
        };
        let info = create_to_file(&src, SourceKind::Directory, &opts, &blob);
        assert_eq!(info.size, fs::metadata(&blob).unwrap().len());
        let mut blob_digest = oci::Digester::new(oci::Algorithm::Sha256);
        std::io::copy(&mut File::open(&blob).unwrap(), &mut blob_digest).unwrap();
        assert_eq!(blob_digest.finish(), info.digest);

        let target = tmp.path().join(format!("target-{compression:?}-{threads}"));
        fs::create_dir(&target).unwrap();
        let stats = layer::apply(
            File::open(&blob).unwrap(),
            compression,
            &target,
            ApplyMode::Merged,
        )
        .unwrap();
        assert_eq!(stats.diff_id, info.diff_id, "{compression:?}");
        assert_eq!(stats.uncompressed_size, info.uncompressed_size);
        assert!(stats.bytes >= 3 * 1024 * 1024);
        assert_same_tree(&expected, &snapshot(&target, true));
    }
}

#[test]
fn tar_is_deterministic_and_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    let a = create_to_file(
        &src,
        SourceKind::Directory,
        &gzip_opts(2),
        &tmp.path().join("a"),
    );
    let b = create_to_file(
        &src,
        SourceKind::Directory,
        &gzip_opts(3),
        &tmp.path().join("b"),
    );
    assert_eq!(a, b, "same tree, same digests, whatever the thread count");

    // Header conventions: sorted depth-first, parents first, empty user/group names.
    let entries = tar_entries(&tmp.path().join("a"), Compression::Gzip);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for (i, (name, header)) in entries.iter().enumerate() {
        assert_eq!(header.username_bytes(), Some(&b""[..]), "{name}");
        assert_eq!(header.groupname_bytes(), Some(&b""[..]), "{name}");
        if let Some(parent) = name.trim_end_matches('/').rsplit_once('/').map(|(p, _)| p) {
            let pos = names
                .iter()
                .position(|n| *n == format!("{parent}/"))
                .unwrap();
            assert!(pos < i, "{parent}/ must come before {name}");
        }
    }
    assert!(
        names.windows(2).all(|w| w[0] != w[1]),
        "no duplicate entries"
    );
    assert!(names.contains(&"usr/hard-b"));
    let hard = entries
        .iter()
        .filter(|(_, h)| h.entry_type().is_hard_link())
        .count();
    assert_eq!(
        hard, 3,
        "hard-c, usr/hard-b and dev/null-link are hardlink entries"
    );

    // SOURCE_DATE_EPOCH: nothing newer than it; older files keep their time.
    let epoch = 1_600_010_000;
    let opts = CreateOptions {
        source_date_epoch: Some(epoch),
        ..gzip_opts(2)
    };
    let c = create_to_file(&src, SourceKind::Directory, &opts, &tmp.path().join("c"));
    assert_ne!(c.diff_id, a.diff_id);
    let mtimes: Vec<u64> = tar_entries(&tmp.path().join("c"), Compression::Gzip)
        .iter()
        .filter(|(_, h)| !h.entry_type().is_pax_local_extensions())
        .map(|(_, h)| h.mtime().unwrap())
        .collect();
    assert!(mtimes.iter().all(|m| *m <= epoch));
    assert!(mtimes.iter().any(|m| *m < epoch) && mtimes.contains(&epoch));

    // Touching a file's atime changes nothing.
    let mut f = File::open(src.join("big.bin")).unwrap();
    f.read_exact(&mut [0u8; 16]).unwrap();
    let again = create_to_file(
        &src,
        SourceKind::Directory,
        &gzip_opts(2),
        &tmp.path().join("d"),
    );
    assert_eq!(again, a);
}

// ---------------------------------------------------------------------------------------------
// Compressed output checked by the real tools

#[test]
fn parallel_gzip_output_passes_gzip_pigz_and_flate2() {
    let gzip = require("gzip");
    let pigz = require("pigz");
    let tar_bin = require("tar");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..6 {
        fs::write(
            src.join(format!("f{i}")),
            pseudo_random(1024 * 1024 + i * 4099, i as u32),
        )
        .unwrap();
    }
    let blob = tmp.path().join("layer.tar.gz");
    let info = create_to_file(&src, SourceKind::Directory, &gzip_opts(4), &blob);

    run_ok(Command::new(&gzip).arg("-t").arg(&blob)).unwrap();
    run_ok(Command::new(&pigz).arg("-t").arg(&blob)).unwrap();
    let listing = run_ok(Command::new(&tar_bin).arg("-tzf").arg(&blob)).unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout).lines().count(), 6);

    // One member: a single-member decoder sees the whole tar, and its hash is the diff_id.
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(File::open(&blob).unwrap())
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain.len() as u64, info.uncompressed_size);
    assert_eq!(Digest::sha256_of(&plain), info.diff_id);

    // gzip -d agrees byte for byte.
    let out = run_ok(Command::new(&gzip).arg("-dc").arg(&blob)).unwrap();
    assert_eq!(Digest::sha256_of(&out.stdout), info.diff_id);
}

#[test]
fn zstd_layers_round_trip_and_pass_zstd() {
    let zstd_bin = require("zstd");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    let blob = tmp.path().join("layer.tar.zst");
    let opts = CreateOptions {
        compression: Compression::Zstd,
        compress: CompressOptions {
            level: Some(5),
            threads: 2,
        },
        source_date_epoch: None,
    };
    let info = create_to_file(&src, SourceKind::Directory, &opts, &blob);
    run_ok(Command::new(&zstd_bin).arg("-t").arg(&blob)).unwrap();
    let out = run_ok(Command::new(&zstd_bin).arg("-dc").arg(&blob)).unwrap();
    assert_eq!(Digest::sha256_of(&out.stdout), info.diff_id);
}

#[test]
fn layers_made_by_gnu_tar_and_pigz_apply() {
    let tar_bin = require("tar");
    let pigz = require("pigz");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    // GNU tar records hardlinks of regular files only: a hardlinked device would come back as
    // two devices, so that one case is left out here.
    fs::remove_file(src.join("dev/null-link")).unwrap();
    set_mtime(&src.join("dev"), 1_600_000_000);
    let blob = tmp.path().join("gnu.tar.gz");
    let script = format!(
        "{tar} --xattrs --xattrs-include='*' --numeric-owner -C {src} -cf - . | {pigz} -p2 > {out}",
        tar = tar_bin.display(),
        src = src.display(),
        pigz = pigz.display(),
        out = blob.display()
    );
    run_ok(Command::new("sh").arg("-c").arg(&script)).unwrap();
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    layer::apply(
        File::open(&blob).unwrap(),
        Compression::Gzip,
        &target,
        ApplyMode::Merged,
    )
    .unwrap();
    // GNU tar stores the root as `./`: its attributes go onto the target itself.
    assert_same_tree(&snapshot(&src, true), &snapshot(&target, true));

    // Multi-member gzip.
    let twice = tmp.path().join("two-members.gz");
    let mut data = fs::read(&blob).unwrap();
    let mut second = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    second.write_all(&[0u8; 1024]).unwrap();
    data.extend(second.finish().unwrap());
    fs::write(&twice, &data).unwrap();
    let target2 = tmp.path().join("target2");
    fs::create_dir(&target2).unwrap();
    layer::apply(
        File::open(&twice).unwrap(),
        Compression::Gzip,
        &target2,
        ApplyMode::Merged,
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// overlayfs upper dirs and whiteouts

/// An overlay mount that is unmounted when dropped.
struct OverlayMount {
    merged: PathBuf,
}

impl OverlayMount {
    fn mount(lowers: &[&Path], upper: Option<(&Path, &Path)>, merged: &Path) -> OverlayMount {
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut opts = format!("lowerdir={lowerdir}");
        if let Some((upper, work)) = upper {
            opts += &format!(",upperdir={},workdir={}", upper.display(), work.display());
        }
        run_ok(
            Command::new(require("mount"))
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(merged),
        )
        .unwrap();
        OverlayMount {
            merged: merged.to_path_buf(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

fn mkdirs(root: &Path, dirs: &[&str]) {
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}

#[test]
fn overlay_upper_dir_becomes_whiteouts_and_applies_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    for d in [
        "lower",
        "upper",
        "work",
        "merged",
        "base-merged",
        "base-layer",
        "diff-layer",
        "view",
    ] {
        fs::create_dir(p(d)).unwrap();
    }
    let lower = p("lower");
    mkdirs(&lower, &["etc/app.d", "bin/tools", "var/cache"]);
    fs::write(lower.join("etc/app-config"), b"old").unwrap();
    fs::write(lower.join("etc/app.d/a.cfg"), b"a").unwrap();
    fs::write(lower.join("bin/my-app"), b"app").unwrap();
    fs::write(lower.join("bin/tools/tool-one"), b"tool").unwrap();
    fs::write(lower.join("var/cache/junk"), b"junk").unwrap();

    // A RUN step's changes, made through a real overlay mount.
    let expected_view;
    {
        let m = OverlayMount::mount(&[&lower], Some((&p("upper"), &p("work"))), &p("merged"));
        let merged = &m.merged;
        fs::remove_file(merged.join("etc/app-config")).unwrap();
        fs::remove_dir_all(merged.join("bin")).unwrap();
        fs::create_dir(merged.join("bin")).unwrap(); // recreated: an opaque dir
        fs::write(merged.join("bin/new-app"), b"new").unwrap();
        fs::remove_dir_all(merged.join("var/cache")).unwrap();
        fs::write(merged.join("etc/app.d/a.cfg"), b"changed").unwrap();
        fs::write(merged.join("added"), b"added").unwrap();
        expected_view = snapshot(merged, false);
    }

    let base = create_to_file(&lower, SourceKind::Directory, &gzip_opts(2), &p("base.tgz"));
    let diff = create_to_file(
        &p("upper"),
        SourceKind::OverlayUpper,
        &gzip_opts(2),
        &p("diff.tgz"),
    );
    assert_ne!(base.diff_id, diff.diff_id);

    let entries = tar_entries(&p("diff.tgz"), Compression::Gzip);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "etc/.wh.app-config",
        "bin/",
        "bin/.wh..wh..opq",
        "bin/new-app",
        "var/.wh.cache",
        "added",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let opq = names.iter().position(|n| *n == "bin/.wh..wh..opq").unwrap();
    assert_eq!(
        names[opq - 1],
        "bin/",
        "the opaque marker follows its directory"
    );
    for (name, header) in &entries {
        assert!(
            header.entry_type().is_file()
                || header.entry_type().is_dir()
                || header.entry_type().is_pax_local_extensions(),
            "{name}: only files and dirs in this diff"
        );
    }
    let mut archive = tar::Archive::new(
        decompress(File::open(p("diff.tgz")).unwrap(), Compression::Gzip).unwrap(),
    );
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for r in pax {
                assert!(
                    !r.unwrap().key().unwrap().contains("trusted.overlay"),
                    "overlay xattrs leaked"
                );
            }
        }
    }

    // (a) merged: base then diff onto one directory gives the overlay's view.
    let target = p("base-merged");
    layer::apply(
        File::open(p("base.tgz")).unwrap(),
        Compression::Gzip,
        &target,
        ApplyMode::Merged,
    )
    .unwrap();
    layer::apply(
        File::open(p("diff.tgz")).unwrap(),
        Compression::Gzip,
        &target,
        ApplyMode::Merged,
    )
    .unwrap();
    assert_same_tree(&expected_view, &snapshot(&target, false));

    // (b) overlay layer dirs: each layer alone, then overlayfs stacks them into the same view.
    layer::apply(
        File::open(p("base.tgz")).unwrap(),
        Compression::Gzip,
        &p("base-layer"),
        ApplyMode::OverlayLayer,
    )
    .unwrap();
    layer::apply(
        File::open(p("diff.tgz")).unwrap(),
        Compression::Gzip,
        &p("diff-layer"),
        ApplyMode::OverlayLayer,
    )
    .unwrap();
    let wh = fs::symlink_metadata(p("diff-layer/etc/app-config")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a char device 0:0"
    );
    assert!(
        xattrs(&p("diff-layer/bin")).contains(&("trusted.overlay.opaque".into(), b"y".to_vec()))
    );
    let m = OverlayMount::mount(&[&p("diff-layer"), &p("base-layer")], None, &p("view"));
    assert_same_tree(&expected_view, &snapshot(&m.merged, false));
}

/// Builds an uncompressed tar from (name, kind, body) triples with the tar crate.
fn simple_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, body) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(body.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, *body).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn merged_whiteouts_hide_lower_layers_only() {
    use tar::EntryType::{Directory as D, Regular as F};
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path();
    let lower = simple_tar(&[
        ("a/", D, b""),
        ("a/file1", F, b"1"),
        ("a/b/", D, b""),
        ("a/b/c/", D, b""),
        ("a/b/c/bar", F, b"bar"),
        ("d/", D, b""),
        ("d/x", F, b"x"),
        ("keep", F, b"keep"),
        ("gone", F, b"gone"),
    ]);
    layer::apply(&lower[..], Compression::None, target, ApplyMode::Merged).unwrap();
    // layer.md's example: the opaque marker after the entries it must not hide.
    let upper = simple_tar(&[
        ("a/", D, b""),
        ("a/b/", D, b""),
        ("a/b/c/", D, b""),
        ("a/b/c/foo", F, b"foo"),
        ("a/.wh..wh..opq", F, b""),
        (".wh.d", F, b""),
        ("new", F, b"new"),
        (".wh.new", F, b""), // same layer: must not hide `new`
        (".wh.gone", F, b""),
        (".wh.never-existed", F, b""),
        ("missing-dir/.wh.x", F, b""),
    ]);
    let stats = layer::apply(&upper[..], Compression::None, target, ApplyMode::Merged).unwrap();
    assert_eq!(stats.entries, 11);
    let mut left: Vec<String> = Vec::new();
    for e in walk_names(target) {
        left.push(e);
    }
    assert_eq!(left, ["a", "a/b", "a/b/c", "a/b/c/foo", "keep", "new"]);
}

fn walk_names(root: &Path) -> Vec<String> {
    snapshot(root, false).into_keys().collect()
}
