//! Registry authentication (`../shared/specs/docker-registry-auth/`): what the registry asks for
//! ([`challenge`]), who we are ([`credentials`]), and bearer tokens for exactly the scopes an
//! operation needs ([`token`]).

pub use oci::registry_auth::challenge;
pub mod credentials;
pub mod token;

pub use oci::registry_auth::repository_scope;
