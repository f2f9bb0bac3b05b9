//! Every case in conformance/dockerfiles built by rbuild and by BuildKit (Debian's dockerd,
//! `DOCKER_BUILDKIT=1 docker build --network host`) from the same base image must give the
//! same root filesystem and the same config, and BuildKit's image must run under rbuild.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{busybox_archive, ok, rbuild, ssh_agent};
use conformance::peers::{run_ok, Dockerd};
use oci::archive::ArchiveFormat;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/dockerfiles")
}

/// What is compared of one file: everything but timestamps.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: String,
    /// For the second and later names of a hardlinked file: the first name.
    hardlink_of: Option<String>,
}

fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut first_names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, content, size) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", String::new(), 0)
            } else if ft.is_symlink() {
                (
                    "symlink",
                    fs::read_link(&path).unwrap().to_string_lossy().into_owned(),
                    0,
                )
            } else if ft.is_file() {
                (
                    "file",
                    oci::Digest::sha256_of(&fs::read(&path).unwrap()).to_string(),
                    meta.len(),
                )
            } else {
                ("special", format!("rdev={}", meta.rdev()), 0)
            };
            let hardlink_of = if ft.is_file() && meta.nlink() > 1 {
                let first = first_names
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.clone());
                (first != &rel).then(|| first.clone())
            } else {
                None
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size,
                    content,
                    hardlink_of,
                },
            );
        }
    }
    out
}

/// Unpacks image `name` of the store at `root` into `dest`; returns its config.
fn unpack(root: &Path, name: &str, dest: &Path) -> oci::image::ImageConfig {
    let store = image_store::Store::open(root).unwrap();
    let image = store.resolve(name).unwrap();
    let (manifest, config, _) = store.image_config(&image).unwrap();
    fs::create_dir_all(dest).unwrap();
    for layer in &manifest.layers {
        let oci::media_type::Kind::Layer(c) = oci::media_type::kind(&layer.media_type) else {
            panic!("not a layer")
        };
        let blob = store.content().open_blob(&layer.digest).unwrap();
        oci::layer::apply(blob, c, dest, oci::layer::ApplyMode::Merged).unwrap();
    }
    config
}

/// The number of history entries of the image a case builds on: `base:1`, or the one its
/// `base-image` names.
fn base_history_len(root: &Path, case: &Path) -> usize {
    let base = read_lines(&case.join("base-image"))
        .into_iter()
        .next()
        .unwrap_or_else(|| "base:1".to_string());
    let store = image_store::Store::open(root).unwrap();
    let (_, config, _) = store.image_config(&store.resolve(&base).unwrap()).unwrap();
    config.history.len()
}

