//! HTTPS with `http.tls` (openssl-made certificates, curl as the client): HTTP/2 negotiated
//! by ALPN, HTTP/1.1 still served, the certificate replaced on disk served without a
//! restart; and HTTP/2 without TLS (h2c, prior knowledge) on a plain listener.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conformance::auth_files::{ec_key, self_signed_cert};
use conformance::peers::{require, wait_until};
use support::{free_port, Server};

/// `curl` to `url` with `args`; the HTTP version and status, or None when curl failed
/// (for instance, the certificate did not verify).
fn curl(args: &[&str], url: &str) -> Option<String> {
    let out = Command::new(require("curl"))
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("spawn curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn make_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = ec_key(dir, name).unwrap();
    let cert = self_signed_cert(dir, name, &key).unwrap();
    (cert, key)
}

#[test]
fn https_http2_and_certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let (cert1, key1) = make_pair(&certs, "first");
    let (cert_path, key_path) = (certs.join("server.crt"), certs.join("server.key"));
    std::fs::copy(&cert1, &cert_path).unwrap();
    std::fs::copy(&key1, &key_path).unwrap();

    let server = Server::start(
        dir.path(),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert_path.display(),
            key_path.display()
        ),
    );
    let url = format!("https://127.0.0.1:{}/v2/", server.port);
    let first = cert1.to_str().unwrap();
    assert_eq!(
        curl(&["--http2", "--cacert", first], &url).as_deref(),
        Some("2 200"),
        "HTTP/2 by ALPN"
    );
    assert_eq!(
        curl(&["--http1.1", "--cacert", first], &url).as_deref(),
        Some("1.1 200")
    );
    assert_eq!(
        curl(&[], &format!("http://127.0.0.1:{}/v2/", server.port)),
        None,
        "no plain HTTP on a TLS listener"
    );

    // Replace the pair the way certificate tools do: new files renamed into place.
    let (cert2, key2) = make_pair(&certs, "second");
    std::fs::copy(&key2, certs.join("server.key.new")).unwrap();
    std::fs::copy(&cert2, certs.join("server.crt.new")).unwrap();
    std::fs::rename(certs.join("server.crt.new"), &cert_path).unwrap();
    std::fs::rename(certs.join("server.key.new"), &key_path).unwrap();
    let second = cert2.to_str().unwrap();
    wait_until(
        "the new certificate in service",
        Duration::from_secs(20),
        || curl(&["--http2", "--cacert", second], &url).as_deref() == Some("2 200"),
    )
    .unwrap();
    assert_eq!(
        curl(&["--cacert", first], &url),
        None,
        "the old one is gone"
    );

    // A broken replacement keeps the working certificate in service.
    std::fs::write(&key_path, "not a key").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        curl(&["--http2", "--cacert", second], &url).as_deref(),
        Some("2 200")
    );
}

#[test]
fn http2_can_be_disabled_and_h2c_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(dir.path(), "server");
    let server = Server::start(
        dir.path(),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n  http2:\n    disabled: true\n",
            cert.display(),
            key.display()
        ),
    );
    let ca = cert.to_str().unwrap();
    assert_eq!(
        curl(
            &["--http2", "--cacert", ca],
            &format!("https://127.0.0.1:{}/v2/", server.port)
        )
        .as_deref(),
        Some("1.1 200"),
        "ALPN offers only HTTP/1.1"
    );

    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Server::start_on(plain_dir.path(), free_port(), "", "");
    assert_eq!(
        curl(
            &["--http2-prior-knowledge"],
            &format!("http://127.0.0.1:{}/v2/", plain.port)
        )
        .as_deref(),
        Some("2 200")
    );
}
