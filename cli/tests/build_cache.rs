//! `rbuild build --cache-to / --cache-from`: a multi-stage build exports its cache (mode=max)
//! to CNCF distribution, to rregistry and to a local OCI layout; a second build on a new, empty
//! store (only the base image loaded) imports it, runs no step, produces the same image digest,
//! and downloads only the layers of the result, never those of the first stage.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox_archive, fails, ok, rbuild};
use conformance::peers::{require, run_ok, DockerRegistry};
use conformance::registry_suite::Rregistry;
use oci::archive::ArchiveFormat;

/// Every RUN prints a marker computed by the shell, so that the marker shows only in the
/// output of a RUN that ran (the progress title shows the unexpanded `$((…))`).
const DOCKERFILE: &str = "\
FROM bb:1 AS builder
RUN echo \"RAN-$((40+1))\" && mkdir /out && echo built > /out/artifact
RUN echo \"RAN-$((40+2))\" && echo more > /out/second && echo scratch > /builder-only
FROM bb:1
COPY --from=builder /out /out
ARG V=1
RUN echo \"RAN-$((40+3))\" && cat /out/artifact /out/second > /final && echo $V > /v
WORKDIR /app
";
/// Filesystem steps of DOCKERFILE (2 RUN; COPY, RUN, WORKDIR).
const STEPS: usize = 5;

struct Case {
    tmp: tempfile::TempDir,
    context: PathBuf,
    base: PathBuf,
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let context = tmp.path().join("ctx");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
        let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
        Case { tmp, context, base }
    }

    /// A new store with only the base image.
    fn store(&self, name: &str) -> PathBuf {
        let root = self.tmp.path().join(name);
        ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&self.base));
        root
    }

    /// Builds with plain progress and `flags`; returns (manifest digest, progress output).
    fn build(&self, root: &Path, flags: &[&str]) -> (String, String) {
        let metadata = root.join("metadata.json");
        let out = rbuild(root)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "-t", "app:1"])
            .arg("--metadata-file")
            .arg(&metadata)
            .args(flags)
            .arg(&self.context)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build {flags:?} failed:\n{stderr}");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
        let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
        (digest, stderr)
    }

    /// The first build: every step runs; its cache goes to `cache_to`.
    fn first_build(&self, cache_to: &str) -> String {
        let root = self.store("store-first");
        let (digest, progress) = self.build(&root, &["--cache-to", cache_to]);
        for n in 41..=43 {
            assert!(progress.contains(&format!("RAN-{n}")), "{progress}");
        }
        digest
    }

    /// The second build, on a new store: nothing runs, the same image comes out. Returns the
    /// store.
    fn cached_build(&self, name: &str, cache_from: &str, expected_digest: &str) -> PathBuf {
        let root = self.store(name);
        let (digest, progress) = self.build(&root, &["--cache-from", cache_from]);
        for n in 41..=43 {
            assert!(
                !progress.contains(&format!("RAN-{n}")),
                "a RUN ran:\n{progress}"
            );
        }
        let cached = progress.lines().filter(|l| l.ends_with(" CACHED")).count();
        assert_eq!(cached, STEPS, "every step CACHED:\n{progress}");
        assert_eq!(digest, expected_digest, "{progress}");
        // The image is complete: it runs, with the first stage's output copied in.
        let out = ok(rbuild(&root).args(["run", "app:1", "cat", "/final"]));
        assert_eq!(out, "built\nmore\n");
        root
    }
}

