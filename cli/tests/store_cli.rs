//! The local image store through the CLI: load, images, tag, rmi, inspect, save, import,
//! prune, bad input, and two rbuild processes at once.

mod common;

use std::fs;
use std::io::Write;
use std::process::Stdio;

use common::{busybox_archive, fails, inspect, ok, rbuild, snapshot};
use oci::archive::ArchiveFormat;

#[test]
fn load_tag_inspect_save_rmi_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let archive = busybox_archive(tmp.path(), "busybox:1", ArchiveFormat::Oci);

    assert_eq!(
        ok(rbuild(&root).args(["load", "-i"]).arg(&archive)),
        "Loaded image: busybox:1\n"
    );
    // Loading the same archive from stdin again changes nothing.
    let stdin = fs::File::open(&archive).unwrap();
    ok(rbuild(&root).arg("load").stdin(Stdio::from(stdin)));

    let table = ok(rbuild(&root).arg("images"));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY") && lines[0].contains("IMAGE ID"),
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[1].starts_with("busybox ") && lines[1].contains(" 1 "),
        "{table}"
    );

    ok(rbuild(&root).args(["tag", "busybox:1", "example.com:5000/team/bb:v2"]));
    let json = ok(rbuild(&root).args(["images", "--format", "json"]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r["Repository"] == "example.com:5000/team/bb" && r["Tag"] == "v2"));
    assert_eq!(rows[0]["ID"], rows[1]["ID"]);

    let info = inspect(&root, "busybox:1");
    let id = info["Id"].as_str().unwrap().to_string();
    assert_eq!(info["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(info["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(info["RepoTags"].as_array().unwrap().len(), 2);
    // By short ID too.
    assert_eq!(
        inspect(&root, &id["sha256:".len()..][..12])["Id"],
        id.as_str()
    );

    // Save and load into a second store: identical image.
    let saved = tmp.path().join("saved.tar");
    ok(rbuild(&root)
        .args(["save", "-o"])
        .arg(&saved)
        .arg("busybox:1"));
    let root2 = tmp.path().join("store2");
    ok(rbuild(&root2).args(["load", "-i"]).arg(&saved));
    assert_eq!(inspect(&root2, "busybox:1")["Id"], id.as_str());

    // An ID with two names needs -f; removing a name keeps the image.
    let err = fails(rbuild(&root).args(["rmi", &id]));
    assert!(err.contains("several names"), "{err}");
    assert_eq!(
        ok(rbuild(&root).args(["rmi", "busybox:1"])),
        "Untagged: busybox:1\n"
    );
    let out = ok(rbuild(&root).args(["rmi", "example.com:5000/team/bb:v2"]));
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(ok(rbuild(&root).arg("images")).lines().count(), 1);
    // rmi collected the content right away.
    let blobs = fs::read_dir(root.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0);
    ok(rbuild(&root).arg("prune"));
    let err = fails(rbuild(&root).args(["inspect", "busybox:1"]));
    assert!(err.contains("No such image: busybox:1"), "{err}");
}

#[test]
fn import_a_rootfs_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let rootfs = tmp.path().join("rootfs");
    fixtures::busybox_rootfs(&rootfs).unwrap();
    let tarball = tmp.path().join("rootfs.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let id = ok(rbuild(&root).args(["import"]).arg(&tarball).args([
        "mine:1",
        "--change",
        "CMD [\"sh\"]",
        "--change",
        "ENV A=1 B=2",
        "--change",
        "WORKDIR /tmp",
    ]));
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let info = inspect(&root, "mine:1");
    assert_eq!(info["Id"], id.trim());
    assert_eq!(info["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(info["Config"]["Env"], serde_json::json!(["A=1", "B=2"]));
    assert_eq!(info["Config"]["WorkingDir"], "/tmp");
    // The diff ID is the digest of the uncompressed tar, as docker import records it.
    let plain = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | sha256sum", tarball.display()))
        .output()
        .unwrap();
    let expected = format!("sha256:{}", &String::from_utf8_lossy(&plain.stdout)[..64]);
    assert_eq!(info["RootFS"]["Layers"][0], expected.as_str());

    // Not a tar: one-line error, nothing stored.
    let before = snapshot(&root);
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, vec![b'x'; 5000]).unwrap();
    let err = fails(rbuild(&root).arg("import").arg(&junk).arg("junk:1"));
    assert!(err.contains("junk.tar"), "{err}");
    assert_eq!(snapshot(&root), before);
    let err = fails(
        rbuild(&root)
            .arg("import")
            .arg(&tarball)
            .args(["mine:2", "--change", "RUN true"]),
    );
    assert!(err.contains("RUN"), "{err}");
}

