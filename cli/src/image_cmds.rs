//! `rbuild images`, `inspect`, `tag`, `rmi`, `prune`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use image_store::{CachePrune, LayerContentSizes, RemoveOutcome, Store};
use oci::Reference;
use serde_json::{json, Value};

use crate::go_template::{GoType, Template};
use crate::image_filter::ImageFilter;
use crate::output::{
    go_time_string, human_age, human_size, outln, print_line, print_rows, rfc3339_seconds,
};

#[derive(Args)]
pub struct ImagesArgs {
    /// Only this repository (and tag), e.g. `busybox` or `busybox:1.36`
    reference: Option<String>,
    /// `table` (default), `json` (one object per line), or a Go template as docker's:
    /// `{{.Repository}}:{{.Tag}}`, `table {{.ID}}\t{{.Size}}`
    #[arg(long, default_value = "table")]
    format: String,
    /// Show only image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show whole image IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show digests (the default table gains a DIGEST column)
    #[arg(long)]
    digests: bool,
    /// docker's filters: `dangling=true|false`, `reference=PATTERN` (`app:*`),
    /// `label=KEY[=VALUE]`, `before=IMAGE`, `since=IMAGE`, `until=TIME` (`24h`, RFC 3339)
    #[arg(short, long)]
    filter: Vec<String>,
    /// Accepted for docker scripts: rbuild keeps no intermediate images to show
    #[arg(short, long)]
    all: bool,
}

/// One row of `rbuild images`.
struct Row {
    repository: String,
    tag: String,
    id: oci::Digest,
    digest: oci::Digest,
    created: Option<String>,
    size: u64,
}

