//! Turning a tar stream from outside (`rbuild import`) into a layer blob.

use std::io::{self, Read};

use oci::compression::{decompress, CompressOptions, Compression, Compressor};
use oci::content::Expected;
use oci::{media_type, Descriptor, Digest, Digester};

use crate::store::{Store, StoreError};

/// Passes bytes through while hashing them and copying them to a compressor.
struct Tee<R, W> {
    inner: R,
    digester: Digester,
    out: W,
}

impl<R: Read, W: io::Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Store {
    /// Stores a tar stream (plain, gzip or zstd: detected) as one layer compressed with
    /// `compression`, checking on the way that it is a complete tar archive. Returns the layer
    /// descriptor and its diff ID. Nothing is stored when the stream is bad.
    pub fn ingest_layer_tar(
        &self,
        input: impl Read + Send,
        compression: Compression,
    ) -> Result<(Descriptor, Digest), StoreError> {
        let mut input = io::BufReader::with_capacity(1 << 20, input);
        let detected = Compression::detect(io::BufRead::fill_buf(&mut input).map_err(bad_tar)?);
        let plain = decompress(input, detected).map_err(bad_tar)?;
        let blob = self.content().writer(Expected::default())?;
        let compressor =
            Compressor::new(blob, compression, &CompressOptions::default()).map_err(bad_tar)?;
        let mut tee = Tee {
            inner: plain,
            digester: Digester::new(oci::Algorithm::Sha256),
            out: compressor,
        };
        {
            let mut archive = tar::Archive::new(&mut tee);
            let mut entries = 0usize;
            for entry in archive.entries().map_err(bad_tar)? {
                let mut entry = entry.map_err(bad_tar)?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let expected = entry.size();
                let copied = io::copy(&mut entry, &mut io::sink()).map_err(bad_tar)?;
                if copied != expected {
                    return Err(bad_tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("entry {name:?} is truncated: {copied} of {expected} bytes"),
                    )));
                }
                entries += 1;
            }
            if entries == 0 {
                return Err(bad_tar(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "empty or not a tar archive",
                )));
            }
        }
        // The diff ID covers the whole stream, end-of-archive padding included.
        io::copy(&mut tee, &mut io::sink()).map_err(bad_tar)?;
        let Tee { digester, out, .. } = tee;
        let diff_id = digester.finish();
        let blob = out.finish().map_err(bad_tar)?;
        let (digest, size) = blob.commit()?;
        Ok((
            Descriptor::new(media_type::oci_layer(compression), digest, size),
            diff_id,
        ))
    }
}

fn bad_tar(e: io::Error) -> StoreError {
    StoreError::BadTar(e)
}
