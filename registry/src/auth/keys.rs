//! Keys that sign and verify tokens: RSA (RS*/PS*), ECDSA P-256/P-384 (ES256/ES384) and
//! Ed25519 (EdDSA), with ring doing the cryptography. Public keys come from certificates
//! (SubjectPublicKeyInfo), from JWKS entries (RFC 7517), or from our own signing key.
//!
//! Key IDs: distribution 2.8 names a trusted key by its libtrust ID (SHA-256 of the DER
//! SubjectPublicKeyInfo, 240 bits in base32, grouped by four); newer releases by the RFC 7638
//! JWK thumbprint (distribution-configuration.md "rootcertbundle"). Both are computed, so a
//! `kid` of either kind finds its key; our own tokens carry the libtrust ID, which every
//! distribution release understands.

use std::path::Path;

use base64::Engine;
use ring::signature::{self, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

use super::AuthSetupError;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The JWS algorithms we verify and sign with (RFC 7518 section 3.1). HMAC needs a shared
/// secret, which neither the certificate bundle nor our issuer has, so HS* are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// A public key that verifies token signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    #[error("unsupported key type {0}")]
    Unsupported(String),
}

// Object identifiers, DER-encoded contents (RFC 8017, RFC 5480, RFC 8410).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7).
    pub fn from_spki(spki: &[u8]) -> Result<PublicKey, KeyError> {
        let malformed = KeyError::Malformed;
        let (body, _) =
            der::expect(spki, der::SEQUENCE).ok_or(malformed("SubjectPublicKeyInfo"))?;
        let (algorithm, rest) = der::expect(body, der::SEQUENCE).ok_or(malformed("algorithm"))?;
        let (bits, _) = der::expect(rest, der::BIT_STRING).ok_or(malformed("key bits"))?;
        let key = match bits.split_first() {
            Some((0, key)) => key,
            _ => return Err(malformed("key bits")),
        };
        let (oid, params) = der::expect(algorithm, der::OID).ok_or(malformed("algorithm"))?;
        match oid {
            OID_RSA => {
                let (seq, _) = der::expect(key, der::SEQUENCE).ok_or(malformed("RSA key"))?;
                let (n, rest) = der::expect(seq, der::INTEGER).ok_or(malformed("RSA modulus"))?;
                let (e, _) = der::expect(rest, der::INTEGER).ok_or(malformed("RSA exponent"))?;
                Ok(PublicKey::Rsa {
                    n: strip_zeros(n),
                    e: strip_zeros(e),
                })
            }
            OID_EC => {
                let (curve, _) = der::expect(params, der::OID).ok_or(malformed("EC curve"))?;
                let curve = match curve {
                    OID_P256 => Curve::P256,
                    OID_P384 => Curve::P384,
                    _ => return Err(KeyError::Unsupported("EC curve".into())),
                };
                Ok(PublicKey::Ec {
                    curve,
                    point: key.to_vec(),
                })
            }
            OID_ED25519 => Ok(PublicKey::Ed25519(key.to_vec())),
            _ => Err(KeyError::Unsupported("algorithm OID".into())),
        }
    }

    /// From one JWKS entry (RFC 7517 / 7518 section 6).
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<PublicKey, KeyError> {
        let field = |name: &'static str| -> Result<Vec<u8>, KeyError> {
            let text = jwk[name].as_str().ok_or(KeyError::Malformed(name))?;
            B64URL
                .decode(text.trim_end_matches('='))
                .map_err(|_| KeyError::Malformed(name))
        };
        match jwk["kty"].as_str() {
            Some("RSA") => Ok(PublicKey::Rsa {
                n: strip_zeros(&field("n")?),
                e: strip_zeros(&field("e")?),
            }),
            Some("EC") => {
                let curve = match jwk["crv"].as_str() {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    other => return Err(KeyError::Unsupported(format!("EC curve {other:?}"))),
                };
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                    return Err(KeyError::Malformed("EC coordinates"));
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(PublicKey::Ec { curve, point })
            }
            Some("OKP") if jwk["crv"].as_str() == Some("Ed25519") => {
                Ok(PublicKey::Ed25519(field("x")?))
            }
            other => Err(KeyError::Unsupported(format!("kty {other:?}"))),
        }
    }

    /// Checks `signature` over `message`; the algorithm must suit the key's type.
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match (self, alg) {
            (PublicKey::Rsa { n, e }, _) => {
                let params: &signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (PublicKey::Ec { curve, point }, _) => {
                let algorithm: &dyn signature::VerificationAlgorithm = match (curve, alg) {
                    (Curve::P256, Alg::ES256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, Alg::ES384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                signature::UnparsedPublicKey::new(algorithm, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (PublicKey::Ed25519(key), Alg::EdDSA) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, key)
                    .verify(message, sig)
                    .is_ok()
            }
            (PublicKey::Ed25519(_), _) => false,
        }
    }

    /// The DER SubjectPublicKeyInfo, as Go's `x509.MarshalPKIXPublicKey` writes it.
    pub fn to_spki(&self) -> Vec<u8> {
        let (algorithm, key) = match self {
            PublicKey::Rsa { n, e } => (
                der::seq(&[der::tlv(der::OID, OID_RSA), der::tlv(der::NULL, &[])]),
                der::seq(&[der::integer(n), der::integer(e)]),
            ),
            PublicKey::Ec { curve, point } => {
                let curve_oid = match curve {
                    Curve::P256 => OID_P256,
                    Curve::P384 => OID_P384,
                };
                (
                    der::seq(&[der::tlv(der::OID, OID_EC), der::tlv(der::OID, curve_oid)]),
                    point.clone(),
                )
            }
            PublicKey::Ed25519(key) => (der::seq(&[der::tlv(der::OID, OID_ED25519)]), key.clone()),
        };
        let mut bits = vec![0u8];
        bits.extend_from_slice(&key);
        der::seq(&[algorithm, der::tlv(der::BIT_STRING, &bits)])
    }

    /// libtrust's key ID (distribution 2.8 and docker's own token tooling).
    pub fn libtrust_kid(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.to_spki());
        let encoded = base32(&digest.as_ref()[..30]);
        encoded
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The RFC 7638 JWK thumbprint: SHA-256 of the required members in lexical order.
    pub fn thumbprint(&self) -> String {
        let json = match self {
            PublicKey::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                B64URL.encode(e),
                B64URL.encode(n)
            ),
            PublicKey::Ec { curve, point } => {
                let len = curve.coordinate_len();
                let (x, y) = point
                    .get(1..)
                    .map(|xy| xy.split_at(len.min(xy.len())))
                    .unwrap_or((&[], &[]));
                format!(
                    r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                    curve.jwk_name(),
                    B64URL.encode(x),
                    B64URL.encode(y)
                )
            }
            PublicKey::Ed25519(key) => {
                format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    B64URL.encode(key)
                )
            }
        };
        B64URL.encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()))
    }
}

