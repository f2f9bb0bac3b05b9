//! One registry, as an operation sees it: the HTTP client for its endpoint, what the registry
//! asked for at `GET /v2/` (distribution-spec spec.md, "Determining Support"; token.md,
//! "Requesting a Token"), and [`Session::send`], which authorizes every request for the scopes
//! the caller names and retries what a registry may refuse for a while (429, 5xx: with
//! exponential backoff, honouring `Retry-After`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client as HttpClient, RequestBuilder, Response};
use reqwest::{Method, StatusCode};

use crate::auth::challenge::{self, Challenge};
use crate::auth::credentials::{Credentials, DockerConfig};
use crate::auth::token::{self, TokenCache, TokenServer};
use crate::error::{registry_error_detail, ClientError};
use crate::hosts::{Endpoint, HostOptions, Transport};

pub use oci::registry_auth::AuthScheme;

const MAX_ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A registry's Retry-After is honoured up to this long; beyond it we would rather fail.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("rbuild/", env!("CARGO_PKG_VERSION"));

/// The entry point: hosts configuration and credentials, and one [`Session`] per registry.
pub struct Client {
    hosts: HostOptions,
    config: DockerConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// How many blobs move at once.
    pub parallel: usize,
}

impl Client {
    pub fn new(hosts: HostOptions, config: DockerConfig) -> Client {
        Client {
            hosts,
            config,
            sessions: Mutex::new(HashMap::new()),
            parallel: 4,
        }
    }

    pub fn hosts(&self) -> &HostOptions {
        &self.hosts
    }

    /// The session for `registry` (as references name it), connected on first use with the
    /// credentials docker's config holds for it.
    pub fn session(&self, registry: &str) -> Result<Arc<Session>, ClientError> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return Ok(s.clone());
        }
        let credentials = self.config.credentials(registry)?;
        let session = Arc::new(Session::connect(&self.hosts, registry, credentials)?);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_string(), session.clone());
        Ok(session)
    }
}

/// Whether a request may be sent again after a transport error or a 429/5xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Idempotent requests (GET, HEAD, PUT of a manifest or a whole blob, POST starting an
    /// upload): retried with backoff.
    Yes,
    /// Requests whose effect depends on how much of the body arrived (PATCH of a chunk): the
    /// caller asks the registry where the upload stands instead.
    No,
}

pub struct Session {
    pub endpoint: Endpoint,
    /// `scheme://host`, without a trailing slash.
    base: String,
    http: HttpClient,
    credentials: Option<Credentials>,
    scheme: Mutex<AuthScheme>,
    tokens: TokenCache,
    /// Held while a token is fetched, so that parallel transfers needing the same scopes
    /// wait for one token instead of each asking for their own.
    token_fetch: Mutex<()>,
}

impl Session {
    /// Builds the HTTP client for `registry` and pings `GET /v2/` to learn its auth scheme.
    pub fn connect(
        hosts: &HostOptions,
        registry: &str,
        credentials: Option<Credentials>,
    ) -> Result<Session, ClientError> {
        let endpoint = hosts.endpoint(registry);
        let http = http_client(hosts, &endpoint)?;
        let https = format!("https://{}", endpoint.host);
        let http_base = format!("http://{}", endpoint.host);
        let (base, ping) = match endpoint.transport {
            Transport::Https => (https.clone(), ping(&http, &https, registry)),
            Transport::Http => (http_base.clone(), ping(&http, &http_base, registry)),
            // dockerd's rule for insecure registries: HTTPS when the host speaks it, else HTTP.
            Transport::InsecureHttps => match ping(&http, &https, registry) {
                Ok(r) => (https, Ok(r)),
                Err(_) => (http_base.clone(), ping(&http, &http_base, registry)),
            },
            // The HTTPS error is the one worth reporting when neither answers.
            Transport::HttpsOrHttp => match ping(&http, &https, registry) {
                Ok(r) => (https, Ok(r)),
                Err(tls_error) => match ping(&http, &http_base, registry) {
                    Ok(r) => (http_base.clone(), Ok(r)),
                    Err(_) => (https, Err(tls_error)),
                },
            },
        };
        let scheme = ping?;
        Ok(Session {
            endpoint,
            base,
            http,
            credentials,
            scheme: Mutex::new(scheme),
            tokens: TokenCache::default(),
            token_fetch: Mutex::new(()),
        })
    }

