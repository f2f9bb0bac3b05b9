//! Our own registry conformance suite, derived from distribution-spec spec.md (cited per
//! check): every endpoint (end-1 … end-14, plus `/v2/_catalog`), their status codes and error
//! codes. It runs against any registry URL; a [`Flavor`] names the registry so that the known
//! deviations of CNCF distribution 2.8 are stated where they occur and expected from it only.
//!
//! [`run`] needs a registry with deletes enabled; [`run_delete_disabled`] one with deletes
//! disabled. [`Rregistry`] starts our registry in-process for the tests.

use std::fmt::Write as _;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use oci::media_type as mt;
use oci::Digest;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use serde_json::{json, Value};

/// Which registry is under test, and so which deviations from the spec to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// rregistry: the whole spec, no deviations.
    Rregistry,
    /// CNCF distribution 2.8 (`docker-registry` from Debian).
    Distribution,
}

impl Flavor {
    fn is_distribution(self) -> bool {
        self == Flavor::Distribution
    }
}

/// The outcome of a run: every check by name, with the failure when it failed.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<&'static str>,
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Panics listing every failed check; call at the end of a test.
    pub fn assert_all_passed(&self) {
        if self.failed.is_empty() {
            return;
        }
        let mut msg = format!(
            "{} of {} checks failed:\n",
            self.failed.len(),
            self.failed.len() + self.passed.len()
        );
        for (name, err) in &self.failed {
            let _ = writeln!(msg, "- {name}: {err:#}");
        }
        panic!("{msg}");
    }
}

type Check = fn(&Ctx) -> Result<()>;

const CHECKS: &[(&str, Check)] = &[
    ("end-1 base endpoint", base_endpoint),
    ("end-4a/end-6 POST then PUT", post_then_put),
    ("end-4b single POST", single_post),
    ("end-4c digest-algorithm sha512", sha512_upload),
    (
        "end-5/end-13 chunked upload with status and 416s",
        chunked_upload,
    ),
    ("end-6 final chunk out of order", final_chunk_out_of_order),
    (
        "end-6 digest mismatch and bad digests",
        upload_digest_errors,
    ),
    ("end-5 SIZE_INVALID chunk length", chunk_size_invalid),
    ("end-14 cancel upload", cancel_upload),
    ("end-2 blob GET/HEAD and Range", blob_pull),
    ("end-11 cross-repository mount", cross_mount),
    ("end-11 mount without from", mount_without_from),
    ("end-7b tags on a push by digest", push_with_tags),
    ("end-3/end-7 manifest push and pull", manifest_round_trip),
    (
        "end-7 Docker schema2 manifest and manifest list",
        docker_manifests,
    ),
    ("end-7 OCI index", oci_index),
    ("end-7 MANIFEST_BLOB_UNKNOWN", manifest_blob_unknown),
    (
        "end-7 MANIFEST_INVALID and digest mismatch",
        manifest_invalid,
    ),
    ("end-7 oversized manifest 413", manifest_too_large),
    ("end-3 unknown manifests and repositories", manifest_unknown),
    ("end-8 tag list and pagination", tag_list),
    ("catalog and pagination", catalog),
    ("end-12 referrers and OCI-Subject", referrers),
    ("end-9 delete tag and manifest", delete_manifest),
    ("end-10 delete blob", delete_blob),
    ("NAME_INVALID repository names", invalid_names),
];

/// Runs every check against `base_url` (e.g. `http://127.0.0.1:5000`), deletes enabled.
pub fn run(base_url: &str, flavor: Flavor) -> Report {
    let ctx = Ctx::new(base_url, flavor);
    let mut report = Report::default();
    for (name, check) in CHECKS {
        match check(&ctx) {
            Ok(()) => report.passed.push(name),
            Err(e) => report.failed.push((name, format!("{e:#}"))),
        }
    }
    report
}

/// spec.md "Deleting Manifests"/"Deleting Blobs": with deletes disabled the registry MUST
/// answer 400 or 405 to manifest, tag and blob DELETEs, and keep the content.
pub fn run_delete_disabled(base_url: &str, flavor: Flavor) -> Report {
    let ctx = Ctx::new(base_url, flavor);
    let mut report = Report::default();
    let name = "deletes disabled refused";
    match deletes_refused(&ctx) {
        Ok(()) => report.passed.push(name),
        Err(e) => report.failed.push((name, format!("{e:#}"))),
    }
    report
}

struct Ctx {
    base: String,
    client: Client,
    flavor: Flavor,
    /// A prefix unique to this run, so that runs against one registry never collide.
    prefix: String,
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

impl Ctx {
    fn new(base: &str, flavor: Flavor) -> Ctx {
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Ctx {
            base: base.trim_end_matches('/').to_string(),
            client,
            flavor,
            prefix: format!("conformance-{}", random_suffix()),
        }
    }

    fn repo(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// A request to a path (`/v2/...`) or to an absolute URL from a `Location` header.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client.request(method, url)
    }

    fn send(&self, rb: RequestBuilder) -> Result<Response> {
        rb.send().context("HTTP request")
    }

    /// Pushes a blob monolithically (POST then PUT) and returns its digest.
    fn push_blob(&self, repo: &str, data: &[u8]) -> Result<Digest> {
        let digest = Digest::sha256_of(data);
        let location = self.start_upload(repo)?;
        let resp = self.send(
            self.req(
                Method::PUT,
                &with_query(&location, &format!("digest={digest}")),
            )
            .header("Content-Type", "application/octet-stream")
            .body(data.to_vec()),
        )?;
        expect_status(&resp, 201, "PUT blob")?;
        Ok(digest)
    }

    fn start_upload(&self, repo: &str) -> Result<String> {
        let resp = self.send(
            self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
                .header("Content-Length", "0"),
        )?;
        expect_status(&resp, 202, "POST upload")?;
        header(&resp, "Location")
    }

    fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Response> {
        self.send(
            self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header("Content-Type", media_type)
                .body(body.to_vec()),
        )
    }

