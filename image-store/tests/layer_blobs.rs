//! Layers kept unpacked only (a build step's layer) get their blob when an image needs it,
//! once, and the build cache and GC treat them as stored layers.

use std::fs;
use std::io::Read;
use std::path::Path;

use image_store::{unpacked_only_descriptor, CacheRecord, CachedLayer, Store};
use oci::compression::{decompress, Compression};
use oci::layer::{diff_id, SourceKind};
use oci::{Descriptor, Digest};

/// A step's upper directory, adopted into `store` as the builder does; returns the layer.
fn unpacked_layer(store: &Store, tmp: &Path) -> (Descriptor, Digest) {
    let upper = tmp.join("upper");
    fs::create_dir_all(upper.join("data/sub")).unwrap();
    fs::write(upper.join("data/sub/a.txt"), "alpha\n".repeat(10_000)).unwrap();
    fs::write(upper.join("data/b.txt"), b"beta\n").unwrap();
    let (id, size) = diff_id(&upper, SourceKind::OverlayUpper).unwrap();
    store.adopt_unpacked_layer(&id, &upper).unwrap();
    (unpacked_only_descriptor(&id, size), id)
}

fn blob_count(root: &Path) -> usize {
    fs::read_dir(root.join("blobs/sha256")).unwrap().count()
}

fn uncompressed_digest(store: &Store, blob: &Descriptor, compression: Compression) -> Digest {
    let mut bytes = Vec::new();
    decompress(
        store.content().open_blob(&blob.digest).unwrap(),
        compression,
    )
    .unwrap()
    .read_to_end(&mut bytes)
    .unwrap();
    Digest::sha256_of(&bytes)
}

#[test]
fn a_blob_is_made_once_when_needed_and_lives_as_long_as_its_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let (layer, id) = unpacked_layer(&store, tmp.path());
    assert!(!store.content().contains(&layer.digest), "no blob yet");
    assert!(store.has_layer(&layer, &id));

    // A cache record of the layer is a hit although no blob exists.
    let key = Digest::sha256_of(b"step");
    let record = CacheRecord {
        layer: Some(CachedLayer {
            descriptor: layer.clone(),
            diff_id: id.clone(),
        }),
        created: "2026-11-23T00:00:00Z".to_string(),
    };
    store.cache_put(&key, &record).unwrap();
    assert_eq!(store.cache_get(&key).unwrap(), Some(record));

    let blobs = blob_count(&root);
    let gzip = store.layer_blob(&layer, &id, Compression::Gzip).unwrap();
    assert_eq!(
        gzip.media_type,
        oci::media_type::oci_layer(Compression::Gzip)
    );
    assert_eq!(uncompressed_digest(&store, &gzip, Compression::Gzip), id);
    assert_eq!(blob_count(&root), blobs + 1);
    // Found again, not made again.
    assert_eq!(
        store.layer_blob(&layer, &id, Compression::Gzip).unwrap(),
        gzip
    );
    assert_eq!(blob_count(&root), blobs + 1);
    // Uncompressed, the blob is the layer's own descriptor.
    assert_eq!(
        store.layer_blob(&layer, &id, Compression::None).unwrap(),
        layer
    );
    assert_eq!(uncompressed_digest(&store, &layer, Compression::None), id);

    // The cache keeps the layer, so GC keeps the layer's blobs too.
    store.prune().unwrap();
    assert!(store.content().contains(&gzip.digest));
    assert!(root.join("layers").join(id.encoded()).is_dir());

    // Without the cache nothing needs it: layer, blobs and their records go.
    store
        .cache_prune(&image_store::CachePrune::default())
        .unwrap();
    assert!(!store.content().contains(&gzip.digest));
    assert!(!store.content().contains(&layer.digest));
    assert!(!root.join("layers").join(id.encoded()).exists());
    assert_eq!(fs::read_dir(root.join("layer-blobs")).unwrap().count(), 0);
    assert!(!store.has_layer(&layer, &id));
    let err = store
        .layer_blob(&layer, &id, Compression::Gzip)
        .unwrap_err();
    assert!(
        err.to_string().contains("neither stored nor unpacked"),
        "{err}"
    );
}

#[test]
fn a_changed_unpacked_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let (layer, id) = unpacked_layer(&store, tmp.path());
    let dir = tmp.path().join("store/layers").join(id.encoded());
    fs::write(dir.join("data/b.txt"), b"tampered\n").unwrap();
    let err = store
        .layer_blob(&layer, &id, Compression::Zstd)
        .unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
    assert_eq!(blob_count(&tmp.path().join("store")), 0, "no blob is kept");
}
