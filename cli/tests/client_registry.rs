//! `rbuild push`, `pull`, `login` and `logout` against CNCF distribution (Debian's
//! docker-registry) with no auth, htpasswd Basic auth and token auth (a token server in this
//! file, issuing RS256 JWTs that distribution verifies against the test's own certificate),
//! and images exchanged with skopeo and dockerd. Every peer is required: none is mocked.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{busybox_archive, ok, rbuild, snapshot};
use conformance::peers::{require, run_ok, DockerRegistry, Dockerd};
use conformance::registry_suite::Rregistry;
use conformance::token_server::{base64, TokenServer, REFRESH_TOKEN};
use oci::archive::ArchiveFormat;

/// An rbuild command with its own docker config directory (never the user's).
fn rb(root: &Path, docker_config: &Path) -> Command {
    let mut cmd = rbuild(root);
    cmd.env("DOCKER_CONFIG", docker_config);
    cmd
}

/// Runs and requires exit code 1; returns the error: the last line of stderr, one line that
/// starts with `rbuild:` (progress lines may come before it).
fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?}: expected exit 1, got {}: {stderr}",
        out.status
    );
    let last = stderr.trim_end().lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("rbuild: "),
        "expected a one-line error last, got: {stderr}"
    );
    last
}

/// `Digest: sha256:…` from `rbuild pull`, or `TAG: digest: sha256:… size: N` from `push`.
fn digest_in(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {output:?}"))
        .to_string()
}

