//! `rbuild run IMAGE [CMD...]`: one container from a stored image, with `docker run`'s rules
//! for the command, environment, user, working directory, mounts, limits and exit codes.
//!
//! How an image becomes a container (the same way the builder's RUN does, see
//! builder/src/build/snapshot.rs): the image's unpacked layers are the overlay's lower
//! directories, a fresh upper/work pair under ROOT/tmp/run-* takes the container's writes, and
//! the executor mounts that overlay inside the container's own mount namespace, so no mount
//! is ever left on the host. The run directory (upper layer, generated /etc files) is removed
//! when the container ends: containers are never kept, `--rm` is accepted and is the only
//! behaviour.
//!
//! Network: there is no bridge (rbuild sets up no addresses, DESIGN.md), so the default is
//! docker's `--network none` (a new network namespace with only `lo`); `--network host`
//! shares the host's. /etc/hosts, /etc/hostname and /etc/resolv.conf are small files of the
//! run directory bound into the container, as docker does.
//!
//! Exit codes (docker run reference, "Exit Status"): the container's own code, 128+N when it
//! died of signal N, 125 when rbuild itself fails, 126 when the command cannot be invoked,
//! 127 when it is not found.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use builder::build::ImageFetcher;
use image_store::{Store, StoreError};
use oci::image::ImageConfig;
use runtime_exec::spec::Spec;
use runtime_exec::{ContainerStdio, OverlayRootfs, RunOptions};
use serde_json::json;

