//! The size docker shows for a layer (`docker images`, `docker history`, inspect's `Size`):
//! the bytes of its files, not of its compressed blob. moby measures a layer's unpacked
//! directory (pkg/directory): every entry but directories by its `lstat` size (a symlink's is
//! its target's length), each inode once. The same count, from a layer's tar.

use std::io::Read;

use super::LayerError;
use crate::compression::{decompress, Compression};

/// The content size of the layer stream `reader`, compressed as `compression`. Hard links are
/// separate tar entries that name an earlier file: not counted again.
pub fn content_size<R: Read + Send>(
    reader: R,
    compression: Compression,
) -> Result<u64, LayerError> {
    let mut archive = tar::Archive::new(decompress(reader, compression).map_err(LayerError::Read)?);
    let mut total = 0;
    for entry in archive.entries().map_err(LayerError::Read)? {
        let entry = entry.map_err(LayerError::Read)?;
        total += match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => entry.size(),
            tar::EntryType::Symlink => entry
                .link_name_bytes()
                .map_or(0, |target| target.len() as u64),
            _ => 0,
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_symlink_targets_and_each_hard_link_once() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, name, data).unwrap();
        };
        add(tar::EntryType::Directory, "dir/", None, b"");
        add(tar::EntryType::Regular, "dir/file", None, b"12345");
        add(tar::EntryType::Link, "dir/hardlink", Some("dir/file"), b"");
        add(tar::EntryType::Symlink, "dir/link", Some("file"), b"");
        add(tar::EntryType::Regular, "dir/.wh.gone", None, b"");
        let tar = builder.into_inner().unwrap();
        assert_eq!(content_size(&tar[..], Compression::None).unwrap(), 5 + 4);
    }
}