fn skopeo_digest(image: &str, extra: &[&str]) -> String {
    let out = run_ok(
        Command::new(require("skopeo"))
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .args(extra)
            .arg(format!("docker://{image}")),
    )
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A store with the busybox fixture loaded as `name`.
fn store_with_busybox(tmp: &Path, docker_config: &Path, name: &str) -> PathBuf {
    let root = tmp.join(format!("store-{}", name.replace(['/', ':'], "_")));
    let archive = busybox_archive(tmp, name, ArchiveFormat::Oci);
    ok(rb(&root, docker_config).args(["load", "-i"]).arg(&archive));
    root
}

/// A store with a one-layer image of `mb` MiB of incompressible data, named `name`.
fn store_with_big_image(tmp: &Path, docker_config: &Path, name: &str, mb: u64) -> PathBuf {
    let root = tmp.join("store-big");
    let layers = fixtures::synthetic_layers(
        &tmp.join("synthetic"),
        1,
        mb << 20,
        fixtures::SyntheticKind::Random,
    )
    .unwrap();
    let recipe = fixtures::ImageRecipe {
        layers: &layers,
        config: fixtures::busybox_config(),
        name: Some(oci::Reference::parse(name).unwrap()),
        compression: oci::compression::Compression::Gzip,
    };
    let archive = tmp.join("big.tar");
    fixtures::write_image(&recipe, ArchiveFormat::Oci, &archive).unwrap();
    ok(rb(&root, docker_config).args(["load", "-i"]).arg(&archive));
    root
}

/// Pushed by rbuild, read by skopeo and pulled by dockerd with the same digest; pushed by
/// skopeo, pulled by rbuild with the same digest; an unknown tag is named in the error.
#[test]
fn no_auth_round_trips_with_skopeo_and_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let addr = registry.addr();
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:1");

    let pushed =
        ok(rb(&root, &cfg).args(["push", "rbuild-test/busybox:1", &format!("{addr}/app/bb:1")]));
    let digest = digest_in(&pushed);
    assert_eq!(skopeo_digest(&format!("{addr}/app/bb:1"), &[]), digest);

    // `push -a`: every local tag of a repository.
    for tag in ["1", "2"] {
        ok(rb(&root, &cfg).args([
            "tag",
            "rbuild-test/busybox:1",
            &format!("{addr}/multi/bb:{tag}"),
        ]));
    }
    ok(rb(&root, &cfg).args(["push", "-a", &format!("{addr}/multi/bb")]));
    for tag in ["1", "2"] {
        assert_eq!(
            skopeo_digest(&format!("{addr}/multi/bb:{tag}"), &[]),
            digest
        );
    }

    let dockerd = Dockerd::start().expect("start dockerd");
    run_ok(dockerd.docker().args(["pull", &format!("{addr}/app/bb:1")])).unwrap();
    let repo_digest = run_ok(dockerd.docker().args([
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &format!("{addr}/app/bb:1"),
    ]))
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&repo_digest.stdout).trim(),
        format!("{addr}/app/bb@{digest}")
    );
    let run = run_ok(dockerd.docker().args([
        "run",
        "--rm",
        "--network",
        "host",
        &format!("{addr}/app/bb:1"),
        "echo",
        "hello",
    ]))
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello\n");

    // docker pushes a docker-schema2 image of its own; skopeo copies it again under another
    // name, converting nothing: rbuild pulls both with the registry's digests.
    run_ok(dockerd.docker().args([
        "tag",
        &format!("{addr}/app/bb:1"),
        &format!("{addr}/from-docker:2"),
    ]))
    .unwrap();
    run_ok(
        dockerd
            .docker()
            .args(["push", &format!("{addr}/from-docker:2")]),
    )
    .unwrap();
    run_ok(Command::new(require("skopeo")).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{addr}/from-docker:2"),
        &format!("docker://{addr}/from-skopeo:3"),
    ]))
    .unwrap();
    let fresh = tmp.path().join("fresh-store");
    for name in ["from-docker:2", "from-skopeo:3"] {
        let image = format!("{addr}/{name}");
        let out = ok(rb(&fresh, &cfg).args(["pull", &image]));
        assert_eq!(digest_in(&out), skopeo_digest(&image, &[]), "{name}");
        let inspect = common::inspect(&fresh, &image);
        assert!(inspect["RepoTags"].to_string().contains(name), "{inspect}");
    }
    // A second pull downloads nothing.
    let again = rb(&fresh, &cfg)
        .args(["pull", &format!("{addr}/from-skopeo:3")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("Image is up to date"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("Already exists"));

    let err = fails(rb(&fresh, &cfg).args(["pull", &format!("{addr}/app/bb:missing")]));
    assert!(
        err.contains("manifest") && err.contains("app/bb:missing") && err.contains("not found"),
        "{err}"
    );
}

/// htpasswd Basic auth: a wrong password is `unauthorized` naming the registry and stores
/// nothing; the right one is checked, written to config.json, used by push and pull, and
/// `logout` removes it.
#[test]
fn basic_auth_login_push_pull_logout() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let htpasswd = tmp.path().join("htpasswd");
    let line = run_ok(Command::new(require("htpasswd")).args(["-Bbn", "alice", "s3cret"])).unwrap();
    std::fs::write(&htpasswd, &line.stdout).unwrap();
    let registry = DockerRegistry::start(&format!(
        "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
        htpasswd.display()
    ))
    .expect("start docker-registry");
    let addr = registry.addr();
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:basic");

    let err =
        fails(rb(&root, &cfg).args(["push", "rbuild-test/busybox:basic", &format!("{addr}/bb:1")]));
    assert!(err.contains("unauthorized") && err.contains(&addr), "{err}");

    let err = fails(rb(&root, &cfg).args(["login", "-u", "alice", "-p", "wrong", &addr]));
    assert!(err.contains("unauthorized") && err.contains(&addr), "{err}");
    assert!(
        !cfg.join("config.json").exists(),
        "a failed login writes nothing"
    );

    let mut login = rb(&root, &cfg);
    login
        .args(["login", "-u", "alice", "--password-stdin", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Login Succeeded"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["auths"][&addr]["auth"], "YWxpY2U6czNjcmV0",
        "base64 of alice:s3cret, as docker writes it"
    );

    let digest = digest_in(&ok(rb(&root, &cfg).args([
        "push",
        "rbuild-test/busybox:basic",
        &format!("{addr}/bb:1"),
    ])));
    assert_eq!(
        skopeo_digest(&format!("{addr}/bb:1"), &["--creds", "alice:s3cret"]),
        digest
    );
    let fresh = tmp.path().join("fresh");
    assert_eq!(
        digest_in(&ok(rb(&fresh, &cfg).args(["pull", &format!("{addr}/bb:1")]))),
        digest
    );

    assert!(ok(rb(&root, &cfg).args(["logout", &addr])).contains("Removing login credentials"));
    let err = fails(rb(&fresh, &cfg).args(["pull", &format!("{addr}/bb:1")]));
    assert!(
        err.contains("unauthorized") && err.contains("rbuild login"),
        "{err}"
    );
}

/// Token auth: pushes and pulls ask for exactly the scopes they need, a push to another
/// repository mounts the blobs (asking `pull` on the source), and a wrong password is
/// refused by the token server as `unauthorized`.
#[test]
fn token_auth_scopes_and_cross_repository_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let tokens = TokenServer::start(tmp.path(), "bob", "hunter2").expect("token server");
    let registry =
        DockerRegistry::start(&tokens.distribution_auth()).expect("start docker-registry");
    let addr = registry.addr();
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:token");

    let err = fails(rb(&root, &cfg).args(["login", "-u", "bob", "-p", "nope", &addr]));
    assert!(err.contains("unauthorized") && err.contains(&addr), "{err}");
    ok(rb(&root, &cfg).args(["login", "-u", "bob", "-p", "hunter2", &addr]));

    let src = format!("{addr}/team/src:1");
    ok(rb(&root, &cfg).args(["tag", "rbuild-test/busybox:token", &src]));
    let digest = digest_in(&ok(rb(&root, &cfg).args(["push", &src])));
    assert!(tokens
        .scopes_requested()
        .contains(&"repository:team/src:pull,push".to_string()));

    tokens.clear();
    let out = rb(&root, &cfg)
        .args(["push", &src, &format!("{addr}/team/dst:1")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        progress.matches("Mounted from team/src").count(),
        2,
        "config and layer mounted: {progress}"
    );
    assert!(!progress.contains("Pushed"), "nothing uploaded: {progress}");
    assert_eq!(
        tokens.scopes_requested(),
        vec!["repository:team/dst:pull,push repository:team/src:pull".to_string()],
        "one token, for exactly the push and the mount source"
    );
    assert_eq!(digest_in(&String::from_utf8_lossy(&out.stdout)), digest);

    tokens.clear();
    let fresh = tmp.path().join("fresh");
    assert_eq!(
        digest_in(&ok(
            rb(&fresh, &cfg).args(["pull", &format!("{addr}/team/dst:1")])
        )),
        digest
    );
    assert_eq!(
        tokens.scopes_requested(),
        vec!["repository:team/dst:pull".to_string()]
    );
}

/// A connection cut in the middle of a blob: the pull resumes with Range, the push asks the
/// registry where the upload stands (or starts over when it dropped the session); both end
/// with the registry's digests. Against distribution and against rregistry.
#[test]
fn cut_connections_resume() {
    let registry = DockerRegistry::start("").expect("start docker-registry");
    push_and_pull_through_cuts(registry.port);
}

#[test]
fn rregistry_round_trip_and_cut_connections() {
    let registry = Rregistry::start(true, "").expect("start rregistry");
    push_and_pull_through_cuts(registry.port);
    // The small image too, read back by skopeo.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:rr");
    let target = format!("{}/rr/bb:1", registry.addr());
    let digest = digest_in(&ok(rb(&root, &cfg).args([
        "push",
        "rbuild-test/busybox:rr",
        &target,
    ])));
    assert_eq!(skopeo_digest(&target, &[]), digest);
    let fresh = tmp.path().join("fresh");
    assert_eq!(
        digest_in(&ok(rb(&fresh, &cfg).args(["pull", &target]))),
        digest
    );
}

fn push_and_pull_through_cuts(registry_port: u16) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let root = store_with_big_image(tmp.path(), &cfg, "rbuild-test/big:1", 40);

    let push_proxy = CutProxy::start(registry_port, Direction::ToServer, 20 << 20);
    let target = format!("127.0.0.1:{}/big:1", push_proxy.port);
    let out = rb(&root, &cfg)
        .args(["push", "rbuild-test/big:1", &target])
        .output()
        .unwrap();
    let push_log = String::from_utf8_lossy(&out.stderr).into_owned();
    let stderr = &push_log;
    assert!(out.status.success(), "{stderr}");
    assert!(
        push_proxy.cut.load(Ordering::SeqCst),
        "the proxy cut the upload"
    );
    assert!(stderr.contains("resuming at byte"), "{stderr}");
    let digest = digest_in(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        skopeo_digest(&format!("127.0.0.1:{registry_port}/big:1"), &[]),
        digest
    );

    let pull_proxy = CutProxy::start(registry_port, Direction::ToClient, 20 << 20);
    let fresh = tmp.path().join("fresh");
    let out = rb(&fresh, &cfg)
        .args(["pull", &format!("127.0.0.1:{}/big:1", pull_proxy.port)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        pull_proxy.cut.load(Ordering::SeqCst),
        "the proxy cut the download"
    );
    assert!(stderr.contains("resuming at byte"), "{stderr}");
    assert_eq!(digest_in(&String::from_utf8_lossy(&out.stdout)), digest);
    eprintln!("push through a cut:\n{push_log}\npull through a cut:\n{stderr}");
}

/// A registry that serves a blob whose bytes do not match its digest: refused, nothing stored.
#[test]
fn wrong_digest_from_the_registry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let addr = registry.addr();
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:bad");
    ok(rb(&root, &cfg).args(["push", "rbuild-test/busybox:bad", &format!("{addr}/bad:1")]));

    // Damage the layer in distribution's storage (docker/registry/v2/blobs/sha256/xx/HEX/data):
    // the registry serves stored bytes without re-checking them.
    let inspect = common::inspect(&root, "rbuild-test/busybox:bad");
    let layer = inspect["Layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = registry.dir.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{layer}/data",
        &layer[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let fresh = tmp.path().join("fresh");
    let err = fails(rb(&fresh, &cfg).args(["pull", &format!("{addr}/bad:1")]));
    assert!(
        err.contains("wrong digest") && err.contains(&addr) && err.contains(&layer),
        "{err}"
    );
    // Nothing of the bad blob, no image. Blobs that did verify (the config) are kept, as
    // containerd keeps them, so that a retry need not fetch them again; `prune` frees them.
    let files = snapshot(&fresh);
    assert!(
        !files
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains(&layer)),
        "{files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|(p, _)| p.starts_with(fresh.join("ingest"))),
        "{files:?}"
    );
    assert!(
        !fresh.join("index.json").exists()
            || ok(rb(&fresh, &cfg).args(["images", "-q"]))
                .trim()
                .is_empty()
    );
}

/// An OAuth2 refresh token stored as docker's `identitytoken` is exchanged with a POST
/// (oauth.md, grant_type=refresh_token) instead of sending a password.
#[test]
fn identity_token_is_refreshed_with_oauth2() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let tokens = TokenServer::start(tmp.path(), "bob", "hunter2").expect("token server");
    let registry =
        DockerRegistry::start(&tokens.distribution_auth()).expect("start docker-registry");
    let addr = registry.addr();
    std::fs::create_dir_all(&cfg).unwrap();
    let config = serde_json::json!({"auths": {&addr: {"auth": base64(b"bob:", false), "identitytoken": REFRESH_TOKEN}}});
    std::fs::write(cfg.join("config.json"), config.to_string()).unwrap();
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:oauth");
    let digest = digest_in(&ok(rb(&root, &cfg).args([
        "push",
        "rbuild-test/busybox:oauth",
        &format!("{addr}/o/bb:1"),
    ])));
    assert_eq!(
        tokens.scopes_requested(),
        vec!["refresh_token repository:o/bb:pull,push".to_string()]
    );
    let fresh = tmp.path().join("fresh");
    assert_eq!(
        digest_in(&ok(
            rb(&fresh, &cfg).args(["pull", &format!("{addr}/o/bb:1")])
        )),
        digest
    );
}