/// Exit code of `docker run` when the failure is its own, not the container's.
const EXIT_RBUILD_ERROR: u8 = 125;
/// Docker's PATH when the image sets none (moby oci/defaults.go).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// CFS period docker uses to turn `--cpus` into a quota (moby daemon/daemon_unix.go).
const CPU_PERIOD_US: u64 = 100_000;
/// Docker refuses memory limits below 6 MiB (moby daemon/daemon_unix.go, linuxMinMemory).
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: containers are not kept)
    #[arg(long)]
    rm: bool,
    /// Keep stdin attached (otherwise the container's stdin is /dev/null)
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (one KEY=VALUE or KEY a line, # comments)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind mount a host path: SRC:DST[:ro|rw]
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Mount a tmpfs: DST[:OPTIONS]
    #[arg(long, value_name = "DST[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Give the container a host device (or every device under a directory), allowed for
    /// PERMS (some of rwm; default rwm), or a CDI device by its name (vendor.com/class=name)
    #[arg(long, value_name = "HOST[:CONTAINER][:PERMS]")]
    device: Vec<String>,
    /// A directory of CDI specs for --device, instead of /etc/cdi and /var/run/cdi;
    /// repeatable
    #[arg(long = "cdi-spec-dir")]
    cdi_spec_dirs: Vec<PathBuf>,
    /// Working directory inside the container (created if missing)
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Network: none (only lo, the default here: rbuild has no bridge) or host
    #[arg(long, value_enum, default_value_t = Network::None)]
    network: Network,
    /// Memory limit (bytes, or with a k, m or g suffix)
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Maximum number of processes (0 or less: unlimited)
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    /// Number of CPUs (e.g. 0.5)
    #[arg(long)]
    cpus: Option<String>,
    /// Container host name (default: the first 12 hex digits of the container id)
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's ENTRYPOINT (and drop its CMD); "" clears it
    #[arg(long)]
    entrypoint: Option<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Give the container every capability, no seccomp filter, no masked paths and every
    /// device, as docker run --privileged
    #[arg(long)]
    privileged: bool,
    /// Add a Linux capability (or ALL)
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL)
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Container name (names its cgroup while it runs)
    #[arg(long)]
    name: Option<String>,
    /// Run an init as PID 1 that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// Security options: seccomp=unconfined|PROFILE.json (docker's profile format; default:
    /// docker's default profile), no-new-privileges[=true|false]
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Pull the image from its registry: when the store lacks it (the default), always, or never
    #[arg(long, value_enum, default_value = "missing")]
    pull: PullPolicy,
    #[command(flatten)]
    registry: crate::registry_cmds::RegistryFlags,
    /// Image name or ID
    image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PullPolicy {
    Missing,
    Always,
    Never,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Network {
    None,
    Host,
}

/// Runs the container and returns its exit code; rbuild's own failures are printed and give
/// 125, as docker's do.
pub fn run(store: anyhow::Result<Store>, args: RunArgs) -> ExitCode {
    let outcome = store.and_then(|store| {
        let prepared = prepare(&store, args)?;
        Ok(execute(&prepared))
    });
    match outcome {
        Ok(Ok(status)) => ExitCode::from(status.code().clamp(0, 255) as u8),
        Ok(Err(err)) => {
            eprintln!("rbuild: {err}");
            ExitCode::from(err.docker_exit_code())
        }
        Err(err) => {
            eprintln!("rbuild: {err:#}");
            ExitCode::from(EXIT_RBUILD_ERROR)
        }
    }
}

/// Everything the run needs, decided before the container starts. Dropping it removes the
/// run directory and releases the store lock.
struct Prepared {
    spec: Spec,
    options: RunOptions,
    attach_stdin: bool,
    // Kept for their Drop, in this order (fields drop in declaration order): the run
    // directory goes first, then the lock that kept GC from removing the mounted layers.
    _run_dir: tempfile::TempDir,
    _lock: image_store::StoreLock,
}

fn execute(prepared: &Prepared) -> runtime_exec::Result<runtime_exec::ExitStatus> {
    let terminal = prepared
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // A terminal is relayed from our own stdio by the executor; otherwise stdin is /dev/null
    // unless -i keeps ours (docker's default without -i).
    let stdio = if terminal || prepared.attach_stdin {
        ContainerStdio::default()
    } else {
        let null = fs::File::open("/dev/null").map_err(|e| runtime_exec::Error::Io {
            context: "open /dev/null".into(),
            source: e,
        })?;
        ContainerStdio {
            stdin: Some(OwnedFd::from(null)),
            ..ContainerStdio::default()
        }
    };
    runtime_exec::run_with_stdio(&prepared.spec, &prepared.options, stdio)
}

fn prepare(store: &Store, args: RunArgs) -> anyhow::Result<Prepared> {
    let limits = Limits::parse(&args)?;
    let capabilities = runtime_exec::capabilities::docker_set(&args.cap_add, &args.cap_drop)?;
    let security = SecurityOptions::parse(&args.security_opt)?;
    let seccomp = security.seccomp_profile(&capabilities)?;
    let binds = args
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // As docker run: a qualified CDI name is a CDI device, anything else a host path.
    let (cdi_requests, host_devices): (Vec<&String>, Vec<&String>) = args
        .device
        .iter()
        .partition(|d| runtime_exec::cdi::is_qualified_name(d));
    let devices = host_devices
        .into_iter()
        .map(|d| parse_device(d))
        .collect::<Vec<_>>();
    if let Some(name) = &args.name {
        check_name(name)?;
    }

    // Before the lock: a pull takes it itself.
    let missing = matches!(store.resolve(&args.image), Err(StoreError::NotFound(_)));
    if args.pull == PullPolicy::Always || (args.pull == PullPolicy::Missing && missing) {
        if missing {
            eprintln!("Unable to find image '{}' locally", args.image);
        }
        let images = crate::registry_cmds::RegistryImages::new(args.registry.clone(), None);
        images
            .fetch(store, &args.image, &oci::Platform::host())
            .map_err(|e| anyhow!(e))?;
    }
    let lock = store.writer_lock()?;
    let image = match store.resolve(&args.image) {
        Ok(image) => image,
        Err(StoreError::NotFound(_)) => bail!("Unable to find image '{}' locally", args.image),
        Err(e) => return Err(e.into()),
    };
    let (manifest, config, _) = store.image_config(&image)?;
    let container = config.config.clone().unwrap_or_default();
    let argv = command_line(&container, &args)?;

    let id = random_id()?;
    let run_dir = new_run_dir(store, &id)?;
    let lower = lower_dirs(store, &manifest, &config, run_dir.path())?;
    let upper = run_dir.path().join("upper");
    let work = run_dir.path().join("work");
    let merged = run_dir.path().join("merged");

    let user = args.user.clone().unwrap_or(container.user.clone());
    let cwd = match &args.workdir {
        Some(w) if !w.starts_with('/') => {
            bail!("the working directory '{w}' is invalid, it needs to be an absolute path")
        }
        Some(w) => w.clone(),
        None if container.working_dir.is_empty() => "/".to_string(),
        None => container.working_dir.clone(),
    };
    let ProcessUser {
        uid,
        gid,
        groups,
        home,
    } = prepare_rootfs(&lower, &upper, &work, &merged, &user, &cwd)?;

    let hostname = match (&args.hostname, args.network) {
        (Some(h), _) => h.clone(),
        (None, Network::Host) => host_hostname()?,
        (None, Network::None) => id[..12].to_string(),
    };
    let env = environment(&container.env, &args, &hostname, &home)?;
    let etc = write_etc_files(run_dir.path(), &hostname, args.network)?;

    let mut spec = runtime_exec::defaults::docker_spec(&merged, &argv)?;
    let mut value = serde_json::to_value(&spec).context("encode the runtime spec")?;
    value["hostname"] = json!(hostname);
    value["root"]["readonly"] = json!(args.read_only);
    value["process"]["terminal"] = json!(args.tty);
    value["process"]["noNewPrivileges"] = json!(security.no_new_privileges);
    value["process"]["env"] = json!(env);
    value["process"]["cwd"] = json!(cwd);
    value["process"]["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": groups });
    if args.network == Network::Host {
        if let Some(ns) = value["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    limits.apply(&mut value["linux"]["resources"]);
    if let Some(mounts) = value["mounts"].as_array_mut() {
        for (dest, source) in etc {
            mounts.push(json!({ "destination": dest, "type": "bind", "source": source, "options": ["rbind", "rw"] }));
        }
        for b in &binds {
            let mode = if b.read_only { "ro" } else { "rw" };
            mounts.push(json!({ "destination": b.destination, "type": "bind", "source": b.source, "options": ["rbind", mode] }));
        }
        for t in &tmpfs {
            mounts.push(json!({ "destination": t.destination, "type": "tmpfs", "source": "tmpfs", "options": t.options }));
        }
    }
    spec = serde_json::from_value(value).context("build the runtime spec")?;
    if let Some(mut process) = spec.process().clone() {
        process.set_capabilities(Some(runtime_exec::capabilities::linux_capabilities(
            &capabilities,
        )));
        spec.set_process(Some(process));
    }
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_seccomp(seccomp);
        spec.set_linux(Some(linux));
    }
    if args.privileged {
        runtime_exec::defaults::make_privileged(&mut spec)?;
    }
    for (host, container, access) in &devices {
        runtime_exec::defaults::add_device(&mut spec, host, container, access)?;
    }
    if !cdi_requests.is_empty() {
        let registry =
            runtime_exec::cdi::Registry::load(&runtime_exec::cdi::spec_dirs(&args.cdi_spec_dirs));
        let mut names = Vec::new();
        for request in cdi_requests {
            let found = registry.find(request)?;
            if found.is_empty() {
                bail!("{}", registry.not_found_message(request));
            }
            names.extend(found);
        }
        registry.inject(&mut spec, &names)?;
    }

    let mut options = RunOptions::new(match &args.name {
        Some(name) => format!("rbuild-{name}-{}", &id[..12]),
        None => format!("rbuild-{}", &id[..12]),
    });
    options.init = args.init;
    options.forward_signals = true;
    // The upper directory goes with the run: nothing in it needs to reach the disk.
    options.overlay = Some(OverlayRootfs {
        lower,
        upper,
        work,
        volatile: true,
    });
    Ok(Prepared {
        spec,
        options,
        attach_stdin: args.interactive,
        _run_dir: run_dir,
        _lock: lock,
    })
}

/// `--security-opt` (docker run reference, "Security configuration"): the options rbuild
/// applies; any other (apparmor, label, ...) is refused rather than ignored.
struct SecurityOptions {
    seccomp: SeccompChoice,
    no_new_privileges: bool,
}

enum SeccompChoice {
    /// Docker's default profile (embedded in runtime-exec).
    Default,
    Unconfined,
    File(PathBuf),
}

impl SecurityOptions {
    fn parse(options: &[String]) -> anyhow::Result<SecurityOptions> {
        let mut parsed = SecurityOptions {
            seccomp: SeccompChoice::Default,
            no_new_privileges: false,
        };
        for option in options {
            // Docker also takes the older `key:value` form.
            let (key, value) = match option.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (option.as_str(), None),
            };
            match (key, value) {
                ("seccomp", Some("unconfined")) => parsed.seccomp = SeccompChoice::Unconfined,
                ("seccomp", Some(file)) if !file.is_empty() => {
                    parsed.seccomp = SeccompChoice::File(PathBuf::from(file))
                }
                ("no-new-privileges", None | Some("true")) => parsed.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => parsed.no_new_privileges = false,
                _ => bail!(
                    "invalid --security-opt {option:?}: rbuild applies seccomp=unconfined|FILE and no-new-privileges[=true|false]"
                ),
            }
        }
        Ok(parsed)
    }

    /// The Spec's `linux.seccomp` for a container with these capabilities.
    fn seccomp_profile(
        &self,
        capabilities: &runtime_exec::spec::Capabilities,
    ) -> anyhow::Result<Option<runtime_exec::spec::LinuxSeccomp>> {
        use runtime_exec::seccomp::profile;
        let resolved = match &self.seccomp {
            SeccompChoice::Unconfined => return Ok(None),
            SeccompChoice::Default => profile::resolve(profile::DEFAULT_PROFILE, capabilities)?,
            SeccompChoice::File(path) => {
                let json = fs::read_to_string(path)
                    .with_context(|| format!("read seccomp profile {}", path.display()))?;
                profile::resolve(&json, capabilities)
                    .with_context(|| format!("seccomp profile {}", path.display()))?
            }
        };
        Ok(Some(resolved))
    }
}

