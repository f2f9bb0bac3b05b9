//! Bearer tokens (token.md, oauth.md): fetched from the realm a challenge names, for exactly
//! the scopes an operation needs, and cached per scope set until they expire.

use std::time::Duration;

use oci::registry_auth::TokenResponse;

use crate::auth::credentials::Credentials;
use crate::error::{error_chain, registry_error_detail, ClientError};

/// What rbuild calls itself to token servers (`client_id`, token.md and oauth.md).
const CLIENT_ID: &str = "rbuild";

pub use oci::registry_auth::{TokenCache, TokenServer};

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
    answer.into_token().ok_or_else(|| {
        ClientError::protocol(
            registry,
            format!("token server {} sent no token", server.realm),
        )
    })
}