/// A registry that is busy (429 with Retry-After) on the first manifest request and failing
/// (503) on the first blob request: both are retried and the pull succeeds.
#[test]
fn busy_and_failing_answers_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("docker-config");
    let registry = DockerRegistry::start("").expect("start docker-registry");
    let root = store_with_busybox(tmp.path(), &cfg, "rbuild-test/busybox:busy");
    let target = format!("{}/busy:1", registry.addr());
    let digest = digest_in(&ok(rb(&root, &cfg).args([
        "push",
        "rbuild-test/busybox:busy",
        &target,
    ])));

    let proxy = FaultProxy::start(
        registry.port,
        vec![
            ("/manifests/", "429 Too Many Requests\r\nRetry-After: 1"),
            ("/blobs/", "503 Service Unavailable"),
        ],
    );
    let fresh = tmp.path().join("fresh");
    let out = ok(rb(&fresh, &cfg).args(["pull", &format!("127.0.0.1:{}/busy:1", proxy.port)]));
    assert_eq!(digest_in(&out), digest);
    let refused = proxy.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 2, "each fault answered once: {refused:?}");
}

// ---------------------------------------------------------------------------------------
// TCP proxies on 127.0.0.1 that break a registry's answers on purpose.

/// Accepts connections on a free loopback port until dropped, connecting each to `upstream`
/// and handing both ends to `handle`.
struct LoopbackProxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl LoopbackProxy {
    fn start(
        upstream: u16,
        handle: impl Fn(TcpStream, TcpStream) + Send + 'static,
    ) -> LoopbackProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                    handle(client, server);
                }
            }
        });
        LoopbackProxy { port, stop }
    }
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Cuts one connection once, after `after` bytes in one direction.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    _proxy: LoopbackProxy,
}