/// Truncated and corrupt archives, digest mismatches, unknown media types and bad references
/// give a one-line error naming the file or entry, exit 1, and leave the store unchanged.
#[test]
fn bad_archives_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let good = busybox_archive(tmp.path(), "good:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-i"]).arg(&good));
    let before = snapshot(&root);

    let bytes = fs::read(&good).unwrap();
    let truncated = tmp.path().join("truncated.tar");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(rbuild(&root).args(["load", "-i"]).arg(&truncated));
    assert!(err.contains("truncated.tar"), "{err}");
    assert_eq!(snapshot(&root), before);

    // A blob whose bytes do not match its name.
    let other = busybox_archive(tmp.path(), "other:1", ArchiveFormat::Oci);
    let corrupt = tmp.path().join("corrupt.tar");
    rewrite_archive(&other, &corrupt, |path, data| {
        if path.starts_with("blobs/sha256/") && data.len() > 100_000 {
            let mid = data.len() / 2;
            data[mid] ^= 0xff;
        }
    });
    let err = fails(rbuild(&root).args(["load", "-i"]).arg(&corrupt));
    assert!(
        err.contains("corrupt.tar")
            && (err.contains("digest mismatch") || err.contains("blobs/sha256")),
        "{err}"
    );
    assert_eq!(snapshot(&root), before);

    let unknown = tmp.path().join("unknown.tar");
    rewrite_archive(&other, &unknown, |path, data| {
        if path == "index.json" {
            let text = String::from_utf8(data.clone()).unwrap();
            *data = text
                .replace(
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/x-unknown",
                )
                .into_bytes();
        }
    });
    let err = fails(rbuild(&root).args(["load", "-i"]).arg(&unknown));
    assert!(err.contains("application/x-unknown"), "{err}");
    assert_eq!(snapshot(&root), before);

    let not_archive = tmp.path().join("empty.tar");
    fs::write(&not_archive, [0u8; 1024]).unwrap();
    let err = fails(rbuild(&root).args(["load", "-i"]).arg(&not_archive));
    assert!(err.contains("empty.tar"), "{err}");

    for bad in ["UPPER:1", "a/../b", "x:-tag", "x@sha256:123"] {
        let err = fails(rbuild(&root).args(["tag", "good:1", bad]));
        assert!(err.contains("invalid reference"), "{err}");
    }
    let err = fails(
        rbuild(&root)
            .args(["save", "-o"])
            .arg(tmp.path().join("x.tar"))
            .arg("missing:1"),
    );
    assert!(err.contains("No such image: missing:1"), "{err}");
    assert!(!tmp.path().join("x.tar").exists());
    assert_eq!(snapshot(&root), before);
}

/// Copies a tar, letting `edit` change each regular file's bytes.
fn rewrite_archive(
    src: &std::path::Path,
    dst: &std::path::Path,
    edit: impl Fn(&str, &mut Vec<u8>),
) {
    let mut input = tar::Archive::new(fs::File::open(src).unwrap());
    let mut out = tar::Builder::new(fs::File::create(dst).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        edit(&path, &mut data);
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append_data(&mut header, &path, &data[..]).unwrap();
    }
    out.into_inner().unwrap().flush().unwrap();
}

