//! Crafted hostile layers (built with the tar crate's raw header API, since its safe API refuses
//! to write such names) must never write, link or delete outside the target directory.
//!
//! Every case extracts into `TMP/target` next to a sentinel file and an `outside/` directory,
//! and checks afterwards that those, and the host's /etc, are untouched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci::compression::Compression;
use oci::layer::{self, ApplyMode, LayerError};
use tar::{EntryType, Header};

/// Tar bytes assembled header by header, names and link names written raw.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, name: &str, kind: EntryType, link: &str, body: &[u8]) -> Self {
        self.push(name, kind, link, body.len() as u64, body);
        self
    }

    fn file(self, name: &str, body: &[u8]) -> Self {
        self.entry(name, EntryType::Regular, "", body)
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Symlink, target, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Link, target, b"")
    }

    fn push(&mut self, name: &str, kind: EntryType, link: &str, declared: u64, body: &[u8]) {
        let mut h = Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_size(declared);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(body);
        let pad = (512 - body.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// A scratch directory: `target/` to extract into, and things that must survive beside it.
struct Scene {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::create_dir(dir.join("target")).unwrap();
        fs::create_dir(dir.join("outside")).unwrap();
        fs::write(dir.join("outside/secret"), b"secret").unwrap();
        fs::write(dir.join("sentinel"), b"sentinel").unwrap();
        Scene { _tmp: tmp, dir }
    }

    fn target(&self) -> PathBuf {
        self.dir.join("target")
    }

    fn apply(&self, tar: &RawTar) -> Result<layer::ApplyStats, LayerError> {
        let bytes = tar.bytes();
        layer::apply(
            &bytes[..],
            Compression::None,
            &self.target(),
            ApplyMode::Merged,
        )
    }

    /// Everything outside `target/`, plus the host files an escape would hit.
    fn outside_state(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut state = BTreeMap::new();
        fn walk(dir: &Path, skip: &Path, state: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p == skip {
                    continue;
                }
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    state.insert(p.clone(), None);
                    walk(&p, skip, state);
                } else {
                    state.insert(p.clone(), Some(fs::read(&p).unwrap()));
                }
            }
        }
        walk(&self.dir, &self.target(), &mut state);
        for host in ["/etc/passwd", "/etc/x", "/pwned", "/etc/pwned"] {
            state.insert(PathBuf::from(host), fs::read(host).ok());
        }
        state
    }

    /// Applies `layers` in order; every one must either fail or stay inside the target.
    fn run(&self, layers: &[RawTar]) -> Vec<Result<layer::ApplyStats, LayerError>> {
        let before = self.outside_state();
        let results = layers.iter().map(|l| self.apply(l)).collect();
        assert_eq!(
            before,
            self.outside_state(),
            "something outside the target changed"
        );
        results
    }
}

fn assert_refused(result: &Result<layer::ApplyStats, LayerError>, needle: &str) {
    match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error {msg:?} should mention {needle:?}"
            );
        }
        Ok(stats) => panic!("hostile layer was applied: {stats:?}"),
    }
}

#[test]
fn dot_dot_names_are_refused() {
    let scene = Scene::new();
    let r = scene.run(&[
        RawTar::default().file("../../etc/passwd", b"root::0:0::/:/bin/sh\n"),
        RawTar::default().file("../sentinel", b"overwritten"),
        RawTar::default().file("a/../../sentinel", b"overwritten"),
    ]);
    for result in &r {
        assert_refused(result, "climbs out");
    }
    let msg = r[0].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("../../etc/passwd"),
        "the error names the entry: {msg}"
    );
}

#[test]
fn absolute_names_land_inside_the_target() {
    let scene = Scene::new();
    let r = scene.run(&[RawTar::default().file("/etc/passwd", b"inside")]);
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert_eq!(
        fs::read(scene.target().join("etc/passwd")).unwrap(),
        b"inside"
    );
}

