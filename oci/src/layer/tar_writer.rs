//! Deterministic tar encoding: ustar headers, with a PAX extended header (POSIX.1-2001 pax
//! format) in front of an entry whenever a value does not fit ustar or the entry has xattrs.
//! uname/gname stay empty (layer.md: they "should be ignored"), atime/ctime are never written.

use std::io::{self, Write};

use tar::{EntryType, Header};

const BLOCK: usize = 512;
/// Largest size an 11-digit octal ustar field holds (8 GiB - 1).
const MAX_OCTAL_SIZE: u64 = 0o777_7777_7777;
/// Largest uid/gid a 7-digit octal ustar field holds.
const MAX_OCTAL_ID: u64 = 0o777_7777;

/// One tar entry's metadata.
pub(super) struct EntryHeader<'a> {
    /// Cleaned path; directories carry a trailing `/`.
    pub path: &'a [u8],
    pub kind: EntryType,
    /// Permission bits incl. setuid/setgid/sticky (07777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// Symlink target or hardlink source.
    pub link: Option<&'a [u8]>,
    pub device: (u32, u32),
    /// Sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Writes the header block(s) of `h`; the caller writes `h.size` bytes of content and then
/// [`write_padding`].
pub(super) fn write_header(w: &mut impl Write, h: &EntryHeader<'_>) -> io::Result<()> {
    let mut pax = Vec::new();
    let ustar_path = split_ustar(h.path);
    if ustar_path.is_none() {
        pax_record(&mut pax, b"path", h.path);
    }
    let link = h.link.unwrap_or_default();
    if link.len() > 100 {
        pax_record(&mut pax, b"linkpath", link);
    }
    if h.size > MAX_OCTAL_SIZE {
        pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
    }
    if h.uid > MAX_OCTAL_ID {
        pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_ID {
        pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
    }
    for (name, value) in h.xattrs {
        pax_record(
            &mut pax,
            &[b"SCHILY.xattr.", name.as_slice()].concat(),
            value,
        );
    }
    if !pax.is_empty() {
        // The extended header's own name only has to be stable and fit; readers ignore it.
        let base = super::path::split(h.path.strip_suffix(b"/").unwrap_or(h.path)).1;
        let name = [b"PaxHeaders.0/", &base[..base.len().min(80)]].concat();
        let mut x = Header::new_ustar();
        fill_name(&mut x, b"", &name);
        x.set_entry_type(EntryType::XHeader);
        x.set_mode(0o644);
        x.set_uid(0);
        x.set_gid(0);
        x.set_mtime(h.mtime);
        x.set_size(pax.len() as u64);
        x.set_cksum();
        w.write_all(x.as_bytes())?;
        w.write_all(&pax)?;
        write_padding(w, pax.len() as u64)?;
    }

    let mut header = Header::new_ustar();
    let (prefix, name) = ustar_path.unwrap_or((b"", &h.path[..h.path.len().min(100)]));
    fill_name(&mut header, prefix, name);
    header.set_entry_type(h.kind);
    header.set_mode(h.mode);
    // Values too big for octal are in the PAX header; the tar crate then writes GNU base-256
    // here, which GNU tar and Go read as well.
    header.set_uid(h.uid);
    header.set_gid(h.gid);
    header.set_mtime(h.mtime);
    header.set_size(h.size);
    if let Some(ustar) = header.as_ustar_mut() {
        let n = link.len().min(100);
        ustar.linkname[..n].copy_from_slice(&link[..n]);
    }
    if matches!(h.kind, EntryType::Char | EntryType::Block) {
        header.set_device_major(h.device.0)?;
        header.set_device_minor(h.device.1)?;
    }
    header.set_cksum();
    w.write_all(header.as_bytes())
}

/// Zero-fills the content of an entry of `size` bytes up to the next 512-byte block.
pub(super) fn write_padding(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (size % BLOCK as u64) as usize;
    if rest != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rest])?;
    }
    Ok(())
}

/// The end-of-archive marker: two zero blocks (as Go's archive/tar writes; no record padding).
pub(super) fn write_end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

fn fill_name(header: &mut Header, prefix: &[u8], name: &[u8]) {
    if let Some(ustar) = header.as_ustar_mut() {
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    }
}

/// Splits a path into ustar's 155-byte prefix and 100-byte name at a `/`, or `None` when it
/// cannot fit (then a PAX `path` record carries it).
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The earliest slash that leaves a name of at most 100 bytes gives the shortest prefix.
    let split = path
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'/' && path.len() - i - 1 <= 100)
        .map(|(i, _)| i)
        .next()?;
    let (prefix, name) = (&path[..split], &path[split + 1..]);
    (prefix.len() <= 155 && !name.is_empty()).then_some((prefix, name))
}

/// Appends one `LEN KEY=VALUE\n` record; LEN counts the whole record including its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"x");
        assert_eq!(v, b"9 path=x\n");
        let mut v = Vec::new();
        let value = vec![b'a'; 93];
        pax_record(&mut v, b"path", &value);
        assert_eq!(v.len(), 103);
        assert!(v.starts_with(b"103 path="));
    }

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar(b"short"), Some((&b""[..], &b"short"[..])));
        let long = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        let (p, n) = split_ustar(&long).unwrap();
        assert_eq!((p.len(), n.len()), (120, 50));
        assert_eq!(split_ustar(&[b'x'; 101]), None);
    }
}
