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

    for (tag, flag) in [
        ("via-push:1", "--push"),
        ("via-output:1", "--output=type=registry"),
    ] {
        let name = format!("{}/app/{tag}", registry.addr());
        let out = ok(rbuild(&root)
            .args(["build", "-q", "-t", &name, flag])
            .arg(&ctx));
        assert!(out.contains("digest: sha256:"), "{out}");
        let local = inspect(&root, &name)["Descriptor"]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let raw = run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{name}")),
        )
        .unwrap();
        assert_eq!(oci::Digest::sha256_of(&raw.stdout).as_str(), local);
    }
    // Without a name there is nowhere to push.
    let out = rbuild(&root)
        .args(["build", "--push"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t"));
}
