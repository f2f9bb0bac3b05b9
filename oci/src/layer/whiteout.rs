//! Whiteouts: how layer.md ("Whiteouts", "Opaque Whiteout") marks deletions in a tar, and how
//! overlayfs marks them in an upper or lower directory (kernel Documentation/filesystems/
//! overlayfs.rst, "whiteouts and opaque directories").

/// A tar entry named `.wh.NAME` deletes NAME from the lower layers.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// A tar entry `DIR/.wh..wh..opq` hides everything the lower layers had in DIR.
pub const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// overlayfs marks an opaque directory with this xattr set to `y`; a whiteout is a char
/// device 0:0.
pub const OVERLAY_OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// overlayfs keeps its bookkeeping (opaque, origin, impure, redirect, ...) under these
/// prefixes, `user.overlay.` when mounted with `userxattr` (rootless); it never belongs in a
/// layer.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// The overlayfs attribute name (`opaque`, `redirect`, ...) of an xattr, if it is one.
pub(super) fn overlay_xattr(name: &[u8]) -> Option<&[u8]> {
    OVERLAY_XATTR_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(*prefix))
}

/// What a `.wh.`-prefixed entry name means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout<'a> {
    /// Hide all lower content of the entry's directory.
    Opaque,
    /// Delete this sibling name from the lower layers.
    Remove(&'a [u8]),
}

/// `None` for an ordinary name; an error for a `.wh.` name that names nothing valid (layer.md:
/// "A `.wh.` file, without a basename to delete, is invalid").
pub(super) fn parse(file_name: &[u8]) -> Option<Result<Whiteout<'_>, &'static str>> {
    if file_name == OPAQUE_WHITEOUT {
        return Some(Ok(Whiteout::Opaque));
    }
    let target = file_name.strip_prefix(WHITEOUT_PREFIX)?;
    Some(match target {
        b"" => Err("whiteout names no file"),
        b"." | b".." => Err("whiteout of `.` or `..`"),
        _ => Ok(Whiteout::Remove(target)),
    })
}

/// The tar entry name that deletes `file_name`.
pub(super) fn whiteout_name(file_name: &[u8]) -> Vec<u8> {
    [WHITEOUT_PREFIX, file_name].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whiteouts() {
        assert_eq!(parse(b"file"), None);
        assert_eq!(parse(b".wh..wh..opq"), Some(Ok(Whiteout::Opaque)));
        assert_eq!(parse(b".wh.foo"), Some(Ok(Whiteout::Remove(b"foo"))));
        assert!(matches!(parse(b".wh."), Some(Err(_))));
        assert!(matches!(parse(b".wh..."), Some(Err(_))));
        assert!(matches!(parse(b".wh.."), Some(Err(_))));
        assert_eq!(whiteout_name(b"x"), b".wh.x");
        assert_eq!(
            overlay_xattr(b"trusted.overlay.opaque"),
            Some(&b"opaque"[..])
        );
        assert_eq!(
            overlay_xattr(b"user.overlay.redirect"),
            Some(&b"redirect"[..])
        );
        assert_eq!(overlay_xattr(b"user.comment"), None);
    }
}