/// Docker's rule (docker run reference, "ENTRYPOINT", "CMD"): `--entrypoint` replaces the
/// image's ENTRYPOINT and drops its CMD; arguments on the command line replace the CMD.
fn command_line(
    image: &oci::image::ContainerConfig,
    args: &RunArgs,
) -> anyhow::Result<Vec<String>> {
    let (entrypoint, cmd) = match &args.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.command.is_empty() {
        cmd
    } else {
        args.command.clone()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!("No command specified");
    }
    Ok(argv)
}

/// The image's Env, then --env-file, then -e, later ones winning (docker's order); PATH and
/// HOSTNAME and HOME are added when missing, as docker does.
fn environment(
    image_env: &[String],
    args: &RunArgs,
    hostname: &str,
    home: &str,
) -> anyhow::Result<Vec<String>> {
    // Kept in first-set order, as docker lists them; a later value replaces an earlier one.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| match env.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v,
        None => env.push((k.to_string(), v)),
    };
    set("PATH", DEFAULT_PATH.to_string());
    set("HOSTNAME", hostname.to_string());
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v.to_string());
    }
    let mut given = Vec::new();
    for file in &args.env_file {
        let text = fs::read_to_string(file)
            .with_context(|| format!("open env file {}", file.display()))?;
        given.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    given.extend(args.env.iter().cloned());
    for kv in &given {
        match kv.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable: {kv}"),
            Some((k, v)) => set(k, v.to_string()),
            // `-e KEY` passes the host's value, and nothing when the host has none.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    set(kv, v);
                }
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".to_string(), home.to_string()));
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// `--memory`, `--pids-limit` and `--cpus`, checked as docker checks them.
struct Limits {
    memory: Option<u64>,
    pids: Option<i64>,
    cpu_quota: Option<i64>,
}

impl Limits {
    fn parse(args: &RunArgs) -> anyhow::Result<Limits> {
        let memory = match &args.memory {
            Some(text) => {
                let bytes = crate::output::parse_bytes(text).ok_or_else(|| {
                    anyhow!(
                        "invalid value {text:?} for --memory: expected a size such as 64m or 1g"
                    )
                })?;
                if bytes < MIN_MEMORY {
                    bail!("Minimum memory limit allowed is 6MB");
                }
                Some(bytes)
            }
            None => None,
        };
        let cpu_quota = match &args.cpus {
            Some(text) => {
                let cpus: f64 = text
                    .parse()
                    .ok()
                    .filter(|c: &f64| c.is_finite())
                    .ok_or_else(|| {
                        anyhow!("invalid value {text:?} for --cpus: expected a number such as 0.5")
                    })?;
                let available = std::thread::available_parallelism().map_or(1, |n| n.get());
                let quota = (cpus * CPU_PERIOD_US as f64).round() as i64;
                if cpus > available as f64 || quota < 1000 {
                    bail!(
                        "range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available"
                    );
                }
                Some(quota)
            }
            None => None,
        };
        Ok(Limits {
            memory,
            // docker: 0 or less means unlimited.
            pids: args.pids_limit.filter(|n| *n > 0),
            cpu_quota,
        })
    }

    /// Writes the limits into the Spec's linux.resources (config-linux.md "Control groups").
    fn apply(&self, resources: &mut serde_json::Value) {
        if let Some(limit) = self.memory {
            // docker's default --memory-swap is twice --memory.
            resources["memory"] = json!({ "limit": limit, "swap": limit.saturating_mul(2) });
        }
        if let Some(limit) = self.pids {
            resources["pids"] = json!({ "limit": limit });
        }
        if let Some(quota) = self.cpu_quota {
            resources["cpu"] = json!({ "quota": quota, "period": CPU_PERIOD_US });
        }
    }
}

#[derive(Debug)]
struct Bind {
    source: PathBuf,
    destination: String,
    read_only: bool,
}

/// `-v SRC:DST[:ro|rw]`: only host paths (no named volumes), and the source must exist.
fn parse_volume(spec: &str) -> anyhow::Result<Bind> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, read_only) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        [_, _, mode] => bail!("invalid mode {mode:?} in volume {spec:?}: use ro or rw"),
        _ => bail!("invalid volume specification {spec:?}: expected SRC:DST[:ro|rw]"),
    };
    if !source.starts_with('/') {
        bail!("invalid volume {spec:?}: the source must be an absolute host path (named volumes are not supported)");
    }
    if !destination.starts_with('/') {
        bail!("invalid volume {spec:?}: the destination must be an absolute path");
    }
    let source = Path::new(source);
    if !source.exists() {
        bail!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            source.display()
        );
    }
    Ok(Bind {
        source: source.to_path_buf(),
        destination: destination.to_string(),
        read_only,
    })
}