/// Two rbuild processes at once: parallel loads, tags and a prune leave a consistent store.
#[test]
fn concurrent_processes_share_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let archives: Vec<_> = (0..4)
        .map(|i| busybox_archive(tmp.path(), &format!("img{i}:1"), ArchiveFormat::Oci))
        .collect();
    let mut children = Vec::new();
    for a in &archives {
        children.push(
            rbuild(&root)
                .args(["load", "-q", "-i"])
                .arg(a)
                .spawn()
                .unwrap(),
        );
        children.push(
            rbuild(&root)
                .arg("prune")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..4 {
        ok(rbuild(&root).args(["tag", &format!("img{i}:1"), &format!("copy{i}:2")]));
    }
    let mut children = Vec::new();
    for i in 0..4 {
        children.push(
            rbuild(&root)
                .args(["tag", &format!("img{i}:1"), &format!("par{i}:3")])
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let json = ok(rbuild(&root).args(["images", "--format", "json"]));
    assert_eq!(json.lines().count(), 12, "{json}");
    // Every image is whole: it saves, and the save loads elsewhere.
    let out = tmp.path().join("all.tar");
    ok(rbuild(&root)
        .args(["save", "--format", "oci", "-o"])
        .arg(&out)
        .args(["img0:1", "copy3:2", "par2:3"]));
    ok(rbuild(&tmp.path().join("other"))
        .args(["load", "-i"])
        .arg(&out));
}

/// `images --filter` and `prune -a --filter` pick images as docker's filters do.
#[test]
fn images_and_prune_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let archive = busybox_archive(tmp.path(), "busybox:1", ArchiveFormat::Oci);
    ok(rbuild(&root).args(["load", "-i"]).arg(&archive));
    ok(rbuild(&root).args(["tag", "busybox:1", "busybox:2"]));
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    fs::write(rootfs.join("file"), "x").unwrap();
    let tarball = tmp.path().join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    for (name, team) in [("team-a:1", "a"), ("team-b:1", "b")] {
        ok(rbuild(&root)
            .arg("import")
            .arg(&tarball)
            .arg(name)
            .args(["--change", &format!("LABEL team={team}")]));
    }
    let names = |filters: &[&str]| {
        let mut cmd = rbuild(&root);
        cmd.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        for f in filters {
            cmd.args(["--filter", f]);
        }
        let mut listed: Vec<String> = ok(&mut cmd).lines().map(str::to_string).collect();
        listed.sort();
        listed.join(" ")
    };
    assert_eq!(names(&["reference=busybox:*"]), "busybox:1 busybox:2");
    assert_eq!(names(&["reference=team-?"]), "team-a:1 team-b:1");
    // Several references: any; several labels: all.
    assert_eq!(
        names(&["reference=busybox:2", "reference=team-a"]),
        "busybox:2 team-a:1"
    );
    assert_eq!(names(&["label=team"]), "team-a:1 team-b:1");
    assert_eq!(names(&["label=team=b"]), "team-b:1");
    assert_eq!(names(&["label=team", "label=team=a"]), "team-a:1");
    assert_eq!(names(&["dangling=true"]), "");
    // The busybox fixture is from 2023; the imports are from now.
    assert_eq!(names(&["since=busybox:1", "label=team=a"]), "team-a:1");
    assert_eq!(names(&["before=team-a:1"]), "busybox:1 busybox:2");
    assert_eq!(names(&["until=2024-01-01"]), "busybox:1 busybox:2");
    let err = fails(rbuild(&root).args(["images", "--filter", "bogus=1"]));
    assert!(err.contains("invalid filter \"bogus\""), "{err}");
    let err = fails(rbuild(&root).args(["images", "--filter", "nope"]));
    assert!(err.contains("expected name=value"), "{err}");

    // Without -a only untagged images go; with -a the ones the filters pass.
    ok(rbuild(&root).args(["prune", "-f", "--filter", "label=team=a"]));
    assert_eq!(names(&[]), "busybox:1 busybox:2 team-a:1 team-b:1");
    ok(rbuild(&root).args(["prune", "-a", "-f", "--filter", "label=team=a"]));
    assert_eq!(names(&[]), "busybox:1 busybox:2 team-b:1");
    ok(rbuild(&root).args(["prune", "-a", "--filter", "label!=team"]));
    assert_eq!(names(&[]), "team-b:1");
    ok(rbuild(&root).args(["prune", "-a", "--filter", "until=2024-01-01"]));
    assert_eq!(names(&[]), "team-b:1");
    // `system prune -af`, as self-hosted runners' cron jobs write it: images, then build cache.
    let out = ok(rbuild(&root).args(["system", "prune", "-af", "--volumes"]));
    assert!(out.contains("build cache records"), "{out}");
    assert_eq!(names(&[]), "");
    let err = fails(rbuild(&root).args(["prune", "--filter", "reference=x"]));
    assert!(err.contains("invalid filter \"reference\""), "{err}");
}
