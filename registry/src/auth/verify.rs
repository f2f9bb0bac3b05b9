//! Verifying bearer tokens as jwt.md "Verifying the token" lists it: a trusted key (the
//! `x5c` chain up to `rootcertbundle`, or a `kid` naming a bundle certificate's key, a JWKS
//! entry or our own issuer's key), the signature, `iss`, `aud`, `exp`/`nbf`. The `access`
//! claim is checked by the caller against what the request needs.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::jwt::{self, Claims, Unverified};
use super::keys::{Alg, PublicKey};
use super::AuthSetupError;

/// Clock skew allowed on `exp` and `nbf`, as distribution allows.
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("signing algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("the token's signing key is not trusted: {0}")]
    UntrustedKey(String),
    #[error("bad signature")]
    Signature,
    #[error("issuer {0:?} is not trusted")]
    Issuer(String),
    #[error("the token is not meant for this service")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// Where trusted keys come from; built once at start.
#[derive(Debug, Default)]
pub struct TrustStore {
    roots: Vec<CertificateDer<'static>>,
    keys: HashMap<String, PublicKey>,
}

impl TrustStore {
    /// Every certificate of a PEM bundle is a root; each one's key is also known by its
    /// libtrust ID and its JWK thumbprint, for tokens that name it by `kid`.
    pub fn add_bundle(&mut self, path: &Path) -> Result<(), AuthSetupError> {
        let invalid = |what: String| {
            AuthSetupError::Invalid(format!(
                "auth.token.rootcertbundle {}: {what}",
                path.display()
            ))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no certificates".into()));
        }
        for cert in certs {
            let key = certificate_key(&cert).map_err(|e| invalid(e.to_string()))?;
            self.add_key(None, key);
            self.roots.push(cert);
        }
        Ok(())
    }

    /// A JWKS file (RFC 7517 section 5): each key is found by its `kid`.
    pub fn add_jwks(&mut self, path: &Path) -> Result<(), AuthSetupError> {
        let invalid = |what: String| {
            AuthSetupError::Invalid(format!("auth.token.jwks {}: {what}", path.display()))
        };
        let text = std::fs::read(path).map_err(|source| AuthSetupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let set: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        let keys = set["keys"]
            .as_array()
            .ok_or_else(|| invalid("no \"keys\" array".into()))?;
        for jwk in keys {
            let key = PublicKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
            let kid = jwk["kid"].as_str().map(str::to_string);
            self.add_key(kid, key);
        }
        Ok(())
    }

    /// A key known by `kid` (when given), its libtrust ID and its thumbprint.
    pub fn add_key(&mut self, kid: Option<String>, key: PublicKey) {
        if let Some(kid) = kid {
            self.keys.insert(kid, key.clone());
        }
        self.keys.insert(key.libtrust_kid(), key.clone());
        self.keys.insert(key.thumbprint(), key);
    }

    /// The key that signed a token, if it is trusted.
    fn resolve(&self, header: &jwt::Header) -> Result<PublicKey, TokenError> {
        if let Some(chain) = &header.x5c {
            return self.resolve_chain(chain);
        }
        if let Some(kid) = &header.kid {
            return self
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| TokenError::UntrustedKey(format!("unknown kid {kid:?}")));
        }
        Err(TokenError::UntrustedKey(
            "the header names no key (x5c or kid)".into(),
        ))
    }

    /// The leaf's key when the chain leads to a root: the leaf is a root itself, or webpki
    /// verifies it through the intermediates that follow it.
    fn resolve_chain(&self, chain: &[String]) -> Result<PublicKey, TokenError> {
        let certs: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map(CertificateDer::from)
                    .map_err(|_| TokenError::Malformed)
            })
            .collect::<Result<_, _>>()?;
        let (leaf, intermediates) = certs.split_first().ok_or(TokenError::Malformed)?;
        let key = certificate_key(leaf).map_err(|e| TokenError::UntrustedKey(e.to_string()))?;
        if self.roots.iter().any(|root| root == leaf) {
            return Ok(key);
        }
        let anchors: Vec<_> = self
            .roots
            .iter()
            .filter_map(|root| webpki::anchor_from_trusted_cert(root).ok())
            .collect();
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| TokenError::UntrustedKey(format!("x5c leaf: {e}")))?;
        // The chain's purpose is token signing, which has no extended key usage of its own:
        // a leaf that declares one must allow server or client authentication.
        let verified = [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ]
        .into_iter()
        .any(|usage| {
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &anchors,
                    intermediates,
                    UnixTime::now(),
                    usage,
                    None,
                    None,
                )
                .is_ok()
        });
        if verified {
            Ok(key)
        } else {
            Err(TokenError::UntrustedKey(
                "the x5c chain does not lead to rootcertbundle".into(),
            ))
        }
    }
}

