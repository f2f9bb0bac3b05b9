//! `rregistry` serving from S3 (moto's server): blob GETs and HEADs redirected to presigned S3
//! URLs (raw requests and skopeo), `storage.redirect.disable`, and `rregistry gc` offline on
//! the bucket.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conformance::peers::{require, run_ok};
use conformance::s3_server::S3Server;
use oci::media_type::Compression;
use oci::Digest;
use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use serde_json::json;
use support::client::{
    client, content, location, manifest, metric, rregistry_gc, GcScenario, Registry,
};
use support::{free_port, Server};

/// A client that shows redirects instead of following them.
fn raw_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn header<'a>(resp: &'a reqwest::blocking::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", resp.headers()))
}

/// An image skopeo can copy: an uncompressed tar layer made by `oci::layer` and a config that
/// names it. Returns the manifest's digest.
fn push_image(reg: &Registry, repo: &str, tag: &str, work: &Path) -> Digest {
    let root = work.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).expect("rootfs");
    std::fs::write(root.join("etc/data"), content("redirected-layer", 300_000)).expect("file");
    let mut layer = Vec::new();
    let opts = oci::layer::CreateOptions {
        compression: Compression::None,
        ..Default::default()
    };
    let info = oci::layer::create(&root, oci::layer::SourceKind::Directory, &opts, &mut layer)
        .expect("layer");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [info.diff_id]},
    }))
    .expect("config");
    reg.push_blob(repo, &layer);
    reg.push_blob(repo, &config);
    let body = manifest(&config, &[&layer]);
    assert_eq!(reg.put_manifest(repo, tag, &body).0, 201);
    Digest::sha256_of(&body)
}

const BLOB_GET_307: &str =
    "rregistry_http_requests_total{route=\"blobs\",method=\"GET\",status=\"307\"}";

#[test]
fn blob_reads_redirect_to_presigned_s3_urls_unless_disabled() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("redirect").expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = "    rootdirectory: /reg\n";
    let server = Server::start_on(
        dir.path(),
        free_port(),
        "",
        &S3Server::redirecting_storage_yaml(&s3.endpoint(), "redirect", root),
    );
    let reg = Registry {
        server: &server,
        http: client(),
    };
    let data = content("redirected-blob", 200_000);
    let digest = reg.push_blob("redir/raw", &data);
    let raw = raw_client();
    let blob_url = server.url(&format!("/v2/redir/raw/blobs/{digest}"));

    // GET: a 307 to the object on the S3 host, presigned for distribution's 20 minutes.
    let resp = raw.get(&blob_url).send().expect("GET");
    assert_eq!(resp.status(), 307);
    assert_eq!(header(&resp, "Docker-Content-Digest"), digest.as_str());
    let target = location(&resp);
    let object = format!(
        "{}/redirect/reg/docker/registry/v2/blobs/sha256/{}/{}/data?",
        s3.endpoint(),
        &digest.encoded()[..2],
        digest.encoded()
    );
    assert!(target.starts_with(&object), "{target}");
    assert!(target.contains("X-Amz-Expires=1200"), "{target}");
    assert!(target.contains("X-Amz-Signature="), "{target}");
    let body = raw
        .get(&target)
        .send()
        .expect("GET S3")
        .bytes()
        .expect("body");
    assert_eq!(Digest::sha256_of(&body), digest, "S3 serves the blob whole");

    // HEAD: redirected too, to a URL signed for HEAD.
    let resp = raw.head(&blob_url).send().expect("HEAD");
    assert_eq!(resp.status(), 307);
    let resp = raw.head(location(&resp)).send().expect("HEAD S3");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Content-Length"), data.len().to_string());

    // A range request follows the redirect with its Range header; S3 honours it.
    let resp = client()
        .get(&blob_url)
        .header("Range", "bytes=1000-1999")
        .send()
        .expect("ranged GET");
    assert_eq!(resp.status(), 206);
    assert!(resp.bytes().expect("range body")[..] == data[1000..2000]);

    // Unknown blobs, and blobs the repository does not link, are the registry's 404s.
    let missing = Digest::sha256_of(b"never pushed");
    for path in [
        format!("/v2/redir/raw/blobs/{missing}"),
        format!("/v2/redir/other/blobs/{digest}"),
    ] {
        let resp = raw.get(server.url(&path)).send().expect("GET unknown");
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.text().expect("body").contains("BLOB_UNKNOWN"));
    }

    // skopeo pulls through the redirects, every digest kept.
    let work = tempfile::tempdir().expect("tempdir");
    let pushed = push_image(&reg, "redir/app", "v1", work.path());
    let before = metric(&server, BLOB_GET_307);
    let out = work.path().join("out");
    run_ok(
        Command::new(require("skopeo"))
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(format!("docker://127.0.0.1:{}/redir/app:v1", server.port))
            .arg(format!("oci:{}:v1", out.display())),
    )
    .expect("skopeo copy docker:// oci:");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index.json"))
            .expect("index json");
    assert_eq!(index["manifests"][0]["digest"], pushed.as_str());
    for entry in std::fs::read_dir(out.join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).expect("pulled blob");
        assert_eq!(Digest::sha256_of(&bytes).encoded(), name, "blob {name}");
    }
    // Counted when the response was made, so already there: config and layer redirected.
    assert!(
        metric(&server, BLOB_GET_307) >= before + 2.0,
        "skopeo's blob GETs were not redirected"
    );

    // Another replica on the same bucket with `storage.redirect.disable` sends bytes itself.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let direct = Server::start_on(
        dir2.path(),
        free_port(),
        "",
        &S3Server::storage_yaml(&s3.endpoint(), "redirect", root),
    );
    let resp = raw
        .get(direct.url(&format!("/v2/redir/raw/blobs/{digest}")))
        .send()
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "Docker-Content-Digest"), digest.as_str());
    assert!(resp.bytes().expect("body")[..] == data[..]);
    let resp = raw
        .head(direct.url(&format!("/v2/redir/raw/blobs/{digest}")))
        .send()
        .expect("HEAD");
    assert_eq!(resp.status(), 200);
}

