//! The built-in token server (specs/docker-registry-auth/token.md and oauth.md), enabled by
//! `auth.token.signingkey` and served at the path of `auth.token.realm`:
//!
//! - `GET ?service=&scope=…&offline_token=` with Basic credentials or none (anonymous);
//! - `POST` form with `grant_type=password` (username, password) or `refresh_token`.
//!
//! Each requested scope is intersected with what `auth.access` / `auth.anonymous` grant;
//! having less than asked for is not an error (token.md), the registry refuses later.
//! Refresh tokens are JWTs too, for the audience `refresh:<service>` so the registry never
//! accepts one as an access token; they carry a fingerprint of the user's password hash, so
//! changing the password or removing the user revokes them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, FromRequest, Query, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::challenge;
use super::htpasswd::{basic_credentials, Htpasswd};
use super::jwt::{self, Audience, Claims};
use super::keys::SigningKey;
use super::rules::Rules;
use super::scope::{parse_scope_list, scope_list, ResourceActions};
use super::verify::{TokenVerifier, TrustStore};

/// Refresh tokens do not expire (token.md); this is only the JWT's required `exp`.
const REFRESH_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug)]
pub struct Issuer {
    key: SigningKey,
    users: Option<Arc<Htpasswd>>,
    rules: Arc<Rules>,
    issuer: String,
    service: String,
    expiration: Duration,
    refresh: TokenVerifier,
}

/// Who asked: a user whose password (or refresh token) checked out, or nobody.
type Subject = Option<String>;
/// The answer to a token request that is refused (boxed: a Response is large).
type Refusal = Box<Response>;

impl Issuer {
    pub fn new(
        key: SigningKey,
        users: Option<Arc<Htpasswd>>,
        rules: Arc<Rules>,
        issuer: &str,
        service: &str,
        expiration: Duration,
    ) -> Issuer {
        let mut trust = TrustStore::default();
        trust.add_key(Some(key.kid.clone()), key.public.clone());
        let refresh = TokenVerifier {
            trust,
            issuer: issuer.to_string(),
            service: refresh_audience(service),
            algorithms: vec![key.alg],
        };
        Issuer {
            key,
            users,
            rules,
            issuer: issuer.to_string(),
            service: service.to_string(),
            expiration,
            refresh,
        }
    }

    pub fn public_key(&self) -> (&str, &super::keys::PublicKey) {
        (&self.key.kid, &self.key.public)
    }

