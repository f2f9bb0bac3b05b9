//! SHA-256 whose running state can be saved and restored: an upload's digest carried from
//! one request to the next, on another replica too, as distribution keeps `hashstates/`.
//! The block function is sha2's own (`compress256`, SHA-NI where the CPU has it); this
//! module adds only the buffering and the padding of FIPS 180-4 section 5.1.1.

use sha2::digest::generic_array::typenum::U64;
use sha2::digest::generic_array::GenericArray;

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const BLOCK: usize = 64;
/// `b"rsha256\x01"`: marks (and versions) a saved state.
const MAGIC: &[u8; 8] = b"rsha256\x01";

#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, the buffered ones included.
    length: u64,
    buffer: [u8; BLOCK],
    buffered: usize,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INITIAL,
            length: 0,
            buffer: [0; BLOCK],
            buffered: 0,
        }
    }
}

impl ResumableSha256 {
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if self.buffered > 0 {
            let take = (BLOCK - self.buffered).min(data.len());
            self.buffer[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < BLOCK {
                return;
            }
            let block = self.buffer;
            compress(&mut self.state, &block);
            self.buffered = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        compress(&mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.buffer[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.buffered].copy_from_slice(&self.buffer[..self.buffered]);
        tail[self.buffered] = 0x80;
        let len = if self.buffered < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[len - 8..len].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &tail[..len]);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// The running state, for [`ResumableSha256::restore`].
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 + 8 + self.buffered);
        out.extend_from_slice(MAGIC);
        for word in self.state {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.buffer[..self.buffered]);
        out
    }

    /// A state saved by [`ResumableSha256::save`]; `None` if `saved` is not one.
    pub fn restore(saved: &[u8]) -> Option<ResumableSha256> {
        let rest = saved.strip_prefix(MAGIC)?;
        if rest.len() < 40 || rest.len() >= 40 + BLOCK {
            return None;
        }
        let mut state = [0u32; 8];
        for (word, bytes) in state.iter_mut().zip(rest[..32].chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().ok()?);
        }
        let length = u64::from_be_bytes(rest[32..40].try_into().ok()?);
        let buffered = rest.len() - 40;
        if length % BLOCK as u64 != buffered as u64 {
            return None;
        }
        let mut buffer = [0u8; BLOCK];
        buffer[..buffered].copy_from_slice(&rest[40..]);
        Some(ResumableSha256 {
            state,
            length,
            buffer,
            buffered,
        })
    }
}

/// Runs the block function over whole 64-byte blocks.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    // SAFETY: `GenericArray<u8, U64>` is `#[repr(transparent)]` over `[u8; 64]` (size 64,
    // alignment 1), and `blocks` holds `len / 64` of them, so the cast views the same bytes.
    let blocks = unsafe {
        std::slice::from_raw_parts(
            blocks.as_ptr().cast::<GenericArray<u8, U64>>(),
            blocks.len() / BLOCK,
        )
    };
    sha2::compress256(state, blocks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    /// Any split of any input, saved and restored between the pieces, hashes as sha2 does.
    #[test]
    fn matches_sha2_across_saves() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 5000] {
            let expected: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
            for split in [0, 1, 3, 63, 64, 100, len / 2, len] {
                let split = split.min(len);
                let mut h = ResumableSha256::default();
                h.update(&data[..split]);
                let saved = h.save();
                let mut h = ResumableSha256::restore(&saved).expect("restores");
                assert_eq!(h.len(), split as u64);
                for piece in data[split..len].chunks(7) {
                    h.update(piece);
                }
                assert_eq!(h.finalize(), expected, "len {len}, split {split}");
            }
        }
    }

    #[test]
    fn other_bytes_do_not_restore() {
        assert!(ResumableSha256::restore(b"").is_none());
        assert!(ResumableSha256::restore(&[0u8; 48]).is_none());
        let mut saved = ResumableSha256::default().save();
        saved.push(1); // a buffered byte the length does not account for
        assert!(ResumableSha256::restore(&saved).is_none());
    }
}
