//! `rbuild login`, `push` and `pull` against rregistry's own token issuer (auth.token with
//! `signingkey`): the client follows the Bearer challenge to the built-in token endpoint,
//! and a user the access rules give no push is denied.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{busybox_archive, ok, rbuild};
use conformance::auth_files::{ec_key, htpasswd_file};
use conformance::registry_suite::Rregistry;
use oci::archive::ArchiveFormat;

/// rbuild on `root` with its own docker config directory (never the user's).
fn rb(root: &Path, docker_config: &Path, args: &[&str]) -> Command {
    let mut cmd = rbuild(root);
    cmd.env("DOCKER_CONFIG", docker_config).args(args);
    cmd
}

fn failed(mut cmd: Command) -> String {
    let out: Output = cmd.output().expect("spawn rbuild");
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256_in(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {output:?}"))
        .to_string()
}

#[test]
fn login_push_pull_with_the_built_in_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let users = htpasswd_file(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]).unwrap();
    let key = ec_key(dir, "issuer").unwrap();
    let registry = Rregistry::start(
        true,
        &format!(
            "auth:\n  token:\n    autoredirect: true\n    service: rbuild-test\n    issuer: rbuild-test-issuer\n    signingkey: {}\n    users: {}\n  access:\n    - repository: 'team/**'\n      users: [alice]\n      actions: ['*']\n    - repository: '**'\n      users: ['*']\n      actions: [pull]\n",
            key.display(),
            users.display()
        ),
    )
    .expect("start rregistry");
    let addr = registry.addr();
    let cfg = dir.join("docker-config");
    let root = dir.join("store");
    let archive = busybox_archive(dir, "rbuild-test/busybox:auth", ArchiveFormat::Oci);
    ok(rb(&root, &cfg, &["load", "-i"]).arg(&archive));

    let err = failed(rb(
        &root,
        &cfg,
        &["login", "-u", "alice", "-p", "wrong", &addr],
    ));
    assert!(err.contains("unauthorized") && err.contains(&addr), "{err}");
    let target = format!("{addr}/team/bb:1");
    let err = failed(rb(
        &root,
        &cfg,
        &["push", "rbuild-test/busybox:auth", &target],
    ));
    assert!(err.contains("unauthorized"), "{err}");

    let out = ok(&mut rb(
        &root,
        &cfg,
        &["login", "-u", "alice", "-p", "alice-pw", &addr],
    ));
    assert_eq!(out.trim(), "Login Succeeded");
    let digest = sha256_in(&ok(&mut rb(
        &root,
        &cfg,
        &["push", "rbuild-test/busybox:auth", &target],
    )));
    let fresh = dir.join("fresh");
    assert_eq!(
        sha256_in(&ok(&mut rb(&fresh, &cfg, &["pull", &target]))),
        digest
    );

    // bob signs in and may pull, but not push.
    ok(&mut rb(
        &root,
        &cfg,
        &["login", "-u", "bob", "-p", "bob-pw", &addr],
    ));
    let other = dir.join("other");
    assert_eq!(
        sha256_in(&ok(&mut rb(&other, &cfg, &["pull", &target]))),
        digest
    );
    let err = failed(rb(
        &root,
        &cfg,
        &[
            "push",
            "rbuild-test/busybox:auth",
            &format!("{addr}/team/bob:1"),
        ],
    ));
    assert!(err.contains("denied"), "{err}");
}