fn certificate_key(cert: &CertificateDer<'_>) -> Result<PublicKey, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("certificate: {e}"))?;
    PublicKey::from_spki(parsed.subject_public_key_info().as_ref()).map_err(|e| e.to_string())
}

/// Checks tokens meant for `service` from `issuer`.
#[derive(Debug)]
pub struct TokenVerifier {
    pub trust: TrustStore,
    pub issuer: String,
    pub service: String,
    /// `auth.token.signingalgorithms`; empty accepts every algorithm we implement.
    pub algorithms: Vec<Alg>,
}

impl TokenVerifier {
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = Unverified::parse(token).map_err(|_| TokenError::Malformed)?;
        let alg = jwt::algorithm(&token.header)
            .filter(|a| self.algorithms.is_empty() || self.algorithms.contains(a))
            .ok_or_else(|| TokenError::Algorithm(token.header.alg.clone()))?;
        let key = self.trust.resolve(&token.header)?;
        if !key.verify(alg, token.signing_input.as_bytes(), &token.signature) {
            return Err(TokenError::Signature);
        }
        let claims = token.claims().map_err(|_| TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.contains(&self.service) {
            return Err(TokenError::Audience);
        }
        let now = oci::timestamp::now_unix();
        if now > claims.exp + LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::super::jwt::Audience;
    use super::super::keys::SigningKey;
    use super::super::scope::ResourceActions;
    use super::*;

    fn signing_key(dir: &Path) -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let path = dir.join("key.pem");
        std::fs::write(
            &path,
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(der.as_ref())
            ),
        )
        .unwrap();
        SigningKey::load(&path).unwrap()
    }

    fn claims(exp_in: i64) -> Claims {
        let now = oci::timestamp::now_unix();
        Claims {
            iss: "issuer".into(),
            sub: "alice".into(),
            aud: Audience::One("svc".into()),
            exp: now + exp_in,
            nbf: Some(now),
            iat: Some(now),
            jti: "1".into(),
            access: vec![ResourceActions::repository("a", &["pull"])],
            pwd: None,
        }
    }

    #[test]
    fn checks_key_signature_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let key = signing_key(dir.path());
        let other_dir = dir.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        let other = signing_key(&other_dir);
        let mut verifier = TokenVerifier {
            trust: TrustStore::default(),
            issuer: "issuer".into(),
            service: "svc".into(),
            algorithms: Vec::new(),
        };
        verifier.trust.add_key(None, key.public.clone());

        let good = jwt::encode(&key, &claims(300)).unwrap();
        assert_eq!(verifier.verify(&good).unwrap().sub, "alice");

        let expired = jwt::encode(&key, &claims(-120)).unwrap();
        assert_eq!(verifier.verify(&expired).unwrap_err(), TokenError::Expired);

        let mut wrong_aud = claims(300);
        wrong_aud.aud = Audience::Many(vec!["elsewhere".into()]);
        let t = jwt::encode(&key, &wrong_aud).unwrap();
        assert_eq!(verifier.verify(&t).unwrap_err(), TokenError::Audience);

        let mut wrong_iss = claims(300);
        wrong_iss.iss = "mallory".into();
        let t = jwt::encode(&key, &wrong_iss).unwrap();
        assert!(matches!(verifier.verify(&t), Err(TokenError::Issuer(_))));

        let untrusted = jwt::encode(&other, &claims(300)).unwrap();
        assert!(matches!(
            verifier.verify(&untrusted),
            Err(TokenError::UntrustedKey(_))
        ));

        // A signature moved onto other claims does not verify.
        let mut more = claims(300);
        more.access = vec![ResourceActions::repository("a", &["pull", "push"])];
        let more = jwt::encode(&key, &more).unwrap();
        let forged = format!(
            "{}.{}",
            more.rsplit_once('.').unwrap().0,
            good.rsplit_once('.').unwrap().1
        );
        assert!(verifier.verify(&forged).is_err());

        verifier.algorithms = vec![Alg::RS256];
        assert!(matches!(
            verifier.verify(&good),
            Err(TokenError::Algorithm(_))
        ));
        assert_eq!(verifier.verify("x.y").unwrap_err(), TokenError::Malformed);
    }
}
