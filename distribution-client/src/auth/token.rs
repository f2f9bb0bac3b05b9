//! Bearer tokens (token.md, oauth.md): fetched from the realm a challenge names, for exactly
//! the scopes an operation needs, and cached per scope set until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::credentials::Credentials;
use crate::error::{error_chain, registry_error_detail, ClientError};

/// token.md, "Token Response Fields": a token without `expires_in` lives 60 seconds.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire, so none expires in flight.
const RENEW_MARGIN: Duration = Duration::from_secs(10);
/// What rbuild calls itself to token servers (`client_id`, token.md and oauth.md).
const CLIENT_ID: &str = "rbuild";

/// Where tokens come from: the `realm` and `service` of a `Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenServer {
    pub realm: String,
    pub service: Option<String>,
}

/// A token server's answer; `access_token` is the OAuth2 spelling of `token`.
#[derive(Debug, serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens by scope set.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, scopes: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(scopes)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(token, _)| token.clone())
    }

    pub fn insert(&self, scopes: &str, token: String, lifetime: Duration) {
        let margin = RENEW_MARGIN.min(lifetime / 4);
        let expires = Instant::now() + lifetime - margin;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(scopes.to_string(), (token, expires));
    }

    pub fn forget(&self, scopes: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(scopes);
    }
}

/// Asks `server` for a token covering `scopes`. With an identity token this is the OAuth2
/// refresh grant (oauth.md, "Refresh token format": POST); otherwise the GET of token.md,
/// with Basic credentials when we have them and anonymously when not.
pub fn fetch(
    http: &reqwest::blocking::Client,
    registry: &str,
    server: &TokenServer,
    scopes: &[String],
    credentials: Option<&Credentials>,
) -> Result<(String, Duration), ClientError> {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(service) = &server.service {
        params.push(("service", service));
    }
    params.push(("client_id", CLIENT_ID));
    let joined_scopes = scopes.join(" ");
    let request = match credentials {
        Some(Credentials::IdentityToken { token, .. }) => {
            params.push(("grant_type", "refresh_token"));
            params.push(("refresh_token", token));
            // oauth.md: scopes are space-separated in one form field.
            if !scopes.is_empty() {
                params.push(("scope", &joined_scopes));
            }
            http.post(&server.realm).form(&params)
        }
        other => {
            // token.md: one `scope` query parameter per scope.
            for scope in scopes {
                params.push(("scope", scope));
            }
            let mut request = http.get(&server.realm);
            if let Some(Credentials::Basic { username, password }) = other {
                params.push(("account", username));
                request = request.basic_auth(username, Some(password));
            }
            request.query(&params)
        }
    };
    let response = request.send().map_err(|e| ClientError::Http {
        registry: registry.to_string(),
        detail: format!("token server {}: {}", server.realm, error_chain(&e)),
    })?;
    let status = response.status();
    let body = response
        .bytes()
        .map_err(|e| ClientError::http(registry, &e))?;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(ClientError::Unauthorized {
            registry: registry.to_string(),
            detail: format!(
                "the token server {} refused the credentials: {}",
                server.realm,
                registry_error_detail(&body)
            ),
        });
    }
    if !status.is_success() {
        return Err(ClientError::protocol(
            registry,
            format!(
                "token server {}: HTTP {status}: {}",
                server.realm,
                registry_error_detail(&body)
            ),
        ));
    }
    let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
        ClientError::protocol(
            registry,
            format!("token server {}: invalid answer: {e}", server.realm),
        )
    })?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ClientError::protocol(
                registry,
                format!("token server {} sent no token", server.realm),
            )
        })?;
    let lifetime = answer
        .expires_in
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires() {
        let cache = TokenCache::default();
        cache.insert("a", "t1".into(), Duration::from_secs(60));
        assert_eq!(cache.get("a").as_deref(), Some("t1"));
        assert_eq!(cache.get("b"), None);
        // A token that lives less than its renewal margin is still used for most of its life.
        cache.insert("c", "t2".into(), Duration::from_millis(40));
        assert_eq!(cache.get("c").as_deref(), Some("t2"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.get("c"), None);
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
    }
}
