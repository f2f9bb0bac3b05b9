//! Pass-through readers and writers that digest and count the bytes going by, so a layer's
//! diff_id (uncompressed) and blob digest (compressed) come out of the single streaming pass.

use std::io::{self, Read, Write};

use crate::digest::{Algorithm, Digest, Digester};

pub(super) struct HashingWriter<W> {
    inner: W,
    digester: Digester,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            digester: Digester::new(Algorithm::Sha256),
            count: 0,
        }
    }

    pub(super) fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.digester.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(super) struct HashingReader<R> {
    inner: R,
    digester: Digester,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            digester: Digester::new(Algorithm::Sha256),
            count: 0,
        }
    }

    /// Reads what is left (tar padding after the end-of-archive blocks belongs to the diff_id
    /// too) and returns the digest and size of everything read.
    pub(super) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.digester.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
