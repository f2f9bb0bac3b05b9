//! `rbuild build` through the CLI: the cache, reproducibility, outputs, secrets, and errors.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{busybox_archive, fails, http_server, inspect, listening, ok, rbuild, ssh_agent};
use conformance::peers::{require, run_ok, PeerProcess};
use oci::archive::ArchiveFormat;

/// A store with the busybox fixture loaded as `bb:1`.
fn store_with_busybox(tmp: &Path, name: &str) -> std::path::PathBuf {
    let root = tmp.join(name);
    let archive = busybox_archive(tmp, "bb:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&archive));
    root
}

/// A fresh store with the busybox fixture as `bb:1`, and a context holding `dockerfile`.
fn store_and_context(
    dockerfile: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    (tmp, root, ctx)
}

fn build(root: &Path, context: &Path, extra: &[&str]) -> (String, String) {
    let out = rbuild(root)
        .args(["build", "--progress", "plain"])
        .args(extra)
        .arg(context)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("RBUILD_TEST_TOKEN", "token-123")
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

const MULTI_STAGE: &str = r#"
FROM bb:1 AS base
ARG FLAVOUR=plain
WORKDIR /src
COPY input.txt .
RUN tr a-z A-Z < input.txt > upper.txt && echo "$FLAVOUR" > flavour && rm /bin/vi
COPY later.txt .

FROM bb:1 AS unused
RUN exit 1

FROM bb:1
LABEL org.example.kind=test
COPY --from=base /src /app
ENV GREETING=hi
CMD ["cat", "/app/upper.txt"]
"#;

fn context(tmp: &Path) -> std::path::PathBuf {
    let ctx = tmp.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), MULTI_STAGE).unwrap();
    fs::write(ctx.join("input.txt"), "hello\n").unwrap();
    fs::write(ctx.join("later.txt"), "later\n").unwrap();
    ctx
}

#[test]
fn cache_hits_and_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let ctx = context(tmp.path());
    let (_, first) = build(&root, &ctx, &["-t", "app:1"]);
    assert!(!first.contains("CACHED"), "{first}");
    assert!(
        !first.contains("exit 1"),
        "the unused stage was built: {first}"
    );
    let id = inspect(&root, "app:1")["Id"].clone();
    let blobs = fs::read_dir(root.join("blobs/sha256")).unwrap().count();

    // No change: every filesystem step is cached, no layer is made, same image.
    let (_, second) = build(&root, &ctx, &["-t", "app:1"]);
    assert_eq!(second.matches("CACHED").count(), 5, "{second}");
    assert!(
        !second.contains(" DONE") || second.matches(" DONE").count() <= 2,
        "{second}"
    );
    assert_eq!(inspect(&root, "app:1")["Id"], id);
    assert_eq!(
        fs::read_dir(root.join("blobs/sha256")).unwrap().count(),
        blobs
    );

    // A file read late changes: the steps before it stay cached.
    fs::write(ctx.join("later.txt"), "LATER\n").unwrap();
    let (_, third) = build(&root, &ctx, &["-t", "app:2"]);
    assert!(
        third.contains("COPY input.txt .\n#4 CACHED") || third.matches("CACHED").count() == 3,
        "{third}"
    );
    assert_ne!(inspect(&root, "app:2")["Id"], id);

    // Same size, same mtime, new content: never a stale image.
    let path = ctx.join("input.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::write(&path, "HELLO\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    build(
        &root,
        &ctx,
        &[
            "-t",
            "app:3",
            "--target",
            "base",
            "-o",
            &format!("type=local,dest={}", tmp.path().join("out").display()),
        ],
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("out/src/upper.txt")).unwrap(),
        "HELLO\n"
    );

    // A build arg change reruns the RUN that sees it; --no-cache reruns everything.
    let (_, fourth) = build(
        &root,
        &ctx,
        &["--build-arg", "FLAVOUR=spicy", "--target", "base"],
    );
    assert_eq!(fourth.matches("CACHED").count(), 2, "{fourth}");
    let (_, fifth) = build(&root, &ctx, &["--no-cache", "--target", "base"]);
    assert_eq!(fifth.matches("CACHED").count(), 0, "{fifth}");
}

/// Without SOURCE_DATE_EPOCH, a rebuild that changes nothing gives the same image ID, as
/// `docker build` does: the image is as old as its newest layer (the time its cache record
/// was made), and an instruction that changes only the config takes the time of the layer
/// before it (or of the first layer, before any), as in the config dockerd's BuildKit writes.
#[test]
fn a_rebuild_without_changes_keeps_the_image_id() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let ctx = context(tmp.path());
    let build_now = |tag: &str| {
        ok(rbuild(&root)
            .args(["build", "-q", "-t", tag, "--target", "base"])
            .arg(&ctx)
            .env_remove("SOURCE_DATE_EPOCH"))
    };
    let first = build_now("app:1");
    // Times have a resolution of one second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build_now("app:2");
    assert_eq!(first, second);

    let store = image_store::Store::open(&root).unwrap();
    let (_, config, _) = store
        .image_config(&store.resolve("app:1").unwrap())
        .unwrap();
    let base_entries = 1;
    let history = &config.history[base_entries..];
    let created: Vec<&str> = history
        .iter()
        .map(|h| h.created.as_deref().expect("every entry has a time"))
        .collect();
    let empty: Vec<bool> = history.iter().map(|h| h.empty_layer).collect();
    // ARG, WORKDIR, COPY, RUN, COPY: the ARG takes the time of the first layer after it.
    assert_eq!(empty, [true, false, false, false, false], "{history:?}");
    assert_eq!(created[0], created[1], "{history:?}");
    assert_eq!(config.created.as_deref(), created.last().copied());
}

#[test]
fn reproducible_across_clean_stores_and_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let mut digests = Vec::new();
    for name in ["a", "b"] {
        let root = store_with_busybox(tmp.path(), name);
        let iid = tmp.path().join(format!("{name}.iid"));
        let meta = tmp.path().join(format!("{name}.json"));
        let oci_out = tmp.path().join(format!("{name}.oci.tar"));
        let docker_out = tmp.path().join(format!("{name}.docker.tar"));
        build(
            &root,
            &ctx,
            &[
                "-t",
                "app:1",
                "--iidfile",
                iid.to_str().unwrap(),
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                &format!("type=oci,dest={}", oci_out.display()),
                "-o",
                &format!("type=docker,dest={}", docker_out.display()),
            ],
        );
        let info = inspect(&root, "app:1");
        assert_eq!(
            fs::read_to_string(&iid).unwrap(),
            info["Id"].as_str().unwrap()
        );
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        assert_eq!(meta["containerimage.digest"], info["Descriptor"]["digest"]);
        assert_eq!(info["Config"]["Labels"]["org.example.kind"], "test");
        assert_eq!(info["Config"]["Env"][1], "GREETING=hi");
        assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
        // The OCI output loads into a third store as the same image.
        let other = tmp.path().join(format!("{name}-loaded"));
        ok(rbuild(&other).args(["load", "-i"]).arg(&oci_out));
        assert_eq!(inspect(&other, "app:1")["Id"], info["Id"]);
        digests.push(info["Descriptor"]["digest"].clone());
    }
    assert_eq!(digests[0], digests[1], "two clean builds differ");
}

