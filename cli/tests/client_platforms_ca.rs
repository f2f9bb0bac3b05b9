//! Two client features against CNCF distribution: `rbuild pull --all-platforms` of a
//! two-platform index (made here, pushed by skopeo with its digests preserved), and a private
//! CA given with `--ca-cert` for a registry serving TLS on 127.0.0.1 (CA and server
//! certificate made by openssl).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox_archive, ok, rbuild};
use conformance::auth_files::{ca_signed_cert, ec_key, LeafUse};
use conformance::peers::{require, run_ok, DockerRegistry};
use oci::archive::ArchiveFormat;
use oci::content::ContentStore;
use oci::image::{to_json_bytes, ImageConfig, Index, Manifest};
use oci::{media_type, Descriptor, Platform};

/// An OCI layout at `work/layout` whose tag `multi` is an index of two images: the busybox
/// fixture for this host's platform, and a one-layer image for another one. Returns the
/// layout, the index descriptor and the two platforms' manifests.
fn two_platform_layout(work: &Path) -> (PathBuf, Descriptor, Vec<Descriptor>) {
    let dir = work.join("layout");
    let content = ContentStore::open(&dir).unwrap();
    let rootfs = work.join("busybox-rootfs");
    fixtures::busybox_rootfs(&rootfs).unwrap();
    let host = fixtures::build_image(
        &content,
        &fixtures::ImageRecipe {
            layers: &[rootfs],
            config: fixtures::busybox_config(),
            name: None,
            compression: oci::compression::Compression::Gzip,
        },
    )
    .unwrap();
    let layers = fixtures::synthetic_layers(
        &work.join("synthetic"),
        1,
        64 << 10,
        fixtures::SyntheticKind::Compressible,
    )
    .unwrap();
    let other = fixtures::build_image(
        &content,
        &fixtures::ImageRecipe {
            layers: &layers,
            config: fixtures::busybox_config(),
            name: None,
            compression: oci::compression::Compression::Gzip,
        },
    )
    .unwrap();
    // The fixture builder makes host images: the second one's config is rewritten to another
    // platform, and its manifest with it.
    let other_platform = if Platform::host().architecture == "arm64" {
        Platform::parse("linux/amd64").unwrap()
    } else {
        Platform::parse("linux/arm64/v8").unwrap()
    };
    let mut manifest = Manifest::parse(&content.read(&other.digest).unwrap()).unwrap();
    let mut config = ImageConfig::parse(&content.read(&manifest.config.digest).unwrap()).unwrap();
    config.architecture = other_platform.architecture.clone();
    config.variant = other_platform.variant.clone();
    let config_bytes = to_json_bytes(&config);
    manifest.config = Descriptor::new(
        media_type::OCI_CONFIG,
        content.put(&config_bytes).unwrap(),
        config_bytes.len() as u64,
    );
    let manifest_bytes = to_json_bytes(&manifest);
    let mut other = Descriptor::of_bytes(media_type::OCI_MANIFEST, &manifest_bytes);
    content.put(&manifest_bytes).unwrap();

    let mut host = host;
    host.platform = Some(Platform::host());
    other.platform = Some(other_platform);
    let children = vec![host, other];
    let index_bytes = to_json_bytes(&Index::oci(children.clone()));
    let index = Descriptor::of_bytes(media_type::OCI_INDEX, &index_bytes);
    content.put(&index_bytes).unwrap();
    let mut tagged = index.clone();
    tagged.annotations.insert(
        "org.opencontainers.image.ref.name".to_string(),
        "multi".to_string(),
    );
    std::fs::write(
        dir.join("index.json"),
        to_json_bytes(&Index::oci(vec![tagged])),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (dir, index, children)
}

fn has_blob(root: &Path, digest: &oci::Digest) -> bool {
    root.join("blobs/sha256").join(digest.encoded()).is_file()
}

#[test]
fn pull_all_platforms_keeps_the_index() {
    let skopeo = require("skopeo");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index, children) = two_platform_layout(tmp.path());
    let name = format!("{}/multi/app:1", registry.addr());
    run_ok(
        Command::new(&skopeo)
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(format!("docker://{name}")),
    )
    .unwrap();

    let root = tmp.path().join("store");
    let out = ok(rbuild(&root).args(["pull", "--all-platforms", &name]));
    assert!(out.contains(index.digest.as_str()), "{out}");
    // Every platform's manifest, config and layers are in the store.
    let content = ContentStore::open(&layout).unwrap();
    assert!(has_blob(&root, &index.digest));
    for child in &children {
        assert!(has_blob(&root, &child.digest), "{child:?}");
        let manifest = Manifest::parse(&content.read(&child.digest).unwrap()).unwrap();
        assert!(has_blob(&root, &manifest.config.digest));
        for layer in &manifest.layers {
            assert!(has_blob(&root, &layer.digest), "{}", layer.digest);
        }
    }

    // `rbuild save` writes the index as pulled: the same digest names the image.
    let archive = tmp.path().join("saved.tar");
    ok(rbuild(&root)
        .args(["save", "--format", "oci", "-o"])
        .arg(&archive)
        .arg(&name));
    let files = tar_files(&archive);
    let saved = Index::parse(&files["index.json"]).unwrap();
    assert_eq!(saved.manifests.len(), 1);
    assert_eq!(saved.manifests[0].digest, index.digest);
    for child in &children {
        assert!(files.contains_key(&format!("blobs/sha256/{}", child.digest.encoded())));
    }
}

