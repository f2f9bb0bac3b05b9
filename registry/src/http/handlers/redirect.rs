//! Blob GETs and HEADs answered with `307 Temporary Redirect` to a URL of the storage backend
//! (a presigned S3 URL), as distribution's blob server does with its driver's `URLFor`: the
//! bytes then flow from storage to the client without passing through the registry.
//! Range requests are redirected as they are: the client repeats its `Range` to S3.
//!
//! Only blobs linked into the repository and stored are redirected: an unknown blob still gets
//! the spec's BLOB_UNKNOWN from us, and the mirror (proxy/) answers blobs it is still filling
//! before these handlers run.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use oci::Digest;

use super::ResponseBuilder;
use crate::error::RegistryResult;
use crate::http::AppState;
use crate::paths;
use crate::storage::StorageDriver;

/// The redirect for a blob read, or `None` when the backend serves no URLs (the filesystem,
/// or S3 with `storage.redirect.disable`) and the registry should send the bytes itself.
pub(super) async fn blob_redirect<S: StorageDriver>(
    app: &AppState<S>,
    name: &str,
    digest: &Digest,
    method: Method,
) -> RegistryResult<Option<Response>> {
    let registry = &app.registry;
    // Asked first: it is free for backends without URLs, so their reads cost nothing more.
    let Some(url) = registry
        .driver()
        .redirect_url(&paths::blob_data(digest), &method)
        .await?
    else {
        return Ok(None);
    };
    // The link and the bytes must exist, or a client would follow a URL to S3's own 404.
    registry.blob_size(name, digest).await?;
    Ok(Some(
        ResponseBuilder::empty(StatusCode::TEMPORARY_REDIRECT)
            .header("Location", url)
            .header("Docker-Content-Digest", digest.as_str())
            .build(),
    ))
}