impl CutProxy {
    fn start(upstream: u16, direction: Direction, after: u64) -> CutProxy {
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = cut.clone();
        let proxy = LoopbackProxy::start(upstream, move |client, server| {
            let counted = Arc::new(AtomicU64::new(0));
            for (from, to, dir) in [
                (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Direction::ToServer,
                ),
                (server, client, Direction::ToClient),
            ] {
                let (cut, counted) = (cutting.clone(), counted.clone());
                std::thread::spawn(move || pump(from, to, dir == direction, after, &cut, &counted));
            }
        });
        CutProxy {
            port: proxy.port,
            cut,
            _proxy: proxy,
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    watched: bool,
    after: u64,
    cut: &AtomicBool,
    counted: &AtomicU64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if watched
            && !cut.load(Ordering::SeqCst)
            && counted.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > after
        {
            cut.store(true, Ordering::SeqCst);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// For GET-only clients (a pull): answers the first request whose line contains a pattern
/// with an error status instead of forwarding it, once per pattern. Requests are read head by
/// head; a client waits for each answer before its next request on a connection, so an
/// injected answer never interleaves with a forwarded one.
struct FaultProxy {
    port: u16,
    refused: Arc<Mutex<Vec<String>>>,
    _proxy: LoopbackProxy,
}

impl FaultProxy {
    fn start(upstream: u16, faults: Vec<(&'static str, &'static str)>) -> FaultProxy {
        let refused = Arc::new(Mutex::new(Vec::new()));
        let pending = Arc::new(Mutex::new(faults));
        let refusing = refused.clone();
        let proxy = LoopbackProxy::start(upstream, move |client, server| {
            let back = (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                pump(
                    back.0,
                    back.1,
                    false,
                    0,
                    &AtomicBool::new(false),
                    &AtomicU64::new(0),
                )
            });
            let (pending, refused) = (pending.clone(), refusing.clone());
            std::thread::spawn(move || forward_requests(client, server, &pending, &refused));
        });
        FaultProxy {
            port: proxy.port,
            refused,
            _proxy: proxy,
        }
    }
}

fn forward_requests(
    client: TcpStream,
    mut server: TcpStream,
    pending: &Mutex<Vec<(&'static str, &'static str)>>,
    refused: &Mutex<Vec<String>>,
) {
    let mut to_client = client.try_clone().unwrap();
    let mut reader = BufReader::new(client);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let request_line = head.lines().next().unwrap_or("").to_string();
        let fault = {
            let mut pending = pending.lock().unwrap();
            let hit = pending
                .iter()
                .position(|(pattern, _)| request_line.contains(pattern));
            hit.map(|i| pending.remove(i).1)
        };
        let result = match fault {
            Some(status) => {
                refused.lock().unwrap().push(request_line);
                write!(to_client, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")
            }
            None => server.write_all(head.as_bytes()),
        };
        if result.is_err() {
            return;
        }
    }
}