/// The S3 keys of a blob's bytes and of its link in `repo`.
fn blob_key(digest: &Digest) -> String {
    format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &digest.encoded()[..2],
        digest.encoded()
    )
}

fn link_key(repo: &str, digest: &Digest) -> String {
    format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}/link",
        digest.encoded()
    )
}

/// `rregistry gc` on a bucket, as tests/gc.rs does on a directory. S3 keeps no settable
/// modification times, so `--grace-period 0s` stands in for aging the storage.
#[test]
fn offline_gc_on_s3_sweeps_unreferenced_blobs_and_untagged_manifests() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("offline-gc").expect("bucket");
    let keys = || s3.list_keys("offline-gc", "").expect("list bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yml");
    let port = free_port();
    let storage = S3Server::redirecting_storage_yaml(&s3.endpoint(), "offline-gc", "");
    let server = Server::start_on(dir.path(), port, "", &storage);
    let reg = Registry {
        server: &server,
        http: client(),
    };
    let GcScenario {
        layer,
        config_blob,
        kept,
        orphan,
        untagged_layer: untagged_layer_digest,
        untagged: untagged_digest,
        session,
    } = reg.push_gc_scenario();
    drop(reg);
    assert!(server.terminate().success());
    let grace = ["--grace-period", "0s"];

    let out = rregistry_gc(&config, &["--dry-run", grace[0], grace[1]]);
    assert!(
        out.contains(&format!("would remove blob {orphan}")),
        "{out}"
    );
    assert!(
        out.contains("would remove upload session off/app/"),
        "{out}"
    );
    assert!(
        keys().contains(&blob_key(&orphan)),
        "a dry run removes nothing"
    );

    let out = rregistry_gc(&config, &grace);
    assert!(
        out.contains("removed 1 blobs (20000 bytes), 1 layer links"),
        "{out}"
    );
    let left = keys();
    assert!(!left.contains(&blob_key(&orphan)), "{left:?}");
    assert!(!left.contains(&link_key("off/app", &orphan)), "{left:?}");
    assert!(left.contains(&blob_key(&untagged_layer_digest)));
    assert!(
        !left.iter().any(|k| k.contains("/_uploads/")),
        "upload session left: {left:?}"
    );

    let out = rregistry_gc(&config, &["--delete-untagged", grace[0], grace[1]]);
    assert!(
        out.contains(&format!(
            "removed untagged manifest off/app@{untagged_digest}"
        )),
        "{out}"
    );
    let left = keys();
    assert!(
        !left.contains(&blob_key(&untagged_layer_digest)),
        "{left:?}"
    );
    assert!(!left.contains(&blob_key(&untagged_digest)), "{left:?}");
    for kept_blob in [&layer[..], &config_blob[..], &kept[..]] {
        assert!(
            left.contains(&blob_key(&Digest::sha256_of(kept_blob))),
            "a referenced blob was removed: {left:?}"
        );
    }

    // The tagged image pulls whole (through redirects); the session is gone.
    let server = Server::start_on(dir.path(), port, "", &storage);
    let reg = Registry {
        server: &server,
        http: client(),
    };
    assert_eq!(reg.pull_whole("off/app", "v1"), Digest::sha256_of(&kept));
    assert_eq!(reg.get(&session).status(), 404);
}
