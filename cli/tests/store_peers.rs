//! The image store against the real tools users already have: dockerd (Debian's docker.io),
//! skopeo and umoci. Each peer is required: a missing one fails the test.

mod common;

use std::process::Command;

use common::{busybox_archive, inspect, ok, rbuild};
use conformance::peers::{require, run_ok, Dockerd};
use oci::archive::ArchiveFormat;

/// `rbuild save --format docker` is accepted by `docker load` and runs there; `docker save`
/// output loads into rbuild with identical layer digests and config.
#[test]
fn docker_load_and_save_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let dockerd = Dockerd::start().expect("start dockerd");

    let archive = busybox_archive(tmp.path(), "rbuild-test/busybox:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-i"]).arg(&archive));
    let ours = inspect(&root, "rbuild-test/busybox:1");
    let saved = tmp.path().join("docker-format.tar");
    ok(rbuild(&root)
        .args(["save", "--format", "docker", "-o"])
        .arg(&saved)
        .arg("rbuild-test/busybox:1"));

    let out = run_ok(dockerd.docker().arg("load").arg("-i").arg(&saved)).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: rbuild-test/busybox:1"));
    let docker_id = run_ok(dockerd.docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "rbuild-test/busybox:1",
    ]))
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&docker_id.stdout).trim(),
        ours["Id"].as_str().unwrap()
    );
    let run = run_ok(dockerd.docker().args([
        "run",
        "--rm",
        "--network",
        "host",
        "rbuild-test/busybox:1",
        "sh",
        "-c",
        "echo hello; id -u; ls /bin/sh",
    ]))
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello\n0\n/bin/sh\n");

    // An image docker made itself (a build step adds a layer and deletes a file).
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rbuild-test/busybox:1\nRUN echo hi > /hello && rm /bin/ash\nENV FOO=bar\n\
         LABEL a=1 org.opencontainers.image.version=2\nEXPOSE 80\nUSER 1000\n",
    )
    .unwrap();
    run_ok(
        dockerd
            .docker()
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--network", "host", "-q", "-t", "from-docker:2"])
            .arg(&ctx),
    )
    .unwrap();
    let docker_saved = tmp.path().join("from-docker.tar");
    run_ok(
        dockerd
            .docker()
            .args(["save", "-o"])
            .arg(&docker_saved)
            .arg("from-docker:2"),
    )
    .unwrap();
    ok(rbuild(&root).args(["load", "-i"]).arg(&docker_saved));
    let loaded = inspect(&root, "from-docker:2");
    let docker_view = run_ok(dockerd.docker().args(["image", "inspect", "from-docker:2"])).unwrap();
    let docker_view: serde_json::Value = serde_json::from_slice(&docker_view.stdout).unwrap();
    let docker_view = &docker_view[0];
    assert_eq!(
        loaded["Id"], docker_view["Id"],
        "same config bytes, same image ID"
    );
    assert_eq!(loaded["RootFS"]["Layers"], docker_view["RootFS"]["Layers"]);
    let layer_digests: Vec<&serde_json::Value> = loaded["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let docker_layers: Vec<&serde_json::Value> = docker_view["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        layer_digests, docker_layers,
        "docker save writes uncompressed layers, kept as they are"
    );
    // Sizes are the bytes of the image's files, as docker counts them (the RUN's layer holds
    // a whiteout and a 3-byte file), not of the blobs.
    assert_eq!(loaded["Size"], docker_view["Size"]);
    assert_eq!(loaded["Config"]["Env"], docker_view["Config"]["Env"]);
    assert_eq!(loaded["Config"]["Cmd"], docker_view["Config"]["Cmd"]);

    // `rbuild history` lists what `docker history` lists, in the same order, with the same
    // sizes.
    let created_by = |json_lines: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(json_lines)
            .lines()
            .map(|l| {
                let row = serde_json::from_str::<serde_json::Value>(l).unwrap();
                format!("{} {}", row["CreatedBy"], row["Size"])
            })
            .collect()
    };
    let ours =
        ok(rbuild(&root).args(["history", "--no-trunc", "--format", "json", "from-docker:2"]));
    let theirs = run_ok(dockerd.docker().args([
        "history",
        "--no-trunc",
        "--format",
        "{{json .}}",
        "from-docker:2",
    ]))
    .unwrap();
    assert_eq!(created_by(ours.as_bytes()), created_by(&theirs.stdout));

    // `--format` templates as scripts write them give what docker's give.
    for (command, template) in [
        (
            "inspect",
            "{{.Id}} {{index .RepoTags 0}} {{json .Config.Env}} {{.Config.Cmd}} {{.Size}} {{len .RootFS.Layers}}",
        ),
        // docker's typed structs: absent strings print "", nil maps `map[]`, nil slices `[]`,
        // a label the map lacks indexes to ""; variables.
        (
            "inspect",
            "{{.Config.User}}|{{.Config.WorkingDir}}|{{.Config.StopSignal}}|{{.Config.Entrypoint}}|{{.Config.Volumes}}|{{.Config.ExposedPorts}}|{{.Config.Healthcheck}}|{{.VirtualSize}}",
        ),
        (
            "inspect",
            r#"{{index .Config.Labels "org.opencontainers.image.version"}}|{{index .Config.Labels "nope"}}|{{range $k, $v := .Config.Labels}}{{$k}}={{$v}},{{end}}|{{$.Comment}}|{{.DockerVersion}}|{{.Container}}|{{.ContainerConfig.Cmd}}"#,
        ),
        ("images", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"),
        // (Not .ID: docker's classic builder left the intermediate images this one's rows name.)
        ("history", "{{.CreatedBy}}|{{.Size}}|{{.Comment}}"),
        // Tables as docker's tabwriter aligns them (columns at least 10 wide, the last cell
        // unpadded), `table` with or without a space, and docker's time formats.
        ("images", "table {{.Repository}}\\t{{.Tag}}\\t{{.Size}}\\t{{.CreatedAt}}"),
        ("history", "table{{.CreatedAt}}\\t{{.Size}}\\t{{.Comment}}"),
    ] {
        let ours = ok(rbuild(&root).args([command, "--format", template, "from-docker:2"]));
        let theirs =
            run_ok(dockerd.docker().args([command, "--format", template, "from-docker:2"])).unwrap();
        assert_eq!(ours, String::from_utf8_lossy(&theirs.stdout), "{command} --format {template}");
    }
    // docker's other flags that scripts use.
    for args in [
        &[
            "history",
            "-H=false",
            "--format",
            "table {{.CreatedSince}}\t{{.Size}}",
        ][..],
        &["inspect", "--type=image", "-f", "{{.Os}}/{{.Architecture}}"],
        &[
            "images",
            "--filter",
            "label=a=1",
            "--filter",
            "dangling=false",
            "-q",
        ],
        &[
            "images",
            "--filter",
            "reference=from-*:2",
            "--format",
            "{{.Repository}}",
        ],
    ] {
        let ours = ok(rbuild(&root).args(args).arg("from-docker:2"));
        let theirs = run_ok(dockerd.docker().args(args).arg("from-docker:2")).unwrap();
        assert_eq!(ours, String::from_utf8_lossy(&theirs.stdout), "{args:?}");
    }
}

