//! Our COPY source resolution against the real thing: BuildKit inside Debian's dockerd 20.10
//! builds `FROM scratch` + COPYs of a tricky context (ignore-file exceptions, `**`, wildcards,
//! symlinks inside and pointing outside, a symlinked directory in a source path) and exports
//! the result with `--output type=local`; every COPY must produce exactly the tree our
//! `resolve_sources` lists. The old frontend there has no `--exclude`/`--parents`, so those
//! are covered by context_sources.rs against the reference's own examples.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

use builder::context::{BuildContext, CopySources};
use conformance::peers::{run_ok, Dockerd};

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Every path below `dir`, relative to it.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("below root");
            let file_type = entry.file_type().expect("type");
            let suffix = if file_type.is_symlink() {
                format!(
                    " -> {}",
                    std::fs::read_link(&path).expect("readlink").display()
                )
            } else {
                String::new()
            };
            out.insert(format!("{}{suffix}", rel.display()));
            if file_type.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// What our resolver says `COPY <sources> <dest>/` produces, in `listing`'s format.
fn expected(ctx: &BuildContext, sources: &[&str]) -> BTreeSet<String> {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    let entries = ctx
        .resolve_sources(&CopySources {
            sources: &sources,
            ..Default::default()
        })
        .expect("resolve");
    entries
        .iter()
        .filter(|e| !e.dest.as_os_str().is_empty())
        .map(|e| {
            let abs = ctx.root().join(&e.source);
            match std::fs::read_link(&abs) {
                Ok(target) if e.kind == builder::context::FileKind::Symlink => {
                    format!("{} -> {}", e.dest.display(), target.display())
                }
                _ => e.dest.display().to_string(),
            }
        })
        .collect()
}

#[test]
fn copy_results_match_buildkit() {
    let work = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let ctx_dir = work.path().join("ctx");
    let root = ctx_dir.as_path();
    write(
        root,
        ".dockerignore",
        "# comment\n*.log\n**/*.tmp\ndocs\n!docs/README.md\nnode_modules\n/cache/*\n!cache/keep*\nsecret?.txt\nDockerfile\n.dockerignore\n",
    );
    for file in [
        "a.txt",
        "b.log",
        "docs/README.md",
        "docs/other.md",
        "node_modules/m/index.js",
        "src/main.rs",
        "src/deep/x.tmp",
        "src/deep/y.rs",
        "cache/keep.me",
        "cache/drop.me",
        "secret1.txt",
        "secret10.txt",
        "hom1.txt",
        "homework.md",
        "homedir/notes.txt",
        "homedir/sub/z.txt",
        "real/lib/x.txt",
        "[weird].txt",
    ] {
        write(root, file, file);
    }
    std::fs::create_dir_all(root.join("empty/dir")).expect("mkdir");
    symlink("/etc", root.join("etc-link")).expect("symlink");
    symlink("real/lib", root.join("lib")).expect("symlink");
    symlink("../../outside", root.join("src/up")).expect("symlink");

    let copies: &[(&str, &[&str])] = &[
        ("all", &["."]),
        ("wild", &["hom*"]),
        ("docs", &["docs"]),
        ("vialink", &["lib/x.txt", "lib"]),
        ("classes", &["[a-c].txt", "secret*", "[[]weird].txt"]),
        ("nested", &["*/*.txt", "src"]),
        ("rooted", &["../a.txt", "/src/../cache"]),
    ];
    let mut dockerfile = String::from("FROM scratch\n");
    for (dest, sources) in copies {
        let quoted: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
        dockerfile.push_str(&format!("COPY [{}, \"/{dest}/\"]\n", quoted.join(", ")));
    }
    write(root, "Dockerfile", &dockerfile);

    let dockerd = Dockerd::start().expect("start dockerd");
    let out = work.path().join("out");
    run_ok(
        dockerd
            .docker()
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "--network", "host", "--output"])
            .arg(format!("type=local,dest={}", out.display()))
            .arg(root),
    )
    .expect("docker build");

    let ctx = BuildContext::open(root, Some(&root.join("Dockerfile"))).expect("open context");
    for (dest, sources) in copies {
        assert_eq!(
            expected(&ctx, sources),
            listing(&out.join(dest)),
            "COPY {sources:?} /{dest}/ (left: ours, right: BuildKit)"
        );
    }

    // A Dockerfile's own `NAME.dockerignore` wins over the root's.
    write(root, "build/app.Dockerfile", "FROM scratch\nCOPY . /all/\n");
    write(root, "build/app.Dockerfile.dockerignore", "src\nhom*\n");
    let own_out = work.path().join("own");
    run_ok(
        dockerd
            .docker()
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "--network", "host", "-f"])
            .arg(root.join("build/app.Dockerfile"))
            .arg("--output")
            .arg(format!("type=local,dest={}", own_out.display()))
            .arg(root),
    )
    .expect("docker build -f build/app.Dockerfile");
    let own = BuildContext::open(root, Some(&root.join("build/app.Dockerfile"))).expect("open");
    assert_eq!(expected(&own, &["."]), listing(&own_out.join("all")));

    // A missing source fails in both.
    write(root, "Dockerfile", "FROM scratch\nCOPY b.log /x/\n");
    let status = dockerd
        .docker()
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--network", "host", "--output"])
        .arg(format!(
            "type=local,dest={}",
            work.path().join("out2").display()
        ))
        .arg(root)
        .output()
        .expect("run docker");
    assert!(!status.status.success(), "BuildKit copied an ignored file");
    assert!(ctx
        .resolve_sources(&CopySources {
            sources: &["b.log".to_string()],
            ..Default::default()
        })
        .is_err());
}
