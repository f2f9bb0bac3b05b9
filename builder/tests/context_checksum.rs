//! Source checksums for cache keys: content and metadata count, mtime does not, ignored and
//! excluded files do not, and the stat cache never serves a stale hash — not even after an
//! edit that keeps the size and restores the mtime (what makes BuildKit build stale images).

use std::fs::{File, FileTimes};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use builder::context::stat_cache::RACY_WINDOW_NS;
use builder::context::{BuildContext, CopySources, StatCache};
use oci::Digest;

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

fn sample_tree(root: &Path) {
    write(root, ".dockerignore", "*.log\n");
    write(root, "a.txt", "alpha");
    write(root, "src/main.rs", "fn main() {}");
    write(root, "src/notes.md", "notes");
    write(root, "debug.log", "noise");
    symlink("src/main.rs", root.join("link")).expect("symlink");
}

/// Lets freshly written files age past the stat cache's racy window, so their hashes may be
/// remembered (a younger file is always re-hashed; see stat_cache.rs).
fn let_files_settle() {
    std::thread::sleep(Duration::from_nanos(2 * RACY_WINDOW_NS as u64));
}

fn checksum_of(root: &Path, cache: &mut StatCache, sources: &[&str], excludes: &[&str]) -> Digest {
    let ctx = BuildContext::open(root, None).expect("open context");
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
    let entries = ctx
        .resolve_sources(&CopySources {
            sources: &sources,
            excludes: &excludes,
            parents: false,
        })
        .expect("resolve");
    ctx.checksum(&entries, cache).expect("checksum")
}

fn fresh_cache() -> (tempfile::TempDir, StatCache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = StatCache::open(&dir.path().join("cache/context")).expect("open cache");
    (dir, cache)
}

fn set_mtime(path: &Path, when: SystemTime) {
    let file = File::options().write(true).open(path).expect("open");
    file.set_times(FileTimes::new().set_modified(when).set_accessed(when))
        .expect("utimensat");
}