pub fn images(store: &Store, args: ImagesArgs) -> Result<ExitCode> {
    let filter = args
        .reference
        .as_deref()
        .map(Reference::parse_name_only)
        .transpose()?;
    let filters = ImageFilter::parse(
        store,
        &args.filter,
        &["dangling", "reference", "label", "before", "since", "until"],
    )?;
    let mut rows = Vec::new();
    let mut sizes = store.layer_content_sizes();
    for image in store.images()? {
        let (manifest, config, _) = store.image_config(&image)?;
        if !filters.image_matches(&image, &config) {
            continue;
        }
        // docker's SIZE: the bytes of the image's files (`-q` shows no size).
        let size = match args.quiet {
            true => 0,
            false => sizes.of_image(&manifest, &config)?.iter().sum(),
        };
        let row = |repository: String, tag: String| Row {
            repository,
            tag,
            id: manifest.config.digest.clone(),
            digest: image.descriptor.digest.clone(),
            created: config.created.clone(),
            size,
        };
        if image.names.is_empty() {
            if filter.is_none() && !filters.has_references() {
                rows.push(row("<none>".into(), "<none>".into()));
            }
            continue;
        }
        for name in &image.names {
            let wanted = filters.name_matches(name)
                && filter.as_ref().is_none_or(|f| {
                    f.name() == name.name() && (f.tag.is_none() || f.tag == name.tag)
                });
            if wanted {
                let tag = name.tag.clone().unwrap_or_else(|| "<none>".into());
                rows.push(row(name.familiar_name(), tag));
            }
        }
    }
    // Newest first, as docker lists them.
    rows.sort_by(|a, b| {
        let t = |r: &Row| r.created.as_deref().and_then(oci::timestamp::parse_rfc3339);
        t(b).cmp(&t(a))
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    // Every image was asked about: sizes of layers no image has are forgotten.
    sizes.save(!args.quiet && filter.is_none() && args.filter.is_empty());
    if args.quiet {
        for row in &rows {
            match args.no_trunc {
                true => print_line(row.id.as_str()),
                false => print_line(row.id.short()),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "Repository": row.repository,
                "Tag": row.tag,
                "ID": if args.no_trunc { row.id.as_str() } else { row.id.short() },
                "Digest": row.digest.as_str(),
                "CreatedAt": go_time_string(row.created.as_deref()),
                "CreatedSince": human_age(row.created.as_deref()),
                "Size": human_size(row.size),
                "VirtualSize": human_size(row.size),
            })
        })
        .collect();
    print_rows(
        &args.format,
        match args.digests {
            true => "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
            false => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
        },
        &[
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("ID", "IMAGE ID"),
            ("Digest", "DIGEST"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedSince", "CREATED"),
            ("Size", "SIZE"),
            ("VirtualSize", "VIRTUAL SIZE"),
        ],
        &json_rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct HistoryArgs {
    image: String,
    /// Show whole commands
    #[arg(long)]
    no_trunc: bool,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// `table` (default), `json` (one object per line), or a Go template as docker's:
    /// `{{.CreatedBy}} {{.Size}}`
    #[arg(long, default_value = "table")]
    format: String,
    /// Sizes and dates for people (`-H=false`: bytes, and RFC 3339 times)
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    human: bool,
}

/// `docker history`: the image's history entries, newest first, each with the size of the
/// layer it made (its files' bytes, as docker shows it).
pub fn history(store: &Store, args: HistoryArgs) -> Result<ExitCode> {
    let image = store.resolve(&args.image)?;
    let (manifest, config, _) = store.image_config(&image)?;
    let id = manifest.config.digest.clone();
    if args.quiet {
        outln!("{}", id.short());
        return Ok(ExitCode::SUCCESS);
    }
    let mut sizes = store.layer_content_sizes();
    let layer_sizes = sizes.of_image(&manifest, &config)?;
    sizes.save(false);
    let mut layers = layer_sizes.into_iter();
    let mut rows: Vec<(Option<String>, String, u64, String)> = config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().unwrap_or(0)
            };
            let created_by = h.created_by.clone().unwrap_or_default();
            (
                h.created.clone(),
                created_by,
                size,
                h.comment.clone().unwrap_or_default(),
            )
        })
        .collect();
    rows.reverse();
    let json_rows: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(n, (created, created_by, size, comment))| {
            let image = match n {
                0 if args.no_trunc => id.as_str(),
                0 => id.short(),
                _ => "<missing>",
            };
            let created_by = match created_by.char_indices().nth(44) {
                Some((cut, _)) if !args.no_trunc => format!("{}…", &created_by[..cut]),
                _ => created_by.clone(),
            };
            json!({
                "ID": image,
                "CreatedAt": rfc3339_seconds(created.as_deref()),
                "CreatedSince": match args.human {
                    true => human_age(created.as_deref()),
                    false => rfc3339_seconds(created.as_deref()),
                },
                "CreatedBy": created_by,
                "Size": match args.human {
                    true => human_size(*size),
                    false => size.to_string(),
                },
                "Comment": comment,
            })
        })
        .collect();
    print_rows(
        &args.format,
        match args.human {
            true => "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
            false => "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        },
        &[
            ("ID", "IMAGE"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedSince", "CREATED"),
            ("CreatedBy", "CREATED BY"),
            ("Size", "SIZE"),
            ("Comment", "COMMENT"),
        ],
        &json_rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// `image`, the only kind of object rbuild has (`docker inspect --type=image` in scripts)
    #[arg(long = "type", value_parser = ["image"])]
    kind: Option<String>,
    /// A Go template for each image, as docker's: `{{.Id}}`, `{{index .RepoDigests 0}}`,
    /// `{{json .Config.Labels}}`; `json` is the default output
    #[arg(short, long)]
    format: Option<String>,
}

pub fn inspect(store: &Store, args: InspectArgs) -> Result<ExitCode> {
    let template = match args.format.as_deref() {
        None | Some("json") => None,
        Some(source) => Some(Template::parse(source)?.with_go_types(IMAGE_INSPECT_GO_TYPES)),
    };
    let mut out = Vec::new();
    let mut code = ExitCode::SUCCESS;
    let mut sizes = store.layer_content_sizes();
    for name in &args.images {
        match inspect_one(store, &mut sizes, name) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("rbuild: {e:#}");
                code = ExitCode::from(1);
            }
        }
    }
    sizes.save(false);
    match template {
        None => outln!("{}", serde_json::to_string_pretty(&out)?),
        Some(template) => {
            for image in &out {
                print_line(&template.render(image)?);
            }
        }
    }
    Ok(code)
}

/// The Go types of docker's `ImageInspect` and `container.Config` fields that JSON leaves
/// ambiguous (null, or omitted when empty), so that `-f '{{.Config.User}}'` prints "" and
/// `{{.Config.Labels}}` `map[]`, as docker's typed templates do.
const IMAGE_INSPECT_GO_TYPES: &[(&str, GoType)] = &[
    ("Hostname", GoType::String),
    ("Domainname", GoType::String),
    ("User", GoType::String),
    ("Image", GoType::String),
    ("WorkingDir", GoType::String),
    ("StopSignal", GoType::String),
    ("MacAddress", GoType::String),
    ("Variant", GoType::String),
    ("OsVersion", GoType::String),
    ("Parent", GoType::String),
    ("Comment", GoType::String),
    ("Container", GoType::String),
    ("DockerVersion", GoType::String),
    ("Author", GoType::String),
    ("AttachStdin", GoType::Bool),
    ("AttachStdout", GoType::Bool),
    ("AttachStderr", GoType::Bool),
    ("Tty", GoType::Bool),
    ("OpenStdin", GoType::Bool),
    ("StdinOnce", GoType::Bool),
    ("ArgsEscaped", GoType::Bool),
    ("NetworkDisabled", GoType::Bool),
    ("Env", GoType::Slice),
    ("Cmd", GoType::Slice),
    ("Entrypoint", GoType::Slice),
    ("OnBuild", GoType::Slice),
    ("Shell", GoType::Slice),
    ("RepoTags", GoType::Slice),
    ("RepoDigests", GoType::Slice),
    ("Labels", GoType::StringMap),
    ("ExposedPorts", GoType::StructSetMap),
    ("Volumes", GoType::StructSetMap),
    ("Healthcheck", GoType::Pointer),
];

/// docker's `container.Config` as `docker image inspect` prints it: every field that is not
/// `omitempty`, zero or null when the image's config lacks it, then the image's own.
fn docker_container_config(config: Option<Value>) -> Value {
    let mut full = json!({
        "Hostname": "", "Domainname": "", "User": "",
        "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
        "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
        "Entrypoint": null, "OnBuild": null, "Labels": null,
    });
    if let (Some(Value::Object(own)), Value::Object(full)) = (config, &mut full) {
        full.extend(own);
    }
    full
}

/// `docker image inspect`'s fields (API 1.41), plus the manifest's descriptor and layers. Not
/// given: GraphDriver (rbuild has none) and Metadata.LastTagTime (not recorded).
fn inspect_one(store: &Store, sizes: &mut LayerContentSizes, name: &str) -> Result<Value> {
    let image = store.resolve(name)?;
    let (manifest, config, _) = store.image_config(&image)?;
    // In docker's order: by the names written out in full (`docker.io/library/x:1`).
    let mut names: Vec<&Reference> = image.names.iter().collect();
    names.sort_by_cached_key(|n| n.to_string());
    let repo_tags: Vec<String> = names
        .iter()
        .filter_map(|n| n.tag.as_ref().map(|t| format!("{}:{t}", n.familiar_name())))
        .collect();
    let mut repo_digests: Vec<String> = names
        .iter()
        .map(|n| format!("{}@{}", n.familiar_name(), image.descriptor.digest))
        .collect();
    repo_digests.dedup();
    // docker's Size: the bytes of the image's files, not of its compressed blobs.
    let size: u64 = sizes.of_image(&manifest, &config)?.iter().sum();
    // Fields docker's own builder and `docker import` write into configs.
    let text = |key: &str| {
        config
            .extra
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    // As docker: the config's comment, or else its last history entry's.
    let comment = match text("comment") {
        "" => config.history.last().and_then(|h| h.comment.as_deref()),
        comment => Some(comment),
    };
    let mut inspected = json!({
        "Id": manifest.config.digest.as_str(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": text("parent"),
        "Comment": comment.unwrap_or_default(),
        "Created": config.created,
        "Container": text("container"),
        "ContainerConfig": docker_container_config(config.extra.get("container_config").cloned()),
        "DockerVersion": text("docker_version"),
        "Author": config.author.clone().unwrap_or_default(),
        "Config": docker_container_config(serde_json::to_value(&config.config)?.into()),
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": size,
        "VirtualSize": size,
        "RootFS": {
            "Type": config.rootfs.kind,
            "Layers": config.rootfs.diff_ids,
        },
        "Descriptor": image.descriptor,
        "Layers": manifest.layers,
    });
    // omitempty in docker's struct.
    for (field, value) in [
        ("Variant", &config.variant),
        ("OsVersion", &config.os_version),
    ] {
        if let Some(value) = value {
            inspected[field] = value.as_str().into();
        }
    }
    Ok(inspected)
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(store: &Store, args: TagArgs) -> Result<ExitCode> {
    let target = Reference::parse(&args.target)?;
    store.tag(&args.source, &target)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image by ID even when it has several names
    #[arg(short, long)]
    force: bool,
}

pub fn rmi(store: &Store, args: RmiArgs) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for name in &args.images {
        match store.remove(name, args.force) {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        RemoveOutcome::Untagged(r) => outln!(
                            "Untagged: {}:{}",
                            r.familiar_name(),
                            r.tag.unwrap_or_default()
                        ),
                        RemoveOutcome::Deleted(id) => outln!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("rbuild: {e}");
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove every image the filters pass, not only untagged ones (rbuild keeps no containers
    /// that could be using them)
    #[arg(short, long)]
    all: bool,
    /// docker's filters: `until=TIME` (`24h`, RFC 3339), `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`
    #[arg(long)]
    filter: Vec<String>,
    /// Accepted for docker compatibility; rbuild does not ask
    #[arg(short, long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache: every record, or those the filters pick, least recently used first
    Prune(BuilderPruneArgs),
}

#[derive(Args)]
pub struct BuilderPruneArgs {
    /// Also remove the RUN --mount=type=cache directories (with `until`, those unused that long)
    #[arg(short, long)]
    all: bool,
    /// `until=DURATION`: only records not used for that long (e.g. `until=24h`)
    #[arg(long)]
    filter: Vec<String>,
    /// Remove least recently used records until the cache takes at most this (e.g. `10GB`)
    #[arg(long)]
    keep_storage: Option<String>,
    /// Accepted for docker compatibility; rbuild does not ask
    #[arg(short, long)]
    force: bool,
}

pub fn builder(store: &Store, command: BuilderCommand) -> Result<ExitCode> {
    let BuilderCommand::Prune(args) = command;
    let mut policy = CachePrune {
        cache_mounts: args.all,
        ..CachePrune::default()
    };
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("until", age)) => {
                let age = oci::timestamp::parse_go_duration(age)
                    .map_err(|e| anyhow::anyhow!("--filter {filter}: {e}"))?;
                policy.unused_for = Some(age);
            }
            _ => bail!("--filter {filter:?}: only until=DURATION is supported"),
        }
    }
    if let Some(size) = &args.keep_storage {
        let bytes = crate::output::parse_bytes(size)
            .with_context(|| format!("--keep-storage {size:?}: expected a size such as 10GB"))?;
        policy.keep_bytes = Some(bytes);
    }
    let report = store
        .cache_prune(&policy)
        .context("pruning the build cache")?;
    let mounts = match report.cache_mounts.mounts {
        0 => String::new(),
        1 => ", 1 cache mount".to_string(),
        n => format!(", {n} cache mounts"),
    };
    outln!(
        "Deleted {} build cache records{mounts}, {} blobs, {} unpacked layers\nTotal reclaimed space: {}",
        report.records,
        report.collected.blobs,
        report.collected.layers,
        human_size(report.collected.bytes + report.cache_mounts.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Remove unused images and build cache, as `docker system prune`
    Prune(SystemPruneArgs),
}

#[derive(Args)]
pub struct SystemPruneArgs {
    /// Remove every image the filters pass (not only untagged ones), and all build cache
    /// including RUN --mount=type=cache directories
    #[arg(short, long)]
    all: bool,
    /// `until=TIME` (images and build cache), `label=KEY[=VALUE]`, `label!=…` (images)
    #[arg(long)]
    filter: Vec<String>,
    /// Accepted for docker compatibility; rbuild does not ask
    #[arg(short, long)]
    force: bool,
    /// Accepted for docker compatibility: rbuild keeps no volumes
    #[arg(long)]
    volumes: bool,
}

/// `rbuild system prune`: `prune` of images, then `builder prune` of the build cache.
pub fn system(store: &Store, command: SystemCommand) -> Result<ExitCode> {
    let SystemCommand::Prune(args) = command;
    prune(
        store,
        PruneArgs {
            all: args.all,
            filter: args.filter.clone(),
            force: true,
        },
    )?;
    builder(
        store,
        BuilderCommand::Prune(BuilderPruneArgs {
            all: args.all,
            filter: args
                .filter
                .into_iter()
                .filter(|f| f.starts_with("until="))
                .collect(),
            keep_storage: None,
            force: true,
        }),
    )
}

pub fn prune(store: &Store, args: PruneArgs) -> Result<ExitCode> {
    let filters = ImageFilter::parse(store, &args.filter, &["until", "label"])?;
    let report = store
        .prune_images_where(|image| {
            (args.all || image.names.is_empty())
                // An image whose config cannot be read is kept: prune never guesses.
                && store
                    .image_config(image)
                    .is_ok_and(|(_, config, _)| filters.image_matches(image, &config))
        })
        .context("pruning the image store")?;
    outln!(
        "Deleted {} untagged images, {} blobs, {} unpacked layers\nTotal reclaimed space: {}",
        report.images,
        report.blobs,
        report.layers,
        human_size(report.bytes)
    );
    Ok(ExitCode::SUCCESS)
}
