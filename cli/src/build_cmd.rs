//! `rbuild build` (also `rbuild -t app:1 .`): docker build's flags on rbuild's solver.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use builder::build::{
    build, BuildOptions, CacheBackend, CacheExport, CacheMode, GitSource, LocalCache, NamedContext,
    Output, Progress, ProgressMode, RunSandbox,
};
use builder::dockerfile::{run_checks, CheckConfig, CheckWarning, Dockerfile};
use clap::{Args, ValueEnum};
use distribution_client::cache::RegistryCache;
use distribution_client::Client;
use image_store::Store;
use oci::compression::Compression;
use oci::layer::ApplyMode;
use oci::{Digest, Platform, Reference};

use crate::output::outln;

#[derive(Clone, Copy, ValueEnum)]
pub enum ProgressFlag {
    Auto,
    Plain,
    Tty,
    Quiet,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionFlag {
    Gzip,
    Zstd,
    Uncompressed,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The build context: a directory; a Git repository (`https://….git#REF:DIR`,
    /// `git@host:repo.git`, `git://…`) checked out first; an `http(s)://` URL or `-` (standard
    /// input): a tar archive of the context (plain, gzip or zstd), or else a Dockerfile with
    /// no context
    context: PathBuf,
    /// Name and optionally tag the image (`name:tag`); repeatable
    #[arg(short, long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// A named context for `FROM NAME`, `COPY --from=NAME`, `RUN --mount from=NAME`:
    /// `NAME=DIR`, `NAME=docker-image://IMAGE`, `NAME=GIT-URL` or `NAME=https://…/x.tar.gz`;
    /// repeatable
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Build this stage and what it needs
    #[arg(long)]
    target: Option<String>,
    /// A build arg `KEY=VALUE` (or `KEY` to take it from the environment); repeatable
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// A label `KEY=VALUE` for the image; repeatable
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Do not use the cache
    #[arg(long)]
    no_cache: bool,
    /// Squash the layers the build adds to its base image into one
    #[arg(long)]
    squash: bool,
    /// Entitlements, as buildx: security.insecure (lets RUN --security=insecure run
    /// privileged), device (lets RUN --device use any CDI device), network.host (always
    /// granted: RUN uses the host's network by default)
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// A directory of CDI specs for RUN --device, instead of /etc/cdi and /var/run/cdi;
    /// repeatable
    #[arg(long = "cdi-spec-dir")]
    cdi_spec_dirs: Vec<PathBuf>,
    /// Do not use the cache for these stages; repeatable
    #[arg(long = "no-cache-filter")]
    no_cache_filter: Vec<String>,
    /// Only the host's platform is supported
    #[arg(long)]
    platform: Option<String>,
    /// Timestamp for reproducible images (default: $SOURCE_DATE_EPOCH)
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<i64>,
    /// Layer compression
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionFlag,
    /// `type=oci,dest=FILE`, `type=docker,dest=FILE` or `type=local,dest=DIR`; repeatable
    #[arg(short, long = "output")]
    outputs: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to this file
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// A secret for RUN --mount=type=secret: `id=ID,src=FILE`, `id=ID,env=VAR`,
    /// `type=env,id=VAR`, or `id=ID` (the variable ID if set, else the file ID); repeatable
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// An ssh-agent for RUN --mount=type=ssh: `default` ($SSH_AUTH_SOCK) or `ID=SOCKET`;
    /// repeatable
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Progress output
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressFlag,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// An annotation of the image manifest: `KEY=VALUE` or `manifest:KEY=VALUE`; repeatable
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// An /etc/hosts line for every RUN: `HOST:IP`; repeatable
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_hosts: Vec<String>,
    /// A resource limit for every RUN: `TYPE=SOFT[:HARD]` (`nofile=1024:2048`); repeatable
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// The size of /dev/shm in every RUN (default 64m)
    #[arg(long, value_name = "SIZE")]
    shm_size: Option<String>,
    /// RUN's default network: `host` (the default) or `none`
    #[arg(long, default_value = "host")]
    network: String,
    /// Push the image to its registry under every `-t` name (same as `--output type=registry`)
    #[arg(long)]
    push: bool,
    /// Pull every image the build names, even those in the local store (images the store
    /// lacks are always pulled)
    #[arg(long)]
    pull: bool,
    /// Accepted for buildx scripts: the image always goes to the local store
    #[arg(long)]
    load: bool,
    /// Accepted for docker build scripts: no intermediate containers are ever kept
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    rm: Option<bool>,
    /// Accepted for docker build scripts: no intermediate containers are ever kept
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Only `false` is accepted: rbuild makes no provenance attestations
    #[arg(long, value_name = "false")]
    provenance: Option<String>,
    /// Only `false` is accepted: rbuild makes no SBOM attestations
    #[arg(long, value_name = "false")]
    sbom: Option<String>,
    /// Run BuildKit's build checks on the Dockerfile and exit (1 when any finds something),
    /// without building
    #[arg(long)]
    check: bool,
    /// buildx's `--call`: `build` (the default) or `check` (as --check)
    #[arg(long, value_name = "build|check")]
    call: Option<String>,
    /// Use the build cache exported to `type=registry,ref=REPO:TAG` (or just `REPO:TAG`) or
    /// `type=local,src=DIR`; repeatable
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Export the build cache to `type=registry,ref=REPO:TAG` or `type=local,dest=DIR`, with
    /// `mode=min` (the result's steps, the default) or `mode=max` (every stage's); repeatable
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    #[command(flatten)]
    registry: crate::registry_cmds::RegistryFlags,
}

pub fn run(store: &Store, args: BuildArgs) -> Result<ExitCode> {
    let started = std::time::SystemTime::now();
    let keep_storage = gc_keep_storage(store)?;
    let ssh_agents = parse_ssh_agents(&args.ssh)?;
    let build_args = parse_build_args(&args.build_args)?;
    let BuildInputs {
        context,
        dockerfile_path,
        dockerfile: source,
        named_contexts,
        _scratch,
    } = BuildInputs::resolve(store, &args, &build_args, &ssh_agents)?;
    let dockerfile_name = dockerfile_path
        .as_deref()
        .and_then(Path::file_name)
        .map_or("Dockerfile".into(), |n| n.to_string_lossy().into_owned());
    // Every syntax error is reported before any step runs.
    let dockerfile = match Dockerfile::parse(&source) {
        Ok(d) => d,
        Err(e) => {
            eprint!("{}", e.render(&dockerfile_name, &source));
            return Ok(ExitCode::from(1));
        }
    };
    let check_only = match args.call.as_deref() {
        None | Some("build") => args.check,
        Some("check") => true,
        Some(other) => bail!("--call={other}: rbuild knows build and check"),
    };
    let (check_config, mut findings) = build_checks(&dockerfile, &build_args)?;
    for (flag, value) in [("--provenance", &args.provenance), ("--sbom", &args.sbom)] {
        if let Some(value) = value.as_deref().filter(|v| !matches!(*v, "false" | "0")) {
            bail!(
                "{flag}={value}: rbuild makes no attestations; leave it out or pass {flag}=false"
            );
        }
    }
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("invalid platform {p:?}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    // `type=registry` is a push after the build; the other outputs are the builder's.
    let mut push = args.push;
    let mut outputs = Vec::new();
    let mut names = args.tags.clone();
    for spec in &args.outputs {
        match parse_output(spec)? {
            OutputSpec::Builder(output) => outputs.push(output),
            OutputSpec::Image { push: p, names: n } => {
                push |= p;
                names.extend(n);
            }
        }
    }
    if push && names.is_empty() {
        bail!(
            "--push needs a name to push to: add -t REGISTRY/REPOSITORY:TAG (or name= to --output)"
        );
    }
    // An archive for stdout (`dest=-`) is written to the store's scratch space, then copied.
    let stdout_output = StdoutOutput::take(store, &mut outputs)?;
    if stdout_output.is_some() && push {
        bail!("an output to stdout and --push would both write to stdout");
    }
    // One client for every cache on a registry: sessions and tokens are shared.
    let cache_client = if args.cache_from.is_empty() && args.cache_to.is_empty() {
        None
    } else {
        Some(Arc::new(args.registry.client()?))
    };
    let cache_from = args
        .cache_from
        .iter()
        .map(|spec| parse_cache_from(spec, cache_client.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|spec| parse_cache_to(spec, cache_client.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let entitlements = parse_entitlements(&args.allow)?;
    let options = BuildOptions {
        context: context
            .canonicalize()
            .with_context(|| format!("build context {}", context.display()))?,
        dockerfile_path,
        tags: names
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<_, _>>()?,
        target: args.target.clone(),
        build_args,
        labels: parse_pairs(&args.labels, "--label")?,
        annotations: parse_annotations(&args.annotations)?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        platform,
        source_date_epoch: args.source_date_epoch,
        compression: match args.compression {
            CompressionFlag::Gzip => Compression::Gzip,
            CompressionFlag::Zstd => Compression::Zstd,
            CompressionFlag::Uncompressed => Compression::None,
        },
        outputs,
        secrets: parse_secrets(&args.secrets)?,
        ssh_agents,
        cache_from,
        cache_to,
        image_fetcher: Some(Arc::new(crate::registry_cmds::RegistryImages::new(
            args.registry.clone(),
            cache_client,
        ))),
        pull: args.pull,
        named_contexts,
        sandbox: parse_sandbox(&args)?,
        squash: args.squash,
        allow_insecure: entitlements.insecure,
        allow_devices: entitlements.device,
        cdi_spec_dirs: runtime_exec::cdi::spec_dirs(&args.cdi_spec_dirs),
    };
    let quiet = args.quiet || matches!(args.progress, ProgressFlag::Quiet);
    // BuildKit's rule: a live view on a terminal, plain lines otherwise (CI logs).
    let mode = match args.progress {
        _ if quiet => ProgressMode::Quiet,
        ProgressFlag::Plain => ProgressMode::Plain,
        ProgressFlag::Tty => ProgressMode::Tty,
        _ if std::io::stderr().is_terminal() => ProgressMode::Tty,
        _ => ProgressMode::Plain,
    };
    let stage_names: Vec<String> = dockerfile
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| s.name.clone().unwrap_or_else(|| format!("stage-{i}")))
        .collect();
    // UndefinedVar needs the stages evaluated: `--check`, and `error=true` before any step
    // runs, evaluate them first; a build finds it as it goes.
    if check_only || check_config.error {
        let quiet = Progress::new(
            ProgressMode::Quiet,
            stage_names.clone(),
            Box::new(std::io::stderr()),
        );
        match builder::build::check(store, &dockerfile, &options, &quiet) {
            Ok(found) => add_findings(&mut findings, &found, &check_config),
            Err(e) => {
                eprintln!("ERROR: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    if check_only {
        print_check_details(&dockerfile_name, &source, &findings);
        return Ok(ExitCode::from(u8::from(!findings.is_empty())));
    }
    if check_config.error && !findings.is_empty() {
        print_check_summary(&findings);
        let rules: BTreeSet<&str> = findings.iter().map(|f| f.rule).collect();
        let rules: Vec<&str> = rules.into_iter().collect();
        eprintln!(
            "ERROR: lint violation found for rules: {}",
            rules.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    let progress = Progress::new(mode, stage_names, Box::new(std::io::stderr()));
    let result = build(store, &dockerfile, &options, &progress);
    progress.finish();
    if let Some(keep) = &keep_storage {
        prune_cache_after_build(store, keep, started, quiet);
    }
    if let Ok(built) = &result {
        add_findings(&mut findings, &built.lint, &check_config);
    }
    if !quiet {
        print_check_summary(&findings);
    }
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let id = result.config_digest.to_string();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.config.digest": id,
            "containerimage.digest": result.manifest.digest.as_str(),
            "containerimage.descriptor": result.manifest,
            "image.name": options.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(output) = &stdout_output {
        output.copy_to_stdout()?;
    }
    if !quiet {
        eprintln!("writing image {id} done");
    } else if stdout_output.is_none() {
        outln!("{id}");
    }
    if push {
        for tag in &options.tags {
            let name = tag.to_string();
            crate::registry_cmds::push_to(store, &name, &name, &[], &args.registry)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The entitlements `--allow` grants.
#[derive(Debug, Default, PartialEq)]
struct Entitlements {
    insecure: bool,
    device: bool,
}

/// `--allow`, as buildx reads it; unknown entitlements are refused.
fn parse_entitlements(items: &[String]) -> Result<Entitlements> {
    let mut granted = Entitlements::default();
    for item in items.iter().flat_map(|i| i.split(',')) {
        match item.trim() {
            "security.insecure" => granted.insecure = true,
            "device" => granted.device = true,
            "network.host" => {}
            other => {
                bail!("--allow {other:?}: rbuild knows security.insecure, device and network.host")
            }
        }
    }
    Ok(granted)
}

/// The build checks' findings, configured by the `# check=` directive or, over it, the
/// `BUILDKIT_DOCKERFILE_CHECK` build arg (BuildKit's names).
fn build_checks(
    dockerfile: &Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> Result<(CheckConfig, Vec<CheckWarning>)> {
    let (spec, from) = match build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(spec) => (spec.as_str(), "--build-arg BUILDKIT_DOCKERFILE_CHECK"),
        None => {
            let directive = dockerfile.directives.iter().find(|d| d.name == "check");
            (directive.map_or("", |d| d.value.as_str()), "# check=")
        }
    };
    let config = CheckConfig::parse(spec).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
    let findings = run_checks(dockerfile, &config);
    Ok((config, findings))
}

/// Adds what the solver found that `config` reports, each finding once, in line order.
fn add_findings(findings: &mut Vec<CheckWarning>, found: &[CheckWarning], config: &CheckConfig) {
    for warning in found.iter().filter(|w| config.reports(w.rule)) {
        if !findings.contains(warning) {
            findings.push(warning.clone());
        }
    }
    findings.sort_by_key(|w| w.line);
}

/// After a build, as docker build prints them: one line per finding.
fn print_check_summary(findings: &[CheckWarning]) {
    if findings.is_empty() {
        return;
    }
    let plural = if findings.len() == 1 { "" } else { "s" };
    eprintln!(
        " {} warning{plural} found (use rbuild build --check to expand):",
        findings.len()
    );
    for f in findings {
        eprintln!(" - {}: {} (line {})", f.rule, f.message, f.line);
    }
}

/// `--check`: each finding with its rule's documentation and the line it is about.
fn print_check_details(name: &str, source: &str, findings: &[CheckWarning]) {
    for f in findings {
        let text = source.lines().nth(f.line.saturating_sub(1)).unwrap_or("");
        eprintln!("WARNING: {} - {}", f.rule, f.url());
        eprintln!("{}", f.message);
        eprintln!("{name}:{}", f.line);
        eprintln!("--------------------");
        eprintln!("{:>4} | >>> {text}", f.line);
        eprintln!("--------------------\n");
    }
    match findings.len() {
        0 => eprintln!("Check complete, no warnings found."),
        1 => eprintln!("Check complete, 1 warning has been found!"),
        n => eprintln!("Check complete, {n} warnings have been found!"),
    }
}

/// The one output that goes to stdout (`dest=-`), written to a scratch file by the build.
struct StdoutOutput {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl StdoutOutput {
    /// Points the output whose destination is `-` at a scratch file; at most one may be.
    fn take(store: &Store, outputs: &mut [Output]) -> Result<Option<StdoutOutput>> {
        let mut found = None;
        for output in outputs.iter_mut() {
            let path = match output {
                Output::Oci(p) | Output::Docker(p) | Output::Tar(p) => p,
                Output::Local(_) => continue,
            };
            if path.as_os_str() != "-" {
                continue;
            }
            if found.is_some() {
                bail!("only one output can go to stdout");
            }
            let dir = scratch_dir(store, "stdout-")?;
            let file = dir.path().join("output");
            *path = file.clone();
            found = Some(StdoutOutput { _dir: dir, file });
        }
        Ok(found)
    }

    fn copy_to_stdout(&self) -> Result<()> {
        let mut archive = std::fs::File::open(&self.file)
            .with_context(|| format!("open {}", self.file.display()))?;
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut archive, &mut stdout).context("write the output to stdout")?;
        std::io::Write::flush(&mut stdout).context("write the output to stdout")?;
        Ok(())
    }
}

fn parse_pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// `KEY=VALUE`, or `KEY` alone to take the value from the environment (skipped when unset),
/// as docker build does.
fn parse_build_args(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {item:?}: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn options_of(spec: &str) -> BTreeMap<String, String> {
    csv_fields(spec)
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Option `key` of `opts` as buildx reads a boolean one: absent is false; `flag` names the
/// option value in the error.
fn bool_option(opts: &BTreeMap<String, String>, key: &str, flag: &str) -> Result<bool> {
    match opts.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => bail!("{flag}: {key}={other} is not true or false"),
    }
}

/// The comma-separated fields of a buildx option value, read as CSV: a field in double quotes
/// keeps its commas (`type=image,"name=a:1,b:1"`), and `""` inside quotes is one quote.
fn csv_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                push_char(&mut fields, '"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => push_char(&mut fields, c),
        }
    }
    fields
}

fn push_char(fields: &mut [String], c: char) {
    if let Some(field) = fields.last_mut() {
        field.push(c);
    }
}

/// What one `--output` asks for.
enum OutputSpec {
    /// An output the builder writes.
    Builder(Output),
    /// The image itself: in the local store (always), under `name=` names too, and pushed to
    /// its registry with `push=true` (`type=registry` is `type=image,push=true`).
    Image { push: bool, names: Vec<String> },
}

fn parse_output(spec: &str) -> Result<OutputSpec> {
    // buildx's shorthands: `-o -` is a tar on stdout, `-o DIR` a local directory.
    if spec == "-" {
        return Ok(OutputSpec::Builder(Output::Tar(PathBuf::from("-"))));
    }
    if !spec.contains('=') {
        return Ok(OutputSpec::Builder(Output::Local(PathBuf::from(spec))));
    }
    let opts = options_of(spec);
    let dest = || -> Result<PathBuf> {
        opts.get("dest")
            .map(PathBuf::from)
            .with_context(|| format!("--output {spec:?}: dest= is required"))
    };
    let names = || -> Vec<String> {
        opts.get("name")
            .map(|n| {
                n.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let output = match opts.get("type").map(String::as_str) {
        Some("oci") => Output::Oci(dest()?),
        Some("docker") => Output::Docker(dest()?),
        // As buildx: a local output to stdout is a tar of the files.
        Some("local") if opts.get("dest").map(String::as_str) == Some("-") => {
            Output::Tar(PathBuf::from("-"))
        }
        Some("local") => Output::Local(dest()?),
        Some("tar") => Output::Tar(dest()?),
        Some("registry") => {
            return Ok(OutputSpec::Image {
                push: true,
                names: names(),
            })
        }
        Some("image") => {
            return Ok(OutputSpec::Image {
                push: bool_option(&opts, "push", &format!("--output {spec:?}"))?,
                names: names(),
            });
        }
        Some(other) => {
            bail!(
                "--output type={other} is not supported (oci, docker, local, tar, image, registry)"
            )
        }
        None => {
            bail!("--output {spec:?}: type= is required (oci, docker, local, tar, image, registry)")
        }
    };
    Ok(OutputSpec::Builder(output))
}

/// A `--cache-from`: `type=registry,ref=REF`, `type=local,src=DIR`, or a bare `REF`.
fn parse_cache_from(spec: &str, client: Option<&Arc<Client>>) -> Result<Arc<dyn CacheBackend>> {
    if !spec.contains('=') {
        return registry_cache(spec, client);
    }
    let opts = options_of(spec);
    match opts.get("type").map(String::as_str) {
        Some("registry") => {
            let reference = opts
                .get("ref")
                .with_context(|| format!("--cache-from {spec:?}: ref= is required"))?;
            registry_cache(reference, client)
        }
        Some("local") => {
            let src = opts
                .get("src")
                .with_context(|| format!("--cache-from {spec:?}: src= is required"))?;
            Ok(Arc::new(LocalCache::new(src)))
        }
        Some(other) => bail!("--cache-from type={other} is not supported (registry, local)"),
        None => bail!("--cache-from {spec:?}: type= is required (registry, local)"),
    }
}

/// A `--cache-to`: `type=registry,ref=REF` or `type=local,dest=DIR`, with `mode=min|max` and
/// `cache-mounts=true|false`.
fn parse_cache_to(spec: &str, client: Option<&Arc<Client>>) -> Result<CacheExport> {
    let opts = options_of(spec);
    let mode = match opts.get("mode").map(String::as_str) {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(other) => bail!("--cache-to {spec:?}: mode={other} is not min or max"),
    };
    let cache_mounts = bool_option(&opts, "cache-mounts", &format!("--cache-to {spec:?}"))?;
    let backend: Arc<dyn CacheBackend> = match opts.get("type").map(String::as_str) {
        Some("registry") => {
            let reference = opts
                .get("ref")
                .with_context(|| format!("--cache-to {spec:?}: ref= is required"))?;
            registry_cache(reference, client)?
        }
        Some("local") => {
            let dest = opts
                .get("dest")
                .with_context(|| format!("--cache-to {spec:?}: dest= is required"))?;
            Arc::new(LocalCache::new(dest))
        }
        Some(other) => bail!("--cache-to type={other} is not supported (registry, local)"),
        None => bail!("--cache-to {spec:?}: type= is required (registry, local)"),
    };
    Ok(CacheExport {
        backend,
        mode,
        cache_mounts,
    })
}

fn registry_cache(reference: &str, client: Option<&Arc<Client>>) -> Result<Arc<dyn CacheBackend>> {
    let reference = Reference::parse(reference)
        .with_context(|| format!("build cache reference {reference:?}"))?;
    let client = client.context("a registry cache needs a registry client")?;
    Ok(Arc::new(RegistryCache::new(client.clone(), reference)))
}

/// The build context and the Dockerfile, wherever they come from.
struct BuildInputs {
    context: PathBuf,
    /// `None` when the Dockerfile came from standard input.
    dockerfile_path: Option<PathBuf>,
    dockerfile: String,
    named_contexts: BTreeMap<String, NamedContext>,
    /// Held until the build ends: Git checkouts, a context read from standard input.
    _scratch: Vec<tempfile::TempDir>,
}

impl BuildInputs {
    /// A directory; a Git repository, checked out; or `-`, standard input, as `docker build`
    /// reads it. `-f -` reads the Dockerfile from standard input. Then the named contexts.
    fn resolve(
        store: &Store,
        args: &BuildArgs,
        build_args: &BTreeMap<String, String>,
        ssh_agents: &BTreeMap<String, PathBuf>,
    ) -> Result<BuildInputs> {
        let stdin = Path::new("-");
        let dockerfile_on_stdin = args.file.as_deref() == Some(stdin);
        let url = args
            .context
            .to_str()
            .filter(|c| c.starts_with("http://") || c.starts_with("https://"));
        let git = GitSource::parse_path(&args.context);
        let context_is_local = args.context != stdin && git.is_none() && url.is_none();
        let mut scratch = Vec::new();
        let (context, stdin_dockerfile) =
            if args.context == stdin || (url.is_some() && git.is_none()) {
                if dockerfile_on_stdin && args.context == stdin {
                    bail!("the context and the Dockerfile cannot both be read from standard input");
                }
                let input = match url {
                    Some(url) => download(url)?,
                    None => read_stdin()?,
                };
                // As `docker build -` and `docker build URL`: an archive is the context, anything
                // else the Dockerfile (and the context is empty).
                let what = args.context.display().to_string();
                let (dir, dockerfile) = match unpack_archive(store, &input, &what)? {
                    Some(dir) => (dir, None),
                    None => (scratch_dir(store, "context-")?, Some(text_of(input)?)),
                };
                let root = dir.path().to_path_buf();
                scratch.push(dir);
                (root, dockerfile)
            } else if let Some(git) = git {
                let (dir, root) = check_out_context(store, &git, build_args, ssh_agents)?;
                scratch.push(dir);
                (root, None)
            } else {
                (args.context.clone(), None)
            };
        let stdin_dockerfile = match stdin_dockerfile {
            None if dockerfile_on_stdin => Some(text_of(read_stdin()?)?),
            text => text,
        };
        let (dockerfile_path, dockerfile) = match stdin_dockerfile {
            Some(text) => (None, text),
            None => {
                // Unless the context is a local directory, `-f` names a file in it (BuildKit's
                // rule).
                let path = match &args.file {
                    Some(file) if context_is_local => file.clone(),
                    Some(file) => context.join(file),
                    None => context.join("Dockerfile"),
                };
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read the Dockerfile {}", path.display()))?;
                (Some(path), text)
            }
        };
        let named_contexts = named_contexts(store, args, build_args, ssh_agents, &mut scratch)?;
        Ok(BuildInputs {
            context,
            dockerfile_path,
            dockerfile,
            named_contexts,
            _scratch: scratch,
        })
    }
}

/// `--build-context NAME=VALUE`s; Git checkouts go into `scratch`.
fn named_contexts(
    store: &Store,
    args: &BuildArgs,
    build_args: &BTreeMap<String, String>,
    ssh_agents: &BTreeMap<String, PathBuf>,
    scratch: &mut Vec<tempfile::TempDir>,
) -> Result<BTreeMap<String, NamedContext>> {
    let mut named_contexts = BTreeMap::new();
    for spec in &args.build_contexts {
        let Some((name, value)) = spec
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        else {
            bail!("--build-context {spec:?}: expected NAME=VALUE");
        };
        let named = if let Some(image) = value.strip_prefix("docker-image://") {
            NamedContext::Image(image.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            let (path, tag, digest) = parse_layout_context(layout)
                .with_context(|| format!("--build-context {name}={value}"))?;
            let _writing = store.writer_lock()?;
            let manifest = store
                .import_from_layout(Path::new(path), tag, digest.as_ref(), &Platform::host())
                .with_context(|| format!("--build-context {name}={value}"))?;
            NamedContext::StoredImage(manifest.digest)
        } else if let Some(git) = GitSource::parse(value) {
            let (dir, root) = check_out_context(store, &git, build_args, ssh_agents)?;
            scratch.push(dir);
            NamedContext::Directory(root)
        } else if value.starts_with("http://") || value.starts_with("https://") {
            let Some(dir) = unpack_archive(store, &download(value)?, value)? else {
                bail!("--build-context {name}={value}: not a tar archive");
            };
            let root = dir.path().to_path_buf();
            scratch.push(dir);
            NamedContext::Directory(root)
        } else if value.contains("://") {
            bail!("--build-context {name}={value}: only directories, archives over http(s), docker-image://, oci-layout:// and Git repositories are supported");
        } else {
            let dir = Path::new(value);
            if !dir.is_dir() {
                bail!("--build-context {name}={value}: not a directory");
            }
            NamedContext::Directory(
                dir.canonicalize()
                    .with_context(|| format!("--build-context {name}={value}"))?,
            )
        };
        named_contexts.insert(name.to_string(), named);
    }
    Ok(named_contexts)
}

/// `PATH[:TAG][@DIGEST]` of an `oci-layout://` context (buildx's form).
fn parse_layout_context(spec: &str) -> Result<(&str, Option<&str>, Option<Digest>)> {
    let (rest, digest) = match spec.rsplit_once('@') {
        Some((rest, digest)) => (rest, Some(digest.parse::<Digest>()?)),
        None => (spec, None),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !path.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            (path, Some(tag))
        }
        _ => (rest, None),
    };
    if path.is_empty() {
        bail!("no layout directory");
    }
    Ok((path, tag, digest))
}

/// `--annotation KEY=VALUE` or `manifest:KEY=VALUE` (buildx's prefix for the image manifest,
/// the one object a single-platform build makes).
fn parse_annotations(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("--annotation {item:?}: expected KEY=VALUE"))?;
        let key = match key.split_once(':') {
            Some(("manifest", key)) => key,
            Some((kind, _)) if !kind.contains('.') && !kind.contains('/') => {
                bail!("--annotation {item:?}: only manifest annotations are made (no {kind}:)")
            }
            _ => key,
        };
        if key.is_empty() {
            bail!("--annotation {item:?}: the key is empty");
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// `--add-host`, `--ulimit` and `--shm-size`, as docker build reads them.
fn parse_sandbox(args: &BuildArgs) -> Result<RunSandbox> {
    let no_network = match args.network.as_str() {
        "host" | "default" => false,
        "none" => true,
        other => bail!("--network {other}: builds use host (the default) or none"),
    };
    let mut sandbox = RunSandbox {
        no_network,
        ..RunSandbox::default()
    };
    for spec in &args.add_hosts {
        let (name, address) = spec
            .split_once([':', '='])
            .with_context(|| format!("--add-host {spec:?}: expected HOST:IP"))?;
        address
            .parse::<std::net::IpAddr>()
            .with_context(|| format!("--add-host {spec:?}: {address:?} is not an IP address"))?;
        sandbox
            .extra_hosts
            .push((name.to_string(), address.to_string()));
    }
    for spec in &args.ulimits {
        let bad = || format!("--ulimit {spec:?}: expected TYPE=SOFT[:HARD], e.g. nofile=1024:2048");
        let (kind, values) = spec.split_once('=').with_context(bad)?;
        const KINDS: [&str; 16] = [
            "as",
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nofile",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
        ];
        if !KINDS.contains(&kind) {
            bail!("--ulimit {spec:?}: unknown type {kind:?}");
        }
        // docker's -1: unlimited.
        let limit = |v: &str| match v {
            "-1" => Some(u64::MAX),
            v => v.parse().ok(),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (limit(soft), limit(hard)),
            None => (limit(values), limit(values)),
        };
        let (Some(soft), Some(hard)) = (soft, hard) else {
            bail!(bad());
        };
        if soft > hard {
            bail!("--ulimit {spec:?}: the soft limit is above the hard one");
        }
        let name = format!("RLIMIT_{}", kind.to_ascii_uppercase());
        sandbox.ulimits.push((name, soft, hard));
    }
    if let Some(size) = &args.shm_size {
        let bytes = crate::output::parse_bytes(size)
            .filter(|b| *b > 0)
            .with_context(|| format!("--shm-size {size:?}: expected a size such as 256m"))?;
        sandbox.shm_size = Some(bytes);
    }
    Ok(sandbox)
}

/// `RBUILD_GC_KEEP_STORAGE`: how much the build cache may take after a build (`off`: no
/// limit), in bytes and as shown. By default 10% of the store's filesystem, BuildKit's
/// default GC limit.
fn gc_keep_storage(store: &Store) -> Result<Option<(u64, String)>> {
    const VAR: &str = "RBUILD_GC_KEEP_STORAGE";
    match std::env::var(VAR) {
        Ok(v) if v == "off" => Ok(None),
        Ok(v) => crate::output::parse_bytes(&v)
            .map(|bytes| Some((bytes, v.clone())))
            .with_context(|| format!("{VAR}={v:?}: expected a size such as 10GB, or off")),
        Err(_) => {
            let root = std::ffi::CString::new(store.root().as_os_str().as_encoded_bytes())?;
            // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
            let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(root.as_ptr(), &mut fs) } != 0 {
                let e = std::io::Error::last_os_error();
                bail!("statvfs {}: {e}", store.root().display());
            }
            let bytes = fs.f_blocks as u64 * fs.f_frsize as u64 / 10;
            Ok(Some((bytes, crate::output::human_size(bytes))))
        }
    }
}

/// The cache over its limit loses its least recently used records, never this build's. A
/// failure here is reported and does not fail the build, which is done.
fn prune_cache_after_build(
    store: &Store,
    (keep, shown): &(u64, String),
    started: std::time::SystemTime,
    quiet: bool,
) {
    match store.cache_prune_after_build(*keep, started) {
        Ok(Some(report)) if !quiet => {
            if report.records > 0 {
                eprintln!(
                    "build cache over {shown}: removed {} least recently used records, freed {}",
                    report.records,
                    crate::output::human_size(report.collected.bytes)
                );
            }
            let mounts = report.cache_mounts;
            if mounts.mounts > 0 {
                let rule = &image_store::CACHE_MOUNT_GC;
                eprintln!(
                    "cache mounts over {}: removed {} unused for {} hours, freed {}",
                    crate::output::human_size(rule.keep_bytes.unwrap_or(0)),
                    mounts.mounts,
                    rule.unused_for.unwrap_or_default().as_secs() / 3600,
                    crate::output::human_size(mounts.bytes)
                );
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("WARNING: pruning the build cache: {e}"),
    }
}

/// A new directory in the store's scratch space, removed on drop.
fn scratch_dir(store: &Store, prefix: &str) -> Result<tempfile::TempDir> {
    let scratch = store.scratch_dir()?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&scratch)
        .with_context(|| format!("create a directory in {}", scratch.display()))
}

fn download(url: &str) -> Result<Vec<u8>> {
    let response = reqwest::blocking::get(url)
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("download the context {url}"))?;
    let body = response
        .bytes()
        .with_context(|| format!("download the context {url}"))?;
    Ok(body.to_vec())
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input).context("read standard input")?;
    Ok(input)
}

fn text_of(input: Vec<u8>) -> Result<String> {
    String::from_utf8(input).context("the Dockerfile is not UTF-8 text")
}

/// `input` unpacked into a new scratch directory, if it is a tar archive (plain, gzip, zstd).
fn unpack_archive(store: &Store, input: &[u8], what: &str) -> Result<Option<tempfile::TempDir>> {
    let Some(compression) = archive_compression(input) else {
        return Ok(None);
    };
    let dir = scratch_dir(store, "context-")?;
    oci::layer::apply(input, compression, dir.path(), ApplyMode::Merged)
        .with_context(|| format!("unpack {what}"))?;
    Ok(Some(dir))
}

/// How `input` is compressed if it is a tar archive (a tar header says `ustar` at 257).
fn archive_compression(input: &[u8]) -> Option<Compression> {
    match Compression::detect(input) {
        Compression::None => (input.get(257..262) == Some(b"ustar")).then_some(Compression::None),
        compressed => Some(compressed),
    }
}

/// Checks out a Git context in the store's scratch space: the checkout (removed on drop) and
/// the context's directory in it. `.git` is kept with the build arg
/// BUILDKIT_CONTEXT_KEEP_GIT_DIR=1, as BuildKit does (reference.md).
fn check_out_context(
    store: &Store,
    git: &GitSource,
    build_args: &BTreeMap<String, String>,
    ssh_agents: &BTreeMap<String, PathBuf>,
) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = scratch_dir(store, "git-context-")?;
    let keep_git_dir = build_args
        .get("BUILDKIT_CONTEXT_KEEP_GIT_DIR")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    let agent = ssh_agents.get("default").map(PathBuf::as_path);
    let commit = git.resolve(agent).map_err(anyhow::Error::msg)?;
    let root = git
        .checkout(&commit, dir.path(), keep_git_dir, agent)
        .map_err(anyhow::Error::msg)?;
    Ok((dir, root))
}

/// `--ssh ID[=SOCKET]` as buildx takes it; without a socket, $SSH_AUTH_SOCK. buildx also
/// takes key files, which it loads into an agent of its own: here they are refused with the
/// way around (ssh-add the key to an agent).
fn parse_ssh_agents(items: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = BTreeMap::new();
    for item in items {
        let (id, socket) = match item.split_once('=') {
            Some((id, socket)) => (id, PathBuf::from(socket)),
            None => (
                item.as_str(),
                std::env::var_os("SSH_AUTH_SOCK")
                    .map(PathBuf::from)
                    .with_context(|| format!("--ssh {item}: SSH_AUTH_SOCK is not set"))?,
            ),
        };
        if id.is_empty() || socket.as_os_str().is_empty() {
            bail!("--ssh {item:?}: expected ID or ID=SOCKET");
        }
        let meta = std::fs::metadata(&socket)
            .with_context(|| format!("--ssh {id}: {}", socket.display()))?;
        if !meta.file_type().is_socket() {
            bail!(
                "--ssh {id}: {} is not a socket; only ssh-agent sockets are forwarded \
                 (load the key with `ssh-add` and pass the agent's $SSH_AUTH_SOCK)",
                socket.display()
            );
        }
        out.insert(id.to_string(), socket);
    }
    Ok(out)
}

/// `--secret` as buildx reads it: `id=ID,src=FILE`, `id=ID,env=VAR`, `type=env,id=VAR`; an
/// `id` alone is the variable of that name if it is set, else the file of that name; without
/// an `id`, the file's name is it.
fn parse_secrets(items: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, "file");
        for field in item.split(',') {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("--secret {item:?}: {field:?} is not KEY=VALUE"))?;
            match key.to_ascii_lowercase().as_str() {
                "id" => id = Some(value.to_string()),
                "src" | "source" => src = Some(value.to_string()),
                "env" => env = Some(value.to_string()),
                "type" if value == "file" || value == "env" => kind = value,
                "type" => bail!("--secret {item:?}: type is file or env, not {value:?}"),
                _ => bail!("--secret {item:?}: unknown key {key:?}"),
            }
        }
        if kind == "env" && env.is_none() {
            env = src.take().or_else(|| id.clone());
        }
        let id = match (id, &src) {
            (Some(id), _) => id,
            (None, Some(src)) => Path::new(src)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (None, None) => bail!("--secret {item:?}: id= is required"),
        };
        if src.is_none() && env.is_none() && std::env::var_os(&id).is_some() {
            env = Some(id.clone());
        }
        let value = match env {
            Some(var) => std::env::var(&var)
                .with_context(|| {
                    format!("--secret id={id}: environment variable {var} is not set")
                })?
                .into_bytes(),
            None => {
                let src = src.unwrap_or_else(|| id.clone());
                std::fs::read(&src).with_context(|| format!("--secret id={id}: read {src}"))?
            }
        };
        out.insert(id, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_read_as_buildx_reads_them() {
        assert_eq!(
            csv_fields(r#"type=image,"name=a:1,b:1",push=true"#),
            ["type=image", "name=a:1,b:1", "push=true"]
        );
        assert_eq!(csv_fields(r#""a=say ""hi""",b"#), [r#"a=say "hi""#, "b"]);
        let OutputSpec::Image { push, names } =
            parse_output(r#"type=image,"name=a:1,b:1",push=true"#).unwrap()
        else {
            panic!("not the image");
        };
        assert!(push);
        assert_eq!(names, ["a:1", "b:1"]);
        assert!(matches!(
            parse_output("type=registry,name=r/x:1").unwrap(),
            OutputSpec::Image { push: true, .. }
        ));
        assert!(matches!(
            parse_output("type=image").unwrap(),
            OutputSpec::Image { push: false, .. }
        ));
        assert!(parse_output("type=image,push=maybe").is_err());
    }

    #[test]
    fn secrets_read_as_buildx_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("token.txt");
        std::fs::write(&file, "from-file").unwrap();
        // A name no other test or tool sets; tests of this binary run on threads of one process.
        std::env::set_var("RBUILD_UNIT_SECRET", "from-env");
        let src = file.display();
        let parsed = parse_secrets(&[
            format!("id=a,src={src}"),
            "id=b,env=RBUILD_UNIT_SECRET".to_string(),
            "type=env,id=RBUILD_UNIT_SECRET".to_string(),
            format!("src={src}"),
            "id=RBUILD_UNIT_SECRET".to_string(),
        ])
        .unwrap();
        let text = |id: &str| String::from_utf8(parsed[id].clone()).unwrap();
        assert_eq!(text("a"), "from-file");
        assert_eq!(text("b"), "from-env");
        assert_eq!(text("RBUILD_UNIT_SECRET"), "from-env");
        assert_eq!(text("token.txt"), "from-file");
        for bad in ["id=x,kind=file", "type=vault,id=x", "env=ONLY", "id=x,src"] {
            assert!(parse_secrets(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
