//! Entry names as they appear in a tar, cleaned into a relative path below the layer root.

/// Cleans a tar entry name into `a/b/c` form: leading `/` and `./`, empty and `.` components
/// are dropped and `..` is resolved lexically, the way Docker's and containerd's extractors
/// read names. A name that climbs above the root is refused. The empty result names the root.
pub(super) fn clean(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("path climbs out of the target with `..`");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Splits a cleaned path into its parent (possibly empty = root) and its last component.
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// `parent/name`, or `name` at the root.
pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// Every proper ancestor of a cleaned path, nearest first (`a/b/c` gives `a/b`, `a`).
pub(super) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let i = rest.iter().rposition(|b| *b == b'/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(clean(b"./etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean(b"/etc//passwd/").unwrap(), b"etc/passwd");
        assert_eq!(clean(b"a/../b").unwrap(), b"b");
        assert_eq!(clean(b"./").unwrap(), b"");
        assert!(clean(b"../../etc/passwd").is_err());
        assert!(clean(b"a/../../b").is_err());
        assert!(clean(b"a\0b").is_err());
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
        let up: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(up, vec![&b"a/b"[..], &b"a"[..]]);
    }
}