/// `rbuild save --format oci` is accepted by skopeo and unpacked by umoci without warnings;
/// skopeo's own OCI output loads into rbuild.
#[test]
fn skopeo_and_umoci_read_our_oci_archives() {
    let skopeo = require("skopeo");
    let umoci = require("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let archive = busybox_archive(tmp.path(), "bb:oci", ArchiveFormat::Docker);
    ok(rbuild(&root).args(["load", "-i"]).arg(&archive));
    let manifest_digest = inspect(&root, "bb:oci")["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let ours = tmp.path().join("ours.tar");
    ok(rbuild(&root)
        .args(["save", "--format", "oci", "-o"])
        .arg(&ours)
        .arg("bb:oci"));

    let layout = tmp.path().join("layout");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(format!("oci-archive:{}", ours.display()))
            .arg(format!("oci:{}:copied", layout.display())),
    )
    .unwrap();
    let raw = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:copied", layout.display())),
    )
    .unwrap();
    assert_eq!(
        oci::Digest::sha256_of(&raw.stdout).as_str(),
        manifest_digest,
        "skopeo kept our manifest bytes"
    );

    let bundle = tmp.path().join("bundle");
    let unpack = run_ok(
        Command::new(&umoci)
            .args(["unpack", "--image"])
            .arg(format!("{}:copied", layout.display()))
            .arg(&bundle),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&unpack.stderr).to_lowercase();
    assert!(!stderr.contains("warn"), "umoci warned: {stderr}");
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
        std::path::Path::new("/bin/busybox")
    );

    // skopeo writes an OCI archive; rbuild loads it with the same manifest.
    let theirs = tmp.path().join("theirs.tar");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(format!("oci:{}:copied", layout.display()))
            .arg(format!(
                "oci-archive:{}:docker.io/library/fromskopeo:3",
                theirs.display()
            )),
    )
    .unwrap();
    let root2 = tmp.path().join("store2");
    assert_eq!(
        ok(rbuild(&root2).args(["load", "-i"]).arg(&theirs)),
        "Loaded image: fromskopeo:3\n"
    );
    assert_eq!(
        inspect(&root2, "fromskopeo:3")["Descriptor"]["digest"],
        manifest_digest.as_str()
    );
    // And a docker-archive written by skopeo.
    let docker_archive = tmp.path().join("skopeo-docker.tar");
    run_ok(
        Command::new(&skopeo)
            .arg("copy")
            .arg(format!("oci:{}:copied", layout.display()))
            .arg(format!(
                "docker-archive:{}:skopeo/da:1",
                docker_archive.display()
            )),
    )
    .unwrap();
    ok(rbuild(&root2).args(["load", "-i"]).arg(&docker_archive));
    assert_eq!(
        inspect(&root2, "skopeo/da:1")["Id"],
        inspect(&root, "bb:oci")["Id"]
    );
}

