//! Garbage collection: online under a concurrent push loop, on a directory and on S3 (moto),
//! on one server and with the pushes on a second replica (nothing referenced is lost,
//! unreferenced old blobs go), and `rregistry gc` offline (dry
//! run, sweep, --delete-untagged; on S3 in tests/s3_registry.rs).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use conformance::s3_server::S3Server;
use oci::Digest;
use support::client::{
    client, content, location, manifest, metric, rregistry_gc, GcScenario, Registry,
};
use support::{free_port, Server};

/// Where a test looks for what GC left: the data directory or the bucket.
enum Stored<'a> {
    Dir(PathBuf),
    Bucket(&'a S3Server, &'a str),
}

impl Stored<'_> {
    fn has(&self, key: &str) -> bool {
        match self {
            Stored::Dir(data) => data.join(key).exists(),
            Stored::Bucket(s3, bucket) => !s3.list_keys(bucket, key).expect("list").is_empty(),
        }
    }

    fn blob(&self, digest: &Digest) -> bool {
        self.has(&format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &digest.encoded()[..2],
            digest.encoded()
        ))
    }

    fn layer_link(&self, repo: &str, digest: &Digest) -> bool {
        self.has(&format!(
            "docker/registry/v2/repositories/{repo}/_layers/sha256/{}/link",
            digest.encoded()
        ))
    }
}

/// One image the loop pushed.
struct Pushed {
    repo: String,
    tag: String,
    digest: Digest,
}

#[test]
fn online_gc_under_a_concurrent_push_loop_loses_nothing_referenced() {
    push_loop_on_a_directory(false);
}

/// Two replicas over one directory: GC runs on one, every push goes to the other, whose
/// writers the pass pauses through the storage (`gc.replicas`).
#[test]
fn online_gc_on_one_replica_loses_nothing_pushed_to_another() {
    push_loop_on_a_directory(true);
}

/// The same on S3: blob ages are the objects' LastModified, sweeps are DELETEs on the bucket.
#[test]
fn online_gc_on_s3_under_a_concurrent_push_loop_loses_nothing_referenced() {
    push_loop_on_s3("online-gc", false);
}

/// The same with two replicas over one bucket.
#[test]
fn online_gc_on_one_replica_over_s3_loses_nothing_pushed_to_another() {
    push_loop_on_s3("replicas-gc", true);
}

fn push_loop_on_a_directory(replicas: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = Stored::Dir(dir.path().join("data"));
    online_gc_under_a_push_loop(dir.path(), "", &stored, replicas);
}

fn push_loop_on_s3(bucket: &str, replicas: bool) {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket(bucket).expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = S3Server::storage_yaml(&s3.endpoint(), bucket, "");
    online_gc_under_a_push_loop(dir.path(), &storage, &Stored::Bucket(&s3, bucket), replicas);
}

