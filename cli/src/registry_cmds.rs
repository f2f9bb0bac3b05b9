//! `rbuild push`, `pull`, `login` and `logout`: the command-line face of distribution-client.
//! Progress goes to stderr (bars on a terminal); results go to stdout.

use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use builder::build::ImageFetcher;
use clap::Args;
use distribution_client::progress::{Console, Progress, Silent};
use distribution_client::pull::{pull as pull_image, PullOptions};
use distribution_client::push::{push as push_image, PushOptions};
use distribution_client::{login as login_mod, Client, Credentials, DockerConfig, HostOptions};
use image_store::Store;
use oci::{Platform, Reference};

use crate::output::outln;

/// How to reach registries; shared by the four commands.
#[derive(Args, Clone)]
pub struct RegistryFlags {
    /// Reach this registry (`host[:port]` or a CIDR range) over plain HTTP or unverified
    /// HTTPS (repeatable; also RBUILD_INSECURE_REGISTRIES and daemon.json's insecure-registries)
    #[arg(long = "insecure-registry")]
    insecure: Vec<String>,
    /// A CA certificate (PEM) to trust besides the system roots and /etc/docker/certs.d/<host>/
    #[arg(long = "ca-cert")]
    ca_cert: Option<PathBuf>,
}

impl RegistryFlags {
    fn host_options(&self) -> Result<HostOptions> {
        let mut options = HostOptions::from_environment()?;
        options.insecure.extend(self.insecure.iter().cloned());
        options.ca_file = self.ca_cert.clone();
        Ok(options)
    }