/// An image rbuild built loads and runs in podman, from both archive formats.
#[test]
fn podman_runs_rbuild_built_images() {
    let podman = require("podman");
    require("runc");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&base));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN echo built-by-rbuild > /msg\nCMD [\"cat\", \"/msg\"]\n",
    )
    .unwrap();
    ok(rbuild(&root)
        .args(["build", "-q", "-t", "rbuild-built:1"])
        .arg(&ctx));
    // A private podman: its own storage, cgroupfs, and no default ulimits (this sandbox may not
    // raise limits); Debian's crun refuses cgroup-hybrid hosts, so runc runs the container.
    let conf = tmp.path().join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let podman_cmd = || {
        let mut cmd = Command::new(&podman);
        cmd.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
                "runc",
            ]);
        cmd
    };
    for format in ["oci", "docker"] {
        let archive = tmp.path().join(format!("built-{format}.tar"));
        ok(rbuild(&root)
            .args(["save", "--format", format, "-o"])
            .arg(&archive)
            .arg("rbuild-built:1"));
        run_ok(podman_cmd().args(["load", "-q", "-i"]).arg(&archive)).unwrap();
        let out = run_ok(podman_cmd().args(["run", "--rm", "--network", "host", "rbuild-built:1"]))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "built-by-rbuild\n",
            "{format}"
        );
        run_ok(podman_cmd().args(["rmi", "-f", "rbuild-built:1"])).unwrap();
    }
    // Podman's overlay storage leaves its mounts to the namespace that made them.
    let _ = podman_cmd().args(["system", "reset", "-f"]).output();
}
