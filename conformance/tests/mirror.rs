//! rregistry as a pull-through mirror (issue #8), against real peers: two CNCF distributions
//! play Docker Hub (token auth) and another registry (htpasswd), dockerd pulls through
//! `registry-mirrors`, containerd through hosts.toml mirrors (`?ns=`) and podman through
//! registries.conf mirrors (a path prefix) reach both upstreams, cached content keeps pulling
//! with the upstreams down, concurrent cold pulls of one big blob cost the upstream one
//! download, and `prefetchblobs` fetches an image's blobs ahead of the client.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use conformance::auth_files::htpasswd_file;
use conformance::counting_proxy::CountingProxy;
use conformance::peers::{require, run_ok, Containerd, DockerRegistry, Dockerd};
use conformance::registry_suite::Rregistry;
use conformance::token_server::TokenServer;
use oci::archive::ArchiveFormat;
use oci::{Algorithm, Digest, Digester};
use reqwest::blocking::Client;
use reqwest::StatusCode;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The busybox fixture as an oci-archive; returns its manifest digest.
fn busybox_archive(dir: &Path) -> (std::path::PathBuf, Digest) {
    let rootfs = dir.join("busybox-rootfs");
    fixtures::busybox_rootfs(&rootfs).expect("busybox rootfs");
    let out = dir.join("busybox.tar");
    let recipe = fixtures::ImageRecipe {
        layers: std::slice::from_ref(&rootfs),
        config: fixtures::busybox_config(),
        name: Some(oci::Reference::parse("busybox:latest").expect("name")),
        compression: oci::compression::Compression::Gzip,
    };
    let manifest = fixtures::write_image(&recipe, ArchiveFormat::Oci, &out).expect("fixture");
    (out, manifest.digest)
}

fn skopeo_push(archive: &Path, dest: &str, creds: &str) {
    run_ok(
        Command::new(require("skopeo"))
            .args([
                "copy",
                "-q",
                "--dest-tls-verify=false",
                "--dest-creds",
                creds,
            ])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(dest),
    )
    .expect("skopeo push");
}

