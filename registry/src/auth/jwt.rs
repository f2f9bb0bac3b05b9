//! The token format of specs/docker-registry-auth/jwt.md: a compact JWS (RFC 7515) whose
//! header names its key (`kid` or `x5c`) and whose claims carry `access`.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::{Alg, SigningKey};
use super::scope::ResourceActions;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Standard (not URL-safe) base64 DER certificates, leaf first (RFC 7515 section 4.1.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// `aud` is a string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, service: &str) -> bool {
        match self {
            Audience::One(a) => a == service,
            Audience::Many(all) => all.iter().any(|a| a == service),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// Ours, in refresh tokens only: the fingerprint of the user's password hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("signing failed")]
    Sign,
}

/// A token split into its parts; nothing in it is trusted until the signature is checked.
#[derive(Debug)]
pub struct Unverified<'a> {
    pub header: Header,
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
    claims: &'a str,
}

impl<'a> Unverified<'a> {
    pub fn parse(token: &'a str) -> Result<Unverified<'a>, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let signing_input = &token[..header.len() + 1 + claims.len()];
        let header: Header = decode_json(header).ok_or(JwtError::Malformed("header"))?;
        let signature = B64URL
            .decode(signature)
            .map_err(|_| JwtError::Malformed("signature"))?;
        Ok(Unverified {
            header,
            signing_input,
            signature,
            claims,
        })
    }

    /// The claims; call only after the signature verified.
    pub fn claims(&self) -> Result<Claims, JwtError> {
        decode_json(self.claims).ok_or(JwtError::Malformed("claims"))
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = B64URL.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Signs `claims` as jwt.md describes: compact JSON header and claims, base64url, joined.
pub fn encode(key: &SigningKey, claims: &Claims) -> Result<String, JwtError> {
    let header = Header {
        alg: key.alg.name().to_string(),
        typ: Some("JWT".into()),
        kid: Some(key.kid.clone()),
        x5c: None,
    };
    let header = serde_json::to_vec(&header).map_err(|_| JwtError::Sign)?;
    let claims = serde_json::to_vec(claims).map_err(|_| JwtError::Sign)?;
    let input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
    let signature = key.sign(input.as_bytes()).map_err(|_| JwtError::Sign)?;
    Ok(format!("{input}.{}", B64URL.encode(signature)))
}

/// The algorithm a header names, if we implement it.
pub fn algorithm(header: &Header) -> Option<Alg> {
    Alg::from_name(&header.alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        // jwt.md's example token (ES256).
        let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiIsImtpZCI6IlBZWU86VEVXVTpWN0pIOjI2SlY6QVFUWjpMSkMzOlNYVko6WEdIQTozNEYyOjJMQVE6WlJNSzpaN1E2In0.eyJpc3MiOiJhdXRoLmRvY2tlci5jb20iLCJzdWIiOiJqbGhhd24iLCJhdWQiOiJyZWdpc3RyeS5kb2NrZXIuY29tIiwiZXhwIjoxNDE1Mzg3MzE1LCJuYmYiOjE0MTUzODcwMTUsImlhdCI6MTQxNTM4NzAxNSwianRpIjoidFlKQ08xYzZjbnl5N2tBbjBjN3JLUGdiVjFIMWJGd3MiLCJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6InNhbWFsYmEvbXktYXBwIiwiYWN0aW9ucyI6WyJwdXNoIl19XX0.QhflHPfbd6eVF4lM9bwYpFZIV0PfikbyXuLx959ykRTBpe3CYnzs6YBK8FToVb5R47920PVLrh8zuLzdCr9t3w";
        let t = Unverified::parse(token).unwrap();
        assert_eq!(t.header.alg, "ES256");
        assert_eq!(
            t.header.kid.as_deref(),
            Some("PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6")
        );
        assert_eq!(t.signature.len(), 64);
        assert!(token.starts_with(t.signing_input));
        assert_eq!(t.signing_input.matches('.').count(), 1);
        let c = t.claims().unwrap();
        assert_eq!(c.iss, "auth.docker.com");
        assert!(c.aud.contains("registry.docker.com"));
        assert_eq!(c.access[0].name, "samalba/my-app");
        assert!(Unverified::parse("a.b").is_err());
        assert!(Unverified::parse("!!.b.c").is_err());
    }
}
