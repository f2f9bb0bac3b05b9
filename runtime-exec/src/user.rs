//! `USER name[:group]` resolved the way docker and runc do (runc libcontainer/user): names
//! from the image's /etc/passwd and /etc/group, numbers accepted without them.

use std::path::Path;

use crate::error::{Error, Result};
use crate::paths::resolve_in_root;

/// The uid, primary gid and supplementary gids of `spec` (`user`, `uid`, `user:group`,
/// `uid:gid`) in the image at `rootfs`.
///
/// Supplementary groups are the groups of /etc/group that list the user by name (docker's
/// rule); an explicit `:group` replaces the primary group only.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>)> {
    let unknown = |reason: String| Error::UnknownUser {
        user: spec.to_string(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(unknown("empty user name".into()));
    }
    let passwd = read_image_file(rootfs, "/etc/passwd")?;
    let groups = read_image_file(rootfs, "/etc/group")?;

    // passwd: name:password:uid:gid:gecos:home:shell
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let matches = f[0] == user
            || (user.parse::<u32>().ok() == f[2].parse().ok() && user.parse::<u32>().is_ok());
        matches.then(|| {
            Some((
                f[0].to_string(),
                f[2].parse::<u32>().ok()?,
                f[3].parse::<u32>().ok()?,
            ))
        })?
    });
    let (name, uid, primary_gid) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (Some(e.0), e.1, e.2),
        // A numeric uid needs no passwd entry; its group is then root's, as in docker.
        (None, Ok(uid)) => (None, uid, 0),
        (None, Err(_)) => return Err(unknown("no matching entries in passwd file".into())),
    };

    // group: name:password:gid:member,member
    let parsed_groups: Vec<(String, u32, Vec<String>)> = groups
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f.get(3).map_or(Vec::new(), |m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect();
    let gid = match group {
        None => primary_gid,
        Some("") => return Err(unknown("empty group name".into())),
        Some(g) => match parsed_groups.iter().find(|(n, _, _)| n == g) {
            Some((_, gid, _)) => *gid,
            None => g.parse().map_err(|_| {
                unknown(format!("no matching entries in group file for group {g:?}"))
            })?,
        },
    };
    let mut additional: Vec<u32> = match &name {
        Some(name) => parsed_groups
            .iter()
            .filter(|(_, _, members)| members.iter().any(|m| m == name))
            .map(|(_, gid, _)| *gid)
            .collect(),
        None => Vec::new(),
    };
    additional.retain(|g| *g != gid);
    additional.dedup();
    Ok((uid, gid, additional))
}

/// An image file's text, empty when the image lacks it.
fn read_image_file(rootfs: &Path, path: &str) -> Result<String> {
    let real = resolve_in_root(rootfs, Path::new(path))
        .map_err(|e| Error::io(format!("resolve {path} in {}", rootfs.display()), e))?;
    match std::fs::read_to_string(&real) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(format!("read {}", real.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nwheel:x:10:root,www\naudio:x:29:www\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_numbers_and_groups() {
        let img = image();
        assert_eq!(resolve(img.path(), "www").unwrap(), (33, 33, vec![10, 29]));
        assert_eq!(
            resolve(img.path(), "www:audio").unwrap(),
            (33, 29, vec![10])
        );
        assert_eq!(resolve(img.path(), "33:7").unwrap(), (33, 7, vec![10, 29]));
        assert_eq!(resolve(img.path(), "1234").unwrap(), (1234, 0, vec![]));
        assert!(matches!(
            resolve(img.path(), "nobody"),
            Err(Error::UnknownUser { .. })
        ));
        assert!(matches!(
            resolve(img.path(), "www:nogroup"),
            Err(Error::UnknownUser { .. })
        ));
    }
}