#[derive(Debug)]
struct Tmpfs {
    destination: String,
    options: Vec<String>,
}

/// `--tmpfs DST[:OPTIONS]`: docker's defaults (noexec, nosuid, nodev) plus the given options.
fn parse_tmpfs(spec: &str) -> anyhow::Result<Tmpfs> {
    let (destination, extra) = spec.split_once(':').unwrap_or((spec, ""));
    if !destination.starts_with('/') {
        bail!("invalid tmpfs {spec:?}: the destination must be an absolute path");
    }
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev"].map(String::from).to_vec();
    options.extend(extra.split(',').filter(|o| !o.is_empty()).map(String::from));
    Ok(Tmpfs {
        destination: destination.to_string(),
        options,
    })
}

/// `--device HOST[:CONTAINER][:PERMS]`, as docker reads it: with two parts, the second is
/// PERMS when it looks like permissions, else the container path.
fn parse_device(spec: &str) -> (PathBuf, PathBuf, String) {
    let is_access = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let parts: Vec<&str> = spec.splitn(3, ':').collect();
    let (host, container, access) = match parts[..] {
        [host, container, access] => (host, container, access),
        [host, access] if is_access(access) => (host, host, access),
        [host, container] => (host, container, "rwm"),
        _ => (spec, spec, "rwm"),
    };
    (
        PathBuf::from(host),
        PathBuf::from(container),
        access.to_string(),
    )
}

