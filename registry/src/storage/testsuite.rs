//! The one test suite every storage backend must pass (distribution's `driver/testsuites`).
//! A backend's test calls [`run`] with a driver over an empty root; failures panic with the
//! check that failed.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ByteStream, FileWriter, StorageDriver, StorageError};

/// Runs every check against `driver`, whose root must be empty.
pub async fn run<S: StorageDriver>(driver: S) {
    let driver = Arc::new(driver);
    content_round_trip(&*driver).await;
    invalid_paths(&*driver).await;
    ranged_reads(&*driver).await;
    streaming_writes(&*driver).await;
    suspended_writes_resume(&*driver).await;
    stat_list_delete(&*driver).await;
    rename_replaces(&*driver).await;
    concurrent_replaces_are_never_torn(driver.clone()).await;
}

async fn collect(mut stream: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

async fn content_round_trip<S: StorageDriver>(d: &S) {
    d.put_content("a/b/c", Bytes::from_static(b"one"))
        .await
        .expect("put");
    assert_eq!(&d.get_content("a/b/c").await.expect("get")[..], b"one");
    d.put_content("a/b/c", Bytes::from_static(b"two!"))
        .await
        .expect("overwrite");
    assert_eq!(&d.get_content("a/b/c").await.expect("get")[..], b"two!");
    d.put_content("a/empty", Bytes::new())
        .await
        .expect("put empty");
    assert!(d
        .get_content("a/empty")
        .await
        .expect("get empty")
        .is_empty());
    assert!(matches!(
        d.get_content("a/missing").await,
        Err(StorageError::NotFound(_))
    ));
}

async fn invalid_paths<S: StorageDriver>(d: &S) {
    for bad in ["", "/abs", "a//b", "a/../b", "..", "a/./b", "a/"] {
        assert!(
            matches!(d.get_content(bad).await, Err(StorageError::InvalidPath(_))),
            "{bad:?} accepted"
        );
        assert!(matches!(
            d.put_content(bad, Bytes::new()).await,
            Err(StorageError::InvalidPath(_))
        ));
    }
}

async fn ranged_reads<S: StorageDriver>(d: &S) {
    let data: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    d.put_content("r/blob", Bytes::from(data.clone()))
        .await
        .expect("put");
    let (size, s) = d.reader("r/blob", 0, None).await.expect("reader");
    assert_eq!(size, data.len() as u64);
    assert_eq!(collect(s).await, data);
    let (_, s) = d
        .reader("r/blob", 1000, Some(70_000))
        .await
        .expect("ranged reader");
    assert_eq!(collect(s).await, &data[1000..71_000]);
    let (_, s) = d
        .reader("r/blob", data.len() as u64 - 5, Some(100))
        .await
        .expect("tail");
    assert_eq!(collect(s).await, &data[data.len() - 5..]);
    let (_, s) = d
        .reader("r/blob", data.len() as u64, None)
        .await
        .expect("at end");
    assert!(collect(s).await.is_empty());
    assert!(matches!(
        d.reader("r/blob", data.len() as u64 + 1, None).await,
        Err(StorageError::InvalidOffset { .. })
    ));
    assert!(matches!(
        d.reader("r/none", 0, None).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn streaming_writes<S: StorageDriver>(d: &S) {
    let mut w = d.writer("w/data", false).await.expect("writer");
    w.write(Bytes::from_static(b"hello ")).await.expect("write");
    w.write(Bytes::from_static(b"world")).await.expect("write");
    assert_eq!(w.size(), 11);
    w.commit().await.expect("commit");
    assert_eq!(
        &d.get_content("w/data").await.expect("get")[..],
        b"hello world"
    );

    // A resumed writer appends after what is there (an upload resumed after a restart).
    let mut w = d.writer("w/data", true).await.expect("append writer");
    assert_eq!(w.size(), 11);
    w.write(Bytes::from_static(b"!")).await.expect("write");
    w.commit().await.expect("commit");
    assert_eq!(
        &d.get_content("w/data").await.expect("get")[..],
        b"hello world!"
    );

    // A non-appending writer truncates.
    let mut w = d.writer("w/data", false).await.expect("writer");
    assert_eq!(w.size(), 0);
    w.write(Bytes::from_static(b"x")).await.expect("write");
    w.commit().await.expect("commit");
    assert_eq!(&d.get_content("w/data").await.expect("get")[..], b"x");

    let mut w = d.writer("w/cancelled", false).await.expect("writer");
    w.write(Bytes::from_static(b"gone")).await.expect("write");
    w.cancel().await.expect("cancel");
    assert!(matches!(
        d.stat("w/cancelled").await,
        Err(StorageError::NotFound(_))
    ));
}

/// An upload session: chunks come in separate requests (each perhaps to another replica), each
/// suspended, and the last seals the bytes into an ordinary object.
async fn suspended_writes_resume<S: StorageDriver>(d: &S) {
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    assert!(matches!(
        d.written_size("u/data").await,
        Err(StorageError::NotFound(_))
    ));
    append_suspended(d, "u/data", &data, 6 << 20).await;
    assert_eq!(d.written_size("u/data").await.expect("size"), 6 << 20);
    append_suspended(d, "u/data", &data, 7 << 20).await;
    assert_eq!(d.written_size("u/data").await.expect("size"), 7 << 20);

    // A request that fails mid-body: the bytes suspended before it stay whole, and the
    // session goes on from whatever the driver kept. The next writer's own size tells: a
    // write the dropped writer had in flight may still land until then (at its own offset,
    // with the same bytes the next writer sends there).
    let mut w = d.writer("u/data", true).await.expect("append writer");
    assert_eq!(w.size(), 7 << 20);
    w.write(Bytes::copy_from_slice(&data[7 << 20..9 << 20]))
        .await
        .expect("write");
    drop(w);
    let kept = append_suspended(d, "u/data", &data, 12 << 20).await;
    assert!((7 << 20..=9 << 20).contains(&kept), "kept {kept} bytes");
    assert_eq!(d.written_size("u/data").await.expect("size"), 12 << 20);

    d.seal("u/data").await.expect("seal");
    d.seal("u/data").await.expect("seal twice");
    assert_eq!(d.stat("u/data").await.expect("stat").size, 12 << 20);
    let (_, stream) = d.reader("u/data", 0, None).await.expect("reader");
    assert!(collect(stream).await == data, "sealed bytes differ");
    d.delete("u").await.expect("delete");

    // A suspended session deleted (cancelled, or purged) is gone whole.
    append_suspended(d, "v/data", &data, 6 << 20).await;
    d.delete("v").await.expect("delete");
    assert!(matches!(
        d.written_size("v/data").await,
        Err(StorageError::NotFound(_))
    ));
    let w = d.writer("v/data", true).await.expect("append writer");
    assert_eq!(w.size(), 0);
    w.cancel().await.expect("cancel");
}

/// One request's chunk: an appending writer sends `data` from where the object ends up to
/// `end`, and is suspended. Returns where it started.
async fn append_suspended<S: StorageDriver>(d: &S, path: &str, data: &[u8], end: usize) -> usize {
    let mut w = d.writer(path, true).await.expect("append writer");
    let start = w.size() as usize;
    for piece in data[start..end].chunks(3 << 20) {
        w.write(Bytes::copy_from_slice(piece)).await.expect("write");
    }
    w.suspend().await.expect("suspend");
    start
}

async fn stat_list_delete<S: StorageDriver>(d: &S) {
    for p in ["l/x/1", "l/x/2", "l/y", "l/z/deep/er"] {
        d.put_content(p, Bytes::from_static(b"12345"))
            .await
            .expect("put");
    }
    let meta = d.stat("l/y").await.expect("stat file");
    assert_eq!((meta.size, meta.is_dir), (5, false));
    assert!(d.stat("l/x").await.expect("stat dir").is_dir);
    let names: BTreeSet<String> = d.list("l").await.expect("list").into_iter().collect();
    assert_eq!(
        names,
        ["x", "y", "z"].iter().map(|s| s.to_string()).collect()
    );
    assert!(matches!(
        d.list("l/none").await,
        Err(StorageError::NotFound(_))
    ));

    d.delete("l/y").await.expect("delete file");
    assert!(matches!(
        d.stat("l/y").await,
        Err(StorageError::NotFound(_))
    ));
    d.delete("l/z").await.expect("delete tree");
    assert!(matches!(
        d.get_content("l/z/deep/er").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        d.delete("l/z").await,
        Err(StorageError::NotFound(_))
    ));
    let names: Vec<String> = d.list("l").await.expect("list");
    assert_eq!(names, vec!["x".to_string()]);
}

async fn rename_replaces<S: StorageDriver>(d: &S) {
    d.put_content("m/src", Bytes::from_static(b"new"))
        .await
        .expect("put");
    d.put_content("m/dst/file", Bytes::from_static(b"old"))
        .await
        .expect("put");
    d.rename("m/src", "m/dst/file").await.expect("rename over");
    assert_eq!(&d.get_content("m/dst/file").await.expect("get")[..], b"new");
    assert!(matches!(
        d.stat("m/src").await,
        Err(StorageError::NotFound(_))
    ));
    d.put_content("m/src2", Bytes::from_static(b"moved"))
        .await
        .expect("put");
    d.rename("m/src2", "m/fresh/dir/file")
        .await
        .expect("rename into new dir");
    assert_eq!(
        &d.get_content("m/fresh/dir/file").await.expect("get")[..],
        b"moved"
    );
    assert!(matches!(
        d.rename("m/none", "m/x").await,
        Err(StorageError::NotFound(_))
    ));
}

/// 32 writers replace one object while readers read it: every read is one whole version.
async fn concurrent_replaces_are_never_torn<S: StorageDriver>(d: Arc<S>) {
    let version = |i: u8| Bytes::from(vec![i; 256 << 10]);
    d.put_content("c/obj", version(0)).await.expect("seed");
    let mut tasks = Vec::new();
    for i in 1..=32u8 {
        let writer = d.clone();
        tasks.push(tokio::spawn(async move {
            writer
                .put_content("c/obj", version(i))
                .await
                .expect("concurrent put");
        }));
        let reader = d.clone();
        tasks.push(tokio::spawn(async move {
            let (_, s) = reader
                .reader("c/obj", 0, None)
                .await
                .expect("concurrent read");
            let got = collect(s).await;
            assert_eq!(got.len(), 256 << 10, "torn read: wrong length");
            assert!(
                got.iter().all(|&b| b == got[0]),
                "torn read: mixed versions"
            );
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}
