//! Drives `oci::layer` for bench/layer.sh (not a user tool):
//!   layer create DIR OUT [--compression gzip|zstd|none] [--level N] [--threads N] [--overlay]
//!   layer apply LAYER DIR [--overlay-layer]
//! Prints the result's digests and sizes on stdout.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use oci::compression::{CompressOptions, Compression};
use oci::layer::{self, ApplyMode, CreateOptions, SourceKind};

#[derive(Parser)]
#[command(about = "Create or apply an OCI layer with rbuild's layer code (benchmark driver)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes DIR as a layer blob to OUT.
    Create {
        dir: PathBuf,
        out: PathBuf,
        #[arg(long, value_enum, default_value = "gzip")]
        compression: Codec,
        /// Compression level (default: the library's default for the codec).
        #[arg(long)]
        level: Option<i32>,
        /// Compression threads (0 = one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Treat DIR as an overlayfs upper directory.
        #[arg(long)]
        overlay: bool,
    },
    /// Extracts LAYER (compression detected from its first bytes) onto DIR.
    Apply {
        layer: PathBuf,
        dir: PathBuf,
        /// Unpack as an overlayfs lowerdir instead of merging.
        #[arg(long)]
        overlay_layer: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    Gzip,
    Zstd,
    None,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Create {
            dir,
            out,
            compression,
            level,
            threads,
            overlay,
        } => {
            let opts = CreateOptions {
                compression: match compression {
                    Codec::Gzip => Compression::Gzip,
                    Codec::Zstd => Compression::Zstd,
                    Codec::None => Compression::None,
                },
                compress: CompressOptions { level, threads },
                source_date_epoch: None,
            };
            let kind = if overlay {
                SourceKind::OverlayUpper
            } else {
                SourceKind::Directory
            };
            let file = File::create(&out).with_context(|| format!("create {}", out.display()))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            let info = layer::create(&dir, kind, &opts, &mut writer)
                .with_context(|| format!("create a layer from {}", dir.display()))?;
            // No fsync: the peer pipelines leave their output in the page cache too.
            writer
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|mut f| f.flush())
                .with_context(|| format!("write {}", out.display()))?;
            println!(
                "digest={} diff_id={} size={} uncompressed_size={}",
                info.digest, info.diff_id, info.size, info.uncompressed_size
            );
        }
        Command::Apply {
            layer: blob,
            dir,
            overlay_layer,
        } => {
            let mut file = File::open(&blob).with_context(|| format!("open {}", blob.display()))?;
            let mut magic = [0u8; 4];
            let n = file
                .read(&mut magic)
                .context("read the layer's first bytes")?;
            file.rewind().context("rewind the layer")?;
            let compression = Compression::detect(&magic[..n]);
            let mode = if overlay_layer {
                ApplyMode::OverlayLayer
            } else {
                ApplyMode::Merged
            };
            let stats = layer::apply(
                BufReader::with_capacity(1 << 20, file),
                compression,
                &dir,
                mode,
            )
            .with_context(|| format!("apply {} onto {}", blob.display(), dir.display()))?;
            println!(
                "entries={} bytes={} diff_id={}",
                stats.entries, stats.bytes, stats.diff_id
            );
        }
    }
    std::io::stdout().flush().context("write stdout")?;
    Ok(())
}