fn header(resp: &reqwest::blocking::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn get_manifest(http: &Client, url: &str) -> (StatusCode, String, Vec<u8>, String) {
    let resp = http
        .get(url)
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .expect("GET manifest");
    let status = resp.status();
    let cache = header(&resp, "X-Rregistry-Cache");
    let digest = header(&resp, "Docker-Content-Digest");
    (status, cache, resp.bytes().expect("body").to_vec(), digest)
}

/// Everything a client sees of the mirror with two upstreams, then with both down.
#[test]
fn mirror_serves_dockerd_containerd_and_prefixes_and_survives_upstream_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, busybox_digest) = busybox_archive(tmp.path());

    // "Docker Hub": distribution with token auth, behind a proxy that counts and can fail.
    let tokens = TokenServer::start(tmp.path(), "bob", "hunter2").expect("token server");
    let hub = DockerRegistry::start(&tokens.distribution_auth()).expect("hub");
    let hub_proxy = CountingProxy::start(hub.addr().parse().unwrap()).expect("proxy");
    skopeo_push(
        &archive,
        &format!("docker://{}/library/busybox:latest", hub.addr()),
        "bob:hunter2",
    );
    // "ghcr.io": distribution with htpasswd.
    let htpasswd = htpasswd_file(tmp.path(), &[("carol", "s3cret")]).unwrap();
    let ghcr = DockerRegistry::start(&format!(
        "auth:\n  htpasswd:\n    realm: ghcr-test\n    path: {}\n",
        htpasswd.display()
    ))
    .expect("ghcr");
    skopeo_push(
        &archive,
        &format!("docker://{}/org/app:1", ghcr.addr()),
        "carol:s3cret",
    );
    let http = Client::new();
    // A multi-arch index over the busybox manifest, pushed as exact bytes.
    let manifest_size = http
        .get(format!("http://{}/v2/org/app/manifests/1", ghcr.addr()))
        .basic_auth("carol", Some("s3cret"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .len();
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"{busybox_digest}\",\"size\":{manifest_size},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}]}}\n"
    );
    let index_digest = Digest::sha256_of(index.as_bytes());
    let put = http
        .put(format!("http://{}/v2/org/app/manifests/multi", ghcr.addr()))
        .basic_auth("carol", Some("s3cret"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text());

    let mirror = Rregistry::start(
        false,
        &format!(
            "proxy:\n  upstreams:\n    - name: docker.io\n      remoteurl: {0}\n      username: bob\n      password: hunter2\n      freshness: 0s\n    - name: hub.keep\n      remoteurl: {0}\n      username: bob\n      password: hunter2\n      freshness: 0s\n      servecachedonnotfound: true\n    - name: ghcr.io\n      remoteurl: http://{1}\n      username: carol\n      password: s3cret\n      prefixes: [gh]\n  local: [team]\n",
            hub_proxy.url(),
            ghcr.addr()
        ),
    )
    .expect("rregistry");
    let base = mirror.url();

    // dockerd with registry-mirrors pulls `busybox` (sent as library/busybox) through us.
    let dockerd = Dockerd::start_with_config(&format!("{{\"registry-mirrors\": [\"{base}\"]}}"))
        .expect("dockerd");
    run_ok(dockerd.docker().args(["pull", "busybox"])).expect("docker pull through the mirror");
    let repo_digest = run_ok(dockerd.docker().args([
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        "busybox",
    ]))
    .unwrap();
    assert!(
        String::from_utf8_lossy(&repo_digest.stdout).contains(busybox_digest.as_str()),
        "{}",
        String::from_utf8_lossy(&repo_digest.stdout)
    );
    assert!(
        hub_proxy.count("GET /v2/library/busybox/blobs/") >= 2,
        "{:?}",
        hub_proxy.requests()
    );

    // containerd's hosts.toml form: ?ns= names the upstream, the path its repository.
    let (status, cache, body, digest) =
        get_manifest(&http, &format!("{base}/v2/org/app/manifests/1?ns=ghcr.io"));
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "MISS"));
    assert_eq!(digest, busybox_digest.as_str());
    assert_eq!(Digest::sha256_of(&body), busybox_digest);
    let unknown = http
        .get(format!("{base}/v2/org/app/manifests/1?ns=quay.io"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // containerd itself, with hosts.toml naming the mirror as the one host of both
    // registries (its fallback, the registries' own servers, cannot be reached from here).
    let containerd = Containerd::start().expect("containerd");
    let hosts = containerd
        .hosts_dir(&["docker.io", "ghcr.io"], &base)
        .unwrap();
    let ctr_pull = |image: &str| {
        let mut ctr = containerd.ctr();
        ctr.args(["image", "pull", "--hosts-dir"])
            .arg(&hosts)
            .arg(image);
        run_ok(&mut ctr).unwrap_or_else(|e| panic!("containerd pull of {image}: {e:#}"));
        let listed = run_ok(containerd.ctr().args(["image", "ls"])).unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(image) && l.contains(busybox_digest.as_str())),
            "{listed}"
        );
    };
    let containerd_images = ["docker.io/library/busybox:latest", "ghcr.io/org/app:1"];
    for image in containerd_images {
        ctr_pull(image);
    }
    // podman with registries.conf mirrors: Docker Hub's at the mirror's root (paths as
    // dockerd sends them), the other registry's under a configured prefix.
    let registries_conf = tmp.path().join("registries.conf");
    std::fs::write(
        &registries_conf,
        format!(
            "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{0}\"\ninsecure = true\n\n\
             [[registry]]\nlocation = \"ghcr.io\"\n[[registry.mirror]]\nlocation = \"{0}/gh\"\ninsecure = true\n",
            mirror.addr()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let mut cmd = Command::new(require("podman"));
        cmd.env("CONTAINERS_REGISTRIES_CONF", &registries_conf)
            .arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args);
        run_ok(&mut cmd).unwrap_or_else(|e| panic!("podman {args:?}: {e:#}"))
    };
    let podman_pull = |image: &str| {
        podman(&["pull", "-q", image]);
        let digest = podman(&["image", "inspect", "--format", "{{.Digest}}", image]);
        assert_eq!(
            String::from_utf8_lossy(&digest.stdout).trim(),
            busybox_digest.as_str()
        );
    };
    for image in containerd_images {
        podman_pull(image);
    }
    // Path prefixes: the registry host, or a configured prefix (podman's mirror location).
    let pulled = tmp.path().join("pulled");
    for prefix in ["ghcr.io", "gh"] {
        run_ok(
            Command::new(require("skopeo"))
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{}/{prefix}/org/app:1", mirror.addr()))
                .arg(format!("oci:{}:{prefix}", pulled.display())),
        )
        .expect("skopeo pull with a path prefix");
    }
    // The index: the upstream's exact bytes and digest.
    let (status, _, body, digest) =
        get_manifest(&http, &format!("{base}/v2/ghcr.io/org/app/manifests/multi"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body, digest),
        (index.clone().into_bytes(), index_digest.to_string())
    );
    // Mirrored repositories are read-only; local ones beside them accept pushes.
    let refused = http
        .post(format!("{base}/v2/library/busybox/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    let local = http
        .post(format!("{base}/v2/team/app/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(local.status(), StatusCode::ACCEPTED);

    let hub_keep = format!("{base}/v2/hub.keep/library/busybox/manifests/latest");
    assert_eq!(get_manifest(&http, &hub_keep).0, StatusCode::OK);

    // Rate-limited upstream: the cached tag is served, marked stale.
    hub_proxy.fail_with(Some("429 Too Many Requests"));
    let resp = http
        .get(format!("{base}/v2/library/busybox/manifests/latest"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "X-Rregistry-Cache"), "STALE");
    assert!(header(&resp, "Warning").starts_with("110"));
    // The upstream no longer has the tag: its 404 is passed on, though a copy is cached,
    // unless the upstream is configured with `servecachedonnotfound`.
    hub_proxy.fail_with(Some("404 Not Found"));
    let (status, ..) = get_manifest(
        &http,
        &format!("{base}/v2/library/busybox/manifests/latest"),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, cache, _, digest) = get_manifest(&http, &hub_keep);
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "STALE"));
    assert_eq!(digest, busybox_digest.as_str());
    hub_proxy.fail_with(None);
    let before = hub_proxy.requests().len();

    // Both upstreams down: cached tags and digests still pull.
    drop(hub);
    drop(ghcr);
    run_ok(dockerd.docker().args(["rmi", "busybox"])).unwrap();
    run_ok(dockerd.docker().args(["pull", "busybox"])).expect("docker pull with the upstream down");
    for image in containerd_images {
        run_ok(containerd.ctr().args(["image", "rm", "--sync", image])).unwrap();
        ctr_pull(image);
        podman(&["rmi", image]);
        podman_pull(image);
    }
    let by_digest = format!("{base}/v2/org/app/manifests/{busybox_digest}?ns=ghcr.io");
    let (status, cache, _, _) = get_manifest(&http, &by_digest);
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "HIT"));
    // The tag of the second upstream is within its freshness window (default 1m): a hit.
    let (status, cache, _, _) = get_manifest(&http, &format!("{base}/v2/gh/org/app/manifests/1"));
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "HIT"));
    // The index's child was fetched ahead, so it pulls by digest with the upstream down.
    let (status, _, _, _) = get_manifest(
        &http,
        &format!("{base}/v2/ghcr.io/org/app/manifests/{busybox_digest}"),
    );
    assert_eq!(status, StatusCode::OK);
    // Digest pulls never asked the upstream; tag pulls of the Hub revalidated (and failed).
    assert!(hub_proxy.requests()[before..]
        .iter()
        .all(|r| r.contains("/manifests/latest")));
}

