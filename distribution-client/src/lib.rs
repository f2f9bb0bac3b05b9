//! The distribution client: moves images between the local image store and registries that
//! speak the OCI distribution API (`../shared/specs/distribution-spec/spec.md`) with Docker's
//! token auth (`../shared/specs/docker-registry-auth/`).
//!
//! ```text
//! hosts        reference registry → endpoint (docker.io → registry-1.docker.io, http or https, CAs)
//! auth/        WWW-Authenticate challenges, bearer tokens cached per scope, docker config.json
//! session      one registry: HTTP client, ping, auth on every request, retries with backoff
//! pull / push  the two transfers, blobs in parallel, manifests as their exact bytes
//! cache        a build cache (`--cache-to/--cache-from type=registry`) as a repository
//! login        `rbuild login` / `logout`
//! progress     what a transfer reports, and a console renderer (bars on a tty, lines otherwise)
//! ```
//!
//! The client is blocking, with one OS thread per parallel transfer (reqwest's blocking API).
//! The content store and image store it writes into are synchronous (`io::Write`, flock), the
//! concurrency a transfer needs is a handful of blobs at once, and threads keep the resume and
//! retry loops plain sequential code instead of async state machines bridged to sync writes.

pub mod auth;
pub mod cache;
mod error;
pub mod hosts;
pub mod login;
mod parallel;
pub mod progress;
pub mod pull;
pub mod push;
pub mod session;

pub use auth::credentials::{Credentials, DockerConfig};
pub use error::ClientError;
pub use hosts::HostOptions;
pub use session::Client;