    /// Pushes a config and one layer, then an OCI manifest for them; returns (bytes, digest).
    fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> Result<(Vec<u8>, Digest)> {
        let config = self.push_blob(repo, b"{\"architecture\":\"amd64\",\"os\":\"linux\"}")?;
        let layer_digest = self.push_blob(repo, layer)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": mt::OCI_CONFIG, "digest": config, "size": 38},
            "layers": [{"mediaType": mt::OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len()}],
        }))?;
        let resp = self.put_manifest(repo, tag, mt::OCI_MANIFEST, &manifest)?;
        expect_status(&resp, 201, "PUT manifest")?;
        let digest = Digest::sha256_of(&manifest);
        Ok((manifest, digest))
    }
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

fn header(resp: &Response, name: &str) -> Result<String> {
    resp.headers()
        .get(name)
        .with_context(|| format!("missing {name} header (status {})", resp.status()))?
        .to_str()
        .map(str::to_string)
        .with_context(|| format!("{name} header is not text"))
}

fn expect_status(resp: &Response, want: u16, what: &str) -> Result<()> {
    ensure!(
        resp.status().as_u16() == want,
        "{what}: status {} (want {want})",
        resp.status()
    );
    Ok(())
}

/// spec.md "Error Codes": a JSON error body lists codes from the table.
fn expect_error(resp: Response, status: &[u16], code: &str, what: &str) -> Result<()> {
    let got = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    ensure!(
        status.contains(&got),
        "{what}: status {got} (want {status:?}); body {body}"
    );
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("{what}: error body is not JSON: {body:?}"))?;
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .with_context(|| format!("{what}: no errors array in {body}"))?
        .iter()
        .filter_map(|e| e["code"].as_str())
        .collect();
    ensure!(
        codes.contains(&code),
        "{what}: error codes {codes:?} (want {code}); body {body}"
    );
    Ok(())
}

fn digest_header(resp: &Response) -> Result<Digest> {
    header(resp, "Docker-Content-Digest")?
        .parse()
        .context("Docker-Content-Digest is not a digest")
}

/// spec.md "Determining Support": GET /v2/ is 200.
fn base_endpoint(ctx: &Ctx) -> Result<()> {
    let resp = ctx.send(ctx.req(Method::GET, "/v2/"))?;
    expect_status(&resp, 200, "GET /v2/")
}

/// spec.md "POST then PUT": 202 + Location, then 201 + Location; HEAD shows size and digest.
fn post_then_put(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("post-put");
    let data = b"post then put blob";
    let location = ctx.start_upload(&repo)?;
    let digest = Digest::sha256_of(data);
    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, &format!("digest={digest}")),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec()),
    )?;
    expect_status(&resp, 201, "PUT")?;
    header(&resp, "Location")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 200, "HEAD blob")?;
    ensure!(
        header(&resp, "Content-Length")? == data.len().to_string(),
        "HEAD Content-Length"
    );
    ensure!(
        digest_header(&resp)? == digest,
        "HEAD Docker-Content-Digest"
    );
    Ok(())
}

/// spec.md "Single POST": 201 + Location (or 202 when unsupported; both registries support it).
fn single_post(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("single-post");
    let data = b"single post blob";
    let digest = Digest::sha256_of(data);
    let resp = ctx.send(
        ctx.req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec()),
    )?;
    if ctx.flavor.is_distribution() {
        // Distribution 2.8 does not support the single POST and takes the spec's fallback:
        // 202 with a session, to be completed by PUT.
        expect_status(&resp, 202, "distribution's single POST")?;
        let location = header(&resp, "Location")?;
        let resp = ctx.send(
            ctx.req(
                Method::PUT,
                &with_query(&location, &format!("digest={digest}")),
            )
            .body(data.to_vec()),
        )?;
        expect_status(&resp, 201, "PUT after the fallback")?;
    } else {
        expect_status(&resp, 201, "single POST")?;
        header(&resp, "Location")?;
    }
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 200, "GET blob")?;
    ensure!(resp.bytes()?.as_ref() == data, "blob body differs");
    Ok(())
}

/// spec.md "Pushing a blob in chunks" (end-4c): a sha512 blob is pushed and pulled by digest.
fn sha512_upload(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("sha512");
    let data = b"a blob named by sha512";
    let mut h = oci::Digester::new(oci::Algorithm::Sha512);
    h.update(data);
    let digest = h.finish();
    let resp = ctx.send(ctx.req(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512"),
    ))?;
    expect_status(&resp, 202, "POST digest-algorithm=sha512")?;
    let location = header(&resp, "Location")?;
    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, &format!("digest={digest}")),
        )
        .body(data.to_vec()),
    )?;
    expect_status(&resp, 201, "PUT sha512")?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 200, "GET sha512 blob")?;
    ensure!(resp.bytes()?.as_ref() == data, "sha512 blob body differs");
    Ok(())
}

fn patch(ctx: &Ctx, location: &str, range: &str, chunk: &[u8]) -> Result<Response> {
    ctx.send(
        ctx.req(Method::PATCH, location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", range)
            .body(chunk.to_vec()),
    )
}

/// spec.md "Pushing a blob in chunks": PATCH 202 with Location and Range; out-of-order and
/// repeated chunks 416; GET status 204 with Range; closing PUT with the last chunk 201.
fn chunked_upload(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("chunked");
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let location = ctx.start_upload(&repo)?;

    let resp = patch(ctx, &location, "0-999", &data[..1000])?;
    expect_status(&resp, 202, "PATCH chunk 1")?;
    ensure!(
        header(&resp, "Range")? == "0-999",
        "Range after chunk 1: {}",
        header(&resp, "Range")?
    );
    let location = header(&resp, "Location")?;

    // Out of order (a gap) and a repeat: 416 Requested Range Not Satisfiable.
    let gap = patch(ctx, &location, "1500-1999", &data[1500..2000])?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 does not check Content-Range against the upload's
        // offset: it appends the out-of-order chunk and answers 202 (the OCI suite's "chunk
        // 416" checks fail on it); a chunk sent to the now stale location is 404
        // BLOB_UPLOAD_INVALID. The upload is ruined, so the check ends here.
        expect_status(&gap, 202, "distribution's answer to a gap")?;
        let repeat = patch(ctx, &location, "0-999", &data[..1000])?;
        return expect_error(
            repeat,
            &[404],
            "BLOB_UPLOAD_INVALID",
            "distribution's answer to a repeat",
        );
    }
    let repeat = patch(ctx, &location, "0-999", &data[..1000])?;
    expect_status(&gap, 416, "PATCH with a gap")?;
    expect_status(&repeat, 416, "PATCH repeating a chunk")?;

    let resp = ctx.send(ctx.req(Method::GET, &location))?;
    expect_status(&resp, 204, "GET upload status")?;
    ensure!(
        header(&resp, "Range")? == "0-999",
        "status Range after 416s"
    );
    let location = header(&resp, "Location")?;

    let resp = patch(ctx, &location, "1000-1999", &data[1000..2000])?;
    expect_status(&resp, 202, "PATCH chunk 2")?;
    ensure!(header(&resp, "Range")? == "0-1999", "Range after chunk 2");
    let location = header(&resp, "Location")?;

    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, &format!("digest={digest}")),
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "2000-2999")
        .body(data[2000..].to_vec()),
    )?;
    expect_status(&resp, 201, "closing PUT with the last chunk")?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 200, "GET chunked blob")?;
    ensure!(
        resp.bytes()?.as_ref() == data.as_slice(),
        "chunked blob body differs"
    );
    Ok(())
}

