//! `rregistry serve [--config FILE]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use registry::config::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "rregistry", version, about = "An OCI Distribution registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API (defaults: 127.0.0.1:5000, storage in ./registry-data).
    Serve {
        /// A YAML config file; distribution's config.yml keys are understood.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve { config } = cli.command;
    let config = match &config {
        Some(path) => {
            Config::load(path).with_context(|| format!("load config {}", path.display()))?
        }
        None => Config::default(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .with_context(|| format!("invalid log.level {:?}", config.log.level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Runtime::new().context("start the tokio runtime")?;
    runtime
        .block_on(registry::server::serve(
            config,
            registry::server::termination_signal(),
        ))
        .context("rregistry serve")
}
