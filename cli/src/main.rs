//! `rbuild`: the command line. Each group of subcommands lives in its own module; this file
//! only parses arguments and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod archive_cmds;
mod build_cmd;
mod changes;
mod go_template;
mod image_cmds;
mod image_filter;
mod oci_runtime;
mod output;
mod registry_cmds;
mod run_cmd;

#[derive(Parser)]
#[command(
    name = "rbuild",
    version,
    about = "Daemonless container image builder, store and runner"
)]
struct Cli {
    /// Root of the local image store (default /var/lib/rbuild as root, $XDG_DATA_HOME/rbuild otherwise).
    #[arg(long, global = true, env = "RBUILD_ROOT")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile (also: `rbuild -t NAME CONTEXT`)
    Build(Box<build_cmd::BuildArgs>),
    /// List images
    Images(image_cmds::ImagesArgs),
    /// Show image details as JSON
    Inspect(image_cmds::InspectArgs),
    /// Show the history of an image
    History(image_cmds::HistoryArgs),
    /// Give an image another name
    Tag(image_cmds::TagArgs),
    /// Remove images
    Rmi(image_cmds::RmiArgs),
    /// Remove untagged images and unused content
    Prune(image_cmds::PruneArgs),
    /// The build cache: `rbuild builder prune`
    Builder {
        #[command(subcommand)]
        command: image_cmds::BuilderCommand,
    },
    /// Remove unused images and build cache: `rbuild system prune`
    System {
        #[command(subcommand)]
        command: image_cmds::SystemCommand,
    },
    /// Create an image from a root filesystem tarball
    Import(archive_cmds::ImportArgs),
    /// Load images from a docker-archive or OCI archive
    Load(archive_cmds::LoadArgs),
    /// Save images to a docker-archive or OCI archive
    Save(archive_cmds::SaveArgs),
    /// Push an image to a registry
    Push(registry_cmds::PushArgs),
    /// Pull an image from a registry
    Pull(registry_cmds::PullArgs),
    /// Log in to a registry (stored in docker's config.json)
    Login(registry_cmds::LoginArgs),
    /// Log out from a registry
    Logout(registry_cmds::LogoutArgs),
    /// Run a command in a new container from an image
    Run(Box<run_cmd::RunArgs>),
    /// Run an OCI bundle like `runc run --bundle DIR ID` (tests and benchmarks)
    #[command(hide = true)]
    OciRuntime(oci_runtime::Args),
}

fn main() -> ExitCode {
    // The executor re-executes this binary as its single-threaded namespace helper.
    runtime_exec::run_helper_if_requested();
    let args = with_default_subcommand(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // `docker run` exits 125 when its own flags are wrong, so scripts can tell that
            // apart from the container's exit codes.
            let code = if err.use_stderr() && args.iter().any(|a| a == "run") {
                125
            } else {
                err.exit_code()
            };
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rbuild: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// docker's two-word commands and the one-word commands rbuild has for them, so that scripts
/// written for `docker` (`docker image ls`, `docker buildx build`) run with rbuild.
const DOCKER_SPELLINGS: [(&str, &str, &str); 15] = [
    ("buildx", "build", "build"),
    ("builder", "build", "build"),
    ("image", "build", "build"),
    ("image", "ls", "images"),
    ("image", "list", "images"),
    ("image", "rm", "rmi"),
    ("image", "inspect", "inspect"),
    ("image", "history", "history"),
    ("image", "tag", "tag"),
    ("image", "prune", "prune"),
    ("image", "pull", "pull"),
    ("image", "push", "push"),
    ("image", "save", "save"),
    ("image", "load", "load"),
    ("image", "import", "import"),
];

/// `rbuild -t app:1 .` means `rbuild build -t app:1 .`: when the first argument after the
/// global options is not a subcommand, `build` is inserted there. docker's two-word spellings
/// ([`DOCKER_SPELLINGS`]) become rbuild's one word.
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy().into_owned();
        let next = args.get(i + 1).map(|a| a.to_string_lossy().into_owned());
        let spelled = DOCKER_SPELLINGS
            .iter()
            .find(|(group, verb, _)| arg == *group && next.as_deref() == Some(*verb));
        if let Some((_, _, ours)) = spelled {
            args.splice(i..i + 2, [std::ffi::OsString::from(*ours)]);
            break;
        }
        if arg == "--root" {
            i += 2;
        } else if arg.starts_with("--root=") {
            i += 1;
        } else {
            let is_subcommand = command
                .get_subcommands()
                .any(|s| s.get_name() == arg || s.get_all_aliases().any(|a| a == arg));
            let is_meta = matches!(arg.as_ref(), "-h" | "--help" | "-V" | "--version" | "help");
            if !is_subcommand && !is_meta {
                args.insert(i, "build".into());
            }
            break;
        }
    }
    args
}

fn open_store(root: Option<PathBuf>) -> anyhow::Result<image_store::Store> {
    let root = root.unwrap_or_else(image_store::Store::default_root);
    image_store::Store::open(&root)
        .map_err(|e| anyhow::anyhow!("opening the image store at {}: {e}", root.display()))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = || open_store(cli.root.clone());
    match cli.command {
        Command::Build(args) => build_cmd::run(&store()?, *args),
        Command::Images(args) => image_cmds::images(&store()?, args),
        Command::Inspect(args) => image_cmds::inspect(&store()?, args),
        Command::Tag(args) => image_cmds::tag(&store()?, args),
        Command::Rmi(args) => image_cmds::rmi(&store()?, args),
        Command::Prune(args) => image_cmds::prune(&store()?, args),
        Command::History(args) => image_cmds::history(&store()?, args),
        Command::Builder { command } => image_cmds::builder(&store()?, command),
        Command::System { command } => image_cmds::system(&store()?, command),
        Command::Import(args) => archive_cmds::import(&store()?, args),
        Command::Load(args) => archive_cmds::load(&store()?, args),
        Command::Save(args) => archive_cmds::save(&store()?, args),
        Command::Push(args) => registry_cmds::push(&store()?, args),
        Command::Pull(args) => registry_cmds::pull(&store()?, args),
        Command::Login(args) => registry_cmds::login(args),
        Command::Logout(args) => registry_cmds::logout(args),
        Command::Run(args) => Ok(run_cmd::run(store(), *args)),
        Command::OciRuntime(args) => oci_runtime::oci_runtime(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        with_default_subcommand(args)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn docker_spellings_and_the_default_subcommand() {
        assert_eq!(
            rewritten(&["rbuild", "-t", "a:1", "."]),
            ["rbuild", "build", "-t", "a:1", "."]
        );
        assert_eq!(
            rewritten(&["rbuild", "buildx", "build", "."]),
            ["rbuild", "build", "."]
        );
        assert_eq!(
            rewritten(&["rbuild", "--root", "/r", "image", "ls", "-q"]),
            ["rbuild", "--root", "/r", "images", "-q"]
        );
        assert_eq!(
            rewritten(&["rbuild", "image", "rm", "a:1"]),
            ["rbuild", "rmi", "a:1"]
        );
        assert_eq!(
            rewritten(&["rbuild", "builder", "prune", "-a"]),
            ["rbuild", "builder", "prune", "-a"]
        );
        assert_eq!(rewritten(&["rbuild", "images"]), ["rbuild", "images"]);
        assert_eq!(
            rewritten(&["rbuild", "image", "save", "-o", "x.tar", "a:1"]),
            ["rbuild", "save", "-o", "x.tar", "a:1"]
        );
        assert_eq!(
            rewritten(&["rbuild", "system", "prune", "-af"]),
            ["rbuild", "system", "prune", "-af"]
        );
    }
}
