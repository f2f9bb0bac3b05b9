//! The S3 backend against the shared storage driver suite, on moto's S3 server.

use conformance::s3_server::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
use registry::storage::s3::{S3Config, S3Driver};

/// A moto server with one empty bucket, and a driver on it with `tuning`'s other settings.
async fn driver_on_a_new_bucket(
    bucket: &'static str,
    root: &str,
    tuning: S3Config,
) -> (S3Server, S3Driver) {
    let s3 = tokio::task::spawn_blocking(move || {
        let s3 = S3Server::start().expect("start moto");
        s3.create_bucket(bucket).expect("bucket");
        s3
    })
    .await
    .expect("moto");
    let driver = driver_at(s3.endpoint(), bucket, root, tuning);
    (s3, driver)
}

fn driver_at(endpoint: String, bucket: &str, root: &str, tuning: S3Config) -> S3Driver {
    S3Driver::new(&S3Config {
        region: REGION.into(),
        regionendpoint: endpoint,
        forcepathstyle: true,
        secure: false,
        bucket: bucket.into(),
        accesskey: ACCESS_KEY.into(),
        secretkey: SECRET_KEY.into(),
        rootdirectory: root.into(),
        ..tuning
    })
    .expect("driver")
}

/// A proxy in front of `s3` that records every request line.
fn counting_proxy(s3: &S3Server) -> conformance::counting_proxy::CountingProxy {
    let moto = s3.endpoint();
    let address = moto
        .trim_start_matches("http://")
        .parse()
        .expect("moto address");
    conformance::counting_proxy::CountingProxy::start(address).expect("proxy")
}

/// All that `path` holds, read through `driver`.
async fn read_all(driver: &S3Driver, path: &str) -> Vec<u8> {
    use futures_util::StreamExt;
    use registry::storage::StorageDriver;
    let (_, mut stream) = driver.reader(path, 0, None).await.expect("reader");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// `len` bytes that neither compress nor repeat within a part.
fn pattern(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_driver_passes_the_storage_suite() {
    let (s3, driver) = driver_on_a_new_bucket("suite", "/some/root", S3Config::default()).await;
    registry::storage::testsuite::run(driver).await;
    // Again with every rename of a non-empty object a copy in parts.
    let in_parts = driver_at(
        s3.endpoint(),
        "suite",
        "/in/parts",
        S3Config {
            multipartcopythresholdsize: 0,
            ..S3Config::default()
        },
    );
    registry::storage::testsuite::run(in_parts).await;
    tokio::task::spawn_blocking(move || drop(s3))
        .await
        .expect("stop moto");
}

/// Objects larger than a part go through S3 multipart: several parts, an append that
/// continues a committed object, and a writer dropped mid-way that leaves the old object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_multipart_writes_commit_whole_objects() {
    use bytes::Bytes;
    use registry::storage::{FileWriter, StorageDriver};

    let (s3, driver) = driver_on_a_new_bucket(
        "multipart",
        "",
        S3Config {
            chunksize: 5 << 20,
            ..S3Config::default()
        },
    )
    .await;
    let data = pattern(13u32 << 20);

    let mut w = driver.writer("big", false).await.expect("writer");
    for piece in data[..11 << 20].chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.expect("write");
    }
    w.commit().await.expect("commit");
    assert!(read_all(&driver, "big").await == data[..11 << 20]);

    // An append (a PATCH on another replica) continues the committed object.
    let mut w = driver.writer("big", true).await.expect("append writer");
    assert_eq!(w.size(), 11 << 20);
    w.write(Bytes::copy_from_slice(&data[11 << 20..]))
        .await
        .expect("write");
    w.commit().await.expect("commit");
    assert!(read_all(&driver, "big").await == data);

    // A writer that dies before commit (a killed request) changes nothing visible.
    let mut w = driver.writer("big", false).await.expect("writer");
    w.write(Bytes::from(vec![7u8; 6 << 20]))
        .await
        .expect("write");
    drop(w);
    assert!(read_all(&driver, "big").await == data);
    tokio::task::spawn_blocking(move || drop(s3))
        .await
        .expect("stop moto");
}

