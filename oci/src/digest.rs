//! Content digests: `algorithm:encoded` as image-spec descriptor.md "Digests" defines them.
//!
//! sha256 is required and sha512 accepted (descriptor.md, "Registered algorithms"); the encoded
//! part must be lower-case hex of the algorithm's exact length, so a digest that parses can be
//! used as a file name and compared as a string.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha512};

use crate::resumable_sha256::ResumableSha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected ALGORITHM:HEX")]
    Format(String),
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    Algorithm(String),
    #[error("invalid digest {digest:?}: {algorithm} needs {len} lower-case hex characters")]
    Encoded {
        digest: String,
        algorithm: &'static str,
        len: usize,
    },
}

/// A validated digest such as `sha256:e3b0…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algorithm:hex` string, kept so that `as_str` needs no allocation.
    full: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part after the colon.
    pub fn encoded(&self) -> &str {
        &self.full[self.algorithm.name().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut d = Digester::new(Algorithm::Sha256);
        d.update(data);
        d.finish()
    }

    /// The digest of `data` with the same algorithm as `self`, for verifying content.
    pub fn verify(&self, data: &[u8]) -> bool {
        let mut d = Digester::new(self.algorithm);
        d.update(data);
        d.finish() == *self
    }

    /// Docker's short image ID: the first 12 hex characters.
    pub fn short(&self) -> &str {
        &self.encoded()[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, encoded) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Format(s.to_string()))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            "" => return Err(DigestError::Format(s.to_string())),
            other => return Err(DigestError::Algorithm(other.to_string())),
        };
        let valid_hex = encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if encoded.len() != algorithm.hex_len() || !valid_hex {
            return Err(DigestError::Encoded {
                digest: s.to_string(),
                algorithm: algorithm.name(),
                len: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            full: s.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hashing; also an [`io::Write`] sink so it can sit behind `io::copy` or a tee.
/// A SHA-256 digester's running state can be saved and restored ([`Digester::save`]).
#[derive(Clone)]
pub enum Digester {
    Sha256(ResumableSha256),
    Sha512(Sha512),
}

impl Digester {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Digester::Sha256(ResumableSha256::default()),
            Algorithm::Sha512 => Digester::Sha512(Sha512::new()),
        }
    }

    /// The running state, for [`Digester::restore`]; `None` for SHA-512, which is not
    /// resumable.
    pub fn save(&self) -> Option<Vec<u8>> {
        match self {
            Digester::Sha256(h) => Some(h.save()),
            Digester::Sha512(_) => None,
        }
    }

    /// A digester continuing from a saved state of `algorithm`; `None` if `saved` is not one.
    pub fn restore(algorithm: Algorithm, saved: &[u8]) -> Option<Digester> {
        match algorithm {
            Algorithm::Sha256 => ResumableSha256::restore(saved).map(Digester::Sha256),
            Algorithm::Sha512 => None,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, encoded) = match self {
            Digester::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Digester::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            full: format!("{}:{}", algorithm.name(), encoded),
        }
    }
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_and_parses() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.as_str(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
        assert_eq!(d.encoded().len(), 64);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(d.verify(b""));
        assert!(!d.verify(b"x"));
    }

    #[test]
    fn sha512_accepted() {
        let mut h = Digester::new(Algorithm::Sha512);
        h.update(b"abc");
        let d = h.finish();
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!(d.as_str().starts_with("sha512:ddaf35a1"));
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            ":abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }
}
