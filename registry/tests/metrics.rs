//! Operations: Prometheus `/metrics`, `/healthz`, and JSON logs (`log.formatter: json`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci::Digest;
use reqwest::blocking::Client;
use support::{free_port, Server};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

fn location(resp: &reqwest::blocking::Response) -> String {
    resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string()
}

#[test]
fn metrics_count_requests_bytes_uploads_storage_and_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gc = "  maintenance:\n    gc:\n      enabled: true\n      interval: 200ms\n      graceperiod: 1h\n";
    let server = Server::start_on(dir.path(), free_port(), "", gc);
    let http = client();

    let data = vec![5u8; 100_000];
    let digest = Digest::sha256_of(&data);
    let resp = http
        .post(server.url(&format!("/v2/m/repo/blobs/uploads/?digest={digest}")))
        .body(data.clone())
        .send()
        .expect("monolithic POST");
    assert_eq!(resp.status(), 201);
    // A session opened and cancelled.
    let loc = location(
        &http
            .post(server.url("/v2/m/repo/blobs/uploads/"))
            .send()
            .expect("POST"),
    );
    assert_eq!(
        http.delete(server.url(&loc))
            .send()
            .expect("DELETE")
            .status(),
        204
    );
    for _ in 0..2 {
        let body = http
            .get(server.url(&format!("/v2/m/repo/blobs/{digest}")))
            .send()
            .expect("GET blob")
            .bytes()
            .expect("body");
        assert_eq!(body.len(), data.len());
    }
    assert_eq!(
        http.get(server.url("/v2/m/repo/manifests/nope"))
            .send()
            .expect("GET manifest")
            .status(),
        404
    );

    // GC passes show up within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let resp = http
            .get(server.url("/metrics"))
            .send()
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["Content-Type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain; version=0.0.4"));
        let text = resp.text().expect("metrics");
        if sample(&text, "rregistry_gc_runs_total{result=\"success\"}") >= 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "no GC pass recorded:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let req = |route: &str, method: &str, status: u16| {
        sample(
            &text,
            &format!(
                "rregistry_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(req("blobs", "GET", 200), 2.0);
    assert_eq!(req("uploads", "POST", 201), 1.0);
    assert_eq!(req("uploads", "POST", 202), 1.0);
    assert_eq!(req("upload", "DELETE", 204), 1.0);
    assert_eq!(req("manifests", "GET", 404), 1.0);
    assert!(
        sample(
            &text,
            "rregistry_http_request_bytes_total{route=\"uploads\"}"
        ) >= 100_000.0
    );
    assert!(
        sample(
            &text,
            "rregistry_http_response_bytes_total{route=\"blobs\"}"
        ) >= 200_000.0
    );
    assert_eq!(
        sample(&text, "rregistry_upload_sessions_started_total"),
        2.0
    );
    assert_eq!(
        sample(&text, "rregistry_upload_sessions_completed_total"),
        1.0
    );
    assert_eq!(
        sample(&text, "rregistry_upload_sessions_cancelled_total"),
        1.0
    );
    assert!(
        sample(
            &text,
            "rregistry_storage_operation_duration_seconds_count{op=\"rename\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "rregistry_storage_operation_duration_seconds_bucket{op=\"stat\",le=\"+Inf\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&text, "rregistry_storage_errors_total{op=\"stat\"}"),
        0.0
    );
    assert_eq!(sample(&text, "rregistry_gc_reclaimed_bytes_total"), 0.0);
    assert!(text.contains("# TYPE rregistry_storage_operation_duration_seconds histogram"));
}

#[test]
fn healthz_follows_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let http = client();
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .expect("healthz")
            .status(),
        200,
        "a fresh registry is healthy"
    );
    assert_eq!(
        http.head(server.url("/healthz"))
            .send()
            .expect("HEAD")
            .status(),
        200
    );

    // Storage that fails: a file where its tree belongs makes every path below ENOTDIR.
    let data = dir.path().join("data");
    std::fs::write(data.join("docker"), b"not a directory").expect("plant file");
    let resp = http.get(server.url("/healthz")).send().expect("healthz");
    assert_eq!(resp.status(), 503);
    assert!(resp.text().expect("body").contains("storage"));
    std::fs::remove_file(data.join("docker")).expect("remove file");
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .expect("healthz")
            .status(),
        200
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: json\nhttp:\n  addr: 127.0.0.1:{port}\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let log_path = dir.path().join("rregistry.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rregistry"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn rregistry");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rregistry did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = client()
        .get(format!("http://127.0.0.1:{port}/v2/"))
        .send()
        .expect("GET /v2/")
        .status();
    assert_eq!(status, 200);
    // SAFETY: signalling the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());

    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|v| v["message"] == "request")
        .unwrap_or_else(|| panic!("no access log line in:\n{text}"));
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/v2/");
    assert_eq!(access["status"], 200);
    assert!(lines.iter().any(|v| v["message"] == "rregistry listening"));
}