/// xorshift bytes: incompressible and fast to make.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn push_blob(http: &Client, registry: &str, repo: &str, data: Vec<u8>) -> Digest {
    let digest = Digest::sha256_of(&data);
    let start = http
        .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let location = header(&start, "Location");
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data)
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    digest
}

/// Sixteen clients ask at once for a 200 MB blob the cache lacks: the upstream sees one GET,
/// every client gets the right bytes, and the blob is then cached. A download the upstream
/// refuses leaves nothing behind. Configured with distribution's own `proxy.remoteurl`.
#[test]
fn concurrent_cold_pulls_share_one_upstream_download() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let proxy = CountingProxy::start(upstream.addr().parse().unwrap()).expect("proxy");
    let http = Client::builder().timeout(None).build().unwrap();
    let big = push_blob(
        &http,
        &upstream.addr(),
        "team/big",
        pseudo_random(200 << 20, 7),
    );
    let small = push_blob(
        &http,
        &upstream.addr(),
        "team/big",
        pseudo_random(1 << 20, 9),
    );

    let mirror = Rregistry::start(false, &format!("proxy:\n  remoteurl: {}\n", proxy.url()))
        .expect("rregistry");
    let url = Arc::new(format!("{}/v2/team/big/blobs/{big}", mirror.url()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            std::thread::spawn(move || {
                let mut resp = http.get(url.as_str()).send().expect("GET blob");
                assert_eq!(resp.status(), StatusCode::OK);
                let mut digester = Digester::new(Algorithm::Sha256);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut resp, &mut buf).expect("read blob");
                    if n == 0 {
                        break;
                    }
                    digester.update(&buf[..n]);
                }
                digester.finish()
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().expect("client"), big);
    }
    let fetches = proxy.count(&format!("GET /v2/team/big/blobs/{big}"));
    assert_eq!(fetches, 1, "{:?}", proxy.requests());
    // Clients get the last bytes once verified, a moment before the commit: then it is a hit.
    conformance::peers::wait_until(
        "the blob committed",
        std::time::Duration::from_secs(20),
        || {
            let head = http.head(url.as_str()).send().unwrap();
            header(&head, "X-Rregistry-Cache") == "HIT"
        },
    )
    .expect("a HEAD after the download is a cache hit");
    let again = http.head(url.as_str()).send().unwrap();
    assert_eq!(header(&again, "Content-Length"), (200u64 << 20).to_string());

    // The upstream fails the next download: an error, and nothing stays in storage.
    proxy.fail_with(Some("503 Service Unavailable"));
    let small_url = format!("{}/v2/team/big/blobs/{small}", mirror.url());
    let failed = http.get(&small_url).send().unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let cache_repo = mirror
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/docker.io/team/big");
    let hex = small.encoded();
    assert!(!cache_repo.join(format!("_layers/sha256/{hex}")).exists());
    let uploads = cache_repo.join("_uploads");
    assert!(
        !uploads.exists() || std::fs::read_dir(&uploads).unwrap().next().is_none(),
        "no upload debris"
    );
    proxy.fail_with(None);
    let resp = http.get(&small_url).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(Digest::sha256_of(&resp.bytes().unwrap()), small);
}