    pub(crate) fn client(&self) -> Result<Client> {
        let config_path = DockerConfig::default_path();
        let config = DockerConfig::load(&config_path)?;
        Ok(Client::new(self.host_options()?, config))
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// The local image to push (name or ID); with `-a`, a repository
    source: String,
    /// Where to push it, when not under its own name (e.g. `registry.example/app:1`)
    #[arg(conflicts_with = "all_tags")]
    target: Option<String>,
    /// Push every local tag of the repository SOURCE
    #[arg(short, long)]
    all_tags: bool,
    /// A repository on the target registry that may already have the layers, to mount them
    /// from instead of uploading (repeatable; names of the image on that registry are tried
    /// by themselves)
    #[arg(long = "mount-from")]
    mount_from: Vec<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

pub fn push(store: &Store, args: PushArgs) -> Result<ExitCode> {
    if args.all_tags {
        let repository = Reference::parse_name_only(&args.source)?;
        let mut tags: Vec<String> = store
            .images()?
            .into_iter()
            .flat_map(|image| image.names)
            .filter(|name| name.name() == repository.name() && name.tag.is_some())
            .map(|name| name.to_string())
            .collect();
        tags.sort();
        if tags.is_empty() {
            bail!("no local tag of {} to push", repository.familiar_name());
        }
        for tag in &tags {
            push_to(store, tag, tag, &args.mount_from, &args.registry)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.target.as_deref().unwrap_or(&args.source);
    push_to(
        store,
        &args.source,
        target,
        &args.mount_from,
        &args.registry,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Pushes local image `source` as `target`; also `rbuild build --push`.
pub fn push_to(
    store: &Store,
    source: &str,
    target_text: &str,
    extra_mount_from: &[String],
    registry: &RegistryFlags,
) -> Result<()> {
    let target =
        Reference::parse(target_text).with_context(|| format!("push target {target_text:?}"))?;
    let image = store.resolve(source)?;
    // Other names of this image on the same registry are where its blobs most likely are.
    let mut mount_from = extra_mount_from.to_vec();
    for name in &image.names {
        if name.registry == target.registry
            && name.repository != target.repository
            && !mount_from.contains(&name.repository)
        {
            mount_from.push(name.repository.clone());
        }
    }
    let client = registry.client()?;
    let progress: Arc<dyn Progress> = Arc::new(Console::new());
    outln!("The push refers to repository [{}]", target.name());
    let pushed = push_image(
        &client,
        store,
        source,
        &target,
        &PushOptions { mount_from },
        &progress,
    )
    .with_context(|| format!("pushing {target}"))?;
    let tag = target
        .tag
        .clone()
        .unwrap_or_else(|| pushed.digest.to_string());
    outln!("{tag}: digest: {} size: {}", pushed.digest, pushed.size);
    Ok(())
}

#[derive(Args)]
pub struct PullArgs {
    /// The image, e.g. `busybox`, `registry.example/app:1`, `app@sha256:…`
    name: String,
    /// The platform to pick from a multi-platform image (`os/arch[/variant]`; default: this host's)
    #[arg(long)]
    platform: Option<String>,
    /// Keep every platform of a multi-platform image
    #[arg(short = 'a', long)]
    all_platforms: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

pub fn pull(store: &Store, args: PullArgs) -> Result<ExitCode> {
    let reference = Reference::parse(&args.name)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("invalid platform {p:?}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    let client = args.registry.client()?;
    let progress: Arc<dyn Progress> = Arc::new(Console::new());
    let shown = reference.tag.clone().unwrap_or_else(|| "latest".into());
    outln!("{shown}: Pulling from {}", reference.familiar_name());
    let options = PullOptions {
        platform,
        all_platforms: args.all_platforms,
    };
    let pulled = pull_image(&client, store, &reference, &options, &progress)
        .with_context(|| format!("pulling {reference}"))?;
    outln!("Digest: {}", pulled.digest);
    if pulled.downloaded == 0 {
        outln!("Status: Image is up to date for {reference}");
    } else {
        outln!("Status: Downloaded newer image for {reference}");
    }
    outln!("{reference}");
    Ok(ExitCode::SUCCESS)
}

/// The images a build names and the store lacks (FROM, `COPY --from`), pulled from their
/// registries as `docker build` does. The client is made at the first pull, so a build from
/// local images never reads credentials or certificates.
pub(crate) struct RegistryImages {
    flags: RegistryFlags,
    client: OnceLock<Result<Arc<Client>, String>>,
}

impl RegistryImages {
    pub(crate) fn new(flags: RegistryFlags, client: Option<Arc<Client>>) -> RegistryImages {
        let made = OnceLock::new();
        if let Some(client) = client {
            let _ = made.set(Ok(client));
        }
        RegistryImages {
            flags,
            client: made,
        }
    }
}

impl std::fmt::Debug for RegistryImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryImages")
    }
}

impl ImageFetcher for RegistryImages {
    fn fetch(&self, store: &Store, name: &str, platform: &Platform) -> Result<(), String> {
        let client = self
            .client
            .get_or_init(|| {
                self.flags
                    .client()
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()?;
        let reference = Reference::parse(name).map_err(|e| e.to_string())?;
        let options = PullOptions {
            platform: platform.clone(),
            all_platforms: false,
        };
        let progress: Arc<dyn Progress> = Arc::new(Silent);
        pull_image(&client, store, &reference, &options, &progress)
            .map(|_| ())
            .map_err(|e| format!("pulling {reference}: {e}"))
    }
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub)
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    /// The password (visible in the process list: prefer --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

pub fn login(args: LoginArgs) -> Result<ExitCode> {
    let registry = registry_name(args.server.as_deref())?;
    let Some(username) = args.username.filter(|u| !u.is_empty()) else {
        bail!("login to {registry}: a username is required (-u USER)");
    };
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            if io::stdin().is_terminal() {
                bail!("--password-stdin: standard input is a terminal; pipe the password in");
            }
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("reading the password from standard input")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            bail!("login to {registry}: a password is required (-p PASSWORD or --password-stdin)")
        }
    };
    if password.is_empty() {
        bail!("login to {registry}: the password is empty");
    }
    let mut config = DockerConfig::load(DockerConfig::default_path())?;
    let credentials = Credentials::Basic { username, password };
    login_mod::login(
        &args.registry.host_options()?,
        &mut config,
        &registry,
        credentials,
    )
    .with_context(|| format!("login to {registry}"))?;
    outln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    server: Option<String>,
}

pub fn logout(args: LogoutArgs) -> Result<ExitCode> {
    let registry = registry_name(args.server.as_deref())?;
    let mut config = DockerConfig::load(DockerConfig::default_path())?;
    if login_mod::logout(&mut config, &registry)? {
        outln!("Removing login credentials for {registry}");
    } else {
        outln!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The registry a user names: `host[:port]`, also written as a URL, with Docker Hub's
/// aliases folded into `docker.io`.
fn registry_name(server: Option<&str>) -> Result<String> {
    let Some(server) = server else {
        return Ok(oci::reference::DOCKER_HUB.to_string());
    };
    let bare = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = bare.split('/').next().unwrap_or(bare);
    if host.is_empty() {
        bail!("invalid registry {server:?}");
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        bail!("invalid registry {server:?}");
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => oci::reference::DOCKER_HUB.to_string(),
        other => other.to_string(),
    })
}
