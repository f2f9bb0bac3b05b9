//! The answers to requests that are not allowed: 401 with a `WWW-Authenticate` challenge
//! (RFC 7235; token.md "How to authenticate" for Bearer, RFC 7617 for Basic) or 403 DENIED,
//! with distribution-spec's error body (spec.md "Error Codes": UNAUTHORIZED, DENIED).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::scope::{scope_list, ResourceActions};

/// Why a bearer token was refused (RFC 6750 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    InvalidToken,
    InsufficientScope,
}

/// `Basic realm="…"`.
pub fn basic(realm: &str) -> String {
    format!("Basic realm={}", quote(realm))
}

/// `Bearer realm="…",service="…"[,scope="…"][,error="…"]`, the scope being exactly what the
/// request needs, so that the client asks the token server for no more and no less.
pub fn bearer(
    realm: &str,
    service: &str,
    needed: &[ResourceActions],
    error: Option<BearerError>,
) -> String {
    let mut out = format!("Bearer realm={},service={}", quote(realm), quote(service));
    if !needed.is_empty() {
        out.push_str(&format!(",scope={}", quote(&scope_list(needed))));
    }
    match error {
        Some(BearerError::InvalidToken) => out.push_str(",error=\"invalid_token\""),
        Some(BearerError::InsufficientScope) => out.push_str(",error=\"insufficient_scope\""),
        None => {}
    }
    out
}

/// 401 UNAUTHORIZED with the challenge; the detail lists the access asked for, as
/// distribution's does.
pub fn unauthorized(challenge: &str, needed: &[ResourceActions], message: &str) -> Response {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message, needed);
    if let Ok(value) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// 403 DENIED: the caller is known and not allowed; no new credentials would help.
pub fn denied(needed: &[ResourceActions]) -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "DENIED",
        "requested access to the resource is denied",
        needed,
    )
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    needed: &[ResourceActions],
) -> Response {
    let detail: Vec<_> = needed
        .iter()
        .flat_map(|r| {
            r.actions.iter().map(
                move |action| json!({ "Type": r.resource_type, "Name": r.name, "Action": action }),
            )
        })
        .collect();
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": detail }] });
    (status, axum::Json(body)).into_response()
}

/// An RFC 7230 quoted-string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_back() {
        let needed = vec![
            ResourceActions::repository("a/b", &["pull", "push"]),
            ResourceActions::repository("src", &["pull"]),
        ];
        let text = bearer(
            "http://127.0.0.1:5000/auth/token",
            "svc",
            &needed,
            Some(BearerError::InsufficientScope),
        );
        let parsed = oci::registry_auth::challenge::parse(&text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme, "bearer");
        assert_eq!(
            parsed[0].param("scope"),
            Some("repository:a/b:pull,push repository:src:pull")
        );
        assert_eq!(parsed[0].param("error"), Some("insufficient_scope"));
        assert_eq!(
            bearer("r", "s", &[], None),
            "Bearer realm=\"r\",service=\"s\""
        );
        assert_eq!(basic("my \"realm\""), r#"Basic realm="my \"realm\"""#);
    }
}
