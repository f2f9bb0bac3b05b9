//! Paths inside a rootfs: an image's symlinks must never lead a mount or a file read out of
//! the rootfs (the same job as Go's filepath-securejoin that runc uses).

use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// Resolves `path` as if `root` were `/`: symlinks are followed with absolute targets taken
/// relative to `root`, and `..` never climbs above `root`. Components that do not exist yet
/// are appended as they are. The result always lies under `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        if part == Path::new("..") {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(std::io::Error::other(format!(
                        "too many symlinks resolving {path:?} in {root:?}"
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("usr/escape")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/bin/sh")).unwrap(),
            root.join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/usr/escape/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
    }
}