/// spec.md "If the final chunk is uploaded out of order, the registry MUST respond with 416".
fn final_chunk_out_of_order(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("final-chunk");
    let data = b"0123456789";
    let digest = Digest::sha256_of(data);
    let location = ctx.start_upload(&repo)?;
    let resp = patch(ctx, &location, "0-4", &data[..5])?;
    expect_status(&resp, 202, "PATCH")?;
    let location = header(&resp, "Location")?;
    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, &format!("digest={digest}")),
        )
        .header("Content-Range", "6-9")
        .body(data[6..].to_vec()),
    )?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 ignores Content-Range on the closing PUT; the bytes
        // are appended and the digest check fails instead (400 DIGEST_INVALID).
        return expect_error(resp, &[400], "DIGEST_INVALID", "distribution's final chunk");
    }
    expect_status(&resp, 416, "final chunk out of order")
}

/// spec.md "Pushing blobs": a digest that does not match is DIGEST_INVALID (400); an invalid
/// or unsupported digest 400; an unknown session BLOB_UPLOAD_UNKNOWN (404).
fn upload_digest_errors(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("digest-errors");
    let location = ctx.start_upload(&repo)?;
    let wrong = Digest::sha256_of(b"something else");
    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, &format!("digest={wrong}")),
        )
        .body(b"content".to_vec()),
    )?;
    expect_error(resp, &[400], "DIGEST_INVALID", "PUT with a wrong digest")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{repo}/blobs/{wrong}")))?;
    expect_status(&resp, 404, "blob after a refused PUT")?;

    let location = ctx.start_upload(&repo)?;
    let resp = ctx.send(
        ctx.req(
            Method::PUT,
            &with_query(&location, "digest=sha256:notahexdigest"),
        )
        .body(b"x".to_vec()),
    )?;
    expect_error(resp, &[400], "DIGEST_INVALID", "PUT with an invalid digest")?;

    let resp = ctx.send(
        ctx.req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e"),
        )
        .body(b"".to_vec()),
    )?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 ignores `digest` on POST (no single POST), so an
        // unsupported algorithm is not noticed: 202.
        expect_status(
            &resp,
            202,
            "distribution's POST with an unsupported algorithm",
        )?;
    } else {
        expect_error(
            resp,
            &[400],
            "DIGEST_INVALID",
            "POST with an unsupported algorithm",
        )?;
    }

    let unknown = format!("/v2/{repo}/blobs/uploads/00000000-0000-4000-8000-000000000000");
    // Deviation: distribution 2.8 needs its `_state` parameter in upload URLs and answers a
    // URL without it with 404 BLOB_UPLOAD_INVALID.
    let code = if ctx.flavor.is_distribution() {
        "BLOB_UPLOAD_INVALID"
    } else {
        "BLOB_UPLOAD_UNKNOWN"
    };
    let resp = ctx.send(ctx.req(Method::GET, &unknown))?;
    expect_error(resp, &[404], code, "status of an unknown upload")?;
    let resp = patch(ctx, &unknown, "0-0", b"x")?;
    expect_error(resp, &[404], code, "PATCH to an unknown upload")
}

/// spec.md "Error Codes" code-10: a chunk whose length differs from its Content-Range is
/// SIZE_INVALID, and the session keeps its offset.
fn chunk_size_invalid(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("size-invalid");
    let location = ctx.start_upload(&repo)?;
    let resp = patch(ctx, &location, "0-9", b"12345")?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 does not compare Content-Range with the body; it
        // stores the five bytes (202, Range 0-4).
        expect_status(&resp, 202, "distribution's short chunk")?;
        ensure!(header(&resp, "Range")? == "0-4", "distribution's Range");
        return Ok(());
    }
    expect_error(
        resp,
        &[400],
        "SIZE_INVALID",
        "chunk shorter than its Content-Range",
    )?;
    let resp = ctx.send(ctx.req(Method::GET, &location))?;
    expect_status(&resp, 204, "status after SIZE_INVALID")?;
    ensure!(
        header(&resp, "Range")? == "0-0",
        "offset moved after a refused chunk"
    );
    Ok(())
}

/// spec.md "Cancel a blob upload": DELETE 204, then the session is unknown (404).
fn cancel_upload(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("cancel");
    let location = ctx.start_upload(&repo)?;
    let resp = patch(ctx, &location, "0-2", b"abc")?;
    expect_status(&resp, 202, "PATCH")?;
    let location = header(&resp, "Location")?;
    let resp = ctx.send(
        ctx.req(Method::DELETE, &location)
            .header("Content-Length", "0"),
    )?;
    expect_status(&resp, 204, "DELETE upload")?;
    let resp = ctx.send(ctx.req(Method::GET, &location))?;
    expect_error(resp, &[404], "BLOB_UPLOAD_UNKNOWN", "status after cancel")?;
    let resp = ctx.send(ctx.req(Method::DELETE, &location))?;
    expect_error(resp, &[404], "BLOB_UPLOAD_UNKNOWN", "cancelling again")
}

