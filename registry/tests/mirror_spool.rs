//! The pull-through mirror's spool (proxy/fill.rs), on the rregistry process: a cold blob far
//! bigger than a download may hold in memory reaches a fast client and a stalled one (which
//! reads the rest from the spool long after the download ended), the process's peak memory
//! stays a fraction of the blob, and the spool's directory (`proxy.spooldirectory`, or the
//! storage's `_tmp/` when the spool is adopted as the blob) never shows a file. On both spool
//! paths a blob over `http.uploadmaxbytes` reaches the client but is not cached. Range GETs
//! during a download are read from its spool.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use conformance::peers::{free_port, wait_until, DockerRegistry, PeerProcess};
use oci::{Algorithm, Digest, Digester};
use reqwest::blocking::{Body, Client};
use reqwest::StatusCode;

const BLOB_BYTES: u64 = 256 << 20;
/// The old design held a download whole in memory (>= 256 MiB here); the spool keeps a few
/// MiB per reader. Generous for a debug build's own footprint.
const PEAK_RSS_LIMIT: u64 = 96 << 20;

/// xorshift bytes made on the fly, so that the test process never holds the blob either.
struct PseudoRandom {
    x: u64,
    left: u64,
}

impl Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize) / 8 * 8;
        let n = if n == 0 { self.left as usize } else { n };
        for word in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            word.copy_from_slice(&self.x.to_le_bytes()[..word.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn blob_source() -> PseudoRandom {
    PseudoRandom {
        x: 0x9e37_79b9_7f4a_7c15,
        left: BLOB_BYTES,
    }
}

fn hash_all(mut reader: impl Read, digester: &mut Digester) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            return;
        }
        digester.update(&buf[..n]);
    }
}

fn push_streamed(http: &Client, registry: &str, repo: &str) -> Digest {
    let mut digester = Digester::new(Algorithm::Sha256);
    hash_all(blob_source(), &mut digester);
    let digest = digester.finish();
    let start = http
        .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("POST");
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let location = start.headers()["Location"].to_str().unwrap().to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(Body::sized(blob_source(), BLOB_BYTES))
        .send()
        .expect("PUT");
    assert_eq!(put.status(), StatusCode::CREATED);
    digest
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib << 10
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("spool dir").count()
}

/// With `proxy.spooldirectory` set: the spool is there and an upload session copies it into
/// storage.
#[test]
fn a_cold_blob_is_spooled_not_held_in_memory() {
    cold_blob_is_spooled(SpoolAt::SpoolDirectory);
}

/// Without it, on the filesystem driver: the spool is a nameless file in the storage's
/// `_tmp/`, adopted as the blob.
#[test]
fn a_cold_blob_is_spooled_in_storage_and_adopted() {
    cold_blob_is_spooled(SpoolAt::Storage);
}

enum SpoolAt {
    SpoolDirectory,
    Storage,
}

/// A mirror of `upstream` under `dir`, spooling as `at` says, with `http_extra` (lines
/// indented by 2) in its `http:` section. Returns the server, its port and the directory
/// its spools live in.
fn start_mirror(
    dir: &Path,
    upstream: &str,
    at: SpoolAt,
    http_extra: &str,
) -> (PeerProcess, u16, PathBuf) {
    let data = dir.join("data");
    let (spool, spool_yaml) = match at {
        SpoolAt::SpoolDirectory => {
            let spool = dir.join("spool");
            std::fs::create_dir(&spool).unwrap();
            let yaml = format!("  spooldirectory: {}\n", spool.display());
            (spool, yaml)
        }
        SpoolAt::Storage => (data.join("_tmp"), String::new()),
    };
    let port = free_port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}storage:\n  filesystem:\n    rootdirectory: {}\nproxy:\n  remoteurl: http://{upstream}\n{spool_yaml}",
            data.display(),
        ),
    )
    .unwrap();
    let mut server = PeerProcess::spawn(
        "rregistry",
        Command::new(env!("CARGO_BIN_EXE_rregistry"))
            .args(["serve", "--config"])
            .arg(&config),
        &dir.join("rregistry.log"),
    )
    .expect("rregistry");
    wait_until("rregistry", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("rregistry listening");
    server.check_alive().expect("rregistry running");
    (server, port, spool)
}