/// Our issuer's private key, from a PEM file: PKCS#8 (RSA, P-256, P-384, Ed25519) or PKCS#1
/// RSA. The algorithm follows from the key: RS256, ES256, ES384 or EdDSA.
pub struct SigningKey {
    pair: KeyPairKind,
    pub alg: Alg,
    pub public: PublicKey,
    pub kid: String,
}

enum KeyPairKind {
    Rsa(signature::RsaKeyPair),
    Ecdsa(signature::EcdsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, AuthSetupError> {
        let invalid = |what: &str| {
            AuthSetupError::Invalid(format!("auth.token.signingkey {}: {what}", path.display()))
        };
        let key = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| invalid(&format!("no PEM private key ({e})")))?;
        let rng = ring::rand::SystemRandom::new();
        let pair = match &key {
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(k) = signature::RsaKeyPair::from_pkcs8(der) {
                    KeyPairKind::Rsa(k)
                } else if let Ok(k) = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                ) {
                    KeyPairKind::Ecdsa(k)
                } else if let Ok(k) = signature::EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    der,
                    &rng,
                ) {
                    KeyPairKind::Ecdsa(k)
                } else if let Ok(k) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    KeyPairKind::Ed25519(k)
                } else {
                    return Err(invalid(
                        "not an RSA (2048 bits or more), P-256, P-384 or Ed25519 key",
                    ));
                }
            }
            PrivateKeyDer::Pkcs1(der) => KeyPairKind::Rsa(
                signature::RsaKeyPair::from_der(der.secret_pkcs1_der())
                    .map_err(|e| invalid(&format!("bad RSA key: {e}")))?,
            ),
            // ring reads EC keys only as PKCS#8.
            _ => {
                return Err(invalid(
                    "an EC key in SEC1 form; convert it: openssl pkcs8 -topk8 -nocrypt",
                ))
            }
        };
        let (alg, public) = match &pair {
            KeyPairKind::Rsa(k) => {
                let spki_key = der::seq_parse_rsa(k.public_key().as_ref())
                    .ok_or_else(|| invalid("RSA public key"))?;
                (Alg::RS256, spki_key)
            }
            KeyPairKind::Ecdsa(k) => {
                let point = k.public_key().as_ref().to_vec();
                let curve = if point.len() == 65 {
                    Curve::P256
                } else {
                    Curve::P384
                };
                let alg = if curve == Curve::P256 {
                    Alg::ES256
                } else {
                    Alg::ES384
                };
                (alg, PublicKey::Ec { curve, point })
            }
            KeyPairKind::Ed25519(k) => (
                Alg::EdDSA,
                PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
            ),
        };
        let kid = public.libtrust_kid();
        Ok(SigningKey {
            pair,
            alg,
            public,
            kid,
        })
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        match &self.pair {
            KeyPairKind::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)?;
                Ok(sig)
            }
            KeyPairKind::Ecdsa(k) => Ok(k.sign(&rng, message)?.as_ref().to_vec()),
            KeyPairKind::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// RFC 4648 base32, no padding (30 bytes make exactly 48 characters).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The few DER forms keys need (X.690): definite lengths, single-byte tags.
