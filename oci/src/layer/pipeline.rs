//! Helper-thread stages, so that hashing and (de)compression overlap with filesystem work the
//! way `tar | pigz` and `pigz -dc | tar -x` overlap by being two processes:
//! [`read_ahead`] decompresses and hashes a layer while `apply` writes files, [`write_behind`]
//! hashes and compresses the tar while `create` reads files. Chunks of 1 MiB travel through a
//! bounded queue and are recycled, so memory stays at a few MiB.

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};

use super::hashing::HashingReader;
use crate::digest::Digest;

const CHUNK: usize = 1 << 20;
/// Chunks queued between the threads.
const QUEUE: usize = 4;

/// The consumer's end: reads the chunks the helper thread produced, in order.
pub(super) struct ChannelReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    /// Consumed chunks go back to the producer: fresh 1 MiB buffers would cost a zeroing and
    /// page faults per chunk.
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    // A full return queue or a finished producer just drops the buffer.
                    let _ = self.recycle.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer hung up: it reached the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `consume` on the bytes of `source`, which a helper thread reads and sha256-hashes.
/// When `consume` succeeds, the rest of the stream is read too so that the digest and size
/// cover all of it; on error the helper stops at its next chunk.
pub(super) fn read_ahead<R, T, E>(
    source: R,
    consume: impl FnOnce(&mut ChannelReader) -> Result<T, E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<(T, Digest, u64), E>
where
    R: Read + Send,
{
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (recycle, recycled) = mpsc::sync_channel::<Vec<u8>>(QUEUE + 1);
        let producer = scope.spawn(move || {
            let mut hashing = HashingReader::new(source);
            loop {
                let mut chunk = recycled.try_recv().unwrap_or_default();
                chunk.resize(CHUNK, 0);
                let n = match read_up_to(&mut hashing, &mut chunk) {
                    Ok(n) => n,
                    Err(e) => {
                        // The consumer sees the error where the stream broke.
                        let _ = tx.send(Err(e));
                        return None;
                    }
                };
                if n == 0 {
                    return Some(hashing.finish());
                }
                chunk.truncate(n);
                if tx.send(Ok(chunk)).is_err() {
                    return None; // the consumer gave up
                }
            }
        });
        let mut reader = ChannelReader {
            chunks: rx,
            recycle,
            current: Vec::new(),
            pos: 0,
        };
        let outcome = consume(&mut reader).and_then(|value| {
            io::copy(&mut reader, &mut io::sink()).map_err(&read_error)?;
            Ok(value)
        });
        drop(reader);
        let hashed = producer
            .join()
            .map_err(|_| read_error(io::Error::other("the layer reader thread panicked")))?;
        let value = outcome?;
        match hashed {
            Some(Ok((digest, size))) => Ok((value, digest, size)),
            Some(Err(e)) => Err(read_error(e)),
            None => Err(read_error(io::Error::other("the layer stream ended early"))),
        }
    })
}

/// Fills `buf` as far as the stream allows; fewer bytes only at its end.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The producer's end of [`write_behind`]: buffers writes into chunks for the helper thread.
pub(super) struct ChannelWriter {
    chunks: SyncSender<Vec<u8>>,
    recycled: Receiver<Vec<u8>>,
    current: Vec<u8>,
}

impl ChannelWriter {
    fn send_current(&mut self) -> io::Result<()> {
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.current, next);
        self.chunks
            .send(full)
            .map_err(|_| io::Error::other("the layer writer thread stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == CHUNK {
            self.send_current()?;
        }
        Ok(n)
    }

    /// Chunks are handed over when full or at the end; a flush mid-stream changes nothing.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce`, whose writes a helper thread passes on to `sink`; returns `sink` once
/// everything is written. When both sides fail, the sink's error wins: it is the cause of the
/// producer's failed hand-over.
pub(super) fn write_behind<W, T, E>(
    sink: W,
    produce: impl FnOnce(&mut ChannelWriter) -> Result<T, E>,
    write_error: impl Fn(io::Error) -> E,
) -> Result<(T, W), E>
where
    W: Write + Send,
{
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (recycle, recycled) = mpsc::sync_channel(QUEUE + 1);
        let consumer = scope.spawn(move || {
            let mut sink = sink;
            for mut chunk in rx {
                sink.write_all(&chunk)?;
                chunk.clear();
                // A full return queue just drops the buffer.
                let _ = recycle.try_send(chunk);
            }
            Ok::<W, io::Error>(sink)
        });
        let mut writer = ChannelWriter {
            chunks: tx,
            recycled,
            current: Vec::with_capacity(CHUNK),
        };
        let produced = produce(&mut writer).and_then(|value| {
            writer.send_current().map_err(&write_error)?;
            Ok(value)
        });
        // Closing the queue lets the consumer finish.
        drop(writer);
        let consumed = consumer
            .join()
            .map_err(|_| write_error(io::Error::other("the layer writer thread panicked")))?;
        match (produced, consumed) {
            (Ok(value), Ok(sink)) => Ok((value, sink)),
            (_, Err(e)) => Err(write_error(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}
