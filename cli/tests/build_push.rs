//! `rbuild build --push` and `--output type=registry` against CNCF distribution, checked with
//! skopeo: the registry serves the manifest rbuild built, byte for byte.

mod common;

use std::fs;
use std::process::Command;

use common::{busybox_archive, inspect, ok, rbuild};
use conformance::peers::{require, run_ok, DockerRegistry};
use oci::archive::ArchiveFormat;

#[test]
fn build_and_push() {
    let skopeo = require("skopeo");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&base));
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN echo pushed > /pushed\n",
    )
    .unwrap();

    // The manifest digest of `local` in the store and of `remote` as the registry serves it.
    let local_digest = |local: &str| {
        inspect(&root, local)["Descriptor"]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let remote_digest = |remote: &str| {
        let raw = run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{remote}")),
        )
        .unwrap();
        oci::Digest::sha256_of(&raw.stdout).to_string()
    };
    for (tag, flag) in [
        ("via-push:1", "--push"),
        ("via-output:1", "--output=type=registry"),
    ] {
        let name = format!("{}/app/{tag}", registry.addr());
        let out = ok(rbuild(&root)
            .args(["build", "-q", "-t", &name, flag])
            .arg(&ctx));
        assert!(out.contains("digest: sha256:"), "{out}");
        assert_eq!(remote_digest(&name), local_digest(&name));
    }
    // buildx's way: the names in the output (quoted, as CSV), no -t; `--load` is accepted
    // (the image is in the local store anyway).
    let (first, second) = (
        format!("{}/app/via-name:1", registry.addr()),
        format!("{}/app/via-name:2", registry.addr()),
    );
    let output = format!("--output=type=image,\"name={first},{second}\",push=true");
    ok(rbuild(&root)
        .args(["build", "-q", "--load", &output])
        .arg(&ctx));
    assert_eq!(remote_digest(&second), local_digest(&first));

    // Without a name there is nowhere to push.
    let out = rbuild(&root)
        .args(["build", "--push"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t"));
}

/// Images the store lacks are pulled from their registry, as `docker build` does: once per
/// build however many stages name them, not again once stored, and again with `--pull` (which
/// picks up a new image under the same tag). A missing one fails on its line. `rbuild run`
/// pulls what it lacks as `docker run` does.
#[test]
fn base_images_are_pulled_from_their_registry() {
    let skopeo = require("skopeo");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    let remote = format!("{}/base/bb:1", registry.addr());
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", base.display()))
            .arg(format!("docker://{remote}")),
    )
    .unwrap();
    let root = tmp.path().join("store");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {remote} AS first\nRUN echo a > /a\n\
             FROM {remote}\nCOPY --from=first /a /b\nRUN cat /version 2>/dev/null > /seen || true\n"
        ),
    )
    .unwrap();
    let pull_line = format!("[internal] pull {remote}");
    let build = |extra: &[&str]| {
        let out = rbuild(&root)
            .args(["build", "--progress", "plain", "-t", "app:1"])
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr.matches(&pull_line).count()
    };
    assert_eq!(build(&[]), 1, "one pull for both stages");
    assert_eq!(build(&[]), 0, "pulled again although stored");

    // A new image under the same tag: only --pull sees it.
    let newer = tmp.path().join("newer");
    fs::create_dir_all(&newer).unwrap();
    fs::write(
        newer.join("Dockerfile"),
        format!("FROM {remote}\nRUN echo 2 > /version\n"),
    )
    .unwrap();
    ok(rbuild(&root)
        .args(["build", "-q", "-t", "newer:1"])
        .arg(&newer));
    ok(rbuild(&root).args(["push", "newer:1", &remote]));
    let seen = || ok(rbuild(&root).args(["run", "--rm", "app:1", "cat", "/seen"]));
    assert_eq!(build(&[]), 0);
    assert_eq!(seen(), "", "the stored base was replaced without --pull");
    assert_eq!(build(&["--pull"]), 1);
    assert_eq!(seen(), "2\n", "--pull did not bring the new image");

    // `rbuild run` pulls a missing image too, unless told not to (docker's --pull).
    let fresh = tmp.path().join("fresh-store");
    let ran = rbuild(&fresh)
        .args(["run", "--rm", &remote, "cat", "/version"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "2\n", "{ran:?}");
    let never = tmp.path().join("never-store");
    let refused = rbuild(&never)
        .args(["run", "--rm", "--pull", "never", &remote, "true"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unable to find image"));

    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/base/nope:1\n", registry.addr()),
    )
    .unwrap();
    let out = rbuild(&root)
        .args(["build", "-q"])
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("Dockerfile:1") && stderr.contains("nope"),
        "{stderr}"
    );
}
