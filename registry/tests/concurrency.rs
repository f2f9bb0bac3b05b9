//! 32 clients pushing one blob at once all succeed and one copy is stored; reads racing
//! deletes and re-pushes never see a torn blob.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oci::Digest;
use reqwest::blocking::Client;
use support::Server;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn push(
    http: &Client,
    server_url: &dyn Fn(&str) -> String,
    repo: &str,
    data: &[u8],
    digest: &Digest,
) -> u16 {
    let resp = http
        .post(server_url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let mut loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    let half = data.len() / 2;
    let resp = http
        .patch(server_url(&loc))
        .header("Content-Range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .expect("PATCH");
    assert_eq!(resp.status(), 202);
    loc = resp.headers()["Location"]
        .to_str()
        .expect("Location")
        .to_string();
    let resp = http
        .put(server_url(&format!("{loc}?digest={digest}")))
        .body(data[half..].to_vec())
        .send()
        .expect("PUT");
    resp.status().as_u16()
}

#[test]
fn thirty_two_concurrent_pushes_of_one_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Server::start(dir.path(), ""));
    let data: Arc<Vec<u8>> = Arc::new((0..(2u32 << 20)).map(|i| (i % 253) as u8).collect());
    let digest = Digest::sha256_of(&data);
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let (server, data, digest) = (server.clone(), data.clone(), digest.clone());
            std::thread::spawn(move || {
                let url = |p: &str| server.url(p);
                push(
                    &client(),
                    &url,
                    &format!("same/blob{}", i % 4),
                    &data,
                    &digest,
                )
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("pusher"), 201);
    }
    let v2 = dir.path().join("data/docker/registry/v2");
    let shard = v2.join("blobs/sha256").join(&digest.encoded()[..2]);
    let stored: Vec<_> = std::fs::read_dir(&shard).expect("shard").collect();
    assert_eq!(stored.len(), 1, "one copy of the blob");
    assert_eq!(
        std::fs::read(shard.join(digest.encoded()).join("data")).expect("blob"),
        *data
    );
    // No session or temporary file is left over.
    for repo in 0..4 {
        let uploads = v2.join(format!("repositories/same/blob{repo}/_uploads"));
        let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "sessions left in {uploads:?}");
    }
    let tmp = std::fs::read_dir(dir.path().join("data/_tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0, "temporary files left");
}

#[test]
fn reads_racing_deletes_and_pushes_never_see_a_torn_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Server::start(dir.path(), ""));
    let data: Arc<Vec<u8>> = Arc::new((0..(1u32 << 20)).map(|i| (i % 241) as u8).collect());
    let digest = Digest::sha256_of(&data);
    let url = |p: &str| server.url(p);
    assert_eq!(push(&client(), &url, "race/repo", &data, &digest), 201);
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let (server, data, digest, done) =
            (server.clone(), data.clone(), digest.clone(), done.clone());
        std::thread::spawn(move || {
            let http = client();
            let url = |p: &str| server.url(p);
            for _ in 0..20 {
                let resp = http
                    .delete(url(&format!("/v2/race/repo/blobs/{digest}")))
                    .send()
                    .expect("DELETE");
                assert!(resp.status() == 202 || resp.status() == 404);
                assert_eq!(push(&http, &url, "race/repo", &data, &digest), 201);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (server, digest, done) = (server.clone(), digest.clone(), done.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut whole = 0;
                while !done.load(Ordering::SeqCst) {
                    let resp = http
                        .get(server.url(&format!("/v2/race/repo/blobs/{digest}")))
                        .send()
                        .expect("GET");
                    match resp.status().as_u16() {
                        200 => {
                            let body = resp.bytes().expect("body");
                            assert_eq!(Digest::sha256_of(&body), digest, "torn blob served");
                            whole += 1;
                        }
                        404 => {}
                        other => panic!("unexpected status {other}"),
                    }
                }
                whole
            })
        })
        .collect();
    writer.join().expect("writer");
    let whole: usize = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(whole > 0, "readers never saw the blob");
}