#[test]
fn secrets_never_reach_the_image_or_cache() {
    let (tmp, root, ctx) = store_and_context("FROM bb:1\nRUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /token-length\n");
    let secret = tmp.path().join("token");
    fs::write(&secret, "s3cr3t-value-for-the-test").unwrap();
    build(
        &root,
        &ctx,
        &[
            "-t",
            "s:1",
            "--secret",
            &format!("id=token,src={}", secret.display()),
            "-o",
            &format!("type=local,dest={}", tmp.path().join("out").display()),
        ],
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("out/token-length"))
            .unwrap()
            .trim(),
        "25"
    );
    assert!(
        !tmp.path().join("out/run/secrets").exists(),
        "the mount stub stayed in the image"
    );
    for entry in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let data = fs::read(entry.unwrap().path()).unwrap();
        let plain = match oci::compression::Compression::detect(&data) {
            oci::compression::Compression::Gzip => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::MultiGzDecoder::new(&data[..]),
                    &mut out,
                )
                .unwrap();
                out
            }
            _ => data,
        };
        assert!(
            !plain.windows(6).any(|w| w == b"s3cr3t"),
            "the secret is in a blob"
        );
    }
    // A changed secret does not invalidate the cache: it is not part of the key.
    fs::write(&secret, "another-value").unwrap();
    let (_, again) = build(
        &root,
        &ctx,
        &["--secret", &format!("id=token,src={}", secret.display())],
    );
    assert!(again.contains("CACHED"), "{again}");
}

/// Busybox plus the host's `ssh-add` and the libraries it loads (by `ldd`), as `sshbb:1`.
fn store_with_ssh_add(tmp: &Path) -> std::path::PathBuf {
    let root = tmp.join("store");
    let busybox = tmp.join("busybox-rootfs");
    fixtures::busybox_rootfs(&busybox).unwrap();
    let tools = tmp.join("ssh-add-layer");
    let ssh_add = require("ssh-add");
    let ldd = ok(Command::new("ldd").arg(&ssh_add));
    let libraries = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(Path::new);
    for file in libraries.chain([Path::new("/usr/bin/ssh-add")]) {
        let copy = tools.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(copy.parent().unwrap()).unwrap();
        fs::copy(file, &copy).unwrap();
    }
    let archive = tmp.join("sshbb.tar");
    let recipe = fixtures::ImageRecipe {
        layers: &[busybox, tools],
        config: fixtures::busybox_config(),
        name: Some(oci::Reference::parse("sshbb:1").unwrap()),
        compression: oci::compression::Compression::Gzip,
    };
    fixtures::write_image(&recipe, ArchiveFormat::Oci, &archive).unwrap();
    ok(rbuild(&root).args(["load", "-q", "-i"]).arg(&archive));
    root
}

/// A real ssh-agent on `socket` holding `key`.
fn agent_with_key(socket: &Path, key: &Path) -> PeerProcess {
    let agent = ssh_agent(socket);
    ok(Command::new("ssh-add")
        .arg("-q")
        .arg(key)
        .env("SSH_AUTH_SOCK", socket));
    agent
}

/// RUN --mount=type=ssh reaches the host's ssh-agent through a socket of its own: `ssh-add -l`
/// in the step lists the agent's key, at BuildKit's default path and SSH_AUTH_SOCK, or at a
/// target with the mount's mode and owner. The socket never reaches the image, the agent's
/// path is not part of the cache key, an absent optional agent skips the mount, and an absent
/// required one fails the step with its id.
#[test]
fn ssh_mounts_reach_the_hosts_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_ssh_add(tmp.path());
    let key = tmp.path().join("id_ed25519");
    ok(Command::new(require("ssh-keygen"))
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-test-key",
            "-f",
        ])
        .arg(&key));
    let first = tmp.path().join("agent-1.sock");
    let agent = agent_with_key(&first, &key);
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM sshbb:1\n\
         RUN --mount=type=ssh ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /sock-path \\\n\
          && stat -c '%a %u %g' \"$SSH_AUTH_SOCK\" > /sock-mode\n\
         RUN --mount=type=ssh,id=second,target=/agent.sock,mode=0660,uid=1000,gid=1000 \\\n\
          SSH_AUTH_SOCK=/agent.sock ssh-add -l > /keys2 && stat -c '%a %u %g' /agent.sock > /sock2-mode\n\
         RUN --mount=type=ssh,id=absent test ! -e /run/buildkit/ssh_agent.0 && touch /absent-skipped\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let agents = |socket: &Path| {
        [
            "--ssh".to_string(),
            format!("default={}", socket.display()),
            "--ssh".to_string(),
            format!("second={}", socket.display()),
        ]
    };
    let first_agents = agents(&first);
    let mut args: Vec<&str> = first_agents.iter().map(String::as_str).collect();
    let dest = format!("type=local,dest={}", out.display());
    args.extend(["-t", "ssh:1", "-o", &dest]);
    build(&root, &ctx, &args);
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap();
    let host_keys = ok(Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &first));
    assert!(host_keys.contains("rbuild-test-key"), "{host_keys}");
    assert_eq!(read("keys"), host_keys);
    assert_eq!(read("keys2"), host_keys);
    assert_eq!(read("sock-path"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(read("sock-mode"), "600 0 0\n");
    assert_eq!(read("sock2-mode"), "660 1000 1000\n");
    assert!(out.join("absent-skipped").exists());
    assert!(
        !out.join("run/buildkit").exists(),
        "the socket's mount stub is in the image"
    );
    assert!(
        !out.join("agent.sock").exists(),
        "the socket's mount stub is in the image"
    );

    // Another agent at another path (the next CI job's) still hits the cache.
    drop(agent);
    let second = tmp.path().join("agent-2.sock");
    let _agent = agent_with_key(&second, &key);
    let second_agents = agents(&second);
    let args: Vec<&str> = second_agents.iter().map(String::as_str).collect();
    let (_, again) = build(&root, &ctx, &args);
    assert_eq!(again.matches("CACHED").count(), 3, "{again}");

    // A required agent that was not given fails the step, by id; a key file is refused.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM sshbb:1\nRUN --mount=type=ssh,id=deploy,required=true true\n",
    )
    .unwrap();
    let err = fails(rbuild(&root).args(["build", "-q"]).arg(&ctx));
    assert!(
        err.contains("Dockerfile:2") && err.contains("ssh agent \"deploy\" not found"),
        "{err}"
    );
    let err = fails(
        rbuild(&root)
            .args(["build", "-q", "--ssh"])
            .arg(format!("deploy={}", key.display()))
            .arg(&ctx),
    );
    assert!(err.contains("is not a socket"), "{err}");
}

/// `git-daemon` serving the repositories under `base` on a loopback port. (`git daemon` would
/// run it as a child that outlives the stop.)
fn git_daemon(base: &Path) -> (PeerProcess, u16) {
    let exec_path = ok(Command::new(require("git")).arg("--exec-path"));
    let daemon = Path::new(exec_path.trim()).join("git-daemon");
    listening("git-daemon", |port| {
        PeerProcess::spawn(
            "git-daemon",
            Command::new(&daemon)
                .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base),
            &base.with_extension("log"),
        )
        .expect("start git-daemon")
    })
}

/// Dropbear, a real ssh server, on a loopback port, letting in `authorized_key` as root. It
/// reads root's `~/.ssh/authorized_keys`, so it runs in a mount namespace of its own where a
/// directory under `base` is mounted over /root: the machine's own root login is not touched.
fn ssh_server(base: &Path, authorized_key: &str) -> (PeerProcess, u16) {
    let home = base.join("sshd-home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(home.join(".ssh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(home.join(".ssh/authorized_keys"), authorized_key).unwrap();
    let host_key = base.join("sshd-host-key");
    ok(Command::new(require("dropbearkey"))
        .args(["-t", "ed25519", "-f"])
        .arg(&host_key));
    let dropbear = require("dropbear");
    listening("dropbear", |port| {
        PeerProcess::spawn(
            "dropbear",
            Command::new(require("unshare"))
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$1\" /root && exec \"$2\" -F -E -s -r \"$3\" -p \"127.0.0.1:$4\" -P \"$5\"")
                .arg("sh")
                .arg(&home)
                .arg(&dropbear)
                .arg(&host_key)
                .arg(port.to_string())
                .arg(base.join("sshd.pid")),
            &base.join("sshd.log"),
        )
        .expect("start dropbear")
    })
}

