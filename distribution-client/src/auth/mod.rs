//! Registry authentication (`../shared/specs/docker-registry-auth/`): what the registry asks for
//! ([`challenge`]), who we are ([`credentials`]), and bearer tokens for exactly the scopes an
//! operation needs ([`token`]).

pub mod challenge;
pub mod credentials;
pub mod token;

/// `repository:NAME:ACTIONS` (scope.md, "Resource Scope Grammar").
pub fn repository_scope(repository: &str, actions: &[&str]) -> String {
    format!("repository:{repository}:{}", actions.join(","))
}