    pub async fn handle(&self, req: Request) -> Response {
        let result = match *req.method() {
            Method::GET => self.get(req).await,
            Method::POST => self.post(req).await,
            _ => Err(oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "use GET or POST",
            )),
        };
        result.unwrap_or_else(|refusal| *refusal)
    }

    /// token.md "Requesting a Token".
    async fn get(&self, req: Request) -> Result<Response, Refusal> {
        let params = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .map(|q| q.0)
            .map_err(|e| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()))?;
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        self.check_service(param("service"))?;
        let subject = self.basic_subject(req.headers()).await?;
        let requested: Vec<ResourceActions> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| parse_scope_list(v))
            .collect();
        let offline = param("offline_token").is_some_and(|v| v == "true");
        let (token, granted) = self.access_token(&subject, &requested)?;
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": self.expiration.as_secs(),
            "issued_at": oci::timestamp::format_rfc3339(oci::timestamp::now_unix()),
            "scope": scope_list(&granted),
        });
        if let (true, Some(user)) = (offline, &subject) {
            body["refresh_token"] = json!(self.refresh_token(user)?);
        }
        Ok(axum::Json(body).into_response())
    }

    /// oauth.md "Getting a token": the password and refresh_token grants.
    async fn post(&self, req: Request) -> Result<Response, Refusal> {
        // axum's default body limit (2 MiB) bounds the form.
        let Form(form) = Form::<Vec<(String, String)>>::from_request(req, &())
            .await
            .map_err(|e| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.body_text()))?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        self.check_service(field("service"))?;
        let invalid_grant = || {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid credentials",
            )
        };
        let (subject, refresh_token) = match field("grant_type") {
            Some("password") => {
                let (Some(user), Some(password)) = (field("username"), field("password")) else {
                    return Err(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the password grant needs username and password",
                    ));
                };
                if !self.password_ok(user, password).await {
                    return Err(invalid_grant());
                }
                let refresh = match field("access_type") {
                    Some("offline") => Some(self.refresh_token(user)?),
                    _ => None,
                };
                (user.to_string(), refresh)
            }
            Some("refresh_token") => {
                let token = field("refresh_token").ok_or_else(invalid_grant)?;
                let user = self.refresh_subject(token).ok_or_else(invalid_grant)?;
                // oauth.md: the refresh grant answers with the same refresh token.
                (user, Some(token.to_string()))
            }
            other => {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!("grant_type {other:?} is not supported"),
                ))
            }
        };
        let requested = field("scope").map(parse_scope_list).unwrap_or_default();
        let (token, granted) = self.access_token(&Some(subject), &requested)?;
        let mut body = json!({
            "access_token": token,
            "token": token,
            "scope": scope_list(&granted),
            "expires_in": self.expiration.as_secs(),
            "issued_at": oci::timestamp::format_rfc3339(oci::timestamp::now_unix()),
        });
        if let Some(refresh) = refresh_token {
            body["refresh_token"] = json!(refresh);
        }
        Ok(axum::Json(body).into_response())
    }

    fn check_service(&self, service: Option<&str>) -> Result<(), Refusal> {
        match service {
            Some(s) if s != self.service => Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "unknown service {s:?}; this issuer serves {:?}",
                    self.service
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Basic credentials, if sent, must be right (token.md: a failed authentication is 401).
    async fn basic_subject(&self, headers: &HeaderMap) -> Result<Subject, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let creds = value.to_str().ok().and_then(basic_credentials);
        match creds {
            Some((user, password)) if self.password_ok(&user, &password).await => Ok(Some(user)),
            _ => {
                tracing::debug!("token request with bad credentials");
                Err(Box::new(challenge::unauthorized(
                    // The realm of the token endpoint's own Basic challenge: the service.
                    &challenge::basic(&self.service),
                    &[],
                    "invalid username or password",
                )))
            }
        }
    }

    async fn password_ok(&self, user: &str, password: &str) -> bool {
        match &self.users {
            Some(users) => users.verify(user, password).await,
            None => false,
        }
    }

    fn access_token(
        &self,
        subject: &Subject,
        requested: &[ResourceActions],
    ) -> Result<(String, Vec<ResourceActions>), Refusal> {
        let granted: Vec<ResourceActions> = requested
            .iter()
            .filter_map(|r| self.rules.grant(subject.as_deref(), r))
            .collect();
        let now = oci::timestamp::now_unix();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.clone().unwrap_or_default(),
            aud: Audience::One(self.service.clone()),
            exp: now + self.expiration.as_secs() as i64,
            nbf: Some(now),
            iat: Some(now),
            jti: random_id(),
            access: granted.clone(),
            pwd: None,
        };
        let token = jwt::encode(&self.key, &claims).map_err(|_| signing_failed())?;
        Ok((token, granted))
    }

    fn refresh_token(&self, user: &str) -> Result<String, Refusal> {
        let now = oci::timestamp::now_unix();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.to_string(),
            aud: Audience::One(refresh_audience(&self.service)),
            exp: now + REFRESH_LIFETIME.as_secs() as i64,
            nbf: Some(now),
            iat: Some(now),
            jti: random_id(),
            access: Vec::new(),
            pwd: self.users.as_ref().and_then(|u| u.fingerprint(user)),
        };
        jwt::encode(&self.key, &claims).map_err(|_| signing_failed())
    }

    /// The user a refresh token was issued to, while their password is unchanged.
    fn refresh_subject(&self, token: &str) -> Option<String> {
        let claims = self.refresh.verify(token).ok()?;
        let current = self.users.as_ref()?.fingerprint(&claims.sub)?;
        (claims.pwd.as_deref() == Some(current.as_str())).then_some(claims.sub)
    }
}

fn refresh_audience(service: &str) -> String {
    format!("refresh:{service}")
}

fn random_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

fn signing_failed() -> Refusal {
    tracing::error!("signing a token failed");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "could not sign the token",
    )
}

/// RFC 6749 section 5.2's error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Refusal {
    Box::new(
        (
            status,
            axum::Json(json!({ "error": error, "error_description": description })),
        )
            .into_response(),
    )
}