/// `storage_yaml`: lines for the `storage:` section beside the GC settings (empty: the
/// directory under `dir`). `replicas`: the pushes go to a second replica over the same
/// storage, while GC runs on the first.
fn online_gc_under_a_push_loop(dir: &Path, storage_yaml: &str, stored: &Stored, replicas: bool) {
    let gc = |enabled: bool| {
        format!(
            "  maintenance:\n    gc:\n      enabled: {enabled}\n      interval: 300ms\n      graceperiod: 2s\n      replicas: {replicas}\n{storage_yaml}"
        )
    };
    let server = Server::start_on(dir, free_port(), "", &gc(true));
    let other_dir = dir.join("replica");
    let other = replicas.then(|| {
        std::fs::create_dir(&other_dir).expect("replica dir");
        std::os::unix::fs::symlink(dir.join("data"), other_dir.join("data")).expect("symlink");
        Server::start_on(&other_dir, free_port(), "", &gc(false))
    });
    let pushes_to = other.as_ref().unwrap_or(&server);
    let reg = Registry {
        server: &server,
        http: client(),
    };

    // Garbage from before the loop: orphan blobs, the blobs of a deleted image, an abandoned
    // upload session.
    let orphans: Vec<Digest> = (0..4)
        .map(|i| reg.push_blob("gc/junk", &content(&format!("orphan{i}"), 40_000)))
        .collect();
    let gone_layer = content("gone-layer", 50_000);
    let gone_config = content("gone-config", 300);
    reg.push_blob("gc/gone", &gone_layer);
    reg.push_blob("gc/gone", &gone_config);
    let gone_manifest = manifest(&gone_config, &[&gone_layer]);
    assert_eq!(reg.put_manifest("gc/gone", "v1", &gone_manifest).0, 201);
    let gone_digest = Digest::sha256_of(&gone_manifest);
    let resp = reg
        .http
        .delete(reg.url(&format!("/v2/gc/gone/manifests/{gone_digest}")))
        .send()
        .expect("DELETE manifest");
    assert_eq!(resp.status(), 202);
    let abandoned = location(
        &reg.http
            .post(reg.url("/v2/gc/junk/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    reg.http
        .patch(reg.url(&abandoned))
        .body(vec![1u8; 1000])
        .send()
        .expect("PATCH");
    // A pool of blobs no manifest references yet: they turn old while the loop runs, and the
    // loop then references them (by mount or HEAD-and-skip), racing the sweeps.
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..6)
            .map(|i| content(&format!("pool{i}"), 30_000))
            .collect(),
    );
    for data in pool.iter() {
        reg.push_blob("gc/pool", data);
    }
    let early_garbage: Vec<Digest> = orphans
        .iter()
        .cloned()
        .chain([
            Digest::sha256_of(&gone_layer),
            Digest::sha256_of(&gone_config),
            gone_digest.clone(),
        ])
        .collect();

    let pushed = Arc::new(Mutex::new(Vec::<Pushed>::new()));
    let deleted = Arc::new(Mutex::new(BTreeSet::<Digest>::new()));
    let junk = Arc::new(Mutex::new(Vec::<Digest>::new()));
    let retries = Arc::new(Mutex::new(0u32));
    let (loop_for, loop_cap) = (Duration::from_secs(5), Duration::from_secs(30));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..3 {
            let (pool, pushed, deleted, junk, retries) = (
                pool.clone(),
                pushed.clone(),
                deleted.clone(),
                junk.clone(),
                retries.clone(),
            );
            scope.spawn(move || {
                let reg = Registry {
                    server: pushes_to,
                    http: client(),
                };
                let repo = format!("gc/app{t}");
                // Images of ours not deleted yet, and the layers of deleted ones: those turn
                // old and unreferenced, and a later image reuses them after a HEAD says the
                // repository has them — the push that races a sweep.
                let mut mine: Vec<(Digest, Vec<u8>)> = Vec::new();
                let mut recyclable: std::collections::VecDeque<(Instant, Vec<u8>)> =
                    Default::default();
                let mut i = 0;
                // On a loaded machine, longer: until the loop has pushed enough to matter.
                let enough = || pushed.lock().expect("pushed").len() >= 6;
                while started.elapsed() < loop_for || (!enough() && started.elapsed() < loop_cap) {
                    let layer = content(&format!("layer-{t}-{i}"), 20_000);
                    let config = content(&format!("config-{t}-{i}"), 200);
                    let shared = &pool[(t + i) % pool.len()];
                    if i % 2 == 0 {
                        reg.push_blob(&repo, &layer);
                    } else {
                        reg.push_blob_chunked(&repo, &layer);
                    }
                    reg.push_blob(&repo, &config);
                    // The shared layer: mount it, or skip it when the repository has it,
                    // as clients do after a HEAD.
                    let head = reg
                        .http
                        .head(reg.url(&format!("/v2/{repo}/blobs/{}", Digest::sha256_of(shared))))
                        .send()
                        .expect("HEAD");
                    if head.status() != 200 {
                        reg.mount_or_push(&repo, "gc/pool", shared);
                    }
                    let mut layers = vec![layer.clone(), shared.clone()];
                    if recyclable
                        .front()
                        .is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(2))
                    {
                        if let Some((_, old_layer)) = recyclable.pop_front() {
                            let head = reg
                                .http
                                .head(reg.url(&format!(
                                    "/v2/{repo}/blobs/{}",
                                    Digest::sha256_of(&old_layer)
                                )))
                                .send()
                                .expect("HEAD");
                            if head.status() != 200 {
                                reg.push_blob(&repo, &old_layer);
                            }
                            layers.push(old_layer);
                        }
                    }
                    let unreferenced =
                        reg.push_blob(&repo, &content(&format!("junk-{t}-{i}"), 10_000));
                    junk.lock().expect("junk").push(unreferenced);
                    let layer_refs: Vec<&[u8]> = layers.iter().map(|l| &l[..]).collect();
                    let body = manifest(&config, &layer_refs);
                    let tag = format!("v{i}");
                    let mut attempt = 0;
                    loop {
                        let (status, text) = reg.put_manifest(&repo, &tag, &body);
                        if status == 201 {
                            break;
                        }
                        // A blob swept between our check and the PUT: the registry refuses
                        // the manifest (nothing dangling is stored); push the blobs again.
                        assert!(
                            status == 400 && text.contains("MANIFEST_BLOB_UNKNOWN"),
                            "manifest PUT: {status} {text}"
                        );
                        attempt += 1;
                        assert!(attempt < 5, "manifest PUT kept failing: {text}");
                        *retries.lock().expect("retries") += 1;
                        reg.push_blob(&repo, &config);
                        for data in &layers {
                            reg.push_blob(&repo, data);
                        }
                    }
                    let digest = Digest::sha256_of(&body);
                    pushed.lock().expect("pushed").push(Pushed {
                        repo: repo.clone(),
                        tag: tag.clone(),
                        digest: digest.clone(),
                    });
                    mine.push((digest, layer));
                    // Delete an older image now and then: its blobs become garbage again.
                    if i % 3 == 2 {
                        let (old, old_layer) = mine.remove(0);
                        recyclable.push_back((Instant::now(), old_layer));
                        let resp = reg
                            .http
                            .delete(reg.url(&format!("/v2/{repo}/manifests/{old}")))
                            .send()
                            .expect("DELETE");
                        assert_eq!(resp.status(), 202);
                        deleted.lock().expect("deleted").insert(old);
                    }
                    i += 1;
                }
            });
        }
    });
    let passes_during_loop = metric(&server, "rregistry_gc_runs_total{result=\"success\"}");

    // The old garbage goes once it is older than the grace period.
    let junk = junk.lock().expect("junk").clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left: Vec<&Digest> = early_garbage
            .iter()
            .chain(&junk)
            .filter(|d| stored.blob(d))
            .collect();
        let session = reg.get(&abandoned).status();
        if left.is_empty() && session == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "garbage left: {} blobs, abandoned session {session}",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for d in &orphans {
        assert!(
            !stored.layer_link("gc/junk", d),
            "link to a swept blob left"
        );
    }

    // Every manifest in every repository pulls whole, and they are exactly the images pushed
    // and not deleted (a deleted image's tags go with it).
    let pushed = pushed.lock().expect("pushed");
    let deleted = deleted.lock().expect("deleted");
    assert!(
        pushed.len() >= 6,
        "the loop pushed only {} images",
        pushed.len()
    );
    let expected: BTreeSet<(String, String, Digest)> = pushed
        .iter()
        .filter(|p| !deleted.contains(&p.digest))
        .map(|p| (p.repo.clone(), p.tag.clone(), p.digest.clone()))
        .collect();
    let mut found = BTreeSet::new();
    let catalog: serde_json::Value = reg.get("/v2/_catalog").json().expect("catalog");
    for repo in catalog["repositories"].as_array().expect("repositories") {
        let repo = repo.as_str().expect("name");
        let tags: serde_json::Value = reg
            .get(&format!("/v2/{repo}/tags/list"))
            .json()
            .expect("tags");
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().expect("tag");
            let digest = reg.pull_whole(repo, tag);
            found.insert((repo.to_string(), tag.to_string(), digest));
        }
    }
    assert!(
        found == expected,
        "images in the registry differ from those pushed"
    );
    assert!(
        passes_during_loop >= 3.0,
        "GC ran {passes_during_loop} passes while pushes ran"
    );
    assert_eq!(
        metric(&server, "rregistry_gc_runs_total{result=\"failure\"}"),
        0.0
    );
    assert!(metric(&server, "rregistry_gc_reclaimed_bytes_total") > 0.0);
    eprintln!(
        "{} images pushed, {} deleted, {} manifest PUTs retried after a sweep",
        pushed.len(),
        deleted.len(),
        retries.lock().expect("retries")
    );
    let log = [dir, &other_dir]
        .map(|d| std::fs::read_to_string(d.join("rregistry.log")).unwrap_or_default())
        .concat();
    assert!(!log.contains("panicked"), "server panicked:\n{log}");
    assert!(!log.contains("status=500"), "server answered 500:\n{log}");
}

