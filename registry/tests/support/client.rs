//! A small registry client for tests that push images by hand and check what the registry
//! then serves, and `rregistry gc` run as a command (gc.rs, s3_registry.rs).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oci::Digest;
use reqwest::blocking::Client;
use serde_json::json;

use super::Server;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Unique, incompressible-enough content named by `seed`.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Digest::sha256_of(seed.as_bytes())
        .encoded()
        .as_bytes()
        .to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Digest::sha256_of(&block).encoded().as_bytes().to_vec();
    }
    out.truncate(len);
    out
}

pub struct Registry<'a> {
    pub server: &'a Server,
    pub http: Client,
}

impl Registry<'_> {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// A monolithic push (POST ?digest=).
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(data.to_vec())
            .send()
            .expect("POST blob");
        let status = resp.status();
        assert_eq!(status, 201, "push blob to {repo}: {:?}", resp.text());
        digest
    }

    /// POST, one PATCH, closing PUT.
    pub fn push_blob_chunked(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256_of(data);
        let resp = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .expect("POST");
        assert_eq!(resp.status(), 202);
        let loc = location(&resp);
        let resp = self
            .http
            .patch(self.url(&loc))
            .body(data.to_vec())
            .send()
            .expect("PATCH");
        assert_eq!(resp.status(), 202);
        let loc = location(&resp);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .http
            .put(self.url(&format!("{loc}{sep}digest={digest}")))
            .send()
            .expect("PUT");
        assert_eq!(resp.status(), 201, "close upload in {repo}");
        digest
    }

    /// Mounts from `from` when that still works, otherwise uploads.
    pub fn mount_or_push(&self, repo: &str, from: &str, data: &[u8]) {
        let digest = Digest::sha256_of(data);
        let resp = self
            .http
            .post(self.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            )))
            .send()
            .expect("POST mount");
        match resp.status().as_u16() {
            201 => {}
            202 => {
                let loc = location(&resp);
                self.http.delete(self.url(&loc)).send().expect("cancel");
                self.push_blob(repo, data);
            }
            other => panic!("mount: {other}"),
        }
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> (u16, String) {
        let resp = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", MANIFEST_TYPE)
            .body(body.to_vec())
            .send()
            .expect("PUT manifest");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http.get(self.url(path)).send().expect("GET")
    }

    /// Pulls a manifest and every blob it references, checking every digest.
    pub fn pull_whole(&self, repo: &str, reference: &str) -> Digest {
        let resp = self.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(resp.status(), 200, "manifest {repo}:{reference}");
        let bytes = resp.bytes().expect("manifest body");
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest json");
        let mut blobs = vec![manifest["config"]["digest"].clone()];
        blobs.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
        for blob in blobs {
            let digest = blob
                .as_str()
                .or_else(|| blob["digest"].as_str())
                .expect("digest");
            let resp = self.get(&format!("/v2/{repo}/blobs/{digest}"));
            assert_eq!(resp.status(), 200, "blob {digest} of {repo}:{reference}");
            let body = resp.bytes().expect("blob body");
            assert_eq!(
                Digest::sha256_of(&body).to_string(),
                digest,
                "blob of {repo}:{reference} pulls whole"
            );
        }
        Digest::sha256_of(&bytes)
    }
}

pub fn location(resp: &reqwest::blocking::Response) -> String {
    resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string()
}

pub fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let descriptor = |media_type: &str, data: &[u8]| {
        json!({
            "mediaType": media_type,
            "digest": Digest::sha256_of(data).to_string(),
            "size": data.len(),
        })
    };
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
            .collect::<Vec<_>>(),
    });
    serde_json::to_vec(&doc).expect("manifest json")
}

pub fn rregistry_gc(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rregistry"))
        .arg("gc")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run rregistry gc");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rregistry gc {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value of the first `/metrics` line starting with `line_prefix`.
pub fn metric(server: &Server, line_prefix: &str) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line_prefix} not in /metrics:\n{text}"))
}

/// What the offline GC tests (gc.rs on a directory, s3_registry.rs on a bucket) leave in
/// `off/app`: a tagged image, an orphan blob, an untagged manifest with a layer of its own,
/// and an idle upload session.
pub struct GcScenario {
    pub layer: Vec<u8>,
    pub config_blob: Vec<u8>,
    pub kept: Vec<u8>,
    pub orphan: Digest,
    pub untagged_layer: Digest,
    pub untagged: Digest,
    pub session: String,
}

impl Registry<'_> {
    pub fn push_gc_scenario(&self) -> GcScenario {
        let layer = content("kept-layer", 30_000);
        let config_blob = content("kept-config", 200);
        self.push_blob("off/app", &layer);
        self.push_blob("off/app", &config_blob);
        let kept = manifest(&config_blob, &[&layer]);
        assert_eq!(self.put_manifest("off/app", "v1", &kept).0, 201);
        let orphan = self.push_blob("off/app", &content("orphan", 20_000));
        let untagged_layer_bytes = content("untagged-layer", 25_000);
        let untagged_layer = self.push_blob("off/app", &untagged_layer_bytes);
        let untagged_manifest = manifest(&config_blob, &[&untagged_layer_bytes]);
        let untagged = Digest::sha256_of(&untagged_manifest);
        assert_eq!(
            self.put_manifest("off/app", &untagged.to_string(), &untagged_manifest)
                .0,
            201
        );
        let session = location(
            &self
                .http
                .post(self.url("/v2/off/app/blobs/uploads/"))
                .send()
                .expect("POST"),
        );
        GcScenario {
            layer,
            config_blob,
            kept,
            orphan,
            untagged_layer,
            untagged,
            session,
        }
    }
}