fn cold_blob_is_spooled(at: SpoolAt) {
    let upstream = DockerRegistry::start("").expect("upstream");
    let http = Client::builder().timeout(None).build().unwrap();
    let digest = push_streamed(&http, &upstream.addr(), "team/huge");

    let dir = tempfile::tempdir().unwrap();
    let (server, port, spool) = start_mirror(dir.path(), &upstream.addr(), at, "");
    let url = format!("http://127.0.0.1:{port}/v2/team/huge/blobs/{digest}");

    // The stalled client takes its first MiB and waits until the fast one has everything.
    let (fast_done, resume) = mpsc::channel::<()>();
    let stalled = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || {
            let mut resp = http.get(&url).send().expect("GET (stalled)");
            assert_eq!(resp.status(), StatusCode::OK);
            let mut digester = Digester::new(Algorithm::Sha256);
            let mut first = vec![0u8; 1 << 20];
            resp.read_exact(&mut first).expect("first MiB");
            digester.update(&first);
            resume.recv().expect("the fast client finished");
            hash_all(resp, &mut digester);
            digester.finish()
        })
    };
    let mut digester = Digester::new(Algorithm::Sha256);
    let resp = http.get(&url).send().expect("GET (fast)");
    assert_eq!(resp.status(), StatusCode::OK);
    hash_all(resp, &mut digester);
    assert_eq!(digester.finish(), digest);
    // The download is over and a reader is still behind: the spool is alive, yet unlinked.
    assert_eq!(entries(&spool), 0, "spool files are never visible");
    fast_done.send(()).unwrap();
    assert_eq!(stalled.join().expect("stalled client"), digest);

    wait_until("the blob committed", Duration::from_secs(60), || {
        http.head(&url)
            .send()
            .map(|r| {
                r.headers()
                    .get("X-Rregistry-Cache")
                    .is_some_and(|v| v == "HIT")
            })
            .unwrap_or(false)
    })
    .expect("cached");
    let mut digester = Digester::new(Algorithm::Sha256);
    hash_all(http.get(&url).send().expect("GET (cached)"), &mut digester);
    assert_eq!(digester.finish(), digest, "the cached blob is whole");
    let peak = peak_rss(server.pid());
    eprintln!("rregistry peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < PEAK_RSS_LIMIT,
        "rregistry's peak RSS {} MiB for a {} MiB blob",
        peak >> 20,
        BLOB_BYTES >> 20
    );
    assert_eq!(entries(&spool), 0);
}

/// `http.uploadmaxbytes` bounds what a fill may store, on both spool paths: the client still
/// gets the whole (verified) blob, nothing is cached, and the log says why.
#[test]
fn a_blob_over_the_upload_limit_is_served_but_not_cached() {
    let upstream = DockerRegistry::start("").expect("upstream");
    let http = Client::builder().timeout(None).build().unwrap();
    let digest = push_streamed(&http, &upstream.addr(), "team/huge");
    for at in [SpoolAt::SpoolDirectory, SpoolAt::Storage] {
        let dir = tempfile::tempdir().unwrap();
        let limit = "  uploadmaxbytes: 1048576\n";
        let (_server, port, _) = start_mirror(dir.path(), &upstream.addr(), at, limit);
        let url = format!("http://127.0.0.1:{port}/v2/team/huge/blobs/{digest}");
        let mut digester = Digester::new(Algorithm::Sha256);
        let resp = http.get(&url).send().expect("GET");
        assert_eq!(resp.status(), StatusCode::OK);
        hash_all(resp, &mut digester);
        assert_eq!(digester.finish(), digest);
        let log = dir.path().join("rregistry.log");
        wait_until("the fill's outcome", Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("nothing cached"))
        })
        .expect("the log says the blob was not cached");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("uploadmaxbytes"), "{text}");
        let head = http.head(&url).send().expect("HEAD");
        assert_eq!(
            head.headers().get("X-Rregistry-Cache").unwrap(),
            "MISS",
            "a blob over the limit is not cached"
        );
        let blobs = dir.path().join("data/docker/registry/v2/blobs");
        assert!(!blobs.exists() || entries(&blobs) == 0, "no blob stored");
    }
}