/// spec.md "Pulling blobs": 200 with the bytes and Docker-Content-Digest; Range (RFC 9110
/// section 14) gives 206 with Content-Range, or 416 when unsatisfiable; unknown blobs 404.
fn blob_pull(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("blob-pull");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = ctx.push_blob(&repo, &data)?;
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = ctx.send(ctx.req(Method::GET, &path))?;
    expect_status(&resp, 200, "GET blob")?;
    ensure!(digest_header(&resp)? == digest, "Docker-Content-Digest");
    ensure!(resp.bytes()?.as_ref() == data.as_slice(), "blob body");

    let resp = ctx.send(ctx.req(Method::GET, &path).header("Range", "bytes=100-199"))?;
    expect_status(&resp, 206, "ranged GET")?;
    ensure!(
        header(&resp, "Content-Range")? == "bytes 100-199/10000",
        "Content-Range"
    );
    ensure!(resp.bytes()?.as_ref() == &data[100..200], "ranged body");
    let resp = ctx.send(ctx.req(Method::GET, &path).header("Range", "bytes=-10"))?;
    expect_status(&resp, 206, "suffix range")?;
    ensure!(resp.bytes()?.as_ref() == &data[9990..], "suffix body");
    let resp = ctx.send(ctx.req(Method::GET, &path).header("Range", "bytes=20000-"))?;
    expect_status(&resp, 416, "unsatisfiable range")?;

    let missing = Digest::sha256_of(b"never pushed");
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/blobs/{missing}")))?;
    expect_error(resp, &[404], "BLOB_UNKNOWN", "GET unknown blob")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{repo}/blobs/{missing}")))?;
    expect_status(&resp, 404, "HEAD unknown blob")
}

/// spec.md "Mounting a blob from another repository": 201 with Location, or 202 (a session)
/// when the blob cannot be mounted.
fn cross_mount(ctx: &Ctx) -> Result<()> {
    let from = ctx.repo("mount-from");
    let to = ctx.repo("mount-to");
    let digest = ctx.push_blob(&from, b"mounted blob")?;
    let resp = ctx.send(ctx.req(
        Method::POST,
        &format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"),
    ))?;
    expect_status(&resp, 201, "mount")?;
    ensure!(
        header(&resp, "Location")?.contains(digest.as_str()),
        "mount Location"
    );
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{to}/blobs/{digest}")))?;
    expect_status(&resp, 200, "GET mounted blob")?;

    let other = ctx.repo("mount-empty");
    let missing = Digest::sha256_of(b"not in the source");
    let resp = ctx.send(ctx.req(
        Method::POST,
        &format!("/v2/{to}/blobs/uploads/?mount={missing}&from={other}"),
    ))?;
    expect_status(&resp, 202, "mount of an unknown blob starts a session")?;
    header(&resp, "Location")?;
    Ok(())
}

/// spec.md: "The registry MAY treat the from parameter as optional, and it MAY cross-mount
/// the blob if it can be found."
fn mount_without_from(ctx: &Ctx) -> Result<()> {
    let from = ctx.repo("nofrom-src");
    let to = ctx.repo("nofrom-dst");
    let digest = ctx.push_blob(&from, b"mount me without from")?;
    let resp = ctx.send(ctx.req(
        Method::POST,
        &format!("/v2/{to}/blobs/uploads/?mount={digest}"),
    ))?;
    if ctx.flavor.is_distribution() {
        // Distribution 2.8 takes the spec's other option: no mount, an upload session (202).
        return expect_status(&resp, 202, "distribution's mount without from");
    }
    expect_status(&resp, 201, "mount without from")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{to}/blobs/{digest}")))?;
    expect_status(&resp, 200, "HEAD blob mounted without from")
}

/// spec.md "Pushing Manifests" and "Pulling manifests": 201 with Location and the digest;
/// GET and HEAD by tag and by digest give the exact bytes, Content-Type and digest.
fn manifest_round_trip(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("manifests");
    let (manifest, digest) = ctx.push_image(&repo, "v1", b"layer one")?;
    for reference in ["v1".to_string(), digest.to_string()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = ctx.send(
            ctx.req(Method::GET, &path)
                .header("Accept", mt::OCI_MANIFEST),
        )?;
        expect_status(&resp, 200, "GET manifest")?;
        ensure!(
            header(&resp, "Content-Type")? == mt::OCI_MANIFEST,
            "Content-Type"
        );
        ensure!(digest_header(&resp)? == digest, "Docker-Content-Digest");
        ensure!(
            resp.bytes()?.as_ref() == manifest.as_slice(),
            "manifest bytes differ from those pushed"
        );
        let resp = ctx.send(
            ctx.req(Method::HEAD, &path)
                .header("Accept", mt::OCI_MANIFEST),
        )?;
        expect_status(&resp, 200, "HEAD manifest")?;
        ensure!(
            header(&resp, "Content-Length")? == manifest.len().to_string(),
            "HEAD Content-Length"
        );
        ensure!(
            digest_header(&resp)? == digest,
            "HEAD Docker-Content-Digest"
        );
    }
    // Push by digest: the same bytes, 201, the same digest.
    let resp = ctx.put_manifest(&repo, digest.as_str(), mt::OCI_MANIFEST, &manifest)?;
    expect_status(&resp, 201, "PUT by digest")?;
    ensure!(digest_header(&resp)? == digest, "PUT Docker-Content-Digest");
    header(&resp, "Location")?;
    // Whitespace is part of the bytes: a re-indented manifest is a different manifest.
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&manifest)?)?;
    let resp = ctx.put_manifest(&repo, "pretty", mt::OCI_MANIFEST, &pretty)?;
    expect_status(&resp, 201, "PUT pretty manifest")?;
    let resp = ctx.send(
        ctx.req(Method::GET, &format!("/v2/{repo}/manifests/pretty"))
            .header("Accept", mt::OCI_MANIFEST),
    )?;
    ensure!(
        resp.bytes()?.as_ref() == pretty.as_slice(),
        "pretty manifest re-serialised"
    );
    Ok(())
}