/// Docker's container-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.len() < 2 || !first_ok || !rest_ok {
        bail!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

/// A container id like docker's: 64 random hex digits.
fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The run's scratch directory under ROOT/tmp, on the layers' filesystem (overlay wants upper
/// and work together); removed when dropped.
fn new_run_dir(store: &Store, id: &str) -> anyhow::Result<tempfile::TempDir> {
    let base = store.scratch_dir()?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("run-{}-", &id[..12]))
        .tempdir_in(&base)
        .with_context(|| format!("create a run directory in {}", base.display()))?;
    for sub in ["upper", "work", "merged", "empty"] {
        let path = dir.path().join(sub);
        fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
    }
    Ok(dir)
}

/// The image's unpacked layers, bottom first; an image without layers gets one empty
/// directory, since overlayfs needs a lower layer.
fn lower_dirs(
    store: &Store,
    manifest: &oci::image::Manifest,
    config: &ImageConfig,
    run_dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        bail!(
            "the image has {} layers but {} diff IDs",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    if manifest.layers.is_empty() {
        return Ok(vec![run_dir.join("empty")]);
    }
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            store
                .unpacked_layer(layer, diff_id)
                .with_context(|| format!("unpack layer {}", layer.digest))
        })
        .collect()
}

/// Resolves the user against the image's files and creates the working directory when it is
/// missing (docker does both before the start). Needs the merged view of the image, which is
/// mounted on a thread in a private mount namespace: the mount ends with that thread and is
/// never visible on the host (the builder's snapshot.rs does the same). Changes land in the
/// run's upper directory.
fn prepare_rootfs(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    user: &str,
    cwd: &str,
) -> anyhow::Result<ProcessUser> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                runtime_exec::overlay::enter_private_mount_namespace()
                    .context("private mount namespace for the image view")?;
                // Not volatile (a volatile mount marks the work directory unusable for the
                // container's own mount of the same upper directory).
                runtime_exec::overlay::mount_overlay(lower, upper, work, merged)
                    .context("mount the container's root filesystem")?;
                let (uid, gid, groups) = if user.is_empty() {
                    (0, 0, Vec::new())
                } else {
                    runtime_exec::user::resolve(merged, user)?
                };
                let home = home_of(merged, uid);
                let dir = runtime_exec::paths::resolve_in_root(merged, Path::new(cwd))
                    .with_context(|| format!("working directory {cwd}"))?;
                if !dir.is_dir() {
                    fs::create_dir_all(&dir)
                        .with_context(|| format!("create the working directory {cwd}"))?;
                }
                Ok(ProcessUser {
                    uid,
                    gid,
                    groups,
                    home,
                })
            })
            .join()
            .map_err(|_| anyhow!("the root filesystem thread panicked"))?
    })
}

