//! `rbuild login` and `logout`: credentials are checked against the registry before they are
//! written, through the same challenge flow every request uses (`GET /v2/` answered with the
//! scheme's credentials or a token fetched with them), then stored as docker stores them.

use crate::auth::credentials::{Credentials, DockerConfig};
use crate::error::ClientError;
use crate::hosts::HostOptions;
use crate::session::{Retry, Session};

/// Verifies `credentials` with `registry` and stores them in `config`.
pub fn login(
    hosts: &HostOptions,
    config: &mut DockerConfig,
    registry: &str,
    credentials: Credentials,
) -> Result<(), ClientError> {
    let session = Session::connect(hosts, registry, Some(credentials.clone()))?;
    // No scope: token.md lets a client ask for a token that grants nothing, which proves
    // the credentials without naming a repository.
    let response = session.send(
        reqwest::Method::GET,
        &session.root_url(),
        &[],
        Retry::Yes,
        |r| r,
    )?;
    if !response.status().is_success() {
        return Err(session.fail(response, "GET", "/v2/"));
    }
    config.store(registry, &credentials)
}

/// Forgets the credentials for `registry`; `false` when there were none.
pub fn logout(config: &mut DockerConfig, registry: &str) -> Result<bool, ClientError> {
    config.erase(registry)
}
