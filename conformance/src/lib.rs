//! Helpers that start the real peers the end-to-end suites talk to, each on its own socket,
//! port and state directory so that tests run side by side and clean up after themselves.
//!
//! A peer that is not installed is a test failure, never a skip: `.ci/run` installs them all.

pub mod auth_files;
pub mod counting_proxy;
pub mod fault_proxy;
pub mod peers;
pub mod registry_suite;
pub mod relay;
pub mod round_robin;
pub mod s3_server;
pub mod token_server;
