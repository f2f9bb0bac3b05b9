//! Files the auth and TLS tests need, made by the real tools: htpasswd files by Apache's
//! `htpasswd -B`, keys and certificates by `openssl`; plus a tiny image made in dockerd with
//! `docker import`, for pushing through an authenticating registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::peers::{require, run_ok, Dockerd};

/// An htpasswd file with bcrypt entries for `users` (name, password).
pub fn htpasswd_file(dir: &Path, users: &[(&str, &str)]) -> Result<PathBuf> {
    let path = dir.join("htpasswd");
    let mut text = Vec::new();
    for (user, password) in users {
        let out = run_ok(Command::new(require("htpasswd")).args(["-Bbn", user, password]))?;
        text.extend_from_slice(out.stdout.trim_ascii_end());
        text.push(b'\n');
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A P-256 private key in PKCS#8 PEM at `dir/name.key`.
pub fn ec_key(dir: &Path, name: &str) -> Result<PathBuf> {
    let key = dir.join(format!("{name}.key"));
    run_ok(
        Command::new(require("openssl"))
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key),
    )?;
    Ok(key)
}

/// A self-signed certificate for `key` at `dir/name.crt`, valid for 127.0.0.1 and localhost.
pub fn self_signed_cert(dir: &Path, name: &str, key: &Path) -> Result<PathBuf> {
    let cert = dir.join(format!("{name}.crt"));
    run_ok(
        Command::new(require("openssl"))
            .args(["req", "-new", "-x509", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-key",
            ])
            .arg(key)
            .arg("-out")
            .arg(&cert),
    )?;
    Ok(cert)
}

/// What a CA-signed leaf is for: its X.509 v3 extensions.
#[derive(Debug, Clone, Copy)]
pub enum LeafUse {
    /// Signing tokens (x5c chains of token issuers).
    TokenSigning,
    /// A TLS server on 127.0.0.1.
    LoopbackServer,
}

impl LeafUse {
    fn extensions(self) -> &'static str {
        match self {
            LeafUse::TokenSigning => "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
            LeafUse::LoopbackServer => "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        }
    }
}

/// A certificate for `key` at `dir/name.crt`, signed by the CA `ca_cert`/`ca_key`: a leaf
/// (CA:FALSE) for `usage`.
pub fn ca_signed_cert(
    dir: &Path,
    name: &str,
    key: &Path,
    (ca_cert, ca_key): (&Path, &Path),
    usage: LeafUse,
) -> Result<PathBuf> {
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    let cert = dir.join(format!("{name}.crt"));
    std::fs::write(&ext, usage.extensions())?;
    run_ok(
        Command::new(require("openssl"))
            .args(["req", "-new", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-key")
            .arg(key)
            .arg("-out")
            .arg(&csr),
    )?;
    run_ok(
        Command::new(require("openssl"))
            .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(ca_cert)
            .arg("-CAkey")
            .arg(ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    )?;
    Ok(cert)
}

/// DER bytes of a PEM certificate.
pub fn cert_der(cert: &Path) -> Result<Vec<u8>> {
    Ok(run_ok(
        Command::new(require("openssl"))
            .args(["x509", "-outform", "DER", "-in"])
            .arg(cert),
    )?
    .stdout)
}

/// A one-file image named `tag` in `dockerd`, made with `docker import` (no base image to
/// fetch, so the tests need no network and no fixture archive).
pub fn docker_tiny_image(dockerd: &Dockerd, tag: &str, content: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hello.txt"), content)?;
    let tar = run_ok(
        Command::new(require("tar"))
            .arg("-C")
            .arg(dir.path())
            .args(["-cf", "-", "hello.txt"]),
    )?
    .stdout;
    let mut child = dockerd
        .docker()
        .args(["import", "-", tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn docker import")?;
    child
        .stdin
        .take()
        .context("docker import stdin")?
        .write_all(&tar)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The auth tests' shared docker flow, for a registry whose rules let `alice` (password
/// `alice-pw`) push and `bob` (`bob-pw`) only pull: alice logs in, pushes, removes and pulls
/// `image`; bob logs in and his push of `ADDR/team/bob:1` is refused with "denied". Returns
/// bob's tag (still logged in as bob).
pub fn alice_pushes_and_bob_is_denied(
    dockerd: &Dockerd,
    addr: &str,
    image: &str,
) -> Result<String> {
    run_ok(
        dockerd
            .docker()
            .args(["login", "-u", "alice", "-p", "alice-pw", addr]),
    )?;
    run_ok(dockerd.docker().args(["push", image]))?;
    run_ok(dockerd.docker().args(["rmi", image]))?;
    run_ok(dockerd.docker().args(["pull", image]))?;
    run_ok(
        dockerd
            .docker()
            .args(["login", "-u", "bob", "-p", "bob-pw", addr]),
    )?;
    let bobs = format!("{addr}/team/bob:1");
    run_ok(dockerd.docker().args(["tag", image, &bobs]))?;
    let out = dockerd
        .docker()
        .args(["push", &bobs])
        .output()
        .context("docker push")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains("denied") {
        bail!(
            "bob has no push rule, yet his push gave {}: {stderr}",
            out.status
        );
    }
    Ok(bobs)
}
