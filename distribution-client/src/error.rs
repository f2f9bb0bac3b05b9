//! Errors of the distribution client. Registry errors name the registry, and the error code and
//! message from the registry's JSON error body (distribution-spec spec.md, "Error Codes").

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{registry}: unauthorized: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("{registry}: denied: {detail}")]
    Denied { registry: String, detail: String },
    #[error("{what} not found in {registry}: {detail}")]
    NotFound {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("{registry}: {method} {path}: HTTP {status}: {detail}")]
    Status {
        registry: String,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}: {detail}")]
    Http { registry: String, detail: String },
    #[error("{registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("{registry} sent {what} with the wrong digest (expected {expected}, got {actual}): refused, nothing stored")]
    WrongDigest {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("credentials for {registry}: {detail}")]
    Credentials { registry: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error(transparent)]
    Content(#[from] oci::content::ContentError),
    #[error(transparent)]
    Store(#[from] image_store::StoreError),
    #[error(transparent)]
    Archive(#[from] oci::archive::ArchiveError),
    #[error(transparent)]
    ImageJson(#[from] oci::image::ImageJsonError),
}

impl ClientError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ClientError {
        let path = path.into();
        move |source| ClientError::Io { path, source }
    }

    pub(crate) fn protocol(registry: &str, detail: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            registry: registry.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn http(registry: &str, err: &reqwest::Error) -> ClientError {
        ClientError::Http {
            registry: registry.to_string(),
            detail: error_chain(err),
        }
    }
}

/// An error and its sources on one line: reqwest's own Display stops at "error sending request".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The `CODE: message` pairs of a registry's JSON error body, or the body itself when short.
pub(crate) fn registry_error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(no details)".to_string()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}
