//! `rregistry serve [--config FILE]` and `rregistry gc [--config FILE] [--dry-run]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use registry::config::{Config, LogFormatter};
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
        /// The config file, as `registry serve CONFIG` takes it.
        #[arg(conflicts_with = "config", value_name = "CONFIG")]
        config_file: Option<PathBuf>,
    },
    /// Garbage-collect the storage once: blobs no manifest references, their links, idle
    /// upload sessions. Without --dry-run, run it while no server writes to the storage
    /// (a server collects online with storage.maintenance.gc).
    #[command(alias = "garbage-collect")]
    Gc {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The config file, as `registry garbage-collect CONFIG` takes it.
        #[arg(conflicts_with = "config", value_name = "CONFIG")]
        config_file: Option<PathBuf>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also remove manifests that no tag reaches (and then their blobs).
        #[arg(long)]
        delete_untagged: bool,
        /// Keep what is younger than this (Go syntax: 1h, 30m, 0s); default
        /// storage.maintenance.gc.graceperiod.
        #[arg(long, value_parser = parse_duration)]
        grace_period: Option<std::time::Duration>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    oci::timestamp::parse_go_duration(text)
}

/// The config file (given, or REGISTRY_CONFIGURATION_PATH, as distribution reads it) with the
/// `REGISTRY_…` environment overrides; without either, the defaults.
fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let path = path.or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from));
    Config::load_with_env(path.as_deref(), std::env::vars()).context("load the configuration")
}

/// Logs go to stderr, as text or JSON lines (`log.formatter`).
fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .with_context(|| format!("invalid log.level {:?}", config.log.level))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match config.log.formatter {
        LogFormatter::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormatter::Json | LogFormatter::Logstash => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

fn print_gc_report(report: &registry::gc::GcReport) {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (digest, size) in &report.blobs {
        println!("{verb} blob {digest} ({size} bytes)");
    }
    for manifest in &report.manifests {
        println!("{verb} untagged manifest {manifest}");
    }
    for session in &report.uploads {
        println!("{verb} upload session {session}");
    }
    println!(
        "{} blobs marked, {} unreferenced kept (younger than the grace period); {verb} {} blobs ({} bytes), {} layer links, {} manifests, {} upload sessions",
        report.marked,
        report.young,
        report.blobs.len(),
        report.reclaimed_bytes(),
        report.layer_links,
        report.manifests.len(),
        report.uploads.len()
    );
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = || tokio::runtime::Runtime::new().context("start the tokio runtime");
    match cli.command {
        Command::Serve {
            config,
            config_file,
        } => {
            let config = load_config(config.or(config_file))?;
            init_logging(&config)?;
            runtime()?
                .block_on(registry::server::serve(
                    config,
                    registry::server::termination_signal(),
                ))
                .context("rregistry serve")
        }
        Command::Gc {
            config,
            config_file,
            dry_run,
            delete_untagged,
            grace_period,
        } => {
            let config = load_config(config.or(config_file))?;
            init_logging(&config)?;
            let options = registry::gc::GcOptions {
                grace_period: grace_period.unwrap_or(config.storage.maintenance.gc.graceperiod),
                dry_run,
                delete_untagged,
            };
            let report = runtime()?
                .block_on(registry::gc::collect_offline(&config, &options))
                .context("rregistry gc")?;
            print_gc_report(&report);
            Ok(())
        }
    }
}
