//! `rbuild import`, `load` and `save`: images in and out of the store as files.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use image_store::Store;
use oci::archive::{read_archive, write_archive, write_archive_file, ArchiveFormat, ArchiveImage};
use oci::compression::Compression;
use oci::image::{to_json_bytes, History, ImageConfig, Manifest};
use oci::timestamp::{format_rfc3339, now_unix};
use oci::{media_type, Descriptor, Platform, Reference};

use crate::output::outln;

#[derive(Args)]
pub struct ImportArgs {
    /// A root filesystem tarball (plain, gzip or zstd), or `-` for standard input
    file: String,
    /// The image's name, e.g. `myimage:1`; without it the image is untagged
    reference: Option<String>,
    /// Apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, USER, VOLUME, WORKDIR (repeatable)
    #[arg(short, long = "change")]
    changes: Vec<String>,
    /// A commit message for the image history
    #[arg(short, long)]
    message: Option<String>,
    /// The image's platform (only this host's is accepted)
    #[arg(long)]
    platform: Option<String>,
}

pub fn import(store: &Store, args: ImportArgs) -> Result<ExitCode> {
    let name = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)
            .with_context(|| format!("invalid platform {p:?}: expected os/arch[/variant]"))?,
        None => Platform::host(),
    };
    let mut config = ImageConfig::for_platform(&platform);
    for change in &args.changes {
        crate::changes::apply(&mut config, change)
            .with_context(|| format!("--change {change:?}"))?;
    }
    let _writing = store.writer_lock()?;
    let input = open_input(&args.file)?;
    let (layer, diff_id) = store
        .ingest_layer_tar(input, Compression::Gzip)
        .with_context(|| format!("importing {}", args.file))?;
    let created = format_rfc3339(now_unix());
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(diff_id);
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("rbuild import {}", args.file)),
        comment: Some(
            args.message
                .clone()
                .unwrap_or_else(|| "Imported from ".to_string() + &args.file),
        ),
        ..History::default()
    });
    let config_bytes = to_json_bytes(&config);
    let config_digest = store.content().put(&config_bytes)?;
    let manifest = Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        vec![layer],
    );
    let manifest_bytes = to_json_bytes(&manifest);
    let manifest_digest = store.content().put(&manifest_bytes)?;
    let descriptor = Descriptor::new(
        media_type::OCI_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    store.add_image(&descriptor, name.as_slice())?;
    outln!("{config_digest}");
    Ok(ExitCode::SUCCESS)
}

fn open_input(file: &str) -> Result<Box<dyn Read + Send>> {
    if file == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let f = File::open(file).with_context(|| format!("open {file}"))?;
    Ok(Box::new(f))
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input
    #[arg(short, long)]
    input: Option<String>,
    /// Print nothing
    #[arg(short, long)]
    quiet: bool,
}

pub fn load(store: &Store, args: LoadArgs) -> Result<ExitCode> {
    let source = args.input.clone().unwrap_or_else(|| "-".to_string());
    if source == "-" && io::stdin().is_terminal() {
        bail!(
            "requested load from stdin, but stdin is a terminal: use -i FILE or pipe an archive in"
        );
    }
    let _writing = store.writer_lock()?;
    let input = open_input(&source)?;
    let loaded =
        read_archive(store.content(), input).with_context(|| format!("loading {source}"))?;
    for image in &loaded.images {
        store.add_image(&image.descriptor, &image.names)?;
    }
    if !args.quiet {
        for image in &loaded.images {
            if image.names.is_empty() {
                let id = store
                    .manifest_for_host(&image.descriptor)
                    .map(|(_, m)| m.config.digest);
                outln!(
                    "Loaded image ID: {}",
                    id.map_or_else(|_| image.descriptor.digest.to_string(), |d| d.to_string())
                );
            }
            for name in &image.names {
                outln!(
                    "Loaded image: {}:{}",
                    name.familiar_name(),
                    name.tag.as_deref().unwrap_or("latest")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    /// docker-archive, as `docker save` writes it (also a valid OCI layout)
    Docker,
    /// OCI image layout in a tar (oci-archive)
    Oci,
}

#[derive(Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "docker")]
    format: SaveFormat,
}

pub fn save(store: &Store, args: SaveArgs) -> Result<ExitCode> {
    let mut images: Vec<ArchiveImage> = Vec::new();
    for name in &args.images {
        let record = store.resolve(name)?;
        // A name saves that name; an ID saves the image with all its names.
        let names = match Reference::parse(name) {
            Ok(r) if record.names.contains(&r) => vec![r],
            _ => record.names.clone(),
        };
        match images
            .iter_mut()
            .find(|i| i.descriptor.digest == record.descriptor.digest)
        {
            Some(existing) => {
                for n in names {
                    if !existing.names.contains(&n) {
                        existing.names.push(n);
                    }
                }
            }
            None => images.push(ArchiveImage {
                names,
                descriptor: record.descriptor,
            }),
        }
    }
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    match &args.output {
        Some(path) => write_archive_file(store.content(), &images, format, path)
            .with_context(|| format!("write {}", path.display()))?,
        None => {
            if io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect standard output");
            }
            let stdout = io::stdout().lock();
            write_archive(
                store.content(),
                &images,
                format,
                io::BufWriter::with_capacity(1 << 20, stdout),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
