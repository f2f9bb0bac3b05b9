//! rregistry over S3 (moto's server, a real S3 API): the spec suite, and S3 faults (500s and
//! stalls from a fault-injecting proxy) retried, then answered with the spec's error body.

use std::time::Duration;

use conformance::fault_proxy::{Fault, FaultProxy};
use conformance::registry_suite::{run, Flavor, Rregistry};
use conformance::s3_server::S3Server;
use oci::Digest;
use reqwest::blocking::Client;

#[test]
fn rregistry_on_s3_passes_the_spec_suite() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("spec").expect("bucket");
    let registry = Rregistry::start(
        true,
        &S3Server::storage_yaml(&s3.endpoint(), "spec", "    rootdirectory: /registry\n"),
    )
    .expect("start rregistry");
    run(&registry.url(), Flavor::Rregistry).assert_all_passed();
    // Everything landed under the root directory, in distribution's layout.
    let keys = s3.list_keys("spec", "").expect("list");
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.starts_with("registry/docker/registry/v2/")),
        "{keys:?}"
    );
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// POST then PUT with the whole blob; returns the PUT's status and body.
fn push_blob(http: &Client, base: &str, repo: &str, data: &[u8]) -> (u16, String) {
    let digest = Digest::sha256_of(data);
    let resp = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("POST");
    if resp.status() != 202 {
        let status = resp.status().as_u16();
        return (status, resp.text().unwrap_or_default());
    }
    let loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{url}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("PUT");
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

fn assert_spec_error_body(body: &str) {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert!(
        v["errors"][0]["code"].is_string(),
        "not the spec's error body: {body}"
    );
}

#[test]
fn s3_faults_are_retried_then_answered_with_the_spec_error() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("faults").expect("bucket");
    let proxy = FaultProxy::start(([127, 0, 0, 1], s3.port).into()).expect("fault proxy");
    let registry = Rregistry::start(
        true,
        &S3Server::storage_yaml(
            &proxy.url(),
            "faults",
            // Copies over 5 MiB go in parts, so UploadPartCopy meets the faults too.
            "    chunksize: 5242880\n    maxretries: 6\n    retrytimeout: 20s\n    requesttimeout: 2s\n    multipartcopythresholdsize: 5242880\n    multipartcopychunksize: 5242880\n",
        ),
    )
    .expect("start rregistry");
    let base = registry.url();
    let http = client();
    let blob = |seed: u32, len: usize| -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    };

    // A push that succeeds, and the same bytes read back.
    let pushed_and_read_back = |repo: &str, data: &[u8]| {
        let (status, body) = push_blob(&http, &base, repo, data);
        assert_eq!(status, 201, "{} bytes: {body}", data.len());
        let got = http
            .get(format!(
                "{base}/v2/{repo}/blobs/{}",
                Digest::sha256_of(data)
            ))
            .send()
            .expect("GET");
        assert_eq!(got.status(), 200);
        assert!(got.bytes().expect("body")[..] == data[..], "blob differs");
    };

    // A third of S3's answers are 500s: retries hide them. 12 MiB makes a 3-part multipart.
    proxy.set(Fault::ServerErrors(34));
    pushed_and_read_back("faults/retried", &blob(1, 12 << 20));
    assert!(proxy.faults() > 0, "no fault was injected");

    // Every other copy or multipart completion is answered 200 with an error document, S3's
    // report of a copy that failed inside: retried as a 5xx is. 12 MiB is renamed in three
    // UploadPartCopy parts, 1 MiB with one CopyObject.
    proxy.set(Fault::ErrorsIn200(50));
    let before = proxy.faults();
    for (seed, len) in [(3, 12 << 20), (4, 1 << 20)] {
        pushed_and_read_back("faults/in200", &blob(seed, len));
    }
    assert!(
        proxy.faults() >= before + 3,
        "too few errors in a 200 were injected"
    );
    proxy.set(Fault::None);

    // S3 fails every request: a 5xx with the spec's error body, and no blob appears.
    proxy.set(Fault::ServerErrors(100));
    let data = blob(2, 6 << 20);
    let digest = Digest::sha256_of(&data);
    let (status, body) = push_blob(&http, &base, "faults/failed", &data);
    assert!((500..600).contains(&status), "{status} {body}");
    assert_spec_error_body(&body);
    proxy.set(Fault::None);
    let head = http
        .head(format!("{base}/v2/faults/failed/blobs/{digest}"))
        .send()
        .expect("HEAD");
    assert_eq!(head.status(), 404);
    let blob_keys = s3
        .list_keys("faults", "docker/registry/v2/blobs/")
        .expect("list");
    assert!(
        !blob_keys.iter().any(|k| k.contains(digest.encoded())),
        "half-written blob visible: {blob_keys:?}"
    );

    // S3 stops answering: each request times out, is retried, then a 5xx.
    proxy.set(Fault::Stalls(100));
    let resp = http
        .get(format!(
            "{base}/v2/faults/retried/blobs/{}",
            Digest::sha256_of(&blob(1, 12 << 20))
        ))
        .send()
        .expect("GET while stalled");
    let status = resp.status().as_u16();
    assert!((500..600).contains(&status), "{status}");
    assert_spec_error_body(&resp.text().expect("body"));
    proxy.set(Fault::None);

    // And the registry serves again once S3 does.
    let (status, body) = push_blob(&http, &base, "faults/failed", &data);
    assert_eq!(status, 201, "{body}");
}