/// Small files of a tar archive, by path.
fn tar_files(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(path.trim_start_matches("./").to_string(), data);
    }
    out
}

/// A CA (key and self-signed certificate with CA:TRUE) named `name` in `dir`.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    run_ok(
        Command::new(require("openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .unwrap();
    (key, cert)
}

/// A server certificate for 127.0.0.1 signed by the CA; returns (key, certificate).
fn make_server_cert(dir: &Path, ca_key: &Path, ca_cert: &Path) -> (PathBuf, PathBuf) {
    let key = ec_key(dir, "server").unwrap();
    let cert = ca_signed_cert(
        dir,
        "server",
        &key,
        (ca_cert, ca_key),
        LeafUse::LoopbackServer,
    )
    .unwrap();
    (key, cert)
}

#[test]
fn ca_cert_flag_trusts_a_private_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca_key, ca_cert) = make_ca(tmp.path(), "test-ca");
    let (_, other_ca) = make_ca(tmp.path(), "other-ca");
    let (key, cert) = make_server_cert(tmp.path(), &ca_key, &ca_cert);
    // DockerRegistry's config ends with its `http:` section: indented lines continue it.
    let registry = DockerRegistry::start(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    ))
    .expect("start docker-registry with TLS");
    let name = format!("{}/ca/bb:1", registry.addr());

    let root = tmp.path().join("store");
    let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&base));
    let pushed = ok(rbuild(&root)
        .args(["push", "bb:1", &name, "--ca-cert"])
        .arg(&ca_cert));
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {pushed}"))
        .to_string();

    // skopeo, trusting the same CA, sees what rbuild pushed.
    let certs = tmp.path().join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca_cert, certs.join("ca.crt")).unwrap();
    let raw = run_ok(
        Command::new(require("skopeo"))
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&certs)
            .arg(format!("docker://{name}")),
    )
    .unwrap();
    assert_eq!(oci::Digest::sha256_of(&raw.stdout).as_str(), digest);

    let fresh = tmp.path().join("store-pull");
    let pulled = ok(rbuild(&fresh)
        .args(["pull", &name, "--ca-cert"])
        .arg(&ca_cert));
    assert!(pulled.contains(&digest), "{pulled}");

    // Another CA does not vouch for this server: the TLS error is reported, nothing pulled.
    let out = rbuild(&tmp.path().join("store-wrong-ca"))
        .args(["pull", &name, "--ca-cert"])
        .arg(&other_ca)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
