//! Users from an Apache htpasswd file, bcrypt entries only, as distribution reads
//! `auth.htpasswd.path` (specs/distribution-configuration.md "htpasswd"): other hash types
//! are skipped with a warning. The file is read once, at start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;

use super::AuthSetupError;

pub struct Htpasswd {
    hashes: HashMap<String, String>,
    /// The SHA-256 of the last password that verified, per user. Clients send Basic
    /// credentials with every request and bcrypt is slow on purpose; this keeps one check per
    /// user and password instead of one per request.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

/// Names only: hashes stay out of logs.
impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.hashes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Arc<Htpasswd>, AuthSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthSetupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(AuthSetupError::Invalid(format!(
                    "{} line {}: expected user:hash",
                    path.display(),
                    n + 1
                )));
            };
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                tracing::warn!(file = %path.display(), user, "htpasswd entry is not bcrypt; ignored");
                continue;
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        Ok(Arc::new(Htpasswd {
            hashes,
            verified: Mutex::new(HashMap::new()),
        }))
    }

    /// Checks a password; bcrypt runs on the blocking pool, never on the async workers.
    pub async fn verify(self: &Arc<Self>, user: &str, password: &str) -> bool {
        let known = self.hashes.get(user);
        // An unknown user costs a bcrypt check too (against some entry's hash, so at the
        // file's cost), or timing would tell which users exist.
        let Some(hash) = known.or_else(|| self.hashes.values().next()).cloned() else {
            return false;
        };
        let digest: [u8; 32] = sha256(password.as_bytes());
        if known.is_some() && self.lock_verified().get(user) == Some(&digest) {
            return true;
        }
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let ok = matches && known.is_some();
        if ok {
            self.lock_verified().insert(user.to_string(), digest);
        }
        ok
    }

    /// A short fingerprint of the user's current hash: refresh tokens carry it, so a changed
    /// password (or a removed user) revokes them.
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        let hash = self.hashes.get(user)?;
        let digest = sha256(hash.as_bytes());
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// `Authorization: Basic base64(user:password)` (RFC 7617); `None` for anything else.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(
            &path,
            format!("# users\nalice:{hash}\nmd5user:$apr1$abc$def\n\n"),
        )
        .unwrap();
        let users = Htpasswd::load(&path).unwrap();
        assert!(users.verify("alice", "s3cret").await);
        assert!(users.verify("alice", "s3cret").await, "cached");
        assert!(!users.verify("alice", "wrong").await);
        assert!(!users.verify("md5user", "x").await);
        assert!(!users.verify("nobody", "x").await);
        assert!(users.fingerprint("alice").is_some());

        std::fs::write(&path, "no-colon\n").unwrap();
        assert!(Htpasswd::load(&path).is_err());
        assert!(Htpasswd::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            basic_credentials("Basic YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!"), None);
    }
}