/// The history an image's build added to its base's (`base` entries), as what can be compared
/// between two builds made at different times: for each entry whether it made a layer, and
/// whether it has the time of the entry before it; last, whether the image's `created` is the
/// last entry's time.
fn history_shape(config: &oci::image::ImageConfig, base: usize) -> Vec<(bool, bool)> {
    let history = &config.history;
    let mut shape: Vec<(bool, bool)> = (base..history.len())
        .map(|i| {
            let same_time = history[i].created == history[i - 1].created;
            (history[i].empty_layer, same_time)
        })
        .collect();
    let newest = history.last().and_then(|h| h.created.as_ref());
    shape.push((false, config.created.as_ref() == newest));
    shape
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn dockerfile_cases_match_buildkit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let dockerd = Dockerd::start().expect("start dockerd");
    // The same base image in both.
    let base = busybox_archive(tmp.path(), "base:1", ArchiveFormat::Docker);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&base));
    run_ok(dockerd.docker().arg("load").arg("-i").arg(&base)).unwrap();

    // For the cases' `--ssh` ids: a real agent, with no key (the cases check the socket).
    let agent = tmp.path().join("agent.sock");
    let _agent = ssh_agent(&agent);

    let mut failures = Vec::new();
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let tag = format!("case-{name}:1");
        let mut flags: Vec<String> = Vec::new();
        for arg in read_lines(&case.join("build-args")) {
            flags.extend(["--build-arg".to_string(), arg]);
        }
        for target in read_lines(&case.join("target")) {
            flags.extend(["--target".to_string(), target]);
        }
        for id in read_lines(&case.join("ssh")) {
            flags.extend(["--ssh".to_string(), format!("{id}={}", agent.display())]);
        }
        for base in read_lines(&case.join("base-image")) {
            let file = case.join("Dockerfile.base");
            ok(rbuild(&root)
                .args(["build", "-q", "-t", &base, "-f"])
                .arg(&file)
                .arg(case));
            run_ok(
                dockerd
                    .docker()
                    .env("DOCKER_BUILDKIT", "1")
                    .args(["build", "--network", "host", "-q", "-t", &base, "-f"])
                    .arg(&file)
                    .arg(case),
            )
            .unwrap();
        }
        ok(rbuild(&root)
            .args(["build", "-q", "-t", &tag])
            .args(&flags)
            .arg(case));
        run_ok(
            dockerd
                .docker()
                .env("DOCKER_BUILDKIT", "1")
                .args(["build", "--network", "host", "-q", "-t", &tag])
                .args(&flags)
                .arg(case),
        )
        .unwrap();
        let saved = tmp.path().join(format!("{name}.docker.tar"));
        run_ok(dockerd.docker().args(["save", "-o"]).arg(&saved).arg(&tag)).unwrap();
        let theirs_root = tmp.path().join("buildkit-store");
        ok(rbuild(&theirs_root).args(["load", "-q", "-i"]).arg(&saved));
        // BuildKit's image runs on rbuild's overlay too (it may repeat a layer, for one).
        ok(rbuild(&theirs_root).args(["run", "--rm", "--entrypoint", "/bin/true", &tag]));

        let ours_dir = tmp.path().join(format!("{name}-rbuild"));
        let theirs_dir = tmp.path().join(format!("{name}-buildkit"));
        let ours_image = unpack(&root, &tag, &ours_dir);
        let theirs_image = unpack(&theirs_root, &tag, &theirs_dir);
        // The base image's single history entry, or a case's own base image's.
        let base_entries = base_history_len(&root, case);
        let (ours_shape, theirs_shape) = (
            history_shape(&ours_image, base_entries),
            history_shape(&theirs_image, base_entries),
        );
        if ours_shape != theirs_shape {
            failures.push(format!(
                "{name}: history (empty layer, same time as the entry before):\n  rbuild   {ours_shape:?}\n  buildkit {theirs_shape:?}"
            ));
        }
        let to_json = |c: oci::image::ImageConfig| {
            serde_json::to_value(c.config.unwrap_or_default()).unwrap()
        };
        let (ours_config, theirs_config) = (to_json(ours_image), to_json(theirs_image));
        let (ours, mut theirs) = (tree(&ours_dir), tree(&theirs_dir));
        for stub in read_lines(&case.join("old-buildkit-only"))
            .iter()
            .filter(|l| !l.starts_with('#'))
        {
            let removed = theirs.remove(stub.trim_start_matches('/'));
            assert!(
                removed.is_some_and(|e| e.kind == "dir"),
                "{name}: {stub} was expected in BuildKit's image"
            );
        }
        for (path, entry) in &theirs {
            match ours.get(path) {
                None => failures.push(format!(
                    "{name}: /{path} missing in rbuild's image ({entry:?})"
                )),
                Some(o) if o != entry => failures.push(format!(
                    "{name}: /{path} differs:\n  rbuild   {o:?}\n  buildkit {entry:?}"
                )),
                _ => {}
            }
        }
        for path in ours.keys().filter(|p| !theirs.contains_key(*p)) {
            failures.push(format!("{name}: /{path} only in rbuild's image"));
        }
        for key in [
            "Env",
            "Cmd",
            "Entrypoint",
            "WorkingDir",
            "User",
            "ExposedPorts",
            "Volumes",
            "Labels",
            "StopSignal",
            "Healthcheck",
            "OnBuild",
            "Shell",
        ] {
            if ours_config.get(key) != theirs_config.get(key) {
                failures.push(format!(
                    "{name}: config {key}: rbuild {:?}, buildkit {:?}",
                    ours_config.get(key),
                    theirs_config.get(key)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