/// `git -C dir ARGS` with a fixed identity and commit time.
fn git_at(dir: &Path, time: u64, args: &[&str]) -> String {
    let date = format!("@{time} +0000");
    ok(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date))
}

/// ADD from a Git repository served by a real `git daemon`: the default branch, a tag, a
/// tag's subdirectory, `--keep-git-dir`, `--checksum` with a commit prefix; BuildKit's modes,
/// the commit's time as mtime, no `.git` by default. The cache follows the commit a ref names:
/// nothing changes, nothing reruns; a new commit on the branch reruns its step only.
#[test]
fn add_from_a_git_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let work = tmp.path().join("work");
    fs::create_dir_all(work.join("bin")).unwrap();
    fs::create_dir_all(work.join("sub")).unwrap();
    git_at(&work, 0, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "one\n").unwrap();
    fs::write(work.join("bin/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(work.join("bin/run.sh"), fs::Permissions::from_mode(0o775)).unwrap();
    fs::write(work.join("sub/data.txt"), "data\n").unwrap();
    git_at(&work, 1_600_000_000, &["add", "."]);
    git_at(&work, 1_600_000_000, &["commit", "-q", "-m", "one"]);
    git_at(&work, 1_600_000_000, &["tag", "-a", "v1", "-m", "v1"]);
    let v1 = git_at(&work, 0, &["rev-parse", "v1^{commit}"])
        .trim()
        .to_string();
    fs::write(work.join("README"), "two\n").unwrap();
    git_at(&work, 1_600_000_100, &["commit", "-q", "-am", "two"]);
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let bare = served.join("repo.git");
    ok(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare));
    let (_daemon, port) = git_daemon(&served);
    let repo = format!("git://127.0.0.1:{port}/repo.git");

    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM bb:1\n\
             ADD {repo}#v1 /v1\n\
             ADD {repo}#v1:sub /v1-sub\n\
             ADD --checksum={} {repo}#v1 /checked\n\
             ADD {repo} /main/\n\
             ADD --keep-git-dir=true {repo}#main /kept\n",
            &v1[..7]
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    build(&root, &ctx, &["-t", "git:1", "-o", &dest]);
    let read = |path: &str| fs::read_to_string(out.join(path)).unwrap();
    let meta = |path: &str| fs::symlink_metadata(out.join(path)).unwrap();
    assert_eq!(read("v1/README"), "one\n");
    assert_eq!(read("checked/README"), "one\n");
    assert_eq!(read("main/README"), "two\n");
    assert_eq!(read("kept/README"), "two\n");
    assert_eq!(meta("v1/README").mode() & 0o7777, 0o644);
    assert_eq!(meta("v1/bin/run.sh").mode() & 0o7777, 0o755);
    assert_eq!(meta("v1/bin").mode() & 0o7777, 0o755);
    assert_eq!(meta("v1/README").mtime(), 1_600_000_000);
    assert_eq!(meta("main/README").mtime(), 1_600_000_100);
    assert_eq!(read("v1-sub/data.txt"), "data\n");
    assert!(!out.join("v1-sub/README").exists());
    assert!(!out.join("v1/.git").exists() && !out.join("main/.git").exists());
    assert!(out.join("kept/.git").is_dir());

    // Same commits: every ADD is cached.
    let (_, again) = build(&root, &ctx, &[]);
    assert_eq!(again.matches("CACHED").count(), 5, "{again}");
    // A new commit on main: only the steps from the first ADD of main on rerun.
    fs::write(work.join("README"), "three\n").unwrap();
    git_at(&work, 1_600_000_200, &["commit", "-q", "-am", "three"]);
    ok(Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["push", "-q"])
        .arg(&bare)
        .arg("main"));
    let out2 = tmp.path().join("out2");
    let dest2 = format!("type=local,dest={}", out2.display());
    let (_, moved) = build(&root, &ctx, &["-o", &dest2]);
    assert_eq!(moved.matches("CACHED").count(), 3, "{moved}");
    assert_eq!(
        fs::read_to_string(out2.join("main/README")).unwrap(),
        "three\n"
    );

    // Over ssh, from a real ssh server, with the build's `default` agent holding the key.
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let client_key = keys.join("client");
    ok(Command::new(require("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&client_key));
    let agent_socket = tmp.path().join("agent.sock");
    let _agent = ssh_agent(&agent_socket);
    ok(Command::new(require("ssh-add"))
        .arg(&client_key)
        .env("SSH_AUTH_SOCK", &agent_socket));
    let authorized = fs::read_to_string(client_key.with_extension("pub")).unwrap();
    let (_sshd, ssh_port) = ssh_server(tmp.path(), &authorized);
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM bb:1\nADD ssh://root@127.0.0.1:{ssh_port}{}#v1 /over-ssh\n",
            bare.display()
        ),
    )
    .unwrap();
    let out3 = tmp.path().join("out3");
    let home = tmp.path().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    let over_ssh = |with_agent: bool| {
        let mut cmd = rbuild(&root);
        cmd.args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", out3.display()));
        if with_agent {
            cmd.arg("--ssh")
                .arg(format!("default={}", agent_socket.display()));
        }
        // The caller's own agent does not count: only `--ssh` gives a build one.
        cmd.arg(&ctx)
            .env("SSH_AUTH_SOCK", &agent_socket)
            .env("HOME", &home)
            .env_remove("GIT_SSH_COMMAND")
            .output()
            .unwrap()
    };
    let refused = over_ssh(false);
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "fetched over ssh without --ssh");
    assert!(refused_err.contains("Permission denied"), "{refused_err}");
    // The server was never met: accepted, as BuildKit does, and not written down.
    let fetched = over_ssh(true);
    assert!(fetched.status.success(), "{fetched:?}");
    assert_eq!(
        fs::read_to_string(out3.join("over-ssh/README")).unwrap(),
        "one\n"
    );
    assert!(!home.join(".ssh/known_hosts").exists());
    // A server whose key differs from the one known_hosts records is refused.
    let other_key = keys.join("other-host");
    ok(Command::new(require("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key));
    let other = fs::read_to_string(other_key.with_extension("pub")).unwrap();
    fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{ssh_port} {other}"),
    )
    .unwrap();
    let impostor = over_ssh(true);
    let impostor_err = String::from_utf8_lossy(&impostor.stderr);
    assert!(
        !impostor.status.success(),
        "fetched from a host with another key"
    );
    assert!(
        impostor_err.contains("Host key verification failed"),
        "{impostor_err}"
    );

    // A repository with a submodule: the submodule's files come too.
    let sub_work = tmp.path().join("sub-work");
    fs::create_dir_all(&sub_work).unwrap();
    git_at(&sub_work, 0, &["init", "-q", "-b", "main"]);
    fs::write(sub_work.join("inside.txt"), "from the submodule\n").unwrap();
    git_at(&sub_work, 1_600_000_300, &["add", "."]);
    git_at(&sub_work, 1_600_000_300, &["commit", "-q", "-m", "sub"]);
    ok(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&sub_work)
        .arg(served.join("sub.git")));
    let sub_url = format!("git://127.0.0.1:{port}/sub.git");
    git_at(
        &work,
        1_600_000_400,
        &["submodule", "add", "-q", &sub_url, "vendor/sub"],
    );
    git_at(
        &work,
        1_600_000_400,
        &["commit", "-q", "-m", "with a submodule"],
    );
    ok(Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(["push", "-q"])
        .arg(&bare)
        .arg("main"));
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb:1\nADD {repo} /with-sub\n"),
    )
    .unwrap();
    let out4 = tmp.path().join("out4");
    build(
        &root,
        &ctx,
        &["-o", &format!("type=local,dest={}", out4.display())],
    );
    assert_eq!(
        fs::read_to_string(out4.join("with-sub/vendor/sub/inside.txt")).unwrap(),
        "from the submodule\n"
    );
    assert!(
        !out4.join("with-sub/vendor/sub/.git").exists(),
        "a submodule's .git file stayed"
    );

    // A ref that is not there, and a commit that is not the checksum's.
    for (line, error) in [
        (format!("ADD {repo}#nope /x"), "no ref \"nope\""),
        (
            format!("ADD --checksum=0000000 {repo}#v1 /x"),
            "checksum mismatch",
        ),
    ] {
        fs::write(ctx.join("Dockerfile"), format!("FROM bb:1\n{line}\n")).unwrap();
        let err = fails(rbuild(&root).args(["build", "-q"]).arg(&ctx));
        assert!(err.contains("Dockerfile:2") && err.contains(error), "{err}");
    }
}