#[test]
fn symlinks_cannot_be_written_through() {
    let scene = Scene::new();
    let r = scene.run(&[
        RawTar::default()
            .symlink("evil", "/")
            .file("evil/etc/x", b"x"),
        RawTar::default()
            .symlink("up", "../../..")
            .file("up/sentinel", b"overwritten"),
        // Planted by one layer, used by the next: inside the target it dangles (an error naming
        // the entry, like Docker's "not a directory"), and once TARGET/outside exists it
        // leads there.
        RawTar::default().symlink("planted", "../outside"),
        RawTar::default().file("planted/secret", b"overwritten"),
        RawTar::default().entry("outside/", EntryType::Directory, "", b""),
        RawTar::default()
            .file("planted/secret", b"overwritten")
            .file("planted/new", b"new"),
        // A directory replaced by a symlink within one layer.
        RawTar::default()
            .entry("swap/", EntryType::Directory, "", b"")
            .symlink("swap", "/")
            .file("swap/pwned", b"pwned"),
        // A symlink at the final component is replaced, not followed.
        RawTar::default().symlink("passwd", "/etc/passwd"),
        RawTar::default().file("passwd", b"not the host's"),
    ]);
    assert_refused(&r[3], "planted/secret");
    for (i, result) in r.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert!(result.is_ok(), "layer {i}: {result:?}");
    }
    let t = scene.target();
    // Symlinks resolve as if the target were `/`.
    assert_eq!(fs::read(t.join("etc/x")).unwrap(), b"x");
    assert_eq!(fs::read(t.join("sentinel")).unwrap(), b"overwritten");
    assert_eq!(fs::read(t.join("outside/secret")).unwrap(), b"overwritten");
    assert_eq!(fs::read(t.join("pwned")).unwrap(), b"pwned");
    assert!(!fs::symlink_metadata(t.join("passwd"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hardlinks_must_point_inside() {
    let scene = Scene::new();
    let r = scene.run(&[
        RawTar::default().hardlink("l1", "/etc/passwd"),
        RawTar::default().hardlink("l2", "../../outside/secret"),
        RawTar::default().hardlink("l3", "../sentinel"),
        RawTar::default()
            .symlink("evil", "/")
            .hardlink("l4", "evil/etc/passwd"),
        RawTar::default()
            .symlink("out", "../outside")
            .hardlink("l5", "out/secret"),
    ]);
    // `/etc/passwd` means TARGET/etc/passwd, which does not exist.
    assert_refused(&r[0], "hardlink");
    assert_refused(&r[1], "climbs out");
    assert_refused(&r[2], "climbs out");
    assert_refused(&r[3], "hardlink");
    assert_refused(&r[4], "hardlink");
    let passwd = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&passwd), 1);

    // A hardlink to a file inside is fine.
    let ok = scene.run(&[RawTar::default()
        .file("real", b"data")
        .hardlink("link", "real")]);
    assert!(ok[0].is_ok());
    assert_eq!(fs::read(scene.target().join("link")).unwrap(), b"data");
}

#[test]
fn whiteouts_cannot_delete_outside() {
    let scene = Scene::new();
    let r = scene.run(&[
        RawTar::default().file(".wh...", b""),
        RawTar::default().file(".wh..", b""),
        RawTar::default().file(".wh.", b""),
        RawTar::default().file("../.wh.sentinel", b""),
        RawTar::default().file("../outside/.wh..wh..opq", b""),
        RawTar::default().symlink("evil", "../outside"),
        RawTar::default()
            .file("evil/.wh.secret", b"")
            .file("evil/.wh..wh..opq", b""),
        RawTar::default()
            .symlink("root", "/")
            .file("root/.wh.evil", b""),
    ]);
    assert_refused(&r[0], "whiteout");
    assert_refused(&r[1], "whiteout");
    assert_refused(&r[2], "whiteout");
    assert_refused(&r[3], "climbs out");
    assert_refused(&r[4], "climbs out");
    for result in &r[5..] {
        assert!(result.is_ok(), "{result:?}");
    }
    // `root/.wh.evil` resolved inside the target and removed the symlink `evil` there.
    assert!(fs::symlink_metadata(scene.target().join("evil")).is_err());
}

fn max_rss_bytes() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn huge_size_claim_is_streamed_not_allocated() {
    let scene = Scene::new();
    let mut tar = RawTar::default();
    tar.push(
        "huge",
        EntryType::Regular,
        "",
        10 << 30,
        b"only a few bytes",
    );
    let r = scene.run(&[tar]);
    match &r[0] {
        Err(LayerError::Truncated {
            entry,
            expected,
            actual,
        }) => {
            assert_eq!(entry, "huge");
            assert_eq!(*expected, 10 << 30);
            assert!(*actual < 4096);
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    assert!(r[0].as_ref().unwrap_err().to_string().contains("truncated"));
    assert!(
        max_rss_bytes() < 2 << 30,
        "a 10 GiB claim must not be allocated"
    );
}

#[test]
fn corrupt_streams_are_clear_errors() {
    let target = tempfile::tempdir().unwrap();
    let garbage = b"\x1f\x8bnot really gzip at all";
    let err = layer::apply(
        &garbage[..],
        Compression::Gzip,
        target.path(),
        ApplyMode::Merged,
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Read(_)), "{err:?}");
    let mut bad_sum = RawTar::default().file("f", b"x").bytes();
    bad_sum[148] ^= 1; // checksum field
    let err = layer::apply(
        &bad_sum[..],
        Compression::None,
        target.path(),
        ApplyMode::Merged,
    )
    .unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}
