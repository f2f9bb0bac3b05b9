//! One upstream registry as the mirror talks to it: an async HTTP client that answers the
//! upstream's auth challenge (Basic, or Bearer tokens from its token server, token.md) and
//! caches tokens per scope, so a pull costs the token server one request, not one per blob.

use std::time::Duration;

use oci::registry_auth::challenge;
use oci::registry_auth::{repository_scope, AuthScheme, TokenCache, TokenResponse, TokenServer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::config::UpstreamSettings;

const USER_AGENT: &str = concat!("rregistry/", env!("CARGO_PKG_VERSION"), " (mirror)");
/// What the mirror calls itself to token servers (`client_id`, token.md).
const CLIENT_ID: &str = "rregistry";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Manifests, tags and token answers are small: an upstream slower than this is treated as
/// down, so a cached tag is served instead of keeping the client waiting.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A blob body that sends nothing for this long is abandoned (the fill fails, nothing stays).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every manifest type the mirror caches; the upstream's choice is kept as it is, so an index
/// stays an index (image-spec image-index.md) with its digest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} cannot be reached: {detail}")]
    Unreachable { upstream: String, detail: String },
    #[error("upstream {upstream} answered {status} to {what}")]
    Status {
        upstream: String,
        status: StatusCode,
        what: String,
    },
    #[error("upstream {upstream}: {detail}")]
    Protocol { upstream: String, detail: String },
}

impl UpstreamError {
    /// Whether the upstream is failing rather than answering: the cases in which a cached
    /// copy is served instead (429, 5xx, auth failures, no connection).
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } | UpstreamError::Protocol { .. } => true,
            UpstreamError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::UNAUTHORIZED
                    || *status == StatusCode::FORBIDDEN
                    || status.is_server_error()
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

pub struct Upstream {
    pub settings: UpstreamSettings,
    http: reqwest::Client,
    /// Learnt from the first 401; `None` until then (requests go out anonymously).
    scheme: std::sync::Mutex<Option<AuthScheme>>,
    tokens: TokenCache,
    /// Held while a token is fetched, so that concurrent requests wait for one token.
    token_fetch: tokio::sync::Mutex<()>,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(BODY_IDLE_TIMEOUT)
            .build()?;
        Ok(Upstream {
            settings,
            http,
            scheme: std::sync::Mutex::new(None),
            tokens: TokenCache::default(),
            token_fetch: tokio::sync::Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// `METHOD /v2/<repository>/<rest>` with `headers` (`Accept`, `Range`), authorized for
    /// pulling `repository`.
    /// A 401 is answered once by reading the challenge and authorizing again. Non-success
    /// answers become [`UpstreamError::Status`]; redirects (blob CDNs) are followed.
    pub async fn send(
        &self,
        method: Method,
        repository: &str,
        rest: &str,
        headers: &[(HeaderName, &str)],
        small: bool,
    ) -> Result<Response, UpstreamError> {
        let url = format!("{}/v2/{repository}/{rest}", self.settings.remoteurl);
        let scope = repository_scope(repository, &["pull"]);
        let mut reauthorized = false;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            if small {
                request = request.timeout(SMALL_REQUEST_TIMEOUT);
            }
            let request = self.authorize(request, &scope).await?;
            let response = request.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !reauthorized {
                let challenges: Vec<_> = response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(challenge::parse)
                    .collect();
                if let Some(scheme) = AuthScheme::from_challenges(&challenges) {
                    reauthorized = true;
                    self.tokens.forget(&scope);
                    *self.scheme.lock().unwrap_or_else(|p| p.into_inner()) = Some(scheme);
                    continue;
                }
            }
            if !status.is_success() {
                return Err(UpstreamError::Status {
                    upstream: self.settings.name.clone(),
                    status,
                    what: format!("{method} {url}"),
                });
            }
            return Ok(response);
        }
    }

    async fn authorize(
        &self,
        request: RequestBuilder,
        scope: &str,
    ) -> Result<RequestBuilder, UpstreamError> {
        let scheme = self
            .scheme
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(match scheme {
            None | Some(AuthScheme::Anonymous) => request,
            Some(AuthScheme::Basic) => match &self.settings.credentials {
                Some((user, password)) => request.basic_auth(user, Some(password)),
                None => request,
            },
            Some(AuthScheme::Bearer(server)) => {
                request.bearer_auth(self.token(&server, scope).await?)
            }
        })
    }

    /// A token for `scope` from the cache, or from the token server (token.md "Requesting a
    /// Token": GET with `service` and `scope`, Basic credentials when configured).
    async fn token(&self, server: &TokenServer, scope: &str) -> Result<String, UpstreamError> {
        if let Some(token) = self.tokens.get(scope) {
            return Ok(token);
        }
        let _fetching = self.token_fetch.lock().await;
        if let Some(token) = self.tokens.get(scope) {
            return Ok(token);
        }
        let mut params: Vec<(&str, &str)> = vec![("scope", scope), ("client_id", CLIENT_ID)];
        if let Some(service) = &server.service {
            params.push(("service", service));
        }
        let mut request = self
            .http
            .get(&server.realm)
            .query(&params)
            .timeout(SMALL_REQUEST_TIMEOUT);
        if let Some((user, password)) = &self.settings.credentials {
            request = request
                .query(&[("account", user.as_str())])
                .basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status {
                upstream: self.settings.name.clone(),
                status,
                what: format!("the token request to {}", server.realm),
            });
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let (token, lifetime) = serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| UpstreamError::Protocol {
                upstream: self.settings.name.clone(),
                detail: format!("token server {} sent no token", server.realm),
            })?;
        self.tokens.insert(scope, token.clone(), lifetime);
        Ok(token)
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> UpstreamError {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        UpstreamError::Unreachable {
            upstream: self.settings.name.clone(),
            detail,
        }
    }
}

/// A header's value as text, when present and valid.
pub fn header_text<'a>(headers: &'a HeaderMap<HeaderValue>, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