/// A Git repository as the build context (`rbuild build git://…#REF:DIR`, as `docker build`
/// takes one): the ref's directory is the context, `-f` names a file in it, .dockerignore
/// applies, and nothing of the repository outside the directory is reachable.
#[test]
fn a_git_repository_as_the_build_context() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let work = tmp.path().join("work");
    fs::create_dir_all(work.join("app")).unwrap();
    git_at(&work, 0, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "outside the context\n").unwrap();
    fs::write(work.join("app/Dockerfile"), "FROM bb:1\nCOPY . /src/\n").unwrap();
    fs::write(
        work.join("app/other.Dockerfile"),
        "FROM bb:1\nCOPY hello.txt /other\n",
    )
    .unwrap();
    fs::write(work.join("app/hello.txt"), "hi\n").unwrap();
    fs::write(work.join("app/.dockerignore"), "ignored.txt\n").unwrap();
    fs::write(work.join("app/ignored.txt"), "no\n").unwrap();
    git_at(&work, 1_600_000_000, &["add", "."]);
    git_at(&work, 1_600_000_000, &["commit", "-q", "-m", "app"]);
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    ok(Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(served.join("repo.git")));
    let (_daemon, port) = git_daemon(&served);
    let context = format!("git://127.0.0.1:{port}/repo.git#main:app");

    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    build(&root, Path::new(&context), &["-t", "ctx:1", "-o", &dest]);
    assert_eq!(
        fs::read_to_string(out.join("src/hello.txt")).unwrap(),
        "hi\n"
    );
    assert!(out.join("src/Dockerfile").exists());
    assert!(
        !out.join("src/ignored.txt").exists(),
        ".dockerignore was not applied"
    );
    assert!(!out.join("src/README").exists() && !out.join("src/.git").exists());

    let out2 = tmp.path().join("out2");
    let dest2 = format!("type=local,dest={}", out2.display());
    build(
        &root,
        Path::new(&context),
        &["-f", "other.Dockerfile", "-o", &dest2],
    );
    assert_eq!(fs::read_to_string(out2.join("other")).unwrap(), "hi\n");
}

/// `rbuild build` with `-`, as `docker build` takes it: `-f -` reads the Dockerfile from
/// standard input beside a context directory; a context `-` is a tar archive (here gzip) of
/// the context, or else a Dockerfile with an empty context; both at once is refused. A URL
/// context is read the same way.
#[test]
fn dockerfile_or_context_from_standard_input_or_a_url() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    let with_stdin = |args: &[&str], input: &[u8]| {
        let mut child = rbuild(&root)
            .args(["build", "-q"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A build that refuses its arguments exits without reading: the pipe may be closed.
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), input);
        child.wait_with_output().unwrap()
    };
    let read = |out: &Path, file: &str| fs::read_to_string(out.join(file)).unwrap();

    let out = tmp.path().join("out1");
    let dest = format!("type=local,dest={}", out.display());
    let built = with_stdin(
        &["-f", "-", "-o", &dest, ctx.to_str().unwrap()],
        b"FROM bb:1\nCOPY hello.txt /copied\n",
    );
    assert!(built.status.success(), "{built:?}");
    assert_eq!(read(&out, "copied"), "hello\n");

    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nCOPY hello.txt /from-tar\n",
    )
    .unwrap();
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    archive.append_dir_all(".", &ctx).unwrap();
    let archive = archive.into_inner().unwrap().finish().unwrap();
    let out = tmp.path().join("out2");
    let dest = format!("type=local,dest={}", out.display());
    let built = with_stdin(&["-o", &dest, "-"], &archive);
    assert!(built.status.success(), "{built:?}");
    assert_eq!(read(&out, "from-tar"), "hello\n");

    let out = tmp.path().join("out3");
    let dest = format!("type=local,dest={}", out.display());
    let built = with_stdin(&["-o", &dest, "-"], b"FROM bb:1\nRUN echo alone > /alone\n");
    assert!(built.status.success(), "{built:?}");
    assert_eq!(read(&out, "alone"), "alone\n");

    // The same from a URL: a served archive is the context, a served text file the Dockerfile.
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("context.tar.gz"), &archive).unwrap();
    fs::write(
        served.join("Dockerfile"),
        "FROM bb:1\nRUN echo remote > /remote\n",
    )
    .unwrap();
    let (_server, port) = http_server(&served, &tmp.path().join("http.log"));
    for (file, expected) in [("context.tar.gz", "from-tar"), ("Dockerfile", "remote")] {
        let out = tmp.path().join(format!("out-{file}"));
        let dest = format!("type=local,dest={}", out.display());
        let url = format!("http://127.0.0.1:{port}/{file}");
        let built = with_stdin(&["-o", &dest, &url], b"");
        assert!(built.status.success(), "{built:?}");
        assert!(out.join(expected).exists(), "{file}: no /{expected}");
    }

    let refused = with_stdin(&["-f", "-", "-"], b"FROM bb:1\n");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot both be read"));
}

/// `--build-context`: a directory (or a tar over HTTP) for `COPY --from` and `RUN --mount
/// from=` (read with its own .dockerignore, its content in the cache key) in place of a stage of
/// that name, and `docker-image://` in place of a FROM name. FROM a directory starts a stage
/// with its files, as BuildKit does.
#[test]
fn named_build_contexts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let lib = tmp.path().join("lib");
    fs::create_dir_all(&lib).unwrap();
    fs::write(lib.join("lib.txt"), "v1\n").unwrap();
    fs::write(lib.join("secret.txt"), "no\n").unwrap();
    fs::write(lib.join(".dockerignore"), "secret.txt\n").unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS lib\n\
         FROM base\n\
         COPY --from=lib / /lib/\n\
         RUN --mount=type=bind,from=lib,target=/mnt cat /mnt/lib.txt > /via-mount\n",
    )
    .unwrap();
    let lib_context = format!("lib={}", lib.display());
    let contexts = [
        "--build-context",
        &lib_context,
        "--build-context",
        "base=docker-image://bb:1",
    ];
    let build_into = |out: &str| {
        let dest = format!("type=local,dest={}", tmp.path().join(out).display());
        let mut args = contexts.to_vec();
        args.extend(["-o", &dest]);
        build(&root, &ctx, &args).1
    };
    let read = |path: &str| fs::read_to_string(tmp.path().join(path)).unwrap();
    build_into("out1");
    assert_eq!(read("out1/lib/lib.txt"), "v1\n");
    assert_eq!(read("out1/via-mount"), "v1\n");
    assert!(
        !tmp.path().join("out1/lib/secret.txt").exists(),
        "its .dockerignore was not read"
    );

    let again = build_into("out2");
    assert_eq!(again.matches("CACHED").count(), 2, "{again}");
    fs::write(lib.join("lib.txt"), "v2\n").unwrap();
    let changed = build_into("out3");
    assert_eq!(changed.matches("CACHED").count(), 0, "{changed}");
    assert_eq!(read("out3/lib/lib.txt"), "v2\n");
    assert_eq!(read("out3/via-mount"), "v2\n");

    // The same directory as a tar served over HTTP.
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let mut archive = tar::Builder::new(Vec::new());
    archive.append_dir_all(".", &lib).unwrap();
    fs::write(served.join("lib.tar"), archive.into_inner().unwrap()).unwrap();
    let (_server, port) = http_server(&served, &tmp.path().join("http.log"));
    let remote = format!("lib=http://127.0.0.1:{port}/lib.tar");
    let dest = format!("type=local,dest={}", tmp.path().join("out4").display());
    build(
        &root,
        &ctx,
        &[
            "--build-context",
            &remote,
            "--build-context",
            "base=docker-image://bb:1",
            "-o",
            &dest,
        ],
    );
    assert_eq!(read("out4/lib/lib.txt"), "v2\n");

    // FROM a directory: its files (less its .dockerignore) are the stage's filesystem.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM lib\nCOPY --from=bb:1 /bin/busybox /bin/sh\nRUN cat /lib.txt > /seen\n",
    )
    .unwrap();
    let dest = format!("type=local,dest={}", tmp.path().join("out5").display());
    let from_dir = ["--build-context", &lib_context, "-o", &dest];
    build(&root, &ctx, &from_dir);
    assert_eq!(read("out5/seen"), "v2\n");
    assert!(!tmp.path().join("out5/secret.txt").exists());
    let again = build(&root, &ctx, &from_dir).1;
    assert_eq!(again.matches("CACHED").count(), 3, "{again}");
}

