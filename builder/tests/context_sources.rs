//! COPY/ADD source resolution from the build context: `.dockerignore`, confinement to the
//! root, wildcards, directory-content semantics, `--exclude`, `--parents`, and the error for a
//! source that matches nothing.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use builder::context::{BuildContext, ContextError, CopyEntry, CopySources, FileKind};

/// Creates files (`path` → contents), directories (`path/`) and symlinks (`path -> target`).
fn tree(items: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for item in items {
        let root = dir.path();
        if let Some((link, target)) = item.split_once(" -> ") {
            mkparent(&root.join(link));
            symlink(target, root.join(link)).expect("symlink");
        } else if let Some(d) = item.strip_suffix('/') {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        } else {
            let (path, content) = item.split_once('=').unwrap_or((item, "x"));
            mkparent(&root.join(path));
            std::fs::write(root.join(path), content).expect("write");
        }
    }
    dir
}

fn mkparent(path: &Path) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
}

fn resolve(
    ctx: &BuildContext,
    sources: &[&str],
    excludes: &[&str],
    parents: bool,
) -> Vec<CopyEntry> {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    let excludes: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
    ctx.resolve_sources(&CopySources {
        sources: &sources,
        excludes: &excludes,
        parents,
    })
    .unwrap_or_else(|e| panic!("resolve {sources:?}: {e}"))
}

fn dests(entries: &[CopyEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.dest.display().to_string())
        .collect()
}

fn open(dir: &Path) -> BuildContext {
    BuildContext::open(dir, None).expect("open context")
}