mod der {
    use super::PublicKey;

    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;

    /// The contents of a `tag` element at the start of `input`, and what follows it.
    pub fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(SEQUENCE, &items.concat())
    }

    /// A non-negative INTEGER from big-endian magnitude bytes (no leading zeros).
    pub fn integer(magnitude: &[u8]) -> Vec<u8> {
        let mut content = Vec::with_capacity(magnitude.len() + 1);
        if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(magnitude);
        tlv(INTEGER, &content)
    }

    /// ring gives an RSA public key as a DER RSAPublicKey (RFC 8017 appendix A.1.1).
    pub fn seq_parse_rsa(rsa_public_key: &[u8]) -> Option<PublicKey> {
        let (seq, _) = expect(rsa_public_key, SEQUENCE)?;
        let (n, rest) = expect(seq, INTEGER)?;
        let (e, _) = expect(rest, INTEGER)?;
        Some(PublicKey::Rsa {
            n: super::strip_zeros(n),
            e: super::strip_zeros(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_and_kid_shape() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let key = PublicKey::Ed25519(vec![7; 32]);
        let kid = key.libtrust_kid();
        assert_eq!(kid.len(), 48 + 11);
        assert_eq!(kid.split(':').count(), 12);
    }

    #[test]
    fn spki_round_trip_and_jwk() {
        let rsa = PublicKey::Rsa {
            n: vec![0xc0; 256],
            e: vec![1, 0, 1],
        };
        assert_eq!(PublicKey::from_spki(&rsa.to_spki()).unwrap(), rsa);
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": B64URL.encode(vec![0xc0; 256]),
            "e": "AQAB",
        });
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), rsa);
        // RFC 7638 section 3.1's example key and thumbprint.
        let example = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        });
        assert_eq!(
            PublicKey::from_jwk(&example).unwrap().thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let ec = PublicKey::Ec {
            curve: Curve::P256,
            point: [vec![4], vec![1; 32], vec![2; 32]].concat(),
        };
        assert_eq!(PublicKey::from_spki(&ec.to_spki()).unwrap(), ec);
        assert!(PublicKey::from_spki(b"\x30\x03junk").is_err());
    }

    #[test]
    fn sign_and_verify_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let rng = ring::rand::SystemRandom::new();
        let ec = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let ed = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        for (name, der) in [("ec", ec.as_ref()), ("ed", ed.as_ref())] {
            let path = dir.path().join(name);
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            );
            std::fs::write(&path, pem).unwrap();
            let key = SigningKey::load(&path).unwrap();
            let sig = key.sign(b"message").unwrap();
            assert!(key.public.verify(key.alg, b"message", &sig), "{name}");
            assert!(!key.public.verify(key.alg, b"other", &sig), "{name}");
            assert!(!key.public.verify(Alg::RS256, b"message", &sig), "{name}");
            assert_eq!(
                PublicKey::from_spki(&key.public.to_spki()).unwrap(),
                key.public
            );
        }
        std::fs::write(dir.path().join("junk"), "not a key").unwrap();
        assert!(SigningKey::load(&dir.path().join("junk")).is_err());
    }
}