/// spec.md "Pushing Manifests": `?tag=` on a push by digest MAY create tags, listed in
/// `OCI-Tag` response headers.
fn push_with_tags(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("multi-tag");
    let (manifest, digest) = ctx.push_image(&repo, "first", b"multi-tag layer")?;
    let resp = ctx.put_manifest(
        &repo,
        &format!("{digest}?tag=1.0&tag=1&tag=latest"),
        mt::OCI_MANIFEST,
        &manifest,
    )?;
    expect_status(&resp, 201, "PUT by digest with tags")?;
    let tags: Vec<String> = resp
        .headers()
        .get_all("OCI-Tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_string()))
        .collect();
    let (mut listed, _) = tag_page(ctx, &repo, "")?;
    listed.sort_unstable();
    if ctx.flavor.is_distribution() {
        // Distribution 2.8 does not support `?tag=` (a MAY): no tags, no OCI-Tag.
        ensure!(
            tags.is_empty() && listed == ["first"],
            "distribution's tags: {tags:?} {listed:?}"
        );
        return Ok(());
    }
    ensure!(tags == ["1.0", "1", "latest"], "OCI-Tag: {tags:?}");
    ensure!(
        listed == ["1", "1.0", "first", "latest"],
        "tags after the push: {listed:?}"
    );
    Ok(())
}

/// Docker schema2 manifests and manifest lists are stored and served with their types.
fn docker_manifests(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("docker");
    let config = ctx.push_blob(&repo, b"{\"os\":\"linux\"}")?;
    let layer = ctx.push_blob(&repo, b"docker layer")?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::DOCKER_MANIFEST,
        "config": {"mediaType": mt::DOCKER_CONFIG, "digest": config, "size": 15},
        "layers": [{"mediaType": mt::DOCKER_LAYER_GZIP, "digest": layer, "size": 12}],
    }))?;
    let resp = ctx.put_manifest(&repo, "amd64", mt::DOCKER_MANIFEST, &manifest)?;
    expect_status(&resp, 201, "PUT schema2")?;
    let digest = Digest::sha256_of(&manifest);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": mt::DOCKER_MANIFEST, "digest": digest, "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))?;
    let resp = ctx.put_manifest(&repo, "latest", mt::DOCKER_MANIFEST_LIST, &list)?;
    expect_status(&resp, 201, "PUT manifest list")?;
    let accept = format!("{}, {}", mt::DOCKER_MANIFEST_LIST, mt::DOCKER_MANIFEST);
    let resp = ctx.send(
        ctx.req(Method::GET, &format!("/v2/{repo}/manifests/latest"))
            .header("Accept", &accept),
    )?;
    expect_status(&resp, 200, "GET manifest list")?;
    ensure!(
        header(&resp, "Content-Type")? == mt::DOCKER_MANIFEST_LIST,
        "list Content-Type"
    );
    ensure!(resp.bytes()?.as_ref() == list.as_slice(), "list bytes");
    let resp = ctx.send(
        ctx.req(Method::GET, &format!("/v2/{repo}/manifests/amd64"))
            .header("Accept", &accept),
    )?;
    ensure!(
        header(&resp, "Content-Type")? == mt::DOCKER_MANIFEST,
        "schema2 Content-Type"
    );
    Ok(())
}

/// An OCI index over two manifests of the repository.
fn oci_index(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("index");
    let (a, da) = ctx.push_image(&repo, "a", b"arch a")?;
    let (b, db) = ctx.push_image(&repo, "b", b"arch b")?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_INDEX,
        "manifests": [
            {"mediaType": mt::OCI_MANIFEST, "digest": da, "size": a.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": mt::OCI_MANIFEST, "digest": db, "size": b.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))?;
    let resp = ctx.put_manifest(&repo, "multi", mt::OCI_INDEX, &index)?;
    expect_status(&resp, 201, "PUT index")?;
    let resp = ctx.send(
        ctx.req(Method::GET, &format!("/v2/{repo}/manifests/multi"))
            .header("Accept", mt::OCI_INDEX),
    )?;
    expect_status(&resp, 200, "GET index")?;
    ensure!(
        header(&resp, "Content-Type")? == mt::OCI_INDEX,
        "index Content-Type"
    );
    ensure!(resp.bytes()?.as_ref() == index.as_slice(), "index bytes");
    Ok(())
}

/// spec.md "Push": a manifest referencing a blob the registry lacks MAY be refused, and then
/// MUST be MANIFEST_BLOB_UNKNOWN.
fn manifest_blob_unknown(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("blob-unknown");
    let config = ctx.push_blob(&repo, b"{}")?;
    let missing = Digest::sha256_of(b"a layer nobody pushed");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": mt::OCI_LAYER_GZIP, "digest": missing, "size": 21}],
    }))?;
    let resp = ctx.put_manifest(&repo, "broken", mt::OCI_MANIFEST, &manifest)?;
    expect_error(
        resp,
        &[400],
        "MANIFEST_BLOB_UNKNOWN",
        "manifest with a missing layer",
    )?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/broken")))?;
    expect_status(&resp, 404, "refused manifest is not stored")
}

/// Malformed JSON or a manifest that is not one is MANIFEST_INVALID; a body that does not
/// match the digest in the URL is DIGEST_INVALID.
fn manifest_invalid(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("invalid-manifest");
    ctx.push_image(&repo, "good", b"layer")?;
    let resp = ctx.put_manifest(&repo, "bad", mt::OCI_MANIFEST, b"{not json")?;
    expect_error(resp, &[400], "MANIFEST_INVALID", "malformed JSON")?;
    let resp = ctx.put_manifest(&repo, "bad", mt::OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":"nope"}"#)?;
    expect_error(resp, &[400], "MANIFEST_INVALID", "config of the wrong type")?;
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let wrong = Digest::sha256_of(b"another document");
    let resp = ctx.put_manifest(&repo, wrong.as_str(), mt::OCI_INDEX, body)?;
    expect_error(
        resp,
        &[400],
        "DIGEST_INVALID",
        "PUT by a digest that does not match",
    )?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/bad")))?;
    expect_status(&resp, 404, "refused manifest is not stored")
}

/// spec.md: a registry SHOULD limit manifest size and answer 413 above it; at least 4 MB
/// must be accepted.
fn manifest_too_large(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("large-manifest");
    let huge = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"annotations":{{"pad":"{}"}}}}"#,
        mt::OCI_INDEX,
        "x".repeat(5 << 20)
    );
    let resp = ctx.put_manifest(&repo, "huge", mt::OCI_INDEX, huge.as_bytes())?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 limits manifests to 4 MiB but answers 400
        // MANIFEST_INVALID ("http: request body too large") instead of 413.
        return expect_error(
            resp,
            &[400],
            "MANIFEST_INVALID",
            "distribution's 5 MiB manifest",
        );
    }
    expect_error(resp, &[413], "MANIFEST_INVALID", "5 MiB manifest")
}