fn not_found(ctx: &BuildContext, source: &str) -> String {
    let err = ctx
        .resolve_sources(&CopySources {
            sources: &[source.to_string()],
            ..Default::default()
        })
        .expect_err("source should be missing");
    assert!(matches!(err, ContextError::NotFound { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn dockerignore_exceptions_doublestar_and_order() {
    let dir = tree(&[
        ".dockerignore=# build junk\n*.log\n**/*.log\ndocs\n!docs/README.md\nnode_modules\n/tmp/*\n!tmp/keep\n",
        "Dockerfile",
        "a.txt",
        "b.log",
        "docs/README.md",
        "docs/other.md",
        "node_modules/x/y.js",
        "src/deep/k.log",
        "src/main.rs",
        "tmp/keep",
        "tmp/drop",
    ]);
    let ctx = open(dir.path());
    assert_eq!(
        dests(&resolve(&ctx, &["."], &[], false)),
        [
            "",
            ".dockerignore",
            "Dockerfile",
            "a.txt",
            "docs",
            "docs/README.md",
            "src",
            "src/deep",
            "src/main.rs",
            "tmp",
            "tmp/keep",
        ]
    );
    // An excluded directory is still there as the parent of what an exception re-includes.
    assert_eq!(
        dests(&resolve(&ctx, &["docs"], &[], false)),
        ["", "README.md"]
    );
    assert!(not_found(&ctx, "b.log").contains("stat b.log"));
    not_found(&ctx, "docs/other.md");
    not_found(&ctx, "node_modules");
    not_found(&ctx, "src/deep/k.log");
}

#[test]
fn dockerignore_last_match_wins() {
    let dir = tree(&["a.txt", "b.txt"]);
    let later_exception =
        BuildContext::with_ignore_patterns(dir.path(), &["*.txt", "!a.txt"]).expect("open");
    assert_eq!(
        dests(&resolve(&later_exception, &["."], &[], false)),
        ["", "a.txt"]
    );
    let earlier_exception =
        BuildContext::with_ignore_patterns(dir.path(), &["!a.txt", "*.txt"]).expect("open");
    assert_eq!(
        dests(&resolve(&earlier_exception, &["."], &[], false)),
        [""]
    );
}

#[test]
fn per_dockerfile_ignore_file_takes_precedence() {
    let dir = tree(&[
        ".dockerignore=b.txt",
        "a.txt",
        "b.txt",
        "build/app.Dockerfile",
        "build/app.Dockerfile.dockerignore=a.txt\nbuild",
    ]);
    let with_own = BuildContext::open(dir.path(), Some(&dir.path().join("build/app.Dockerfile")))
        .expect("open");
    assert_eq!(
        dests(&resolve(&with_own, &["."], &[], false)),
        ["", ".dockerignore", "b.txt"]
    );
    // Another Dockerfile without its own ignore file falls back to the root's.
    let plain = BuildContext::open(dir.path(), Some(&dir.path().join("Dockerfile"))).expect("open");
    assert!(!dests(&resolve(&plain, &["."], &[], false)).contains(&"b.txt".to_string()));
}

#[test]
fn bad_ignore_pattern_is_a_clear_error() {
    let dir = tree(&[".dockerignore=ok\n[\n"]);
    let err = BuildContext::open(dir.path(), None).expect_err("bad pattern");
    let text = err.to_string();
    assert!(
        text.contains(".dockerignore") && text.contains("syntax error"),
        "{text}"
    );
}

#[test]
fn symlink_to_outside_is_copied_as_a_symlink_never_followed_out() {
    let dir = tree(&["etc-link -> /etc", "abs-file -> /etc/passwd", "a.txt"]);
    let ctx = open(dir.path());
    let entries = resolve(&ctx, &["."], &[], false);
    assert_eq!(dests(&entries), ["", "a.txt", "abs-file", "etc-link"]);
    assert!(entries[2..].iter().all(|e| e.kind == FileKind::Symlink));
    // As a source, the link is followed — but inside the root, where there is no etc/.
    not_found(&ctx, "etc-link");
    not_found(&ctx, "etc-link/passwd");
    not_found(&ctx, "abs-file");
}

#[test]
fn sources_cannot_climb_out_of_the_context() {
    let outer = tree(&[
        "secret=outside",
        "ctx/a.txt",
        "ctx/sub/b.txt",
        "ctx/up -> ../../..",
        "ctx/loop1 -> loop2",
        "ctx/loop2 -> loop1",
    ]);
    let ctx = open(&outer.path().join("ctx"));
    assert!(not_found(&ctx, "../secret").contains("stat ../secret"));
    not_found(&ctx, "/../../secret");
    // `..` and absolute paths are rooted at the context.
    let e = resolve(
        &ctx,
        &["../a.txt", "/sub/../a.txt", "sub/../../../sub/b.txt"],
        &[],
        false,
    );
    assert_eq!(
        e.iter().map(|e| e.source.clone()).collect::<Vec<_>>(),
        [PathBuf::from("a.txt"), PathBuf::from("sub/b.txt")],
        "duplicates collapse"
    );
    // A relative link climbing out is clamped at the root.
    let e = resolve(&ctx, &["up/a.txt"], &[], false);
    assert_eq!(e[0].source, PathBuf::from("a.txt"));
    let err = ctx
        .resolve_sources(&CopySources {
            sources: &["loop1".to_string()],
            ..Default::default()
        })
        .expect_err("loop");
    assert!(matches!(err, ContextError::SymlinkLoop { .. }), "{err:?}");
}

#[test]
fn symlinked_directory_in_a_source_path_resolves_within_the_root() {
    let dir = tree(&[
        "real/lib/x.txt",
        "lib -> real/lib",
        "abs -> /real",
        "file-link -> real/lib/x.txt",
    ]);
    let ctx = open(dir.path());
    let e = resolve(&ctx, &["lib/x.txt"], &[], false);
    assert_eq!(
        (e[0].source.as_path(), e[0].dest.as_path()),
        (Path::new("real/lib/x.txt"), Path::new("x.txt"))
    );
    // An absolute target means the context root.
    let e = resolve(&ctx, &["abs/lib"], &[], false);
    assert_eq!(e[0].source, PathBuf::from("real/lib"));
    assert_eq!(dests(&e), ["", "x.txt"]);
    // A symlink source copies what it points to, under the link's name.
    let e = resolve(&ctx, &["file-link"], &[], false);
    assert_eq!(
        (e[0].kind, e[0].dest.as_path()),
        (FileKind::File, Path::new("file-link"))
    );
}

#[test]
fn wildcards_and_directory_content_semantics() {
    let dir = tree(&[
        "hom1.txt",
        "homework.md",
        "homedir/notes.txt",
        "homedir/sub/x",
        "other.txt",
        "a*b",
        "axb",
        "b1.txt",
        "c22.txt",
    ]);
    let ctx = open(dir.path());
    let e = resolve(&ctx, &["hom*"], &[], false);
    assert_eq!(
        dests(&e),
        ["hom1.txt", "", "notes.txt", "sub", "sub/x", "homework.md"],
        "matches in name order; a matched directory contributes its contents"
    );
    assert_eq!(e[1].source, PathBuf::from("homedir"));
    assert_eq!(e[3].source, PathBuf::from("homedir/sub"));
    assert_eq!(
        dests(&resolve(&ctx, &["[a-c]?.txt"], &[], false)),
        ["b1.txt"]
    );
    assert_eq!(
        dests(&resolve(&ctx, &["[a-c]??.txt"], &[], false)),
        ["c22.txt"]
    );
    assert_eq!(
        dests(&resolve(&ctx, &["*/notes.txt"], &[], false)),
        ["notes.txt"]
    );
    // `\` escapes a wildcard character.
    assert_eq!(dests(&resolve(&ctx, &["a\\*[b]"], &[], false)), ["a*b"]);
    assert_eq!(dests(&resolve(&ctx, &["a?b"], &[], false)), ["a*b", "axb"]);
    // `**` is Go's `*` twice without --parents: one level only.
    not_found(&ctx, "**/x");
    assert_eq!(
        dests(&resolve(&ctx, &["**/notes.txt"], &[], false)),
        ["notes.txt"]
    );
    assert_eq!(dests(&resolve(&ctx, &["*/*/x"], &[], false)), ["x"]);
}

#[test]
fn missing_source_error_names_the_path() {
    let dir = tree(&["a.txt"]);
    let ctx = open(dir.path());
    assert_eq!(
        not_found(&ctx, "nope/missing.txt"),
        "COPY failed: file not found in build context or excluded by .dockerignore: stat nope/missing.txt: file does not exist"
    );
    assert!(not_found(&ctx, "*.md").contains("stat *.md"));
    // A file used as a directory is missing too, not an I/O error.
    not_found(&ctx, "a.txt/inner");
}

#[test]
fn exclude_flag() {
    let dir = tree(&[
        "hom1.txt",
        "homework.md",
        "homedir/notes.txt",
        "homedir/keep.md",
        "homedir/sub/z.txt",
    ]);
    let ctx = open(dir.path());
    assert_eq!(
        dests(&resolve(&ctx, &["hom*"], &["*.txt"], false)),
        ["", "keep.md", "sub", "sub/z.txt", "homework.md"],
        "`*` does not cross `/`: sub/z.txt stays"
    );
    assert_eq!(
        dests(&resolve(&ctx, &["hom*"], &["*.txt", "*.md"], false)),
        ["", "sub", "sub/z.txt"]
    );
    assert_eq!(
        dests(&resolve(
            &ctx,
            &["homedir"],
            &["**/*.txt", "!sub/z.txt"],
            false
        )),
        ["", "keep.md", "sub", "sub/z.txt"]
    );
    // Everything excluded is "nothing matched".
    let err = ctx
        .resolve_sources(&CopySources {
            sources: &["hom*.txt".to_string()],
            excludes: &["*".to_string()],
            parents: false,
        })
        .expect_err("all excluded");
    assert!(matches!(err, ContextError::NotFound { .. }));
}

#[test]
fn parents_flag_keeps_paths_from_root_or_pivot() {
    let dir = tree(&[
        "x/a.txt",
        "y/a.txt",
        "x/y/a.txt",
        "x/y/b.txt",
        "x/y/c.md",
        "src/a.txt",
        "src/x/b.txt",
        "src/x/y/c.txt",
        "src/x/y/d.md",
    ]);
    let ctx = open(dir.path());
    assert_eq!(
        dests(&resolve(&ctx, &["./x/a.txt", "./y/a.txt"], &[], true)),
        ["x", "x/a.txt", "y", "y/a.txt"]
    );
    assert_eq!(
        dests(&resolve(&ctx, &["./x/./y/*.txt"], &[], true)),
        ["y", "y/a.txt", "y/b.txt"]
    );
    assert_eq!(
        dests(&resolve(&ctx, &["./src/**/*.txt"], &[], true)),
        [
            "src",
            "src/a.txt",
            "src/x",
            "src/x/b.txt",
            "src/x/y",
            "src/x/y/c.txt"
        ]
    );
    assert_eq!(
        dests(&resolve(&ctx, &["src/x"], &["**/*.md"], true)),
        ["src", "src/x", "src/x/b.txt", "src/x/y", "src/x/y/c.txt"]
    );
}
