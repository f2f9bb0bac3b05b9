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
    let driver = S3Driver::new(&S3Config {
        region: REGION.into(),
        regionendpoint: s3.endpoint(),
        forcepathstyle: true,
        secure: false,
        bucket: bucket.into(),
        accesskey: ACCESS_KEY.into(),
        secretkey: SECRET_KEY.into(),
        rootdirectory: root.into(),
        ..tuning
    })
    .expect("driver");
    (s3, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_driver_passes_the_storage_suite() {
    let (s3, driver) = driver_on_a_new_bucket("suite", "/some/root", S3Config::default()).await;
    registry::storage::testsuite::run(driver).await;
    tokio::task::spawn_blocking(move || drop(s3))
        .await
        .expect("stop moto");
}

/// Objects larger than a part go through S3 multipart: several parts, an append that
/// continues a committed object, and a writer dropped mid-way that leaves the old object.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_multipart_writes_commit_whole_objects() {
    use bytes::Bytes;
    use futures_util::StreamExt;
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
    let data: Vec<u8> = (0..(13u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let read_all = |path: &'static str| {
        let driver = driver.clone();
        async move {
            let (_, mut stream) = driver.reader(path, 0, None).await.expect("reader");
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.expect("chunk"));
            }
            out
        }
    };

    let mut w = driver.writer("big", false).await.expect("writer");
    for piece in data[..11 << 20].chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.expect("write");
    }
    w.commit().await.expect("commit");
    assert!(read_all("big").await == data[..11 << 20]);

    // An append (a PATCH on another replica) continues the committed object.
    let mut w = driver.writer("big", true).await.expect("append writer");
    assert_eq!(w.size(), 11 << 20);
    w.write(Bytes::copy_from_slice(&data[11 << 20..]))
        .await
        .expect("write");
    w.commit().await.expect("commit");
    assert!(read_all("big").await == data);

    // A writer that dies before commit (a killed request) changes nothing visible.
    let mut w = driver.writer("big", false).await.expect("writer");
    w.write(Bytes::from(vec![7u8; 6 << 20]))
        .await
        .expect("write");
    drop(w);
    assert!(read_all("big").await == data);
    tokio::task::spawn_blocking(move || drop(s3))
        .await
        .expect("stop moto");
}