/// An upload session's chunks, suspended between requests, keep one S3 multipart upload open:
/// each part goes to S3 once (a chunk's tail at most once more, as `<key>.tail-<size>`), and
/// the chunks alternate between two drivers, as between two replicas, which continue from the
/// state in the bucket. Deleting a suspended upload aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspended_uploads_send_each_part_once_and_resume_on_another_replica() {
    use bytes::Bytes;
    use registry::storage::{FileWriter, StorageDriver};

    let (s3, _) = driver_on_a_new_bucket("resume", "", S3Config::default()).await;
    let proxy = counting_proxy(&s3);
    let tuning = S3Config {
        chunksize: 5 << 20,
        ..S3Config::default()
    };
    let replicas = [
        driver_at(proxy.url(), "resume", "", tuning.clone()),
        driver_at(proxy.url(), "resume", "", tuning),
    ];
    let data = pattern(24u32 << 20);

    // Six 4 MiB chunks: every other one completes an 8 MiB part with the stored tail.
    for (i, chunk) in data.chunks(4 << 20).enumerate() {
        let replica = &replicas[i % 2];
        let mut w = replica.writer("u/data", true).await.expect("append writer");
        assert_eq!(w.size(), (i as u64) << 22);
        w.write(Bytes::copy_from_slice(chunk)).await.expect("write");
        w.suspend().await.expect("suspend");
        assert!(
            replica.stat("u/data").await.is_err(),
            "a suspended upload is not readable"
        );
    }
    assert_eq!(
        replicas[0].written_size("u/data").await.expect("size"),
        24 << 20
    );
    replicas[1].seal("u/data").await.expect("seal");

    let requests = proxy.requests();
    let parts = requests
        .iter()
        .filter(|r| r.starts_with("PUT /resume/u/data?") && r.contains("partNumber="))
        .count();
    let tails = requests
        .iter()
        .filter(|r| r.starts_with("PUT /resume/u/data.tail-"))
        .count();
    assert_eq!((parts, tails), (3, 3), "{requests:#?}");
    // Only the first writer looks for a committed object to continue (and finds none).
    assert_eq!(
        requests
            .iter()
            .filter(|r| *r == "GET /resume/u/data")
            .count(),
        1,
        "earlier bytes were read back: {requests:#?}"
    );
    assert!(
        read_all(&replicas[0], "u/data").await == data,
        "the sealed object differs"
    );
    let left = list_keys(&s3, "u/");
    assert_eq!(
        left,
        vec!["u/data".to_string()],
        "state left beside the object"
    );

    // A cancelled (or purged) session: its directory goes, and its open upload is aborted.
    let mut w = replicas[0].writer("v/data", true).await.expect("writer");
    w.write(Bytes::copy_from_slice(&data[..6 << 20]))
        .await
        .expect("write");
    w.suspend().await.expect("suspend");
    replicas[1].delete("v").await.expect("delete");
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("DELETE /resume/v/data?uploadId="))
            .count(),
        1,
        "the open upload was not aborted"
    );
    assert!(list_keys(&s3, "v/").is_empty());
    tokio::task::spawn_blocking(move || drop((s3, proxy)))
        .await
        .expect("stop moto");
}

/// The bucket's keys under `prefix`, from a thread of its own: the listing is a blocking
/// client, which must not run on the test's runtime.
fn list_keys(s3: &S3Server, prefix: &str) -> Vec<String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| s3.list_keys("resume", prefix).expect("list"))
            .join()
            .expect("list thread")
    })
}

/// A rename of an object over `multipartcopythresholdsize` is a copy in parts (UploadPartCopy,
/// several at a time, as AWS requires for a source over 5 GiB): the destination is the whole
/// object and the source is gone. Under the threshold a rename stays one CopyObject.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renames_of_large_objects_copy_in_parts() {
    use bytes::Bytes;
    use registry::storage::StorageDriver;

    let (s3, _) = driver_on_a_new_bucket("partcopy", "", S3Config::default()).await;
    let proxy = counting_proxy(&s3);
    let driver = driver_at(
        proxy.url(),
        "partcopy",
        "root",
        S3Config {
            multipartcopythresholdsize: 6 << 20,
            multipartcopychunksize: 5 << 20,
            multipartcopymaxconcurrency: 2,
            ..S3Config::default()
        },
    );
    let data = pattern((13u32 << 20) + 5);
    for (from, to, size) in [
        ("big/src", "big/dst", data.len()),
        ("small/src", "small/dst", 1 << 20),
    ] {
        driver
            .put_content(from, Bytes::copy_from_slice(&data[..size]))
            .await
            .expect("put");
        driver.rename(from, to).await.expect("rename");
        assert!(read_all(&driver, to).await == data[..size], "{to} differs");
        assert!(driver.stat(from).await.is_err(), "{from} is still there");
    }
    let part_copies = |key: &str| {
        let prefix = format!("PUT /partcopy/root/{key}?partNumber=");
        proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with(&prefix))
            .count()
    };
    assert_eq!(part_copies("big/dst"), 3);
    assert_eq!(part_copies("small/dst"), 0);
    tokio::task::spawn_blocking(move || drop(s3))
        .await
        .expect("stop moto");
}
