//! Authentication and authorization, a layer in front of the API handlers.
//!
//! From the parsed route and method the layer works out the access a request needs
//! ([`scope::needed_access`]), then checks it against one provider, as distribution allows
//! one (specs/distribution-configuration.md "auth"):
//!
//! - `auth.htpasswd`: Basic credentials checked against an htpasswd file ([`htpasswd`]), then
//!   the access rules ([`rules`]);
//! - `auth.token`: bearer tokens ([`verify`]) from an external issuer (trusted through
//!   `rootcertbundle` or `jwks`) or from the built-in one ([`issuer`], turned on by
//!   `auth.token.signingkey`), whose grants follow the same access rules.
//!
//! A missing or bad identity gets 401 with a challenge; a known identity without the access
//! gets 403 DENIED ([`challenge`]).

pub mod challenge;
pub mod htpasswd;
pub mod issuer;
pub mod jwt;
pub mod keys;
pub mod rules;
pub mod scope;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{on, MethodFilter};
use axum::Router;
use serde::Deserialize;

use crate::http::route::Route;
use challenge::BearerError;
use htpasswd::{basic_credentials, Htpasswd};
use issuer::Issuer;
use keys::{Alg, SigningKey};
use rules::{AccessRuleConfig, Rules};
use scope::{covers, needed_access, ResourceActions};
use verify::{TokenVerifier, TrustStore};

/// The `auth` section. `htpasswd` and `token` keep distribution's keys; `access`, `anonymous`
/// and the built-in issuer's keys under `token` are ours (docs/REGISTRY.md "Authentication").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub htpasswd: Option<HtpasswdConfig>,
    pub token: Option<TokenConfig>,
    /// Ours: who may pull, push and delete where; without rules every user may do all.
    pub access: Vec<AccessRuleConfig>,
    /// Ours: repository globs anyone may pull without credentials.
    pub anonymous: Vec<String>,
    /// Other providers (`silly`, `none`, typos), kept to refuse them rather than serving
    /// without the protection the file asked for.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HtpasswdConfig {
    pub realm: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    /// Build the realm from the request's Host (distribution's `autoredirect`).
    pub autoredirect: bool,
    pub autoredirectpath: String,
    pub signingalgorithms: Vec<String>,
    /// Ours: the built-in issuer's private key (PEM); setting it turns the issuer on.
    pub signingkey: Option<PathBuf>,
    /// Ours: the built-in issuer's users, an htpasswd file (bcrypt).
    pub users: Option<PathBuf>,
    /// Ours: how long the built-in issuer's tokens live (at least 60s, token.md).
    #[serde(deserialize_with = "crate::config::go_duration")]
    pub expiration: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            realm: String::new(),
            service: String::new(),
            issuer: String::new(),
            rootcertbundle: None,
            jwks: None,
            autoredirect: false,
            autoredirectpath: "/auth/token/".into(),
            signingalgorithms: Vec::new(),
            signingkey: None,
            users: None,
            expiration: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The configured access controller.
#[derive(Debug)]
pub struct Auth {
    provider: Provider,
    rules: Arc<Rules>,
}

#[derive(Debug)]
enum Provider {
    Basic {
        realm: String,
        users: Arc<Htpasswd>,
    },
    Bearer {
        realm: Realm,
        service: String,
        verifier: TokenVerifier,
        /// The built-in issuer, when `signingkey` is set.
        issuer: Option<BuiltInIssuer>,
    },
}

#[derive(Debug)]
struct BuiltInIssuer {
    /// Where it answers: the path of the realm.
    path: String,
    issuer: Arc<Issuer>,
}

#[derive(Debug)]
enum Realm {
    Fixed(String),
    /// distribution's `autoredirect`: the request's own host and this path.
    FromHost {
        path: String,
        tls: bool,
    },
}

impl Auth {
    /// `None` when no provider is configured: the registry is open, as distribution's is.
    /// `tls` tells an `autoredirect` realm which scheme the listener speaks.
    pub fn from_config(config: &AuthConfig, tls: bool) -> Result<Option<Auth>, AuthSetupError> {
        if let Some(name) = config.other.keys().find(|k| k.as_str() != "none") {
            return Err(AuthSetupError::Invalid(format!(
                "auth.{name} is not supported; use auth.htpasswd or auth.token"
            )));
        }
        let rules = Arc::new(Rules::new(&config.access, &config.anonymous)?);
        let has_rules = !config.access.is_empty() || !config.anonymous.is_empty();
        let provider = match (&config.htpasswd, &config.token) {
            (Some(_), Some(_)) => {
                return Err(AuthSetupError::Invalid(
                    "configure one of auth.htpasswd and auth.token, not both".into(),
                ))
            }
            (None, None) if has_rules => {
                return Err(AuthSetupError::Invalid(
                    "auth.access and auth.anonymous need auth.htpasswd or auth.token".into(),
                ))
            }
            (None, None) => return Ok(None),
            (Some(h), None) => {
                if h.realm.is_empty() {
                    return Err(AuthSetupError::Invalid(
                        "auth.htpasswd.realm is empty".into(),
                    ));
                }
                Provider::Basic {
                    realm: h.realm.clone(),
                    users: Htpasswd::load(&h.path)?,
                }
            }
            (None, Some(t)) => bearer_provider(t, tls, &rules, has_rules)?,
        };
        Ok(Some(Auth { provider, rules }))
    }

