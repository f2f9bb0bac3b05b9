//! Real clients against rregistry: skopeo (single image and `--all` of a multi-arch index),
//! the docker CLI with a private dockerd, podman, and containerd's `ctr`. Images are OCI layouts written here by
//! hand around Debian's static busybox, so that the pulled image can run.

use std::path::{Path, PathBuf};
use std::process::Command;

use conformance::peers::{require, run_ok, Containerd, Dockerd};
use conformance::registry_suite::Rregistry;
use oci::media_type as mt;
use oci::Digest;
use serde_json::{json, Value};

/// Writes a blob into an OCI layout and returns its digest.
fn put_blob(layout: &Path, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(digest.encoded()), data).expect("write blob");
    digest
}

/// An image whose one layer holds /bin/busybox and a marker file naming `arch`; returns the
/// manifest's bytes and digest.
fn write_image(layout: &Path, work: &Path, arch: &str) -> (Vec<u8>, Digest) {
    let root = work.join(format!("rootfs-{arch}"));
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    std::fs::write(root.join("arch"), arch).expect("marker");
    let tar = work.join(format!("layer-{arch}.tar"));
    run_ok(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .args(["bin", "arch"]),
    )
    .expect("tar layer");
    let diff_id = Digest::sha256_of(&std::fs::read(&tar).expect("read layer tar"));
    // Compressed, since skopeo gzips uncompressed layers on their way to a registry and the
    // round trip must keep every digest.
    run_ok(Command::new("gzip").args(["-n", "-f"]).arg(&tar)).expect("gzip layer");
    let layer = std::fs::read(work.join(format!("layer-{arch}.tar.gz"))).expect("read layer");
    let layer_digest = put_blob(layout, &layer);
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["cat", "/arch"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .expect("config");
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": mt::OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    }))
    .expect("manifest");
    let digest = put_blob(layout, &manifest);
    (manifest, digest)
}

fn write_index_json(layout: &Path, top: Value) {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let index = json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": [top]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index.json");
}

/// A single-image OCI layout tagged `v1`.
fn single_image_layout(work: &Path) -> (PathBuf, Digest) {
    let layout = work.join("single");
    let (manifest, digest) = write_image(&layout, work, "amd64");
    write_index_json(
        &layout,
        json!({"mediaType": mt::OCI_MANIFEST, "digest": digest, "size": manifest.len(),
               "annotations": {"org.opencontainers.image.ref.name": "v1"}}),
    );
    (layout, digest)
}

/// The manifest digest the layout's index.json tags `tag`.
fn tagged_digest(layout: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .expect("tagged manifest")
        .to_string()
}

fn skopeo() -> Command {
    Command::new(require("skopeo"))
}

#[test]
fn skopeo_round_trip_keeps_digests() {
    let work = tempfile::tempdir().expect("tempdir");
    let (layout, digest) = single_image_layout(work.path());
    let registry = Rregistry::start(true, "").expect("rregistry");
    let remote = format!("docker://{}/skopeo/round-trip:v1", registry.addr());
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(&remote),
    )
    .expect("skopeo push");
    let out = work.path().join("out");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(&remote)
            .arg(format!("oci:{}:v1", out.display())),
    )
    .expect("skopeo pull");
    assert_eq!(
        tagged_digest(&out, "v1"),
        digest.as_str(),
        "manifest digest changed in the round trip"
    );
    for entry in std::fs::read_dir(out.join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let original = layout.join("blobs/sha256").join(entry.file_name());
        assert_eq!(
            std::fs::read(entry.path()).expect("pulled"),
            std::fs::read(original).expect("pushed")
        );
    }
}

#[test]
fn skopeo_copy_all_keeps_a_multi_arch_index_whole() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("multi");
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (manifest, digest) = write_image(&layout, work.path(), arch);
        children.push(
            json!({"mediaType": mt::OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                             "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": children}),
    )
    .expect("index");
    let index_digest = put_blob(&layout, &index);
    write_index_json(
        &layout,
        json!({"mediaType": mt::OCI_INDEX, "digest": index_digest, "size": index.len(),
               "annotations": {"org.opencontainers.image.ref.name": "multi"}}),
    );
    let registry = Rregistry::start(true, "").expect("rregistry");
    let remote = format!("docker://{}/skopeo/multi:multi", registry.addr());
    run_ok(
        skopeo()
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(&remote),
    )
    .expect("skopeo copy --all push");
    let out = work.path().join("out");
    run_ok(
        skopeo()
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
            ])
            .arg(&remote)
            .arg(format!("oci:{}:multi", out.display())),
    )
    .expect("skopeo copy --all pull");
    assert_eq!(
        tagged_digest(&out, "multi"),
        index_digest.as_str(),
        "index digest changed"
    );
    for child in &children {
        let d: Digest = child["digest"]
            .as_str()
            .expect("digest")
            .parse()
            .expect("digest");
        assert!(
            out.join("blobs/sha256").join(d.encoded()).is_file(),
            "child {d} missing after copy --all"
        );
    }
    let pulled: std::collections::BTreeSet<_> = std::fs::read_dir(out.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let pushed: std::collections::BTreeSet<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(pulled, pushed, "blobs differ after copy --all");
}