/// The layers of local image `name` in store `root`.
fn image_layers(root: &Path, name: &str) -> BTreeSet<String> {
    let manifest_digest = common::inspect(root, name)["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read_blob(root, &manifest_digest);
    layer_digests(&manifest)
}

fn read_blob(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn layer_digests(manifest: &serde_json::Value) -> BTreeSet<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn has_blob(root: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    root.join("blobs/sha256").join(hex).is_file()
}

/// The cache manifest a registry serves, read by skopeo.
fn registry_cache_manifest(reference: &str) -> serde_json::Value {
    let out = run_ok(
        Command::new(require("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    )
    .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What both registry cases check: the cache lists layers the result does not have (the first
/// stage's), and the second store holds the result's layers but none of those.
/// Returns (layers of the result from the steps, first-stage-only layers).
fn check_downloads(
    first_store: &Path,
    second_store: &Path,
    cache: &serde_json::Value,
) -> (BTreeSet<String>, BTreeSet<String>) {
    assert_eq!(cache["artifactType"], "application/vnd.rbuild.cache.v1");
    let cached_layers = layer_digests(cache);
    let result_layers = image_layers(first_store, "app:1");
    let base_layers = image_layers(first_store, "bb:1");
    let built: BTreeSet<String> = result_layers.difference(&base_layers).cloned().collect();
    let builder_only: BTreeSet<String> =
        cached_layers.difference(&result_layers).cloned().collect();
    assert_eq!(built.len(), 3, "COPY, RUN and WORKDIR layers: {built:?}");
    assert!(built.is_subset(&cached_layers));
    assert_eq!(builder_only.len(), 2, "the first stage's RUN layers");
    for layer in &built {
        assert!(has_blob(second_store, layer), "{layer} was not imported");
    }
    for layer in &builder_only {
        assert!(
            !has_blob(second_store, layer),
            "{layer} of the first stage was downloaded"
        );
    }
    (built, builder_only)
}

#[test]
fn registry_cache_with_distribution() {
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let case = Case::new();
    let reference = format!("{}/cache:main", registry.addr());
    let digest = case.first_build(&format!("type=registry,ref={reference},mode=max"));
    let log = registry.dir.path().join("registry.log");
    let before = std::fs::read_to_string(&log).unwrap().len();

    let second = case.cached_build(
        "store-second",
        &format!("type=registry,ref={reference}"),
        &digest,
    );

    let cache = registry_cache_manifest(&reference);
    let (built, builder_only) =
        check_downloads(&case.tmp.path().join("store-first"), &second, &cache);
    // distribution's access log: exactly the cache config and the result's own layers.
    let log = std::fs::read_to_string(&log).unwrap();
    let fetched: BTreeSet<String> = log[before..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/cache/blobs/"))
        .filter_map(|l| l.split("/blobs/").nth(1))
        .filter_map(|rest| rest.split([' ', '"']).next())
        .map(str::to_string)
        .collect();
    let mut expected = built.clone();
    expected.insert(cache["config"]["digest"].as_str().unwrap().to_string());
    assert_eq!(fetched, expected, "blob GETs:\n{}", &log[before..]);
    assert!(fetched.is_disjoint(&builder_only));
}

#[test]
fn registry_cache_with_rregistry() {
    let registry = Rregistry::start(true, "").expect("start rregistry");
    let case = Case::new();
    let reference = format!("127.0.0.1:{}/cache:main", registry.port);
    let digest = case.first_build(&format!("type=registry,ref={reference},mode=max"));
    let gets_before = blob_gets(registry.port);

    let second = case.cached_build(
        "store-second",
        &format!("type=registry,ref={reference}"),
        &digest,
    );

    let cache = registry_cache_manifest(&reference);
    let (built, _) = check_downloads(&case.tmp.path().join("store-first"), &second, &cache);
    // rregistry's request counter: the cache config and the result's own layers, nothing else.
    assert_eq!(
        blob_gets(registry.port) - gets_before,
        built.len() as u64 + 1
    );
}

/// `rregistry_http_requests_total` for successful blob GETs, from rregistry's /metrics.
fn blob_gets(port: u16) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("rregistry_http_requests_total{")
                && l.contains("route=\"blobs\"")
                && l.contains("method=\"GET\"")
                && (l.contains("status=\"200\"") || l.contains("status=\"206\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn local_cache_min_and_max() {
    let case = Case::new();
    let max = case.tmp.path().join("cache-max");
    let min = case.tmp.path().join("cache-min");
    let root = case.store("store-first");
    let (digest, _) = case.build(
        &root,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
        ],
    );

    let cache_manifest = |dir: &Path| {
        let index = read_blob_json(&dir.join("index.json"));
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        read_blob(dir, &digest)
    };
    // mode=min: the result's steps only; mode=max: every step of both stages.
    let records = |dir: &Path| {
        let manifest = cache_manifest(dir);
        let config = read_blob(dir, manifest["config"]["digest"].as_str().unwrap());
        config["records"].as_array().unwrap().len()
    };
    assert_eq!(records(&min), 3);
    assert_eq!(records(&max), STEPS);

    let second = case.cached_build(
        "store-second",
        &format!("type=local,src={}", max.display()),
        &digest,
    );
    let (built, builder_only) = check_downloads(&root, &second, &cache_manifest(&max));

    // A changed build arg: the final RUN (and the WORKDIR on top) run again, on the COPY's
    // layer, which is downloaded for them; the first stage's layers still are not.
    let changed = case.store("store-changed");
    let (other, progress) = case.build(
        &changed,
        &[
            "--build-arg",
            "V=2",
            "--cache-from",
            &format!("type=local,src={}", max.display()),
        ],
    );
    assert_ne!(other, digest);
    assert!(progress.contains("RAN-43"), "{progress}");
    assert!(
        !progress.contains("RAN-41") && !progress.contains("RAN-42"),
        "{progress}"
    );
    // The COPY layer came from the cache (and the WORKDIR's, made again, is the same).
    let shared = image_layers(&changed, "app:1").intersection(&built).count();
    assert_eq!(shared, 2, "{progress}");
    for layer in &builder_only {
        assert!(!has_blob(&changed, layer), "{layer} was downloaded");
    }

    // With only the result's records, the first stage runs again; the image is the same.
    let root = case.store("store-third");
    let (again, progress) = case.build(
        &root,
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert_eq!(again, digest);
    assert!(
        progress.contains("RAN-41") && !progress.contains("RAN-43"),
        "{progress}"
    );
}

/// `cache-mounts=true`: the export carries the RUN cache mounts' directories. A build whose
/// steps are all cached passes the imported copy on without opening it; a build whose RUN runs
/// on a new store starts from it. Without the option nothing of the mounts is exported.
#[test]
fn cache_mounts_travel_with_the_cache() {
    let case = Case::new();
    std::fs::write(
        case.context.join("Dockerfile"),
        "FROM bb:1\nARG V=1\n\
         RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \
         echo \"run $V\" >> /var/cache/pkgs/log && cp /var/cache/pkgs/log /log\n",
    )
    .unwrap();
    let dir = |name: &str| case.tmp.path().join(name);
    let local = |kind: &str, name: &str, extra: &str| {
        format!("type=local,{kind}={}{extra}", dir(name).display())
    };
    let mounts_of = |name: &str| {
        let layout = dir(name);
        let index = read_blob_json(&layout.join("index.json"));
        let manifest = read_blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
        let config = read_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
        let listed = layer_digests(&manifest);
        let mounts: Vec<(String, String)> = config["cache_mounts"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        let digest = m["descriptor"]["digest"].as_str().unwrap().to_string();
                        assert!(listed.contains(&digest), "{digest} not in the manifest");
                        (m["id"].as_str().unwrap().to_string(), digest)
                    })
                    .collect()
            })
            .unwrap_or_default();
        mounts
    };

    let first = case.store("store-first");
    case.build(
        &first,
        &["--cache-to", &local("dest", "c1", ",cache-mounts=true")],
    );
    let exported = mounts_of("c1");
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0].0, "pkgs");

    // Everything cached: the mount is passed on as imported, never restored here.
    let second = case.store("store-second");
    let (_, progress) = case.build(
        &second,
        &[
            "--cache-from",
            &local("src", "c1", ""),
            "--cache-to",
            &local("dest", "c2", ",cache-mounts=true"),
            "--cache-to",
            &local("dest", "c3", ""),
        ],
    );
    assert!(!progress.contains("importing cache mount"), "{progress}");
    assert_eq!(mounts_of("c2"), exported);
    assert!(mounts_of("c3").is_empty());

    // The RUN runs on a new store: its cache mount starts as the first build left it. Its
    // cache, the mount's new contents with it, goes to a registry this time.
    let registry = Rregistry::start(true, "").expect("start rregistry");
    let remote = format!("type=registry,ref=127.0.0.1:{}/cache:mounts", registry.port);
    let third = case.store("store-third");
    let (_, progress) = case.build(
        &third,
        &[
            "--build-arg",
            "V=2",
            "--cache-from",
            &local("src", "c2", ""),
            "--cache-to",
            &format!("{remote},cache-mounts=true"),
        ],
    );
    assert!(
        progress.contains("importing cache mount pkgs"),
        "{progress}"
    );
    let log = ok(rbuild(&third).args(["run", "app:1", "cat", "/log"]));
    assert_eq!(log, "run 1\nrun 2\n");

    let fourth = case.store("store-fourth");
    case.build(&fourth, &["--build-arg", "V=3", "--cache-from", &remote]);
    let log = ok(rbuild(&fourth).args(["run", "app:1", "cat", "/log"]));
    assert_eq!(log, "run 1\nrun 2\nrun 3\n");
}

fn read_blob_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn bad_cache_flags_are_refused() {
    let case = Case::new();
    let root = case.tmp.path().join("store");
    for (flag, spec, expected) in [
        ("--cache-to", "type=s3,bucket=x", "type=s3 is not supported"),
        (
            "--cache-to",
            "type=local,dest=x,cache-mounts=yes",
            "cache-mounts=yes is not true or false",
        ),
        ("--cache-to", "type=local,dest=/tmp/x,mode=all", "mode=all"),
        ("--cache-to", "type=local", "dest= is required"),
        ("--cache-from", "type=registry", "ref= is required"),
    ] {
        let error = fails(rbuild(&root).args(["build", flag, spec]).arg(&case.context));
        assert!(error.contains(expected), "{spec}: {error}");
    }
    // A cache that is not there yet is a warning: the build runs.
    let root = case.store("store-empty-cache");
    let missing = case.tmp.path().join("no-cache-yet");
    let (_, progress) = case.build(
        &root,
        &[
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
        ],
    );
    assert!(
        progress.contains("WARNING: no build cache at"),
        "{progress}"
    );
}

/// A store with busybox as bb:1 and two contexts, A (a 3 MB layer, about 6 MB stored:
/// unpacked and as a blob) and B (1 MB), whose RUN also touches a cache mount. Each build's
/// image is removed, so that only the build cache holds the layers.
struct SizedBuilds {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

impl SizedBuilds {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let base = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
        ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&base));
        let context = |name: &str, megabytes: u32| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let dockerfile = format!(
                "FROM bb:1\nRUN --mount=type=cache,target=/cache \
                 head -c {megabytes}000000 /dev/urandom > /{name} && touch /cache/{name}\n"
            );
            std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
            dir
        };
        let (a, b) = (context("a", 3), context("b", 1));
        SizedBuilds {
            _tmp: tmp,
            root,
            a,
            b,
        }
    }

    /// Builds `dir` with `env`, removes the image; the progress log.
    fn build(&self, dir: &Path, env: &[(&str, &str)]) -> String {
        let out = rbuild(&self.root)
            .args(["build", "--progress", "plain", "-t", "x:1"])
            .arg(dir)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        ok(rbuild(&self.root).args(["rmi", "x:1"]));
        log
    }

    fn records(&self) -> BTreeSet<PathBuf> {
        files_in(&self.root.join("build-cache"))
    }

    /// The entries of ROOT/cache-mounts whose name ends with `suffix`.
    fn cache_mounts(&self, suffix: &str) -> BTreeSet<PathBuf> {
        files_in(&self.root.join("cache-mounts"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    }
}

fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Sets the records' last use (their mtime) to `hours` ago.
fn set_last_use(records: &BTreeSet<PathBuf>, hours: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600);
    for path in records {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(then).unwrap();
    }
}

/// `rbuild builder prune`: every record; records unused for longer than `--filter until=`;
/// the least recently used records beyond `--keep-storage`; with `--all` the cache mounts.
/// What only the removed records held is freed; a pruned step runs again, a kept one hits.
#[test]
fn builder_prune_removes_records_by_age_and_size() {
    let builds = SizedBuilds::new();
    let (root, a, b) = (&builds.root, &builds.a, &builds.b);
    let records = || builds.records();
    // Whether the build ran its RUN (no CACHED step).
    let ran = |dir: &Path| !builds.build(dir, &[]).contains("CACHED");
    let prune = |args: &[&str]| ok(rbuild(root).args(["builder", "prune", "-f"]).args(args));

    assert!(ran(a));
    let a_records = records();
    assert!(ran(b));
    let b_records: BTreeSet<PathBuf> = records().difference(&a_records).cloned().collect();
    assert!(!ran(a) && !ran(b), "the second builds should hit the cache");

    // A unused for two days, B for one hour: until=24h takes A only.
    set_last_use(&a_records, 48);
    set_last_use(&b_records, 1);
    let out = prune(&["--filter", "until=24h"]);
    assert!(
        out.starts_with(&format!("Deleted {} build cache records", a_records.len())),
        "{out}"
    );
    assert!(
        !out.contains("Total reclaimed space: 0B"),
        "A's layer was not freed: {out}"
    );
    assert_eq!(records(), b_records);
    assert!(ran(a), "a pruned step hit the cache");
    assert!(!ran(b), "a kept step ran again");

    // B least recently used now. A takes about 6 MB (its 3 MB layer, unpacked and as a blob),
    // B about 2 MB: 7 MB keeps A and not B.
    set_last_use(&records().difference(&b_records).cloned().collect(), 0);
    set_last_use(&b_records, 5);
    prune(&["--keep-storage", "7MB"]);
    let kept = records();
    assert!(
        kept.is_disjoint(&b_records),
        "B, the least recently used, was kept"
    );
    assert!(!kept.is_empty(), "more than needed was removed");

    // --all with until=: the cache mounts unused that long too.
    let mount_locks = builds.cache_mounts(".lock");
    assert_eq!(mount_locks.len(), 1, "{mount_locks:?}");
    let out = prune(&["--all", "--filter", "until=24h"]);
    assert!(!out.contains("cache mount"), "{out}");
    assert_eq!(
        builds.cache_mounts("").len(),
        2,
        "the mount and its lock should stay"
    );
    set_last_use(&mount_locks, 48);
    let out = prune(&["--all", "--filter", "until=24h"]);
    assert!(out.contains(", 1 cache mount,"), "{out}");
    assert!(builds.cache_mounts("").is_empty());
    assert!(
        !kept.is_empty() && records() == kept,
        "records used since were removed"
    );

    // No filter: everything; --all: the cache mounts too.
    assert!(ran(b));
    let out = prune(&["--all"]);
    assert!(out.contains(", 1 cache mount,"), "{out}");
    assert!(records().is_empty());
    assert!(builds.cache_mounts("").is_empty());
    assert!(ran(b));
    let err = fails(rbuild(root).args(["builder", "prune", "--filter", "label=x"]));
    assert!(err.contains("until="), "{err}");
}

/// After each build the cache is cut back to `RBUILD_GC_KEEP_STORAGE`, least recently used
/// records first, never the build's own, and RUN cache mounts unused for 48 hours go once they
/// take more than 512 MB; `off` turns that off; a bad value is refused.
#[test]
fn build_cache_is_cut_back_to_its_limit_after_each_build() {
    let builds = SizedBuilds::new();
    let (root, a, b) = (&builds.root, &builds.a, &builds.b);
    let build = |dir: &Path, limit: &str| builds.build(dir, &[("RBUILD_GC_KEEP_STORAGE", limit)]);
    let records = || builds.records();

    // Over the limit with its own records only: they stay.
    let log = build(a, "4MB");
    assert!(!log.contains("removed"), "{log}");
    let a_records = records();
    assert!(!a_records.is_empty());
    set_last_use(&a_records, 1);
    // B's build pushes the cache over: A's records go, B's stay.
    let log = build(b, "4MB");
    assert!(log.contains("build cache over 4MB: removed"), "{log}");
    let kept = records();
    assert!(kept.is_disjoint(&a_records), "{kept:?}");
    assert!(build(b, "4MB").contains("CACHED"), "B's step was not kept");
    // Off: nothing is removed however large the cache grows.
    assert!(
        !build(a, "off").contains("CACHED"),
        "A's step was not removed"
    );
    assert!(records().is_superset(&kept));

    // A's layer held by an image: its records cost the cache nothing and stay.
    ok(rbuild(root).args(["build", "-q", "-t", "keep:1"]).arg(a));
    let held = records();
    set_last_use(&held, 1);
    build(b, "1MB");
    assert!(records().is_superset(&held));

    // RUN cache mounts: once they take more than 512 MB, those unused for 48 hours go, as
    // BuildKit's first default GC rule. A's and B's mount, made large; C uses another one.
    let c = root.with_file_name("c");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM bb:1\nRUN --mount=type=cache,target=/other touch /other/c /c\n",
    )
    .unwrap();
    let lock = builds.cache_mounts(".lock");
    assert_eq!(lock.len(), 1, "{lock:?}");
    let dir = lock.first().unwrap().with_extension("");
    let big = dir.join("big");
    ok(Command::new("fallocate").args(["-l", "600M"]).arg(&big));
    let removed = |log: &str| log.contains("cache mounts over 512MB: removed 1");
    set_last_use(&lock, 47);
    assert!(
        !removed(&build(&c, "1GB")) && big.exists(),
        "used 47 hours ago"
    );
    set_last_use(&lock, 49);
    assert!(!removed(&build(&c, "off")) && big.exists(), "off");
    let log = build(&c, "1GB");
    assert!(removed(&log), "{log}");
    assert!(!dir.exists() && !lock.first().unwrap().exists());
    // C's mount, small and old, stays while the mounts take less.
    let other = builds.cache_mounts(".lock");
    set_last_use(&other, 49);
    assert!(!removed(&build(a, "1GB")));
    assert!(builds.cache_mounts(".lock").is_superset(&other));

    let out = rbuild(root)
        .arg("build")
        .arg(a)
        .env("RBUILD_GC_KEEP_STORAGE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RBUILD_GC_KEEP_STORAGE=\"lots\""),
        "{out:?}"
    );
}