/// An upstream serving one blob, its first half at once and the rest only once released:
/// a download that stays under way as long as a test needs. It records every request head.
struct HeldUpstream {
    addr: String,
    released: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HeldUpstream {
    fn start(blob: Arc<Vec<u8>>, digest: Digest) -> HeldUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let released = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (released2, heads2) = (released.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (blob, digest) = (blob.clone(), digest.clone());
                let (released, heads) = (released2.clone(), heads2.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    heads.lock().unwrap().push(head.clone());
                    if !head.starts_with(&format!("GET /v2/team/ranged/blobs/{digest} ")) {
                        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    let half = blob.len() / 2;
                    let headers = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n", blob.len());
                    let _ = conn.write_all(headers.as_bytes());
                    let _ = conn.write_all(&blob[..half]);
                    while !released.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = conn.write_all(&blob[half..]);
                });
            }
        });
        HeldUpstream {
            addr,
            released,
            heads,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Range GETs of a blob whose download is under way (a client resuming a broken pull, or
/// fetching parts in parallel) are read from the download's spool, not sent upstream: a range
/// of the bytes already there is answered at once, one that reaches the blob's last byte once
/// the whole blob is verified.
#[test]
fn range_gets_during_a_download_read_its_spool() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let blob: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut digester = Digester::new(Algorithm::Sha256);
    digester.update(&blob);
    let digest = digester.finish();
    let blob = Arc::new(blob);
    let upstream = HeldUpstream::start(blob.clone(), digest.clone());
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, _) = start_mirror(dir.path(), &upstream.addr, SpoolAt::Storage, "");
    let url = format!("http://127.0.0.1:{port}/v2/team/ranged/blobs/{digest}");
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let whole = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || {
            let resp = http.get(&url).send().expect("GET");
            assert_eq!(resp.status(), StatusCode::OK);
            let mut digester = Digester::new(Algorithm::Sha256);
            hash_all(resp, &mut digester);
            digester.finish()
        })
    };
    wait_until("the download started", Duration::from_secs(20), || {
        !upstream.heads().is_empty()
    })
    .expect("the mirror asked the upstream");
    // The first half is on its way to the spool; give it a moment to land.
    std::thread::sleep(Duration::from_millis(300));

    let early = http
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .expect("Range GET");
    assert_eq!(early.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        early.headers()["Content-Range"],
        format!("bytes 1000-1999/{}", blob.len()).as_str()
    );
    assert_eq!(early.headers()["Accept-Ranges"], "bytes");
    assert_eq!(early.headers()["Content-Length"], "1000");
    assert!(early.bytes().unwrap()[..] == blob[1000..2000]);

    let len = blob.len();
    let tail = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || {
            let resp = http
                .get(&url)
                .header("Range", format!("bytes={}-{}", len - 100, len - 1))
                .send()
                .expect("Range GET of the end");
            assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
            resp.bytes().unwrap().to_vec()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !tail.is_finished(),
        "the blob's end was served before it arrived"
    );
    upstream.released.store(true, Ordering::SeqCst);
    assert_eq!(whole.join().expect("whole GET"), digest);
    assert!(tail.join().expect("tail GET")[..] == blob[len - 100..]);

    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "one upstream request: {heads:#?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("\r\nrange:"),
        "{heads:#?}"
    );
}
