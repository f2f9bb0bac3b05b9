//! rregistry: an OCI Distribution v1.1 registry (distribution-spec spec.md).
//!
//! Layers, top to bottom: [`http`] parses requests and shapes responses, [`service`] holds the
//! registry's operations and their error codes, [`storage`] is the backend seam (filesystem
//! today) with [`paths`] documenting what lives where. [`server`] wires them from a [`config`].
//! Beside them: [`gc`] collects unreferenced blobs (online and `rregistry gc`), [`metrics`]
//! serves `/metrics` and `/healthz`.

pub mod auth;
pub mod config;
pub mod error;
pub mod gc;
pub mod http;
pub mod metrics;
pub mod names;
pub mod paths;
pub mod proxy;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