/// spec.md "Pulling manifests": unknown manifests are 404 (MANIFEST_UNKNOWN); so is a
/// manifest of a repository that does not exist.
fn manifest_unknown(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("unknown");
    ctx.push_image(&repo, "exists", b"l")?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/nope")))?;
    expect_error(resp, &[404], "MANIFEST_UNKNOWN", "unknown tag")?;
    let d = Digest::sha256_of(b"nothing");
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/{d}")))?;
    expect_error(resp, &[404], "MANIFEST_UNKNOWN", "unknown digest")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{repo}/manifests/nope")))?;
    expect_status(&resp, 404, "HEAD unknown tag")?;
    let resp = ctx.send(ctx.req(
        Method::GET,
        &format!("/v2/{}/manifests/latest", ctx.repo("no-such-repo")),
    ))?;
    expect_status(&resp, 404, "nonexistent repository")
}

fn tag_page(ctx: &Ctx, repo: &str, query: &str) -> Result<(Vec<String>, Option<String>)> {
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/tags/list{query}")))?;
    expect_status(&resp, 200, "GET tags/list")?;
    let link = resp
        .headers()
        .get("Link")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let v: Value = resp.json()?;
    ensure!(v["name"] == repo, "tags name field: {}", v["name"]);
    let tags = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok((tags, link))
}

/// spec.md "Listing Tags": sorted; `n` limits; `last` continues after a tag; `Link`
/// rel="next" when more follow; n=0 is empty without Link; unknown repositories 404.
fn tag_list(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("tags");
    let (manifest, _) = ctx.push_image(&repo, "b", b"tags layer")?;
    for tag in ["a", "d", "c", "B"] {
        let resp = ctx.put_manifest(&repo, tag, mt::OCI_MANIFEST, &manifest)?;
        expect_status(&resp, 201, "tag")?;
    }
    let (mut all, _) = tag_page(ctx, &repo, "")?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 lists tags in storage (directory) order, unsorted.
        all.sort_unstable();
    }
    ensure!(
        all == ["B", "a", "b", "c", "d"],
        "tags not in ASCIIbetical order: {all:?}"
    );
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 ignores `n` (and `last`) on tag lists: every tag, no Link.
        let (page, link) = tag_page(ctx, &repo, "?n=2")?;
        ensure!(
            page.len() == 5 && link.is_none(),
            "distribution's n=2 page: {page:?} {link:?}"
        );
        let resp = ctx.send(ctx.req(
            Method::GET,
            &format!("/v2/{}/tags/list", ctx.repo("no-such-repo")),
        ))?;
        return expect_error(
            resp,
            &[404],
            "NAME_UNKNOWN",
            "tags of an unknown repository",
        );
    }
    let (page, link) = tag_page(ctx, &repo, "?n=2")?;
    ensure!(page == ["B", "a"], "n=2 page: {page:?}");
    ensure!(
        link.as_deref().is_some_and(|l| l.contains("rel=\"next\"")),
        "n=2: Link rel=\"next\" missing: {link:?}"
    );
    let (page, _) = tag_page(ctx, &repo, "?n=0")?;
    ensure!(page.is_empty(), "n=0 must be empty: {page:?}");
    let (page, link) = tag_page(ctx, &repo, "?n=2&last=b")?;
    ensure!(page == ["c", "d"], "n=2&last=b page: {page:?}");
    ensure!(link.is_none(), "no Link on the last page: {link:?}");
    let (page, _) = tag_page(ctx, &repo, "?last=a")?;
    ensure!(page == ["b", "c", "d"], "last=a without n: {page:?}");
    let resp = ctx.send(ctx.req(
        Method::GET,
        &format!("/v2/{}/tags/list", ctx.repo("no-such-repo")),
    ))?;
    expect_error(
        resp,
        &[404],
        "NAME_UNKNOWN",
        "tags of an unknown repository",
    )
}

/// `/v2/_catalog` (Docker Registry HTTP API V2): repositories sorted, paginated like tags.
fn catalog(ctx: &Ctx) -> Result<()> {
    let a = ctx.repo("catalog/a");
    let b = ctx.repo("catalog/b");
    ctx.push_image(&a, "t", b"c")?;
    ctx.push_image(&b, "t", b"c")?;
    let resp = ctx.send(ctx.req(Method::GET, "/v2/_catalog"))?;
    expect_status(&resp, 200, "GET catalog")?;
    let v: Value = resp.json()?;
    let repos: Vec<&str> = v["repositories"]
        .as_array()
        .context("repositories")?
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    ensure!(
        repos.contains(&a.as_str()) && repos.contains(&b.as_str()),
        "catalog lacks pushed repositories: {repos:?}"
    );
    let mut sorted = repos.clone();
    sorted.sort_unstable();
    ensure!(repos == sorted, "catalog not sorted");
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/_catalog?n=1&last={a}")))?;
    expect_status(&resp, 200, "GET catalog page")?;
    let link = resp
        .headers()
        .get("Link")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let v: Value = resp.json()?;
    let page: Vec<&str> = v["repositories"]
        .as_array()
        .context("repositories")?
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    ensure!(page == [b.as_str()], "n=1&last=a page: {page:?}");
    if repos.last() != Some(&b.as_str()) {
        ensure!(
            link.is_some(),
            "Link missing while more repositories follow"
        );
    }
    Ok(())
}