/// `proxy.maxsize`: when the cached blobs outgrow it, the least recently used one is evicted
/// (links and bytes), and a later pull fetches it again. The counters show on /metrics.
#[test]
fn size_limit_evicts_least_recently_used_blobs() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let proxy = CountingProxy::start(upstream.addr().parse().unwrap()).expect("proxy");
    let http = Client::new();
    let first = push_blob(
        &http,
        &upstream.addr(),
        "team/lru",
        pseudo_random(1 << 20, 3),
    );
    let second = push_blob(
        &http,
        &upstream.addr(),
        "team/lru",
        pseudo_random(1 << 20, 5),
    );
    let mirror = Rregistry::start(
        false,
        &format!(
            "proxy:\n  remoteurl: {}\n  maxsize: {}\n",
            proxy.url(),
            (1 << 20) + (1 << 19)
        ),
    )
    .expect("rregistry");
    let blob_url = |d: &Digest| format!("{}/v2/team/lru/blobs/{d}", mirror.url());
    let data = |d: &Digest| {
        let hex = d.encoded();
        mirror.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    };
    let metrics = || {
        http.get(format!("{}/metrics", mirror.url()))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    // A client has all the bytes once they are verified, a moment before the blob is
    // committed and counted: wait for the count, so that `first` is surely used first.
    let wait_for = |what: &str, line: String| {
        conformance::peers::wait_until(what, std::time::Duration::from_secs(20), || {
            metrics().lines().any(|l| l == line)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", metrics()));
    };
    let resp = http.get(blob_url(&first)).send().unwrap();
    assert_eq!(Digest::sha256_of(&resp.bytes().unwrap()), first);
    wait_for(
        "first cached",
        format!("rregistry_mirror_cached_bytes {}", 1 << 20),
    );
    let resp = http.get(blob_url(&second)).send().unwrap();
    assert_eq!(Digest::sha256_of(&resp.bytes().unwrap()), second);
    wait_for("eviction", "rregistry_mirror_evicted_blobs_total 1".into());
    assert!(
        !data(&first).exists(),
        "the least recently used blob is evicted"
    );
    assert!(data(&second).exists());
    assert!(metrics().contains(&format!("rregistry_mirror_cached_bytes {}", 1 << 20)));
    let resp = http.get(blob_url(&first)).send().unwrap();
    assert_eq!(header(&resp, "X-Rregistry-Cache"), "MISS");
    assert_eq!(Digest::sha256_of(&resp.bytes().unwrap()), first);
    assert_eq!(proxy.count(&format!("GET /v2/team/lru/blobs/{first}")), 2);

    let text = metrics();
    assert!(
        text.contains("rregistry_mirror_upstream_fetches_total 3"),
        "{text}"
    );
}

/// An upstream that refuses HEAD on blobs (405, as some CDNs answer): a HEAD for a cold blob
/// still gets its size, from a GET whose body is dropped. A Range GET of a cold blob is passed
/// to the upstream and its 206 relayed, without caching the part.
#[test]
fn cold_blob_head_falls_back_to_get_and_ranges_are_relayed() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let proxy = CountingProxy::start(upstream.addr().parse().unwrap()).expect("proxy");
    let http = Client::new();
    let data = pseudo_random(1 << 20, 11);
    let blob = push_blob(&http, &upstream.addr(), "team/partial", data.clone());
    let mirror = Rregistry::start(false, &format!("proxy:\n  remoteurl: {}\n", proxy.url()))
        .expect("rregistry");
    let url = format!("{}/v2/team/partial/blobs/{blob}", mirror.url());
    let upstream_blob = format!("/v2/team/partial/blobs/{blob}");

    proxy.refuse_method("HEAD", Some("405 Method Not Allowed"));
    let head = http.head(&url).send().unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "Content-Length"), (1u64 << 20).to_string());
    assert_eq!(header(&head, "Docker-Content-Digest"), blob.as_str());
    assert_eq!(proxy.count(&format!("HEAD {upstream_blob}")), 1);
    assert_eq!(proxy.count(&format!("GET {upstream_blob}")), 1);
    proxy.refuse_method("HEAD", None);

    let part = http
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&part, "Content-Range"),
        format!("bytes 100-199/{}", 1 << 20)
    );
    assert_eq!(part.bytes().unwrap().as_ref(), &data[100..200]);
    let beyond = http
        .get(&url)
        .header("Range", format!("bytes={}-", 2 << 20))
        .send()
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // Nothing was cached by the parts: the whole GET is a miss that fetches the blob.
    let whole = http.get(&url).send().unwrap();
    assert_eq!(header(&whole, "X-Rregistry-Cache"), "MISS");
    assert_eq!(Digest::sha256_of(&whole.bytes().unwrap()), blob);
    assert_eq!(proxy.count(&format!("GET {upstream_blob}")), 4);
    conformance::peers::wait_until(
        "the blob committed",
        std::time::Duration::from_secs(20),
        || header(&http.head(&url).send().unwrap(), "X-Rregistry-Cache") == "HIT",
    )
    .expect("cached after the whole GET");
    // Once cached, ranges come from storage.
    let part = http.get(&url).header("Range", "bytes=-10").send().unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&part, "X-Rregistry-Cache"), "HIT");
    assert_eq!(part.bytes().unwrap().as_ref(), &data[(1 << 20) - 10..]);
    assert_eq!(proxy.count(&format!("GET {upstream_blob}")), 4);
}