#[test]
fn docker_pushes_pulls_and_runs_through_rregistry() {
    let work = tempfile::tempdir().expect("tempdir");
    let (layout, _) = single_image_layout(work.path());
    let archive = work.path().join("image.tar");
    run_ok(
        skopeo()
            .arg("copy")
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!(
                "docker-archive:{}:local/busybox:v1",
                archive.display()
            )),
    )
    .expect("make docker-archive");
    let registry = Rregistry::start(true, "").expect("rregistry");
    let dockerd = Dockerd::start().expect("dockerd");
    let image = format!("{}/docker/busybox:v1", registry.addr());
    run_ok(dockerd.docker().arg("load").arg("-i").arg(&archive)).expect("docker load");
    run_ok(dockerd.docker().args(["tag", "local/busybox:v1", &image])).expect("docker tag");
    run_ok(dockerd.docker().args(["push", &image])).expect("docker push");
    run_ok(dockerd.docker().args(["rmi", &image, "local/busybox:v1"])).expect("docker rmi");
    run_ok(dockerd.docker().args(["pull", &image])).expect("docker pull");
    let out = run_ok(
        dockerd
            .docker()
            .args(["run", "--rm", "--network", "host", &image]),
    )
    .expect("docker run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "amd64");
    // dockerd leaves its exec root's network-namespace mount behind, which keeps the helper
    // from removing its directory: unmount and remove what this test's daemon created.
    let dockerd_dir = dockerd.dir.path().to_path_buf();
    drop(dockerd);
    let netns = dockerd_dir.join("exec/netns/default");
    if netns.exists() {
        let _ = Command::new("umount").arg(&netns).status();
    }
    let _ = std::fs::remove_dir_all(&dockerd_dir);
}

#[test]
fn podman_pushes_and_pulls_through_rregistry() {
    let work = tempfile::tempdir().expect("tempdir");
    let (layout, _) = single_image_layout(work.path());
    let registry = Rregistry::start(true, "").expect("rregistry");
    let podman = || {
        let mut cmd = Command::new(require("podman"));
        cmd.arg("--root")
            .arg(work.path().join("podman-root"))
            .arg("--runroot")
            .arg(work.path().join("podman-run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        cmd
    };
    let image = format!("{}/podman/busybox:v1", registry.addr());
    // podman names images pulled from `oci:` after the (mixed-case) temporary path and
    // refuses it, so load a docker-archive instead.
    let archive = work.path().join("image.tar");
    run_ok(
        skopeo()
            .arg("copy")
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!(
                "docker-archive:{}:local/busybox:v1",
                archive.display()
            )),
    )
    .expect("make docker-archive");
    run_ok(podman().arg("load").arg("-i").arg(&archive)).expect("podman load");
    let id = run_ok(podman().args(["images", "-q", "--no-trunc"])).expect("podman images");
    let id = String::from_utf8_lossy(&id.stdout)
        .lines()
        .next()
        .expect("an image")
        .trim()
        .to_string();
    run_ok(podman().args(["tag", &id, &image])).expect("podman tag");
    run_ok(podman().args(["push", "--tls-verify=false", &image])).expect("podman push");
    run_ok(podman().args(["rmi", "--all", "--force"])).expect("podman rmi");
    run_ok(podman().args(["pull", "--tls-verify=false", &image])).expect("podman pull");
    let pulled =
        run_ok(podman().args(["images", "-q", "--no-trunc", &image])).expect("podman images");
    assert_eq!(
        String::from_utf8_lossy(&pulled.stdout).trim(),
        id,
        "image id changed through the registry"
    );
}

#[test]
fn containerd_pushes_and_pulls_through_rregistry() {
    let work = tempfile::tempdir().expect("tempdir");
    let (layout, digest) = single_image_layout(work.path());
    let registry = Rregistry::start(true, "").expect("rregistry");
    let containerd = Containerd::start().expect("containerd");
    let archive = work.path().join("single.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .arg("."),
    )
    .expect("tar the layout");
    let name = format!("{}/ctr/busybox", registry.addr());
    let image = format!("{name}:v1");
    run_ok(
        containerd
            .ctr()
            .args(["image", "import", "--base-name", &name])
            .arg(&archive),
    )
    .expect("ctr import");
    run_ok(
        containerd
            .ctr()
            .args(["image", "push", "--plain-http", &image]),
    )
    .expect("ctr push");
    run_ok(containerd.ctr().args(["image", "rm", "--sync", &image])).expect("ctr rm");
    run_ok(
        containerd
            .ctr()
            .args(["image", "pull", "--plain-http", &image]),
    )
    .expect("ctr pull");
    let listed = run_ok(containerd.ctr().args(["image", "ls"])).expect("ctr image ls");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&image) && l.contains(digest.as_str())),
        "{listed}"
    );
}