/// spec.md "Listing Referrers" and "Pushing Manifests with Subject".
fn referrers(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("referrers");
    let (subject_bytes, subject) = ctx.push_image(&repo, "subject", b"subject layer")?;
    let empty = ctx.push_blob(&repo, b"{}")?;
    let artifact = |artifact_type: Option<&str>, note: &str| -> Result<(Vec<u8>, Digest)> {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.example.config.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": mt::OCI_EMPTY, "digest": empty, "size": 2}],
            "subject": {"mediaType": mt::OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()},
            "annotations": {"org.example.note": note},
        });
        if let Some(t) = artifact_type {
            m["artifactType"] = json!(t);
        }
        let bytes = serde_json::to_vec(&m)?;
        let digest = Digest::sha256_of(&bytes);
        Ok((bytes, digest))
    };
    let (sbom, sbom_digest) = artifact(Some("application/vnd.example.sbom.v1"), "sbom")?;
    let (sig, sig_digest) = artifact(None, "signature")?;
    for (bytes, digest) in [(&sbom, &sbom_digest), (&sig, &sig_digest)] {
        let resp = ctx.put_manifest(&repo, digest.as_str(), mt::OCI_MANIFEST, bytes)?;
        expect_status(&resp, 201, "PUT referrer")?;
        if ctx.flavor.is_distribution() {
            // Deviation: distribution 2.8 has no referrers API and never sets OCI-Subject.
            ensure!(
                resp.headers().get("OCI-Subject").is_none(),
                "distribution set OCI-Subject"
            );
        } else {
            ensure!(
                header(&resp, "OCI-Subject")? == subject.as_str(),
                "OCI-Subject"
            );
        }
    }
    // spec.md "Push": a subject that does not exist yet MUST be accepted.
    let ghost = Digest::sha256_of(b"a subject pushed later");
    let early = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "artifactType": "application/vnd.example.early",
        "config": {"mediaType": mt::OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": mt::OCI_EMPTY, "digest": empty, "size": 2}],
        "subject": {"mediaType": mt::OCI_MANIFEST, "digest": ghost, "size": 123},
    }))?;
    let resp = ctx.put_manifest(
        &repo,
        Digest::sha256_of(&early).as_str(),
        mt::OCI_MANIFEST,
        &early,
    )?;
    expect_status(&resp, 201, "PUT referrer of a missing subject")?;

    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/referrers/{subject}")))?;
    if ctx.flavor.is_distribution() {
        // Deviation: no referrers API in distribution 2.8 (404); clients fall back to the
        // referrers tag schema.
        return expect_status(&resp, 404, "distribution's referrers endpoint");
    }
    expect_status(&resp, 200, "GET referrers")?;
    ensure!(
        header(&resp, "Content-Type")? == mt::OCI_INDEX,
        "referrers Content-Type"
    );
    let index: Value = resp.json()?;
    let manifests = index["manifests"]
        .as_array()
        .context("referrers manifests")?;
    ensure!(manifests.len() == 2, "want 2 referrers, got {index}");
    for d in manifests {
        let digest = d["digest"].as_str().unwrap_or("");
        let (want_type, want_note, want_size) = if digest == sbom_digest.as_str() {
            ("application/vnd.example.sbom.v1", "sbom", sbom.len())
        } else if digest == sig_digest.as_str() {
            // No artifactType: the config's media type stands in for it.
            (
                "application/vnd.example.config.v1+json",
                "signature",
                sig.len(),
            )
        } else {
            bail!("unexpected referrer {d}");
        };
        ensure!(
            d["artifactType"] == want_type,
            "artifactType of {digest}: {}",
            d["artifactType"]
        );
        ensure!(
            d["annotations"]["org.example.note"] == want_note,
            "annotations of {digest}"
        );
        ensure!(d["size"] == want_size, "size of {digest}");
        ensure!(d["mediaType"] == mt::OCI_MANIFEST, "mediaType of {digest}");
    }
    let resp = ctx.send(ctx.req(
        Method::GET,
        &format!("/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sbom.v1"),
    ))?;
    expect_status(&resp, 200, "filtered referrers")?;
    ensure!(
        header(&resp, "OCI-Filters-Applied")? == "artifactType",
        "OCI-Filters-Applied"
    );
    let index: Value = resp.json()?;
    ensure!(
        index["manifests"].as_array().map(Vec::len) == Some(1),
        "filter result: {index}"
    );
    ensure!(
        index["manifests"][0]["digest"] == sbom_digest.as_str(),
        "filter kept the wrong referrer"
    );

    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/referrers/{ghost}")))?;
    expect_status(&resp, 200, "referrers of a missing subject")?;
    let index: Value = resp.json()?;
    ensure!(
        index["manifests"].as_array().map(Vec::len) == Some(1),
        "early referrer listed: {index}"
    );
    let nothing = Digest::sha256_of(b"no referrers");
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/referrers/{nothing}")))?;
    expect_status(
        &resp,
        200,
        "referrers of an unreferenced digest (MUST NOT be 404)",
    )?;
    let index: Value = resp.json()?;
    ensure!(
        index["manifests"].as_array().is_some_and(Vec::is_empty),
        "empty referrers list: {index}"
    );
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/referrers/sha256:xyz")))?;
    ensure!(
        resp.status().as_u16() == 400,
        "invalid digest: {}",
        resp.status()
    );

    // A deleted referrer leaves the list.
    let resp = ctx.send(ctx.req(
        Method::DELETE,
        &format!("/v2/{repo}/manifests/{sig_digest}"),
    ))?;
    expect_status(&resp, 202, "DELETE referrer")?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/referrers/{subject}")))?;
    let index: Value = resp.json()?;
    ensure!(
        index["manifests"].as_array().map(Vec::len) == Some(1),
        "deleted referrer still listed: {index}"
    );
    Ok(())
}