#[test]
fn same_tree_elsewhere_with_other_mtimes_has_the_same_checksum() {
    let (one, two) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    sample_tree(one.path());
    sample_tree(two.path());
    // A fresh clone: same content, different times.
    set_mtime(
        &two.path().join("a.txt"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    let (_c, mut cache) = fresh_cache();
    assert_eq!(
        checksum_of(one.path(), &mut cache, &["."], &[]),
        checksum_of(two.path(), &mut cache, &["."], &[])
    );
}

#[test]
fn content_mode_and_symlink_target_change_the_checksum() {
    let dir = tempfile::tempdir().expect("tmp");
    sample_tree(dir.path());
    let (_c, mut cache) = fresh_cache();
    let mut seen = vec![checksum_of(dir.path(), &mut cache, &["."], &[])];

    write(dir.path(), "a.txt", "alphb");
    seen.push(checksum_of(dir.path(), &mut cache, &["."], &[]));

    std::fs::set_permissions(
        dir.path().join("a.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    seen.push(checksum_of(dir.path(), &mut cache, &["."], &[]));

    std::fs::remove_file(dir.path().join("link")).expect("rm");
    symlink("src/notes.md", dir.path().join("link")).expect("symlink");
    seen.push(checksum_of(dir.path(), &mut cache, &["."], &[]));

    write(dir.path(), "src/empty/.keep", "");
    seen.push(checksum_of(dir.path(), &mut cache, &["."], &[]));

    // A different selection of the same tree is a different key.
    seen.push(checksum_of(dir.path(), &mut cache, &["src"], &[]));

    for i in 0..seen.len() {
        for j in i + 1..seen.len() {
            assert_ne!(seen[i], seen[j], "change {i} vs {j}");
        }
    }
}

#[test]
fn ignored_and_excluded_files_do_not_affect_the_checksum() {
    let dir = tempfile::tempdir().expect("tmp");
    sample_tree(dir.path());
    let (_c, mut cache) = fresh_cache();
    let before = checksum_of(dir.path(), &mut cache, &["."], &[]);
    let before_excluding = checksum_of(dir.path(), &mut cache, &["."], &["src/*.md"]);

    write(dir.path(), "debug.log", "much more noise");
    write(dir.path(), "trace.log", "new ignored file");
    assert_eq!(checksum_of(dir.path(), &mut cache, &["."], &[]), before);

    write(dir.path(), "src/notes.md", "edited notes");
    assert_eq!(
        checksum_of(dir.path(), &mut cache, &["."], &["src/*.md"]),
        before_excluding
    );
    assert_ne!(checksum_of(dir.path(), &mut cache, &["."], &[]), before);
}

#[test]
fn same_size_edit_with_restored_mtime_is_caught() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "config.ini", "mode=fast");
    let path = dir.path().join("config.ini");
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let_files_settle();

    let cache_dir = tempfile::tempdir().expect("tmp");
    let mut cache = StatCache::open(cache_dir.path()).expect("cache");
    let before = checksum_of(dir.path(), &mut cache, &["."], &[]);
    cache.save().expect("save");

    // Same size, mtime put back: only the ctime (and the content) tell.
    write(dir.path(), "config.ini", "mode=slow");
    set_mtime(&path, mtime);
    assert_eq!(
        std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime
    );

    let mut reopened = StatCache::open(cache_dir.path()).expect("cache");
    let after = checksum_of(dir.path(), &mut reopened, &["."], &[]);
    assert_ne!(before, after, "a stale hash was served");
    assert_eq!(reopened.files_hashed(), 1);
}

#[test]
fn an_edit_right_after_hashing_is_caught_even_within_one_clock_tick() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "f", "aaaa");
    let path = dir.path().join("f");
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let (_c, mut cache) = fresh_cache();
    // No settling: the file is as young as it gets, so its hash is not remembered.
    let before = checksum_of(dir.path(), &mut cache, &["."], &[]);
    write(dir.path(), "f", "bbbb");
    set_mtime(&path, mtime);
    assert_ne!(checksum_of(dir.path(), &mut cache, &["."], &[]), before);
}

#[test]
fn cache_file_is_reused_and_nothing_is_hashed_again() {
    let dir = tempfile::tempdir().expect("tmp");
    sample_tree(dir.path());
    for i in 0..40 {
        write(
            dir.path(),
            &format!("many/file{i:02}"),
            &format!("content {i}"),
        );
    }
    let_files_settle();
    let cache_dir = tempfile::tempdir().expect("tmp");

    let mut first = StatCache::open(cache_dir.path()).expect("cache");
    let digest = checksum_of(dir.path(), &mut first, &["."], &[]);
    // .dockerignore, a.txt, src/main.rs, src/notes.md and the 40 files; not debug.log.
    assert_eq!(first.files_hashed(), 44);
    first.save().expect("save");

    let mut second = StatCache::open(cache_dir.path()).expect("cache");
    assert_eq!(checksum_of(dir.path(), &mut second, &["."], &[]), digest);
    assert_eq!(
        second.files_hashed(),
        0,
        "every hash came from the cache file"
    );

    // Touching one file (new mtime and ctime) re-hashes exactly that file.
    set_mtime(&dir.path().join("a.txt"), SystemTime::now());
    let mut third = StatCache::open(cache_dir.path()).expect("cache");
    assert_eq!(checksum_of(dir.path(), &mut third, &["."], &[]), digest);
    assert_eq!(third.files_hashed(), 1);
}

#[test]
fn damaged_cache_file_is_discarded() {
    let dir = tempfile::tempdir().expect("tmp");
    sample_tree(dir.path());
    let cache_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(cache_dir.path().join("stat-cache-v1"), "garbage\n1 2 3").expect("write");
    let mut cache = StatCache::open(cache_dir.path()).expect("a damaged cache is not fatal");
    checksum_of(dir.path(), &mut cache, &["."], &[]);
    assert_eq!(cache.files_hashed(), 4);
}
