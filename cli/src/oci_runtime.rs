//! `rbuild oci-runtime run --bundle DIR ID`: our executor behind runc's command line, so that
//! one bundle runs under both (tests compare them; the benchmark times them). Hidden: it is a
//! tool for tests and benchmarks, not a user command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use runtime_exec::spec::Spec;
use runtime_exec::{run, RunOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create and start a container from a bundle, wait for it, exit with its exit code
    Run {
        /// The bundle directory holding config.json (and usually rootfs/)
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Container id; names the cgroup when config.json has no linux.cgroupsPath
        id: String,
    },
}

pub fn oci_runtime(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Run { bundle, id } = args.action;
    let config = bundle.join("config.json");
    let mut spec = Spec::load(&config).with_context(|| format!("load {}", config.display()))?;
    // runtime-spec config.md "root": a relative path is relative to the bundle.
    if let Some(mut root) = spec.root().clone() {
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    let mut options = RunOptions::new(id);
    options.forward_signals = true;
    // runtime.md "State": hooks are told the bundle's absolute path.
    options.bundle = Some(
        bundle
            .canonicalize()
            .with_context(|| format!("bundle {}", bundle.display()))?,
    );
    match run(&spec, &options) {
        Ok(status) => Ok(ExitCode::from(status.code().clamp(0, 255) as u8)),
        Err(err) => {
            eprintln!("rbuild: {err}");
            Ok(ExitCode::from(err.docker_exit_code()))
        }
    }
}