/// spec.md "Deleting tags" and "Deleting Manifests": 202; afterwards 404 for the tag, or
/// for the digest and every tag pointing at it; unknown manifests 404.
fn delete_manifest(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("delete-manifest");
    let (manifest, digest) = ctx.push_image(&repo, "keep", b"delete layer")?;
    let resp = ctx.put_manifest(&repo, "untag-me", mt::OCI_MANIFEST, &manifest)?;
    expect_status(&resp, 201, "second tag")?;
    let resp = ctx.send(ctx.req(Method::DELETE, &format!("/v2/{repo}/manifests/untag-me")))?;
    if ctx.flavor.is_distribution() {
        // Deviation: distribution 2.8 cannot delete a tag on its own: DELETE by tag is 400
        // (UNSUPPORTED), which the spec allows when tag deletion is disabled.
        ensure!(
            resp.status().as_u16() == 400 || resp.status().as_u16() == 405,
            "distribution DELETE tag: {}",
            resp.status()
        );
    } else {
        expect_status(&resp, 202, "DELETE tag")?;
        let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/untag-me")))?;
        expect_status(&resp, 404, "GET deleted tag")?;
        let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/keep")))?;
        expect_status(&resp, 200, "other tag survives an untag")?;
    }
    let resp = ctx.send(ctx.req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}")))?;
    expect_status(&resp, 202, "DELETE manifest")?;
    for reference in [digest.to_string(), "keep".to_string()] {
        let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}")))?;
        expect_status(&resp, 404, "GET after DELETE")?;
    }
    let resp = ctx.send(ctx.req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}")))?;
    expect_error(
        resp,
        &[404],
        "MANIFEST_UNKNOWN",
        "DELETE of a deleted manifest",
    )
}

/// spec.md "Deleting Blobs": 202, then 404; an unknown blob 404.
fn delete_blob(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("delete-blob");
    let digest = ctx.push_blob(&repo, b"short-lived blob")?;
    let resp = ctx.send(ctx.req(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 202, "DELETE blob")?;
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_status(&resp, 404, "GET deleted blob")?;
    let resp = ctx.send(ctx.req(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}")))?;
    expect_error(resp, &[404], "BLOB_UNKNOWN", "DELETE unknown blob")
}

/// spec.md "Pulling manifests": names must match the regular expression; `..`, upper case
/// and names too long with the registry host are NAME_INVALID.
fn invalid_names(ctx: &Ctx) -> Result<()> {
    // 250 characters: fine alone, too long with `127.0.0.1:PORT/` in front.
    let long_with_host = "a".repeat(250);
    for name in [
        "Upper/case",
        "a..b",
        "-lead",
        "trail-",
        "a//b",
        long_with_host.as_str(),
    ] {
        let resp = ctx.send(ctx.req(Method::POST, &format!("/v2/{name}/blobs/uploads/")))?;
        let status = resp.status().as_u16();
        if ctx.flavor.is_distribution() {
            // Deviations: distribution 2.8's router does not match most invalid names (a
            // plain 404 page, not NAME_INVALID; `//` is redirected to a cleaned path, 301);
            // it accepts an upper-case first component and limits the name alone, not host
            // plus name, to 255 characters.
            let want = match name {
                "Upper/case" => 202,
                "a//b" => 301,
                n if n == long_with_host => 202,
                _ => 404,
            };
            ensure!(
                status == want,
                "distribution's answer to {name:?}: {status} (want {want})"
            );
            continue;
        }
        expect_error(resp, &[400], "NAME_INVALID", &format!("POST to {name:?}"))?;
    }
    // `..` as a component: HTTP clients normalise it away, so send the request line as is.
    let status = raw_status(ctx, "POST /v2/a/../b/blobs/uploads/")?;
    // Distribution 2.8 redirects to the cleaned path (301), as for `//`.
    let want = if ctx.flavor.is_distribution() {
        301
    } else {
        400
    };
    ensure!(status == want, "POST to \"a/../b\": {status} (want {want})");
    Ok(())
}

/// Sends a request line verbatim (no normalisation) and returns the response status.
fn raw_status(ctx: &Ctx, request_line: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let authority = ctx
        .base
        .strip_prefix("http://")
        .context("raw requests need an http:// base URL")?;
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{request_line} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head).context("status line")?;
    text[9..12]
        .parse()
        .with_context(|| format!("status line {text:?}"))
}

/// With deletes disabled, DELETEs are 400 or 405 and the content stays.
fn deletes_refused(ctx: &Ctx) -> Result<()> {
    let repo = ctx.repo("no-delete");
    let (_, digest) = ctx.push_image(&repo, "t", b"kept layer")?;
    let blob = ctx.push_blob(&repo, b"kept blob")?;
    for path in [
        format!("/v2/{repo}/manifests/{digest}"),
        format!("/v2/{repo}/manifests/t"),
        format!("/v2/{repo}/blobs/{blob}"),
    ] {
        let resp = ctx.send(ctx.req(Method::DELETE, &path))?;
        let status = resp.status().as_u16();
        ensure!(
            status == 405 || status == 400,
            "DELETE {path} with deletes disabled: {status}"
        );
    }
    let resp = ctx.send(ctx.req(Method::GET, &format!("/v2/{repo}/manifests/t")))?;
    expect_status(&resp, 200, "manifest kept")?;
    let resp = ctx.send(ctx.req(Method::HEAD, &format!("/v2/{repo}/blobs/{blob}")))?;
    expect_status(&resp, 200, "blob kept")
}

/// rregistry served in-process on a free loopback port, with its own storage directory;
/// stopped (drained) on drop.
pub struct Rregistry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Rregistry {
    /// Starts with deletes enabled or not; `extra_yaml` is appended to the config.
    pub fn start(delete_enabled: bool, extra_yaml: &str) -> Result<Rregistry> {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-rregistry-")
            .tempdir()?;
        let port = crate::peers::free_port();
        let yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:{port}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {delete_enabled}\n{extra_yaml}",
            dir.path().join("data").display()
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, yaml)?;
        let config = registry::config::Config::load(&path)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime for rregistry");
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(registry::server::serve(config, shutdown)) {
                eprintln!("rregistry stopped with an error: {e}");
            }
        });
        crate::peers::wait_until("rregistry", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(Rregistry {
            dir,
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Rregistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