    /// Checks a request needing `needed`; `Err` is the response to send instead (boxed: a
    /// Response is large).
    async fn check(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        needed: &[ResourceActions],
    ) -> Result<(), Box<Response>> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match &self.provider {
            Provider::Basic { realm, users } => {
                let challenge = challenge::basic(realm);
                match authorization.and_then(basic_credentials) {
                    // /v2/ always challenges a caller without credentials: that is how
                    // docker learns to send them.
                    None if !needed.is_empty() && self.rules.allows(None, needed) => Ok(()),
                    None => Err(Box::new(challenge::unauthorized(
                        &challenge,
                        needed,
                        "authentication required",
                    ))),
                    Some((user, password)) => {
                        if !users.verify(&user, &password).await {
                            tracing::debug!(user, "bad credentials");
                            Err(Box::new(challenge::unauthorized(
                                &challenge,
                                needed,
                                "invalid username or password",
                            )))
                        } else if self.rules.allows(Some(&user), needed) {
                            Ok(())
                        } else {
                            Err(Box::new(challenge::denied(needed)))
                        }
                    }
                }
            }
            Provider::Bearer {
                realm,
                service,
                verifier,
                issuer,
                ..
            } => {
                let realm = realm.url(headers, uri);
                let refuse = |error: Option<BearerError>, message: &str| {
                    let c = challenge::bearer(&realm, service, needed, error);
                    Box::new(challenge::unauthorized(&c, needed, message))
                };
                let token = authorization.and_then(|a| {
                    let (scheme, token) = a.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                });
                let Some(token) = token else {
                    return Err(refuse(None, "authentication required"));
                };
                let claims = verifier.verify(token).map_err(|e| {
                    tracing::debug!(error = %e, "token refused");
                    refuse(Some(BearerError::InvalidToken), &e.to_string())
                })?;
                if covers(&claims.access, needed) {
                    return Ok(());
                }
                // Our own issuer would not grant more to this user: a new token cannot help.
                // For anyone else (anonymous, or an external issuer's user) a token with the
                // challenged scope might.
                let user = Some(claims.sub.as_str()).filter(|s| !s.is_empty());
                if issuer.is_some() && user.is_some() && !self.rules.allows(user, needed) {
                    return Err(Box::new(challenge::denied(needed)));
                }
                Err(refuse(
                    Some(BearerError::InsufficientScope),
                    "insufficient scope",
                ))
            }
        }
    }

    fn built_in_issuer(&self) -> Option<&BuiltInIssuer> {
        match &self.provider {
            Provider::Bearer { issuer, .. } => issuer.as_ref(),
            Provider::Basic { .. } => None,
        }
    }
}

