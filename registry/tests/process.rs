//! rregistry as a process: uploads survive a restart, SIGTERM drains in-flight requests,
//! stalled and oversized uploads are refused with the spec's codes, never a 500.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use oci::Digest;
use reqwest::blocking::Client;
use support::{free_port, Server};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn location(resp: &reqwest::blocking::Response) -> String {
    let loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    loc
}

#[test]
fn chunked_upload_resumes_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = Digest::sha256_of(&data);
    let chunk = 1024;
    let http = client();

    let server = Server::start(dir.path(), "");
    let port = server.port;
    let resp = http
        .post(server.url("/v2/resume/me/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let mut loc = location(&resp);
    // The first half in many PATCHes.
    for (i, part) in data[..32 * 1024].chunks(chunk).enumerate() {
        let start = i * chunk;
        let resp = http
            .patch(server.url(&loc))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .expect("PATCH");
        assert_eq!(resp.status(), 202, "chunk {i}");
        loc = location(&resp);
    }
    assert!(
        server.terminate().success(),
        "rregistry exits cleanly on SIGTERM"
    );

    // A new process over the same storage: the session and its offset are still there.
    let server = Server::start_on(dir.path(), port, "", "");
    let resp = http.get(server.url(&loc)).send().expect("GET status");
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["Range"],
        format!("0-{}", 32 * 1024 - 1).as_str()
    );
    loc = location(&resp);
    for (i, part) in data[32 * 1024..].chunks(chunk).enumerate() {
        let start = 32 * 1024 + i * chunk;
        let resp = http
            .patch(server.url(&loc))
            .header(
                "Content-Range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .expect("PATCH after restart");
        assert_eq!(resp.status(), 202, "chunk after restart {i}");
        loc = location(&resp);
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = http
        .put(server.url(&format!("{loc}{sep}digest={digest}")))
        .send()
        .expect("PUT");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    let body = http
        .get(server.url(&format!("/v2/resume/me/blobs/{digest}")))
        .send()
        .expect("GET")
        .bytes()
        .expect("body");
    assert_eq!(Digest::sha256_of(&body), digest);
}

#[test]
fn sigterm_drains_an_in_flight_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let http = client();
    let resp = http
        .post(server.url("/v2/drain/blobs/uploads/"))
        .send()
        .expect("POST");
    let loc = location(&resp);
    let data = vec![7u8; 4000];
    let digest = Digest::sha256_of(&data);

    // Send the request head and half the body, then SIGTERM, then the rest.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    write!(
        stream,
        "PUT {loc}?digest={digest} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        data.len()
    )
    .expect("head");
    stream.write_all(&data[..2000]).expect("first half");
    std::thread::sleep(Duration::from_millis(300));
    server.signal_term();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&data[2000..]).expect("second half");
    let mut reply = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 201"),
        "in-flight PUT after SIGTERM: {reply:?}"
    );
    assert!(server.wait().success());
    // The blob is stored whole.
    let blob = dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&digest.encoded()[..2])
        .join(digest.encoded())
        .join("data");
    assert_eq!(std::fs::read(blob).expect("stored blob"), data);
}

/// Sends a raw request and returns the status line and body.
fn raw(port: u16, head: &str, body: &[u8], wait_before_close: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(body).expect("body");
    std::thread::sleep(wait_before_close);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn stalled_oversized_and_short_uploads_are_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "  bodytimeout: 1s\n  uploadmaxbytes: 100000\n");
    let http = client();

    // A body that stalls: 408 with BLOB_UPLOAD_INVALID once http.bodytimeout passes.
    let loc = location(
        &http
            .post(server.url("/v2/bad/input/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let reply = raw(
        server.port,
        &format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
        ),
        &[1u8; 10],
        Duration::from_millis(100),
    );
    assert!(reply.starts_with("HTTP/1.1 408"), "stalled body: {reply}");
    assert!(reply.contains("BLOB_UPLOAD_INVALID"), "{reply}");

    // Larger than http.uploadmaxbytes: 413 and the session is gone.
    let loc = location(
        &http
            .post(server.url("/v2/bad/input/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    let resp = http
        .patch(server.url(&loc))
        .body(vec![0u8; 200_000])
        .send()
        .expect("PATCH");
    assert_eq!(resp.status(), 413);
    assert_eq!(
        http.get(server.url(&loc)).send().expect("status").status(),
        404
    );

    // A body shorter than its Content-Length (the client hangs up): no blob appears.
    let data = b"short body";
    let digest = Digest::sha256_of(data);
    let reply = raw(
        server.port,
        &format!(
            "POST /v2/bad/input/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
        ),
        data,
        Duration::ZERO,
    );
    assert!(!reply.contains(" 500 "), "no 500 for a short body: {reply}");
    let resp = http
        .head(server.url(&format!("/v2/bad/input/blobs/{digest}")))
        .send()
        .expect("HEAD");
    assert_eq!(resp.status(), 404, "a short body must not create the blob");

    // Nothing was left behind by the refused uploads but the stalled session.
    let log = std::fs::read_to_string(dir.path().join("rregistry.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "server panicked:\n{log}");
    assert!(!log.contains("status=500"), "server answered 500:\n{log}");
}

#[test]
fn stale_upload_sessions_are_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let purging = "  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n      dryrun: false\n";
    let server = Server::start_on(dir.path(), free_port(), "", purging);
    let http = client();
    let loc = location(
        &http
            .post(server.url("/v2/purge/me/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    assert_eq!(
        http.get(server.url(&loc)).send().expect("status").status(),
        204
    );
    // Purged at the first sweep after its age (1 s + up to 1 s); polled, as a loaded machine
    // may run the sweep late. A status GET does not refresh the session's `startedat`.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = http
            .get(server.url(&loc))
            .send()
            .expect("status after purge")
            .status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 204, "a live session until purged");
        assert!(
            std::time::Instant::now() < deadline,
            "session older than storage.maintenance.uploadpurging.age never purged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let uploads = dir
        .path()
        .join("data/docker/registry/v2/repositories/purge/me/_uploads");
    assert_eq!(
        std::fs::read_dir(uploads).map(|d| d.count()).unwrap_or(0),
        0
    );
}

/// What `docker run -e REGISTRY_…=… registry:2` users pass works: with no config file,
/// distribution's environment overrides set the address, the storage and delete; and the
/// config file can be given as `registry serve CONFIG` gives it.
#[test]
fn environment_overrides_and_a_positional_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = client();
    let port = free_port();
    let data = dir.path().join("from-env");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_rregistry"));
    serve
        .arg("serve")
        .env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &data)
        .env("REGISTRY_STORAGE_DELETE_ENABLED", "true");
    let server = Server::spawn(dir.path(), port, &mut serve);
    let blob = b"configured by the environment";
    let digest = Digest::sha256_of(blob);
    let resp = http
        .post(server.url(&format!("/v2/env/test/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 201);
    assert!(data.join("docker/registry/v2/blobs/sha256").is_dir());
    let deleted = http
        .delete(server.url(&format!("/v2/env/test/blobs/{digest}")))
        .send()
        .expect("DELETE");
    assert_eq!(
        deleted.status(),
        202,
        "delete.enabled did not come from the environment"
    );
    drop(server);

    let port = free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:{port}\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("from-file").display()
        ),
    )
    .expect("config");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_rregistry"));
    serve.arg("serve").arg(&config);
    let server = Server::spawn(dir.path(), port, &mut serve);
    assert_eq!(
        http.get(server.url("/v2/")).send().expect("GET").status(),
        200
    );
}
