//! Stateless replicas: two `rregistry` processes over one storage behave as one registry.
//! The spec suite runs round-robin across two replicas (every request goes to the other
//! replica than the one before) over one shared directory and over one S3 bucket, and an
//! upload whose replica is SIGKILLed mid-chunk finishes on the other.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use conformance::peers::{free_port, wait_until, PeerProcess};
use conformance::registry_suite::{run, Flavor};
use conformance::round_robin::RoundRobin;
use conformance::s3_server::S3Server;
use oci::Digest;
use reqwest::blocking::Client;

/// One `rregistry serve` process; `storage_yaml` is the `storage:` map's driver section.
struct Replica {
    process: PeerProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(storage_yaml: &str) -> Replica {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-replica-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nhttp:\n  addr: 127.0.0.1:{port}\nstorage:\n{storage_yaml}  delete:\n    enabled: true\n"
            ),
        )
        .expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rregistry"));
        cmd.arg("serve").arg("--config").arg(&config);
        let mut process = PeerProcess::spawn("rregistry", &mut cmd, &dir.path().join("log"))
            .expect("spawn rregistry");
        wait_until("rregistry", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .expect("rregistry listening");
        process.check_alive().expect("rregistry running");
        Replica {
            process,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn kill(&mut self) {
        // SAFETY: signalling the child this test spawned and has not reaped.
        unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGKILL) };
        self.process.stop();
    }
}

fn spec_suite_round_robin(storage_yaml: &str) {
    let a = Replica::start(storage_yaml);
    let b = Replica::start(storage_yaml);
    let balancer = RoundRobin::start(vec![a.addr(), b.addr()]).expect("round robin");
    run(&balancer.url(), Flavor::Rregistry).assert_all_passed();
    let served = balancer.served();
    assert!(served.iter().all(|&n| n > 50), "unbalanced: {served:?}");
}

#[test]
fn two_replicas_over_one_directory_pass_the_spec_suite_round_robin() {
    let data = tempfile::tempdir().expect("tempdir");
    spec_suite_round_robin(&format!(
        "  filesystem:\n    rootdirectory: {}\n",
        data.path().display()
    ));
}

#[test]
fn two_replicas_over_one_bucket_pass_the_spec_suite_round_robin() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("replicas").expect("bucket");
    spec_suite_round_robin(&S3Server::storage_yaml(&s3.endpoint(), "replicas", ""));
}

#[test]
fn an_upload_on_a_replica_killed_mid_chunk_finishes_on_the_other() {
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("killed").expect("bucket");
    let yaml = S3Server::storage_yaml(&s3.endpoint(), "killed", "    chunksize: 5242880\n");
    let mut a = Replica::start(&yaml);
    let b = Replica::start(&yaml);
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let data: Vec<u8> = (0..(14u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let digest = Digest::sha256_of(&data);
    let first = 6 << 20;

    // POST and a first 6 MiB chunk on replica A.
    let resp = http
        .post(a.url("/v2/kill/me/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    let resp = http
        .patch(a.url(&loc))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", first - 1))
        .body(data[..first].to_vec())
        .send()
        .expect("PATCH");
    assert_eq!(resp.status(), 202);

    // The second chunk: half of it sent, then replica A is SIGKILLed mid-request.
    let mut conn = TcpStream::connect(a.addr()).expect("connect A");
    let rest = &data[first..];
    write!(
        conn,
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: {first}-{}\r\n\r\n",
        a.addr(),
        rest.len(),
        data.len() - 1
    )
    .expect("PATCH head");
    conn.write_all(&rest[..rest.len() / 2])
        .expect("half a chunk");
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    drop(conn);

    // Replica B, which never saw the session, reports what was durably received...
    let resp = http.get(b.url(&loc)).send().expect("status on B");
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["Range"], format!("0-{}", first - 1).as_str());
    // ...takes the rest, and closes the upload with the digest of the whole.
    let resp = http
        .patch(b.url(&loc))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{first}-{}", data.len() - 1))
        .body(rest.to_vec())
        .send()
        .expect("PATCH on B");
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = http
        .put(b.url(&format!("{loc}{sep}digest={digest}")))
        .send()
        .expect("PUT on B");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    // B continued the digest A saved after the first chunk: it never read the data back.
    let metrics = http
        .get(b.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics of B");
    let reads = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("rregistry_storage_operation_duration_seconds_count{op=\"reader\"} ")
        })
        .expect("B's storage read count");
    assert_eq!(reads, "0", "B rehashed the upload from storage");
    let got = http
        .get(b.url(&format!("/v2/kill/me/blobs/{digest}")))
        .send()
        .expect("GET");
    assert_eq!(got.status(), 200);
    assert!(got.bytes().expect("body")[..] == data[..], "blob differs");
    // The session is gone from the bucket.
    let left = s3
        .list_keys(
            "killed",
            "docker/registry/v2/repositories/kill/me/_uploads/",
        )
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
}