/// A blob GET while online GC sweeps with grace period 0: a cached blob no manifest references
/// may be swept between the mirror's check and the read, a 404 as for any registry (docs:
/// "a pull racing a delete"); the next GET fetches it again. Anything else fails.
fn get_until_served(http: &Client, url: &str, digest: &Digest) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resp = http.get(url).send().expect("GET blob");
        if resp.status() == StatusCode::NOT_FOUND && std::time::Instant::now() < deadline {
            continue;
        }
        assert_eq!(resp.status(), StatusCode::OK, "{digest}");
        assert_eq!(Digest::sha256_of(&resp.bytes().unwrap()), *digest);
        return;
    }
}

/// Online GC passes back to back (grace period 0: every blob no manifest references goes)
/// while cold blobs are filled, swept and filled again. Fills link blobs under the GC gate as
/// pushes do: every round's clients get the right bytes, and no pass fails (a pass that waits
/// for a writer longer than 10 s fails as busy) or deadlocks with a fill.
#[test]
fn fills_hold_the_gc_gate() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let http = Client::new();
    let blobs: Vec<Digest> = (0..6)
        .map(|i| {
            push_blob(
                &http,
                &upstream.addr(),
                "team/gc",
                pseudo_random(512 << 10, 100 + i),
            )
        })
        .collect();
    let mirror = Rregistry::start(
        false,
        &format!(
            "  maintenance:\n    gc:\n      enabled: true\n      interval: 10ms\n      graceperiod: 0s\nproxy:\n  remoteurl: http://{}\n",
            upstream.addr()
        ),
    )
    .expect("rregistry");
    let metrics = || {
        http.get(format!("{}/metrics", mirror.url()))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let gc_runs = |result: &str| -> u64 {
        let prefix = format!("rregistry_gc_runs_total{{result=\"{result}\"}} ");
        metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
            .unwrap_or(0)
    };
    for _round in 0..4 {
        let clients: Vec<_> = blobs
            .iter()
            .map(|digest| {
                let url = format!("{}/v2/team/gc/blobs/{digest}", mirror.url());
                let (http, digest) = (http.clone(), digest.clone());
                std::thread::spawn(move || get_until_served(&http, &url, &digest))
            })
            .collect();
        for client in clients {
            client.join().expect("client");
        }
    }
    let runs = gc_runs("success");
    conformance::peers::wait_until(
        "two more GC passes",
        std::time::Duration::from_secs(30),
        || gc_runs("success") >= runs + 2,
    )
    .expect("GC keeps running");
    assert_eq!(gc_runs("failure"), 0, "{}", metrics());
    for digest in &blobs {
        let url = format!("{}/v2/team/gc/blobs/{digest}", mirror.url());
        get_until_served(&http, &url, digest);
    }
}