/// `--build-context NAME=oci-layout://PATH[:TAG][@DIGEST]`: the image of an OCI layout that
/// skopeo wrote, by tag (default `latest`) or by digest, copied into a store that lacks it and
/// never pulled; the layout is only read. An absent tag is an error naming it.
#[test]
fn oci_layout_build_context() {
    let skopeo = require("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let archive = busybox_archive(tmp.path(), "bb:1", ArchiveFormat::Oci);
    let layout = tmp.path().join("layout");
    for tag in ["v1", "latest"] {
        run_ok(
            Command::new(&skopeo)
                .arg("copy")
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("oci:{}:{tag}", layout.display())),
        )
        .unwrap();
    }
    let raw = run_ok(
        Command::new(&skopeo)
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:v1", layout.display())),
    )
    .unwrap();
    let digest = oci::Digest::sha256_of(&raw.stdout);
    let root = tmp.path().join("store");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM base\nRUN echo built > /built\n",
    )
    .unwrap();
    for (n, spec) in [
        format!("{}:v1", layout.display()),
        format!("{}@{digest}", layout.display()),
        layout.display().to_string(),
    ]
    .iter()
    .enumerate()
    {
        let context = format!("base=oci-layout://{spec}");
        let out = tmp.path().join(format!("out{n}"));
        let dest = format!("type=local,dest={}", out.display());
        build(
            &root,
            &ctx,
            &["--pull", "--build-context", &context, "-o", &dest],
        );
        assert_eq!(fs::read_to_string(out.join("built")).unwrap(), "built\n");
        assert!(
            out.join("bin/busybox").is_file(),
            "{spec}: not the layout's image"
        );
    }
    assert!(!layout.join("ingest").exists(), "the layout was written to");

    let missing = format!("base=oci-layout://{}:nope", layout.display());
    let err = fails(
        rbuild(&root)
            .args(["build", "-q", "--build-context", &missing])
            .arg(&ctx),
    );
    assert!(
        err.contains(":nope") && err.contains("no such tag"),
        "{err}"
    );
}