/// Sets every file's mtime two days back, as if the storage had aged.
fn age_storage(root: &Path) {
    let old = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(old))
                    .expect("set mtime");
            }
        }
    }
}

#[test]
fn offline_gc_dry_run_sweep_and_delete_untagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let stored = Stored::Dir(data_dir.clone());
    let config = dir.path().join("config.yml");
    let port = free_port();
    let server = Server::start_on(dir.path(), port, "", "");
    let reg = Registry {
        server: &server,
        http: client(),
    };
    let GcScenario {
        kept,
        orphan,
        untagged_layer: untagged_layer_digest,
        untagged: untagged_digest,
        session,
        ..
    } = reg.push_gc_scenario();
    drop(reg);
    assert!(server.terminate().success());
    age_storage(&data_dir);

    let out = rregistry_gc(&config, &["--dry-run"]);
    assert!(
        out.contains(&format!("would remove blob {orphan}")),
        "{out}"
    );
    assert!(!out.contains(&untagged_layer_digest.to_string()), "{out}");
    assert!(
        out.contains("would remove upload session off/app/"),
        "{out}"
    );
    assert!(stored.blob(&orphan), "a dry run removes nothing");

    let out = rregistry_gc(&config, &[]);
    assert!(
        out.contains(&format!("removed blob {orphan} (20000 bytes)")),
        "{out}"
    );
    assert!(
        out.contains("removed 1 blobs (20000 bytes), 1 layer links"),
        "{out}"
    );
    assert!(!stored.blob(&orphan));
    assert!(!stored.layer_link("off/app", &orphan));
    assert!(stored.blob(&untagged_layer_digest));

    let out = rregistry_gc(&config, &["--delete-untagged"]);
    assert!(
        out.contains(&format!(
            "removed untagged manifest off/app@{untagged_digest}"
        )),
        "{out}"
    );
    assert!(!stored.blob(&untagged_layer_digest));
    assert!(!stored.blob(&untagged_digest));

    // The tagged image is whole; the session is gone.
    let server = Server::start_on(dir.path(), port, "", "");
    let reg = Registry {
        server: &server,
        http: client(),
    };
    assert_eq!(reg.pull_whole("off/app", "v1"), Digest::sha256_of(&kept));
    assert_eq!(reg.get(&session).status(), 404);
}