/// `proxy.prefetchblobs`: fetching an image manifest through the mirror starts the downloads
/// of its config and layers before any client asks; each is fetched from the upstream once,
/// and a client's GET is then a hit. Without the setting, a manifest fetch fetches no blob.
#[test]
fn prefetchblobs_fetches_an_image_manifests_blobs_ahead_of_the_client() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let proxy = CountingProxy::start(upstream.addr().parse().unwrap()).expect("proxy");
    let http = Client::builder().timeout(None).build().unwrap();
    let config_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config = push_blob(&http, &upstream.addr(), "team/app", config_bytes.to_vec());
    let layers: Vec<(Digest, usize)> = (0..3)
        .map(|i| {
            let data = pseudo_random(3 << 20, 20 + i);
            let len = data.len();
            (push_blob(&http, &upstream.addr(), "team/app", data), len)
        })
        .collect();
    let layer_json: Vec<String> = layers
        .iter()
        .map(|(d, len)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{len}}}"#))
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{}]}}"#,
        config_bytes.len(),
        layer_json.join(",")
    );
    let put = http
        .put(format!(
            "http://{}/v2/team/app/manifests/v1",
            upstream.addr()
        ))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let blobs: Vec<Digest> = std::iter::once(config)
        .chain(layers.into_iter().map(|(d, _)| d))
        .collect();
    let upstream_gets = |proxy: &CountingProxy| -> usize {
        blobs
            .iter()
            .map(|d| proxy.count(&format!("GET /v2/team/app/blobs/{d}")))
            .sum()
    };

    // Default: the manifest alone.
    let plain = Rregistry::start(false, &format!("proxy:\n  remoteurl: {}\n", proxy.url()))
        .expect("rregistry");
    let (status, ..) = get_manifest(&http, &format!("{}/v2/team/app/manifests/v1", plain.url()));
    assert_eq!(status, StatusCode::OK);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(upstream_gets(&proxy), 0, "{:?}", proxy.requests());

    let mirror = Rregistry::start(
        false,
        &format!(
            "proxy:\n  remoteurl: {}\n  prefetchblobs: true\n",
            proxy.url()
        ),
    )
    .expect("rregistry");
    let (status, ..) = get_manifest(&http, &format!("{}/v2/team/app/manifests/v1", mirror.url()));
    assert_eq!(status, StatusCode::OK);
    for digest in &blobs {
        let url = format!("{}/v2/team/app/blobs/{digest}", mirror.url());
        conformance::peers::wait_until(
            "the prefetched blob cached",
            std::time::Duration::from_secs(20),
            || header(&http.head(&url).send().unwrap(), "X-Rregistry-Cache") == "HIT",
        )
        .expect("prefetched");
        let resp = http.get(&url).send().unwrap();
        assert_eq!(header(&resp, "X-Rregistry-Cache"), "HIT");
        assert_eq!(&Digest::sha256_of(&resp.bytes().unwrap()), digest);
    }
    assert_eq!(upstream_gets(&proxy), blobs.len(), "{:?}", proxy.requests());
}