fn bearer_provider(
    t: &TokenConfig,
    tls: bool,
    rules: &Arc<Rules>,
    has_rules: bool,
) -> Result<Provider, AuthSetupError> {
    let invalid = |m: &str| AuthSetupError::Invalid(format!("auth.token: {m}"));
    if t.service.is_empty() || t.issuer.is_empty() {
        return Err(invalid("service and issuer are required"));
    }
    if t.realm.is_empty() && !t.autoredirect {
        return Err(invalid("realm is required (or autoredirect: true)"));
    }
    if t.signingkey.is_none() && t.rootcertbundle.is_none() && t.jwks.is_none() {
        return Err(invalid(
            "nothing to trust: set rootcertbundle or jwks, or signingkey for the built-in issuer",
        ));
    }
    if t.signingkey.is_none() && (has_rules || t.users.is_some()) {
        return Err(invalid(
            "auth.access, auth.anonymous and auth.token.users are for the built-in issuer (set signingkey); an external issuer decides access itself",
        ));
    }
    if t.expiration < Duration::from_secs(60) {
        return Err(invalid("expiration must be at least 60s (token.md)"));
    }
    let algorithms = t
        .signingalgorithms
        .iter()
        .map(|name| {
            Alg::from_name(name).ok_or_else(|| {
                invalid(&format!(
                    "signing algorithm {name:?} is not supported (RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut trust = TrustStore::default();
    if let Some(bundle) = &t.rootcertbundle {
        trust.add_bundle(bundle)?;
    }
    if let Some(jwks) = &t.jwks {
        trust.add_jwks(jwks)?;
    }
    let realm = if t.autoredirect {
        Realm::FromHost {
            path: t.autoredirectpath.clone(),
            tls,
        }
    } else {
        Realm::Fixed(t.realm.clone())
    };
    let issuer = match &t.signingkey {
        None => None,
        Some(key_path) => {
            let key = SigningKey::load(key_path)?;
            let users = t.users.as_deref().map(Htpasswd::load).transpose()?;
            let path = match &realm {
                Realm::FromHost { path, .. } => path.clone(),
                Realm::Fixed(url) => url_path(url).ok_or_else(|| {
                    invalid("the built-in issuer serves at the realm's path; realm must be an http(s) URL with a path")
                })?,
            };
            let trimmed = path.trim_end_matches('/');
            if !path.starts_with('/')
                || trimmed.is_empty()
                || trimmed == "/v2"
                || trimmed.starts_with("/v2/")
                || !path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
            {
                return Err(invalid(&format!("unusable token path {path:?}")));
            }
            let issuer = Issuer::new(
                key,
                users,
                rules.clone(),
                &t.issuer,
                &t.service,
                t.expiration,
            );
            let (kid, public) = issuer.public_key();
            trust.add_key(Some(kid.to_string()), public.clone());
            Some(BuiltInIssuer {
                path,
                issuer: Arc::new(issuer),
            })
        }
    };
    Ok(Provider::Bearer {
        realm,
        service: t.service.clone(),
        verifier: TokenVerifier {
            trust,
            issuer: t.issuer.clone(),
            service: t.service.clone(),
            algorithms,
        },
        issuer,
    })
}

impl Realm {
    fn url(&self, headers: &HeaderMap, uri: &Uri) -> String {
        match self {
            Realm::Fixed(url) => url.clone(),
            Realm::FromHost { path, tls } => {
                // HTTP/2 carries the host in the URI's authority rather than a Host header.
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| uri.authority().map(|a| a.as_str()))
                    .unwrap_or("localhost");
                // A proxy in front says what the client spoke; otherwise our listener's.
                let scheme = headers
                    .get("X-Forwarded-Proto")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(if *tls { "https" } else { "http" });
                format!("{scheme}://{host}{path}")
            }
        }
    }
}

/// The path of an `http(s)://host[:port]/path[?query]` URL.
fn url_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Some(path.to_string())
}

/// Puts `auth` in front of every route of `router`, and mounts the built-in issuer's endpoint
/// outside it. The hook of http/mod.rs.
pub fn protect(router: Router, auth: Option<Arc<Auth>>) -> Router {
    let Some(auth) = auth else {
        return router;
    };
    let router = router.layer(middleware::from_fn_with_state(auth.clone(), require));
    let Some(built_in) = auth.built_in_issuer() else {
        return router;
    };
    // distribution's default path ends in '/', clients may drop it: answer both spellings.
    let trimmed = built_in.path.trim_end_matches('/');
    let mut router = router;
    for path in [trimmed.to_string(), format!("{trimmed}/")] {
        if path.is_empty() || path == "/" {
            continue;
        }
        let issuer = built_in.issuer.clone();
        router = router.route(
            &path,
            on(
                MethodFilter::GET.or(MethodFilter::POST),
                move |req: Request| async move { issuer.handle(req).await },
            ),
        );
    }
    router
}

async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let Some(route) = Route::parse(req.uri().path()) else {
        // Not an API path: the handler answers 404 without looking at anything.
        return next.run(req).await;
    };
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let needed = needed_access(&route, req.method(), &query);
    match auth.check(req.headers(), req.uri(), &needed).await {
        Ok(()) => next.run(req).await,
        Err(refusal) => *refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> AuthConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let err = |yaml: &str| {
            Auth::from_config(&parse(yaml), false)
                .unwrap_err()
                .to_string()
        };
        assert!(err("silly:\n  realm: r\n  service: s\n").contains("auth.silly"));
        assert!(err("anonymous: [\"public/*\"]\n").contains("need auth.htpasswd"));
        assert!(
            err("token:\n  realm: http://x/t\n  service: s\n  issuer: i\n")
                .contains("nothing to trust")
        );
        assert!(err(
            "token:\n  realm: http://x/t\n  service: s\n  issuer: i\n  jwks: /nonexistent\naccess:\n  - repository: '**'\n    users: ['*']\n    actions: [pull]\n"
        )
        .contains("built-in issuer"));
        assert!(
            err("htpasswd:\n  realm: r\n  path: /nonexistent/htpasswd\n").contains("/nonexistent")
        );
        assert!(Auth::from_config(&parse("none: {}\n"), false)
            .unwrap()
            .is_none());
        assert!(Auth::from_config(&AuthConfig::default(), false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn url_paths() {
        assert_eq!(
            url_path("http://127.0.0.1:5000/auth/token?x=1").as_deref(),
            Some("/auth/token")
        );
        assert_eq!(url_path("https://h/").as_deref(), Some("/"));
        assert_eq!(url_path("https://h"), None);
        assert_eq!(url_path("ftp://h/x"), None);
    }
}
