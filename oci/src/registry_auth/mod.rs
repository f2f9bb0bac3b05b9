//! Registry authentication as both of rbuild's registry speakers need it — the blocking
//! client (`distribution-client`) and rregistry's pull-through mirror — kept free of any HTTP
//! library (`../shared/specs/docker-registry-auth/`): what a registry asks for ([`challenge`],
//! [`AuthScheme`]), what a token server answers ([`TokenResponse`]), and tokens cached per
//! scope set ([`TokenCache`]).

pub mod challenge;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use challenge::Challenge;

/// token.md, "Token Response Fields": a token without `expires_in` lives 60 seconds.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire, so none expires in flight.
const RENEW_MARGIN: Duration = Duration::from_secs(10);

/// `repository:NAME:ACTIONS` (scope.md, "Resource Scope Grammar").
pub fn repository_scope(repository: &str, actions: &[&str]) -> String {
    format!("repository:{repository}:{}", actions.join(","))
}

/// Where tokens come from: the `realm` and `service` of a `Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenServer {
    pub realm: String,
    pub service: Option<String>,
}

/// How a registry wants requests authorized, learnt from its challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    Anonymous,
    Basic,
    Bearer(TokenServer),
}

impl AuthScheme {
    /// The scheme of the first challenge we can answer; Bearer is preferred (token.md).
    pub fn from_challenges(challenges: &[Challenge]) -> Option<AuthScheme> {
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .and_then(|c| {
                c.param("realm").map(|realm| {
                    AuthScheme::Bearer(TokenServer {
                        realm: realm.to_string(),
                        service: c.param("service").map(str::to_string),
                    })
                })
            });
        bearer.or_else(|| {
            challenges
                .iter()
                .any(|c| c.scheme == "basic")
                .then_some(AuthScheme::Basic)
        })
    }
}

/// A token server's answer; `access_token` is the OAuth2 spelling of `token`.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it lives; `None` when the server sent no token.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self
            .expires_in
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Some((token, lifetime))
    }
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

    #[test]
    fn token_responses() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert_eq!(r.into_token(), Some(("x".into(), DEFAULT_TOKEN_LIFETIME)));
        let r: TokenResponse = serde_json::from_str(r#"{"token":"","expires_in":5}"#).unwrap();
        assert_eq!(r.into_token(), None);
    }

    #[test]
    fn bearer_preferred_over_basic() {
        let c = challenge::parse(r#"Basic realm="r", Bearer realm="https://t/token",service="s""#);
        assert_eq!(
            AuthScheme::from_challenges(&c),
            Some(AuthScheme::Bearer(TokenServer {
                realm: "https://t/token".into(),
                service: Some("s".into())
            }))
        );
        assert_eq!(
            AuthScheme::from_challenges(&challenge::parse("Basic realm=x")),
            Some(AuthScheme::Basic)
        );
        assert_eq!(AuthScheme::from_challenges(&[]), None);
    }
}