/// `--squash`: the layers a build adds to its base image become one, the base's stay. The
/// files are exactly those of the same build without it (the two root filesystems' tars are
/// equal byte for byte, a deleted base file included), the history keeps every step, and a
/// rebuild squashes nothing again.
#[test]
fn squash_merges_the_added_layers() {
    let (tmp, root, ctx) = store_and_context(
        "FROM bb:1\nRUN echo one > /a && echo x > /tmp/gone\n\
         RUN echo two > /b && rm /tmp/gone /bin/vi\nCOPY c.txt /c\n",
    );
    fs::write(ctx.join("c.txt"), "three\n").unwrap();
    let build_as = |name: &str, extra: &[&str]| {
        let tar = tmp.path().join(format!("{name}.tar"));
        let dest = format!("type=tar,dest={}", tar.display());
        let tag = format!("{name}:1");
        let mut args = vec!["-t", &tag, "-o", &dest];
        args.extend(extra);
        let progress = build(&root, &ctx, &args).1;
        (fs::read(tar).unwrap(), inspect(&root, &tag), progress)
    };
    let (plain_files, plain, _) = build_as("plain", &[]);
    let (squashed_files, squashed, progress) = build_as("squashed", &["--squash"]);
    assert!(progress.contains("squashing 3 layers"), "{progress}");
    assert!(
        plain_files == squashed_files,
        "the squashed image's files differ"
    );

    let base = inspect(&root, "bb:1")["RootFS"]["Layers"].clone();
    let layers = |image: &serde_json::Value| image["RootFS"]["Layers"].as_array().unwrap().clone();
    let base = base.as_array().unwrap();
    assert_eq!(layers(&plain).len(), base.len() + 3);
    let squashed_layers = layers(&squashed);
    assert_eq!(squashed_layers.len(), base.len() + 1);
    assert_eq!(
        &squashed_layers[..base.len()],
        &base[..],
        "the base layers changed"
    );
    let config_digest = squashed["Id"].as_str().unwrap();
    let config_blob = root
        .join("blobs/sha256")
        .join(&config_digest["sha256:".len()..]);
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(config_blob).unwrap()).unwrap();
    let history = config["history"].as_array().unwrap();
    let non_empty = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(non_empty, squashed_layers.len(), "{history:?}");
    assert!(history
        .iter()
        .any(|h| h["created_by"] == "rbuild build --squash"));

    // The same build again: every step and the squash come from the cache.
    let (_, again, progress) = build_as("squashed", &["--squash"]);
    assert_eq!(again["Id"], squashed["Id"], "{progress}");
    let squash_step = progress
        .lines()
        .find(|l| l.contains("squashing 3 layers"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no squash step:\n{progress}"));
    assert!(
        progress.contains(&format!("{squash_step} CACHED")),
        "squashed again:\n{progress}"
    );
    let script = "cat /a /b /c; test -e /bin/vi || test -e /tmp/gone || echo deleted";
    let out = ok(rbuild(&root).args(["run", "squashed:1", "sh", "-c", script]));
    assert_eq!(out, "one\ntwo\nthree\ndeleted\n");
}

/// Build checks, as docker build reports them: findings listed after a build (UndefinedVar
/// among them, which needs the base image's environment), `--check` that explains each and
/// exits 1 without building (UndefinedVar too, from the stages evaluated without running),
/// `# check=skip=…;error=true` and the `BUILDKIT_DOCKERFILE_CHECK` build arg over it.
#[test]
fn build_checks() {
    let (_tmp, root, ctx) = store_and_context("FROM bb:1 as base\nCMD echo hi\n");
    let run = |extra: &[&str]| {
        let out = rbuild(&root)
            .args(["build", "--progress", "plain"])
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["-t", "checked:1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(" 2 warnings found"), "{stderr}");
    assert!(
        stderr.contains(" - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"),
        "{stderr}"
    );
    assert!(stderr.contains(" - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"), "{stderr}");

    let (code, stderr) = run(&["--check", "-t", "not-built:1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not match\nDockerfile:1\n"), "{stderr}");
    assert!(stderr.contains("   1 | >>> FROM bb:1 as base"), "{stderr}");
    assert!(
        stderr.contains("Check complete, 2 warnings have been found!"),
        "{stderr}"
    );
    assert!(!ok(rbuild(&root).args(["images", "-q", "not-built"])).contains("sha256"));

    fs::write(
        ctx.join("Dockerfile"),
        "# check=skip=FromAsCasing;error=true\nFROM bb:1 as base\nCMD echo hi\n",
    )
    .unwrap();
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR: lint violation found for rules: JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "a step ran: {stderr}");
    let (code, stderr) = run(&["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = run(&["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all;bogus"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid check option \"bogus\""),
        "{stderr}"
    );

    // UndefinedVar needs the base image's environment: the build finds it.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nARG DECLARED\nENV A=$PAHT B=$DECLARED C=$PATH\nWORKDIR /$NOWHERE\n",
    )
    .unwrap();
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(" 2 warnings found"), "{stderr}");
    assert!(
        stderr.contains(
            " - UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?) (line 3)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(" - UndefinedVar: Usage of undefined variable '$NOWHERE' (line 4)"),
        "{stderr}"
    );

    // --check evaluates the stages without running anything: an ENV after the base stage's,
    // a COPY's source, never a RUN's command line (the shell expands that).
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1 AS base\nENV FROM_BASE=1\nRUN exit 3\n\
         FROM base\nENV A=$FROM_BASE B=$PAHT\nCOPY $NOSUCH /x\nRUN echo $NOT_CHECKED\n",
    )
    .unwrap();
    let (code, stderr) = run(&["--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Check complete, 2 warnings have been found!"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("Usage of undefined variable '$PAHT' (did you mean $PATH?)\nDockerfile:5\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Usage of undefined variable '$NOSUCH'\nDockerfile:6\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("exit code"), "a RUN ran: {stderr}");
    // With error=true, UndefinedVar too fails the build before any step.
    fs::write(
        ctx.join("Dockerfile"),
        "# check=error=true\nFROM bb:1\nRUN touch /ran\nENV A=$PAHT\n",
    )
    .unwrap();
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR: lint violation found for rules: UndefinedVar"),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "a step ran: {stderr}");

    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1 AS base\nCMD [\"true\"]\n",
    )
    .unwrap();
    let (code, stderr) = run(&["--call=outline"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--call=outline"), "{stderr}");
    let (code, stderr) = run(&["--call=check"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("Check complete, no warnings found."),
        "{stderr}"
    );
}

/// Cache mount `sharing`, between two stages that run at once: `shared` lets both use one
/// directory at the same time, `locked` makes one wait for the other, `private` gives the
/// second its own directory.
#[test]
fn cache_mount_sharing() {
    let (tmp, root, ctx) = store_and_context("");
    let build_with = |sharing: &str| {
        let stage = |name: &str| {
            format!(
                "FROM bb:1 AS {name}\n\
                 RUN --mount=type=cache,id=c-{sharing},target=/c,sharing={sharing} \
                 echo start-{name} >> /c/log && echo {name} > /c/who && sleep 1 && \
                 cat /c/who > /seen && echo end-{name} >> /c/log\n"
            )
        };
        fs::write(
            ctx.join("Dockerfile"),
            format!(
                "{}{}FROM bb:1\nCOPY --from=a /seen /seen-a\nCOPY --from=b /seen /seen-b\n\
                 RUN --mount=type=cache,id=c-{sharing},target=/c cp /c/log /log\n",
                stage("a"),
                stage("b")
            ),
        )
        .unwrap();
        let out = tmp.path().join(sharing);
        build(
            &root,
            &ctx,
            &["-o", &format!("type=local,dest={}", out.display())],
        );
        let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
        (read("seen-a"), read("seen-b"), read("log"))
    };

    // The control: both stages ran at once, so with one directory one saw the other's file.
    let (a, b, _) = build_with("shared");
    assert!(
        a != "a\n" || b != "b\n",
        "the stages did not overlap: {a:?} {b:?}"
    );

    let (a, b, log) = build_with("locked");
    assert_eq!((a.as_str(), b.as_str()), ("a\n", "b\n"));
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines == ["start-a", "end-a", "start-b", "end-b"]
            || lines == ["start-b", "end-b", "start-a", "end-a"],
        "the locked runs overlapped: {lines:?}"
    );

    let (a, b, log) = build_with("private");
    assert_eq!((a.as_str(), b.as_str()), ("a\n", "b\n"));
    assert_eq!(
        log.lines().count(),
        2,
        "one stage's run, in the first directory: {log}"
    );

    // One locked cache mounted twice by one RUN is held once (not waited for by itself).
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN --mount=type=cache,id=twice,target=/a,sharing=locked \
         --mount=type=cache,id=twice,target=/b,sharing=locked touch /a/f && ls /b > /seen\n",
    )
    .unwrap();
    let out = tmp.path().join("twice");
    build(
        &root,
        &ctx,
        &["-o", &format!("type=local,dest={}", out.display())],
    );
    assert_eq!(fs::read_to_string(out.join("seen")).unwrap(), "f\n");
}

/// RUN's confinement, as BuildKit's: docker's default capabilities and seccomp profile;
/// `--security=insecure` runs with every capability and no filter, only with
/// `--allow security.insecure`, and under its own cache key.
#[test]
fn run_security_modes() {
    let probe = "grep -E '^(CapEff|Seccomp):' /proc/self/status";
    let (tmp, root, ctx) = store_and_context(&format!(
        "FROM bb:1\nRUN {probe} > /sandbox\nRUN --security=insecure {probe} > /insecure\n"
    ));
    let refused = fails(rbuild(&root).args(["build", "-q"]).arg(&ctx));
    assert!(
        refused.contains("Dockerfile:3") && refused.contains("--allow security.insecure"),
        "{refused}"
    );
    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    build(&root, &ctx, &["--allow", "security.insecure", "-o", &dest]);
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
    assert_eq!(read("sandbox"), "CapEff:\t00000000a80425fb\nSeccomp:\t2\n");
    let insecure = read("insecure");
    assert!(insecure.ends_with("Seccomp:\t0\n"), "{insecure}");
    let caps = u64::from_str_radix(insecure[8..].lines().next().unwrap(), 16).unwrap();
    assert!(caps & (1 << 21) != 0, "no CAP_SYS_ADMIN: {insecure}");

    let refused = fails(
        rbuild(&root)
            .args(["build", "-q", "--allow", "bogus"])
            .arg(&ctx),
    );
    assert!(refused.contains("--allow \"bogus\""), "{refused}");
}

/// `RUN --device` with CDI specs, as BuildKit: the device's environment and nodes reach the
/// step and nothing of them the image; the `device` entitlement is needed unless the spec
/// auto-allows the device; a missing device fails the step only when `required`.
#[test]
fn run_devices_from_cdi_specs() {
    let (tmp, root, ctx) = store_and_context(
        "FROM bb:1\nRUN --device=vendor1.com/device=foo \\\n  \
         sh -c 'echo \"$FOO $COMMON\" > /seen && echo hi > /dev/foo && test -c /dev/foo'\n\
         RUN --device=vendor1.com/device=auto sh -c 'echo $AUTO > /auto'\n\
         RUN --device=vendor1.com/device=absent true\n\
         RUN --device=vendor1.com/device=hooked sh -c 'cat /hooked > /hook-status'\n",
    );
    let cdi = tmp.path().join("cdi");
    fs::create_dir_all(&cdi).unwrap();
    fs::write(
        cdi.join("vendor1.yaml"),
        r#"cdiVersion: "0.6.0"
kind: vendor1.com/device
containerEdits:
  env: [COMMON=1]
devices:
  - name: foo
    containerEdits:
      env: [FOO=injected]
      deviceNodes: [{path: /dev/foo, hostPath: /dev/null, permissions: rw}]
  - name: auto
    annotations: {org.mobyproject.buildkit.device.autoallow: "true"}
    containerEdits:
      env: [AUTO=1]
  # As nvidia-ctk's hooks do: find the rootfs through the bundle's config.json and change it.
  - name: hooked
    containerEdits:
      hooks:
        - hookName: createContainer
          path: /usr/bin/python3
          args: [python3, -c, "import json, os, sys; s = json.load(sys.stdin);
            c = json.load(open(os.path.join(s['bundle'], 'config.json')));
            open(os.path.join(c['root']['path'], 'hooked'), 'w').write(s['status']);
            open(os.path.join(c['root']['path'], 'bundle'), 'w').write(s['bundle'])"]
"#,
    )
    .unwrap();
    let cdi_dir = ["--cdi-spec-dir", cdi.to_str().unwrap()];
    let refused = fails(rbuild(&root).args(["build", "-q"]).args(cdi_dir).arg(&ctx));
    assert!(
        refused.contains("Dockerfile:2")
            && refused.contains("vendor1.com/device=foo needs the device entitlement")
            && refused.contains("--allow device"),
        "{refused}"
    );
    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let allowed = [
        &cdi_dir[..],
        &["--allow", "device", "-o", &dest, "-t", "cdi:1"],
    ]
    .concat();
    // Bundles left by killed runs go when a later run writes one; one a live run holds (its
    // directory flocked) stays.
    let bundle = |name: &str| {
        let dir = std::env::temp_dir().join(format!("rbuild-bundle-{name}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.json"), "{}").unwrap();
        dir
    };
    let (orphan, live) = (bundle("orphan"), bundle("live"));
    let held = fs::File::open(&live).unwrap();
    // SAFETY: flock on a descriptor `held` owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (_, log) = build(&root, &ctx, &allowed);
    assert!(!orphan.exists() && live.exists());
    fs::remove_dir_all(&live).unwrap();
    assert!(
        log.contains("WARNING: CDI device \"vendor1.com/device=absent\" is not registered"),
        "{log}"
    );
    let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
    assert_eq!(
        (read("seen"), read("auto"), read("hook-status")),
        ("injected 1\n".into(), "1\n".into(), "creating".into())
    );
    // The bundle written for the hooks is gone with the step.
    assert!(!Path::new(&read("bundle")).exists(), "{}", read("bundle"));
    assert!(!out.join("dev/foo").exists());
    let env = inspect(&root, "cdi:1")["Config"]["Env"].to_string();
    assert!(!env.contains("FOO") && !env.contains("COMMON"), "{env}");

    // Only the auto-allowed device: no entitlement needed.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN --device=vendor1.com/device=auto sh -c 'echo $AUTO > /auto'\n",
    )
    .unwrap();
    build(&root, &ctx, &[&cdi_dir[..], &["--no-cache"]].concat());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN --device=vendor1.com/device=absent,required true\n",
    )
    .unwrap();
    let missing = fails(rbuild(&root).args(["build", "-q"]).args(cdi_dir).arg(&ctx));
    assert!(
        missing.contains("Dockerfile:2") && missing.contains("is not registered"),
        "{missing}"
    );
}

/// docker build's `--add-host`, `--ulimit`, `--shm-size` and `--network` reach every RUN and
/// are part of its cache key; bad values are refused.
#[test]
fn run_sandbox_options() {
    let (tmp, root, ctx) = store_and_context(
        "FROM bb:1\nRUN grep myhost /etc/hosts > /hosts; ulimit -Sn > /soft; ulimit -Hn > /hard; \
         df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n",
    );
    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let flags = [
        "--add-host",
        "myhost:198.51.100.7",
        "--ulimit",
        "nofile=1000:2000",
        "--shm-size",
        "32m",
    ];
    let mut args = flags.to_vec();
    args.extend(["-o", &dest]);
    build(&root, &ctx, &args);
    let read = |file: &str| fs::read_to_string(out.join(file)).unwrap();
    assert_eq!(read("hosts"), "198.51.100.7\tmyhost\n");
    assert_eq!((read("soft").trim(), read("hard").trim()), ("1000", "2000"));
    assert_eq!(read("shm").trim(), "32768");
    let (_, again) = build(&root, &ctx, &flags);
    assert!(again.contains("CACHED"), "{again}");
    let (_, plain) = build(&root, &ctx, &[]);
    assert!(
        !plain.contains("CACHED"),
        "the sandbox is not in the key: {plain}"
    );
    for (flag, value) in [
        ("--ulimit", "bogus=1"),
        ("--ulimit", "nofile=9:1"),
        ("--add-host", "x:not-an-ip"),
        ("--shm-size", "lots"),
        ("--network", "bridge"),
        ("--provenance", "mode=max"),
    ] {
        let err = fails(rbuild(&root).args(["build", "-q", flag, value]).arg(&ctx));
        assert!(err.contains(flag), "{err}");
    }

    // `--network none`: a RUN without its own --network sees only `lo`; one with
    // `--network=host` keeps the host's.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN ls /sys/class/net > /none\nRUN --network=host ls /sys/class/net > /host\n",
    )
    .unwrap();
    let out = tmp.path().join("net");
    let dest = format!("type=local,dest={}", out.display());
    build(
        &root,
        &ctx,
        &[
            "--network",
            "none",
            "--provenance",
            "false",
            "--sbom",
            "false",
            "--rm",
            "--force-rm",
            "-o",
            &dest,
        ],
    );
    assert_eq!(fs::read_to_string(out.join("none")).unwrap(), "lo\n");
    assert_ne!(fs::read_to_string(out.join("host")).unwrap(), "lo\n");
}

/// `--output type=tar` writes the root filesystem as one tar, the same bytes from one build to
/// the next under SOURCE_DATE_EPOCH, to a file or to stdout; `--annotation` (bare or `manifest:`) annotates the image
/// manifest; other annotation kinds are refused.
#[test]
fn tar_output_and_manifest_annotations() {
    let (tmp, root, ctx) = store_and_context("FROM bb:1\nRUN echo hi > /hello\n");
    let tar_at = |name: &str| {
        let path = tmp.path().join(name);
        let dest = format!("type=tar,dest={}", path.display());
        build(
            &root,
            &ctx,
            &[
                "-t",
                "annotated:1",
                "--annotation",
                "org.opencontainers.image.source=https://example.com/repo",
                "--annotation",
                "manifest:com.example.kind=test",
                "-o",
                &dest,
            ],
        );
        fs::read(path).unwrap()
    };
    let first = tar_at("one.tar");
    assert_eq!(first, tar_at("two.tar"), "two tars of one build differ");
    // buildx's shorthands: `-o -` is that tar on stdout, `-o DIR` the files in DIR; and a
    // docker archive on stdout loads into another store.
    let stdout = |output: &str| {
        let out = rbuild(&root)
            .args(["build", "-q", "-o", output])
            .arg(&ctx)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    assert_eq!(stdout("-"), first);
    let dir = tmp.path().join("dir-output");
    let id = String::from_utf8(stdout(dir.to_str().unwrap())).unwrap();
    assert!(
        id.starts_with("sha256:"),
        "-q prints the ID when stdout is free: {id}"
    );
    assert_eq!(fs::read_to_string(dir.join("hello")).unwrap(), "hi\n");
    let docker_archive = tmp.path().join("from-stdout.tar");
    fs::write(&docker_archive, stdout("type=docker,dest=-")).unwrap();
    ok(rbuild(&tmp.path().join("other-store"))
        .args(["load", "-q", "-i"])
        .arg(&docker_archive));
    let mut archive = tar::Archive::new(&first[..]);
    let mut hello = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == "hello"
        {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            hello = Some(text);
        }
    }
    assert_eq!(hello.as_deref(), Some("hi\n"));

    let digest = inspect(&root, "annotated:1")["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(root.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["annotations"],
        serde_json::json!({
            "com.example.kind": "test",
            "org.opencontainers.image.source": "https://example.com/repo"
        })
    );
    let err = fails(
        rbuild(&root)
            .args(["build", "-q", "--annotation", "index:a=b"])
            .arg(&ctx),
    );
    assert!(err.contains("only manifest annotations"), "{err}");
}

#[test]
fn errors_name_the_line_and_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let cases: [(&str, &[&str]); 4] = [
        (
            "FROM bb:1\nRUN echo ok\nFROOM x\n",
            &["Dockerfile:3: unknown instruction: FROOM", ">>> FROOM x"],
        ),
        (
            "FROM bb:1\nRUN echo first-line; echo second-line >&2; exit 3\n",
            &["Dockerfile:2", "exit code: 3", "second-line"],
        ),
        (
            "FROM bb:1\nCOPY missing.txt /x\n",
            &["Dockerfile:2", "missing.txt"],
        ),
        ("FROM nope:1\n", &["Dockerfile:1", "nope:1"]),
    ];
    for (dockerfile, expected) in cases {
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let out = rbuild(&root)
            .args(["build", "--progress", "plain"])
            .arg(&ctx)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}: {stderr}");
        for e in expected {
            assert!(
                stderr.contains(e),
                "{dockerfile}: expected {e:?} in:\n{stderr}"
            );
        }
        // A syntax error stops the build before any step runs.
        if dockerfile.contains("FROOM") {
            assert!(!stderr.contains("#1"), "{stderr}");
        }
    }
    let err = fails(
        rbuild(&root)
            .args(["build", "--output", "type=tarball,dest=x"])
            .arg(&ctx),
    );
    assert!(err.contains("type=tarball"), "{err}");
}

