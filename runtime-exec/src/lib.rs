//! runtime-exec: rbuild's own container executor. An OCI runtime [`Spec`] (runtime-spec
//! config.md, config-linux.md) and its rootfs go in, an [`ExitStatus`] comes out.
//!
//! Three processes make a run (see docs in each module):
//! - the caller ([`run`], `launcher.rs`): may be multi-threaded (tokio); it only spawns
//!   `/proc/self/exe` as the helper, sends it the Spec and relays stdio/signals;
//! - the helper (`helper.rs`), entered through [`run_helper_if_requested`] at the top of
//!   `main`: single-threaded; creates the cgroup (`cgroups/`), clones the container init into
//!   new namespaces, forwards signals, reaps it, reports, removes the cgroup;
//! - the container init (`container.rs`, `mounts.rs`): mounts, pivot_root, the pty
//!   (`terminal.rs`), /dev, masked paths, hostname, rlimits, user, capabilities, the seccomp
//!   filter ([`seccomp`], compiled by the helper), then execve of the user's process.
//!
//! OCI hooks (`hooks.rs`) run in the helper or the init, at the points the runtime spec names.
//!
//! [`Spec`]: oci_spec::runtime::Spec

pub mod capabilities;
pub mod cdi;
pub mod cgroups;
mod container;
pub mod defaults;
mod error;
mod helper;
mod hooks;
mod launcher;
mod mounts;
mod options;
pub mod overlay;
pub mod paths;
mod protocol;
mod reaper;
pub mod seccomp;
mod status;
mod terminal;
pub mod user;
mod validate;

pub use error::{Error, Result, SetupError, SetupErrorKind};
pub use helper::run_helper_if_requested;
pub use launcher::{run, run_with_stdio, ContainerStdio};
pub use options::{CgroupChoice, OverlayRootfs, RunOptions};
pub use status::ExitStatus;

/// The Spec types, re-exported so that callers need not depend on oci-spec themselves.
pub use oci_spec::runtime as spec;