    pub fn registry(&self) -> &str {
        &self.endpoint.registry
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    pub fn scheme(&self) -> AuthScheme {
        self.scheme
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `base/v2/<repository>/<rest>`.
    pub fn url(&self, repository: &str, rest: &str) -> String {
        format!("{}/v2/{repository}/{rest}", self.base)
    }

    /// `/v2/` of this registry.
    pub fn root_url(&self) -> String {
        format!("{}/v2/", self.base)
    }

    /// An upload `Location` made absolute (spec.md: it may be relative to the registry).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Sends a request built by `build` (called again for every attempt, so bodies are made
    /// afresh), authorized for `scopes`. A 401 is answered once by re-reading the challenge
    /// and fetching a new token; 429 and 5xx are retried when `retry` allows. Every other
    /// answer is returned for the caller to judge.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        retry: Retry,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut attempt = 0;
        let mut reauthorized = false;
        loop {
            let request = self.authorize(build(self.http.request(method.clone(), url)), scopes)?;
            let response = match request.send() {
                Ok(r) => r,
                Err(e) if retry == Retry::Yes && attempt + 1 < MAX_ATTEMPTS => {
                    tracing::debug!("{method} {url}: {e}; retrying");
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(ClientError::http(self.registry(), &e)),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenges = response
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(challenge::parse)
                    .collect::<Vec<_>>();
                let detail = registry_error_detail(&response.bytes().unwrap_or_default());
                // A token can lapse early or lack a scope the registry now wants: ask once more.
                if !reauthorized {
                    if let Some(scheme) = AuthScheme::from_challenges(&challenges) {
                        reauthorized = true;
                        self.tokens.forget(&scopes.join(" "));
                        *self.scheme.lock().unwrap_or_else(|p| p.into_inner()) = scheme;
                        continue;
                    }
                }
                return Err(self.unauthorized(detail));
            }
            let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if transient && retry == Retry::Yes && attempt + 1 < MAX_ATTEMPTS {
                let wait = retry_after(&response).unwrap_or_else(|| backoff(attempt));
                tracing::debug!("{method} {url}: HTTP {status}; retrying in {wait:?}");
                std::thread::sleep(wait);
                attempt += 1;
                continue;
            }
            return Ok(response);
        }
    }

    fn unauthorized(&self, detail: String) -> ClientError {
        let detail = match &self.credentials {
            None => format!(
                "{detail} (not logged in: run `rbuild login {}`)",
                self.registry()
            ),
            Some(c) => format!("{detail} (as user {:?})", c.username()),
        };
        ClientError::Unauthorized {
            registry: self.registry().to_string(),
            detail,
        }
    }

    fn authorize(
        &self,
        request: RequestBuilder,
        scopes: &[String],
    ) -> Result<RequestBuilder, ClientError> {
        Ok(match self.scheme() {
            AuthScheme::Anonymous => request,
            AuthScheme::Basic => match &self.credentials {
                Some(Credentials::Basic { username, password }) => {
                    request.basic_auth(username, Some(password))
                }
                // An identity token is no Basic password; let the registry say no.
                _ => request,
            },
            AuthScheme::Bearer(server) => request.bearer_auth(self.token(&server, scopes)?),
        })
    }

    /// A token for exactly `scopes`, from the cache while it lives.
    pub fn token(&self, server: &TokenServer, scopes: &[String]) -> Result<String, ClientError> {
        let key = scopes.join(" ");
        if let Some(token) = self.tokens.get(&key) {
            return Ok(token);
        }
        let _fetching = self.token_fetch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = self.tokens.get(&key) {
            return Ok(token);
        }
        let (token, lifetime) = token::fetch(
            &self.http,
            self.registry(),
            server,
            scopes,
            self.credentials.as_ref(),
        )?;
        self.tokens.insert(&key, token.clone(), lifetime);
        Ok(token)
    }

    /// Turns an unexpected answer into an error naming what was asked for.
    pub fn fail(&self, response: Response, method: &str, what: &str) -> ClientError {
        let status = response.status();
        let path = response.url().path().to_string();
        let detail = registry_error_detail(&response.bytes().unwrap_or_default());
        let registry = self.registry().to_string();
        match status {
            StatusCode::NOT_FOUND => ClientError::NotFound {
                registry,
                what: what.to_string(),
                detail,
            },
            StatusCode::FORBIDDEN => ClientError::Denied {
                registry,
                detail: format!("{what}: {detail}"),
            },
            StatusCode::UNAUTHORIZED => self.unauthorized(detail),
            _ => ClientError::Status {
                registry,
                method: method.to_string(),
                path,
                status: status.as_u16(),
                detail,
            },
        }
    }
}

/// `GET /v2/`: 200 means anonymous access, 401 names the scheme to use.
fn ping(http: &HttpClient, base: &str, registry: &str) -> Result<AuthScheme, ClientError> {
    let url = format!("{base}/v2/");
    let mut attempt = 0;
    let response = loop {
        match http.get(&url).send() {
            Ok(r)
                if (r.status().is_server_error()
                    || r.status() == StatusCode::TOO_MANY_REQUESTS)
                    && attempt + 1 < MAX_ATTEMPTS =>
            {
                std::thread::sleep(retry_after(&r).unwrap_or_else(|| backoff(attempt)));
            }
            Ok(r) => break r,
            Err(e) => return Err(ClientError::http(registry, &e)),
        }
        attempt += 1;
    };
    let status = response.status();
    if status.is_success() {
        return Ok(AuthScheme::Anonymous);
    }
    if status == StatusCode::UNAUTHORIZED {
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        return AuthScheme::from_challenges(&challenges).ok_or_else(|| {
            ClientError::protocol(
                registry,
                format!("GET {url}: 401 without a Basic or Bearer challenge"),
            )
        });
    }
    Err(ClientError::protocol(
        registry,
        format!("GET {url}: HTTP {status}: not an OCI distribution registry"),
    ))
}

fn http_client(hosts: &HostOptions, endpoint: &Endpoint) -> Result<HttpClient, ClientError> {
    let mut builder = HttpClient::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        // Blobs are gigabytes: no overall deadline, a stalled connection fails on its own.
        .timeout(None)
        .tcp_nodelay(true);
    if endpoint.transport == Transport::InsecureHttps {
        builder = builder.danger_accept_invalid_certs(true);
    }
    for path in hosts.ca_files(&endpoint.host)? {
        let pem = std::fs::read(&path).map_err(ClientError::io(&path))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::Config {
                path: path.clone(),
                detail: format!("not a PEM certificate: {e}"),
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = hosts.client_identity(&endpoint.host) {
        let mut pem = std::fs::read(&cert).map_err(ClientError::io(&cert))?;
        pem.extend(std::fs::read(&key).map_err(ClientError::io(&key))?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| ClientError::Config {
            path: cert.clone(),
            detail: format!("client certificate and key: {e}"),
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| ClientError::http(&endpoint.registry, &e))
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and falls back to
/// our own backoff).
fn retry_after(response: &Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(10), MAX_BACKOFF);
    }
}