/// ADD from a URL (a local HTTP server) with `--checksum`, secrets as environment variables,
/// and RUN --mount=type=bind,from=STAGE.
#[test]
fn add_url_secret_env_and_bind_from_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let root = store_with_busybox(tmp.path(), "store");
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("payload.txt"), "downloaded\n").unwrap();
    let (mut server, port) = http_server(&served, &tmp.path().join("http.log"));
    let sum = oci::Digest::sha256_of(b"downloaded\n");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let url = format!("http://127.0.0.1:{port}/payload.txt");
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM bb:1 AS tools\nRUN mkdir /tools && echo tool > /tools/t\n\
             FROM bb:1\nADD --checksum={sum} {url} /dl/\nADD {url} /renamed.txt\n\
             RUN --mount=type=secret,id=token,env=TOKEN echo \"${{#TOKEN}}\" > /token-length\n\
             RUN --mount=type=bind,from=tools,source=/tools,target=/mnt cat /mnt/t > /from-tools\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    build(
        &root,
        &ctx,
        &[
            "--secret",
            "id=token,env=RBUILD_TEST_TOKEN",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    assert_eq!(
        fs::read_to_string(out.join("dl/payload.txt")).unwrap(),
        "downloaded\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("renamed.txt")).unwrap(),
        "downloaded\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(out.join("renamed.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(out.join("token-length")).unwrap().trim(),
        "9"
    );
    assert_eq!(
        fs::read_to_string(out.join("from-tools")).unwrap(),
        "tool\n"
    );
    assert!(!out.join("mnt").exists(), "the bind target stub stayed");

    // A wrong checksum fails the step and names the URL.
    let wrong = oci::Digest::sha256_of(b"other");
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb:1\nADD --checksum={wrong} {url} /x\n"),
    )
    .unwrap();
    let failed = rbuild(&root)
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("digest mismatch") && stderr.contains(&url),
        "{stderr}"
    );
    server.stop();
}