/// Who the container's process runs as, resolved in the image.
struct ProcessUser {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: String,
}

/// HOME as docker sets it: the user's home from the image's /etc/passwd, else `/`.
fn home_of(rootfs: &Path, uid: u32) -> String {
    let passwd = runtime_exec::paths::resolve_in_root(rootfs, Path::new("/etc/passwd"))
        .and_then(fs::read_to_string)
        .unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
        .map(|f| f[5].to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

fn host_hostname() -> anyhow::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the host's hostname")?
        .trim()
        .to_string())
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf for the container into the run
/// directory; returns (destination, source) pairs to bind.
fn write_etc_files(
    run_dir: &Path,
    hostname: &str,
    network: Network,
) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let hosts = match network {
        // The host's network: the host's names, as docker copies them.
        Network::Host => fs::read_to_string("/etc/hosts").unwrap_or_default(),
        Network::None => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n127.0.0.1\t{hostname}\n"
        ),
    };
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        ("/etc/hostname", format!("{hostname}\n")),
        ("/etc/hosts", hosts),
        ("/etc/resolv.conf", resolv),
    ];
    let mut out = Vec::new();
    for (dest, content) in files {
        let source = run_dir.join(dest.trim_start_matches("/etc/"));
        fs::write(&source, content).with_context(|| format!("write {}", source.display()))?;
        out.push((dest, source));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_as_docker_reads_them() {
        let parsed = |s: &str| {
            let (h, c, a) = parse_device(s);
            (h.display().to_string(), c.display().to_string(), a)
        };
        let d = |h: &str, c: &str, a: &str| (h.to_string(), c.to_string(), a.to_string());
        assert_eq!(parsed("/dev/fuse"), d("/dev/fuse", "/dev/fuse", "rwm"));
        assert_eq!(parsed("/dev/fuse:r"), d("/dev/fuse", "/dev/fuse", "r"));
        assert_eq!(
            parsed("/dev/sda:/dev/xvda"),
            d("/dev/sda", "/dev/xvda", "rwm")
        );
        assert_eq!(
            parsed("/dev/sda:/dev/xvda:rw"),
            d("/dev/sda", "/dev/xvda", "rw")
        );
    }

    #[test]
    fn volumes_and_tmpfs_parse() {
        let b = parse_volume("/tmp:/data:ro").unwrap();
        assert!(b.read_only);
        assert_eq!(b.destination, "/data");
        assert!(parse_volume("named:/data").is_err());
        assert!(parse_volume("/tmp:/data:zz").is_err());
        let err = parse_volume("/no/such/dir:/x").unwrap_err().to_string();
        assert!(err.contains("/no/such/dir"), "{err}");
        let t = parse_tmpfs("/scratch:size=1m").unwrap();
        assert_eq!(t.options, ["noexec", "nosuid", "nodev", "size=1m"]);
    }
}