/// A build killed in the middle of a RUN leaves no process, no mount and a consistent store:
/// the next commands work and `prune` removes the step's scratch space.
#[test]
fn killed_build_leaves_store_consistent() {
    let (_tmp, root, ctx) =
        store_and_context("FROM bb:1\nRUN echo started > /started && sleep 31.25\n");
    let marker = "31.25";
    let running = || {
        fs::read_dir("/proc").unwrap().flatten().any(|p| {
            fs::read(p.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()))
                .unwrap_or(false)
        })
    };
    let mut child = rbuild(&root)
        .args(["build", "-q", "-t", "killed:1"])
        .arg(&ctx)
        .spawn()
        .unwrap();
    conformance::peers::wait_until("the RUN step", std::time::Duration::from_secs(20), running)
        .unwrap();
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    conformance::peers::wait_until(
        "the container to die with rbuild",
        std::time::Duration::from_secs(10),
        || !running(),
    )
    .unwrap();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(root.to_str().unwrap()),
        "a mount outlived the build:\n{mountinfo}"
    );
    // The store still works; nothing half-made is visible.
    let images = ok(rbuild(&root).args(["images", "--format", "json"]));
    assert!(!images.contains("killed"), "{images}");
    ok(rbuild(&root).arg("prune"));
    assert!(
        !root.join("tmp").exists(),
        "prune left the killed build's scratch space"
    );
    fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN echo finished > /finished\n",
    )
    .unwrap();
    build(&root, &ctx, &["-t", "after:1"]);
    assert!(inspect(&root, "after:1")["Id"].is_string());
}

/// A writable bind (`rw`) of the context, of one of its files and of a stage: the RUN sees its
/// own writes, the context and the stage never do (BuildKit throws such writes away).
#[test]
fn writable_bind_mounts_discard_their_writes() {
    let (tmp, root, ctx) = store_and_context(
        "FROM bb:1 AS stage\n\
         RUN mkdir /data && echo kept > /data/f\n\
         FROM bb:1\n\
         RUN --mount=type=bind,target=/src,rw touch /src/new && echo changed > /src/f.txt \
             && cat /src/f.txt > /seen && ls /src > /listing\n\
         RUN --mount=type=bind,source=f.txt,target=/one,rw echo x > /one && cat /one > /one-seen\n\
         RUN --mount=type=bind,from=stage,source=/data,target=/d,rw echo gone > /d/f && cat /d/f > /d-seen\n\
         RUN --mount=type=bind,from=stage,source=/data,target=/d cat /d/f > /d-after\n",
    );
    fs::write(ctx.join("f.txt"), "original\n").unwrap();
    let out = tmp.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    build(&root, &ctx, &["-o", &dest]);
    let read = |path: &str| fs::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("seen"), "changed\n");
    assert_eq!(read("listing"), "Dockerfile\nf.txt\nnew\n");
    assert_eq!(read("one-seen"), "x\n");
    assert_eq!(read("d-seen"), "gone\n");
    assert_eq!(read("d-after"), "kept\n");
    assert_eq!(fs::read_to_string(ctx.join("f.txt")).unwrap(), "original\n");
    assert!(!ctx.join("new").exists(), "a write reached the context");
}

/// An image may hold one layer twice (BuildKit writes the same empty layer for each WORKDIR),
/// and two steps may make the same layer; overlayfs refuses a lower directory given twice, so
/// the build and `rbuild run` must name it once.
#[test]
fn a_layer_twice_in_an_image_mounts() {
    let (tmp, root, ctx) =
        store_and_context("FROM bb:1\nCOPY a.txt /x\nCOPY a.txt /x\nRUN cat /x > /y\n");
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    build(&root, &ctx, &["-t", "twice:1"]);
    let out = rbuild(&root)
        .args(["run", "--rm", "twice:1", "cat", "/y"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");
    drop(tmp);
}
