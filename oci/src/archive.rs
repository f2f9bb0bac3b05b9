//! Image archives: OCI image layouts in a tar (image-layout.md; what `skopeo copy oci-archive:`
//! and `docker save` of Docker 25+ write) and docker-archive (`docker save` of older Dockers:
//! `manifest.json` naming a config and `<id>/layer.tar` files).
//!
//! Writing produces one tar that is both: an OCI layout (`oci-layout`, `index.json`, `blobs/`)
//! plus, for the docker format, a `manifest.json` whose paths point into `blobs/` — the shape
//! Docker 25 writes, which older `docker load` reads too. Reading streams the archive once, so
//! it works from stdin: every blob-like file goes straight into the content store (verified
//! against its name where the name is a digest), and the metadata is read at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compression::{decompress, Compression};
use crate::content::{ContentError, ContentStore, Expected};
use crate::descriptor::{Descriptor, Platform};
use crate::digest::Digest;
use crate::image::{to_json_bytes, ImageConfig, ImageJsonError, Index, Manifest, ManifestOrIndex};
use crate::media_type;
use crate::reference::Reference;

/// The annotation holding an image's full name in an index (containerd, BuildKit, Docker 25).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a reference in a layout's index.json (annotations.md).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Metadata files are read into memory; anything bigger is not metadata.
const MAX_METADATA_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{entry}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: Box<ArchiveError>,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Json(#[from] ImageJsonError),
    #[error("{file}: invalid JSON: {source}")]
    Metadata {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("not an image archive: no index.json or manifest.json found")]
    NotAnArchive,
    #[error("{0}: unsupported media type")]
    UnknownMediaType(String),
    #[error("{path}: referenced by the archive but not in it")]
    MissingFile { path: String },
    #[error("blob {0} is referenced but missing")]
    MissingBlob(Digest),
    #[error("image {image}: {found} layers but {expected} diff IDs in its config")]
    LayerCount {
        image: String,
        found: usize,
        expected: usize,
    },
    #[error("no manifest for platform {0} in the index")]
    NoPlatform(String),
    #[error("{0}")]
    Invalid(String),
}

/// The two archive formats rbuild writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

/// An image to write, or an image found in an archive: its names and the descriptor of its
/// manifest (or index).
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub names: Vec<Reference>,
    pub descriptor: Descriptor,
}

/// `manifest.json` of a docker-archive.
#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.encoded())
}

/// Resolves an image descriptor to the manifest for `platform`: a manifest is itself, an index
/// yields its matching child.
pub fn resolve_platform(
    store: &ContentStore,
    descriptor: &Descriptor,
    platform: &Platform,
) -> Result<(Descriptor, Manifest), ArchiveError> {
    let bytes = store.read(&descriptor.digest)?;
    match ManifestOrIndex::parse(&descriptor.media_type, &bytes)? {
        ManifestOrIndex::Manifest(m) => Ok((descriptor.clone(), m)),
        ManifestOrIndex::Index(index) => {
            let child = index
                .find_platform(platform)
                .ok_or_else(|| ArchiveError::NoPlatform(platform.to_string()))?;
            resolve_platform(store, child, platform)
        }
    }
}

/// Every blob an image needs, in a stable order: the descriptor itself first, then what it
/// references. Non-distributable layers that are absent are left out; any other absent blob
/// is an error. Children of an index that are not stored make the whole index unusable, so
/// the caller can fall back to one platform.
pub fn reachable_blobs(
    store: &ContentStore,
    root: &Descriptor,
) -> Result<Vec<Descriptor>, ArchiveError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if !store.contains(&desc.digest) {
            if media_type::is_non_distributable(&desc.media_type) {
                continue;
            }
            return Err(ArchiveError::MissingBlob(desc.digest));
        }
        if matches!(
            media_type::kind(&desc.media_type),
            media_type::Kind::Manifest | media_type::Kind::Index
        ) {
            let bytes = store.read(&desc.digest)?;
            let parsed = ManifestOrIndex::parse(&desc.media_type, &bytes)?;
            for child in parsed.references().into_iter().rev() {
                stack.push(child.clone());
            }
        }
        out.push(desc);
    }
    Ok(out)
}

/// Writes `images` as one archive of `format` to `out`.
pub fn write_archive(
    store: &ContentStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let host = Platform::host();
    let mut index = Index::oci(Vec::new());
    let mut docker_manifest = Vec::new();
    let mut blobs: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for image in images {
        // The docker format describes single-platform images only.
        let root = match format {
            ArchiveFormat::Docker => resolve_platform(store, &image.descriptor, &host)?.0,
            ArchiveFormat::Oci => match reachable_blobs(store, &image.descriptor) {
                Ok(_) => image.descriptor.clone(),
                Err(ArchiveError::MissingBlob(_)) => {
                    resolve_platform(store, &image.descriptor, &host)?.0
                }
                Err(e) => return Err(e),
            },
        };
        for blob in reachable_blobs(store, &root)? {
            blobs.insert(blob.digest.clone(), blob);
        }
        let mut root_entry = root.clone();
        root_entry.platform = None;
        index
            .manifests
            .extend(index_entries(&root_entry, &image.names));
        if format == ArchiveFormat::Docker {
            let manifest = Manifest::parse(&store.read(&root.digest)?)?;
            docker_manifest.push(DockerManifestEntry {
                config: blob_path(&manifest.config.digest),
                repo_tags: image
                    .names
                    .iter()
                    .filter_map(|n| n.tag.as_ref().map(|t| format!("{}:{t}", n.familiar_name())))
                    .collect(),
                layers: manifest
                    .layers
                    .iter()
                    .map(|l| blob_path(&l.digest))
                    .collect(),
            });
        }
    }

    let mut tar = tar::Builder::new(out);
    append_bytes(&mut tar, "oci-layout", OCI_LAYOUT_FILE)?;
    append_bytes(&mut tar, "index.json", &to_json_bytes(&index))?;
    if format == ArchiveFormat::Docker {
        let json =
            serde_json::to_vec(&docker_manifest).map_err(|source| ArchiveError::Metadata {
                file: "manifest.json",
                source,
            })?;
        append_bytes(&mut tar, "manifest.json", &json)?;
    }
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    for (digest, desc) in &blobs {
        if !store.contains(digest) {
            continue; // an absent non-distributable layer
        }
        let file = store.open_blob(digest)?;
        let mut header = file_header(desc.size);
        tar.append_data(&mut header, blob_path(digest), file)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// The index.json entries of an image: one per name (annotated as containerd, BuildKit and
/// Docker 25 annotate them), or one without a name when it has none.
pub fn index_entries(descriptor: &Descriptor, names: &[Reference]) -> Vec<Descriptor> {
    if names.is_empty() {
        return vec![descriptor.clone()];
    }
    names
        .iter()
        .map(|name| {
            let mut entry = descriptor.clone();
            entry
                .annotations
                .insert(ANNOTATION_IMAGE_NAME.into(), name.to_string());
            if let Some(tag) = &name.tag {
                entry
                    .annotations
                    .insert(ANNOTATION_REF_NAME.into(), tag.clone());
            }
            entry
        })
        .collect()
}

/// Writes `images` as an archive file at `path` through a temporary file beside it, renamed
/// into place only when complete: a failed or interrupted write never leaves a partial
/// archive under that name.
pub fn write_archive_file(
    store: &ContentStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
    path: &Path,
) -> Result<(), ArchiveError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rbuild-archive-")
        .tempfile_in(dir)?;
    {
        let mut out = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write_archive(store, images, format, &mut out)?;
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn file_header(size: u64) -> tar::Header {
    // Fixed metadata so that the same images give the same archive bytes.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = file_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = file_header(0);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    tar.append_data(&mut header, path, io::empty())
}

/// What reading an archive found.
#[derive(Debug)]
pub struct LoadedArchive {
    pub images: Vec<ArchiveImage>,
}

/// Reads an archive (OCI layout tar or docker-archive, optionally gzip/zstd compressed as a
/// whole) from a stream into `store`. Blobs it added but no image references are removed
/// again, so a failed or partial read leaves the store as it was, bar shared blobs.
pub fn read_archive(
    store: &ContentStore,
    input: impl Read + Send,
) -> Result<LoadedArchive, ArchiveError> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let compression = Compression::detect(buffered.fill_buf()?);
    let stream = decompress(buffered, compression)?;
    let mut added = Vec::new();
    let result = read_entries(store, stream, &mut added);
    let keep: BTreeSet<Digest> = match &result {
        Ok(loaded) => {
            let mut keep = BTreeSet::new();
            for image in &loaded.images {
                keep.extend(
                    reachable_blobs(store, &image.descriptor)?
                        .into_iter()
                        .map(|d| d.digest),
                );
            }
            keep
        }
        Err(_) => BTreeSet::new(),
    };
    for digest in added.iter().filter(|d| !keep.contains(d)) {
        store.delete(digest)?;
    }
    result
}

/// Files of an archive seen so far: blobs go to the store, metadata stays in memory.
#[derive(Default)]
struct Entries {
    blobs: HashMap<String, (Digest, u64)>,
    metadata: HashMap<String, Vec<u8>>,
    /// `path → target path` for symlinked files (older docker save links repeated layers).
    links: HashMap<String, String>,
}

impl Entries {
    fn blob(&self, path: &str) -> Result<(Digest, u64), ArchiveError> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(found) = self.blobs.get(&path) {
                return Ok(found.clone());
            }
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        Err(ArchiveError::MissingFile { path })
    }
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or("")),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn is_metadata(path: &str) -> bool {
    matches!(
        path,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || path.ends_with("/json")
        || path.ends_with("/VERSION")
}

fn read_entries(
    store: &ContentStore,
    stream: impl Read,
    added: &mut Vec<Digest>,
) -> Result<LoadedArchive, ArchiveError> {
    let mut archive = tar::Archive::new(stream);
    let mut entries = Entries::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let wrap = |source: ArchiveError| ArchiveError::Entry {
            entry: path.clone(),
            source: Box::new(source),
        };
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned());
                if let Some(target) = target {
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&path)
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default()
                    } else {
                        PathBuf::new()
                    };
                    entries.links.insert(
                        path.clone(),
                        normalize(&base.join(target).to_string_lossy()),
                    );
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if is_metadata(&path) {
                    if entry.size() > MAX_METADATA_BYTES {
                        return Err(wrap(ArchiveError::Invalid(
                            "metadata file too large".into(),
                        )));
                    }
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(|e| wrap(e.into()))?;
                    entries.metadata.insert(path, data);
                    continue;
                }
                // A file named like a blob must hash to its name.
                let expected = path
                    .strip_prefix("blobs/")
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok())
                    .map_or_else(Expected::default, |d| Expected::exact(d, entry.size()));
                let size = entry.size();
                if let Some(d) = &expected.digest {
                    if store.contains(d) {
                        // Already stored: still check the archive's copy, a corrupt archive
                        // is reported even when our own copy would hide it.
                        let mut digester = crate::digest::Digester::new(d.algorithm());
                        io::copy(&mut entry, &mut digester).map_err(|e| wrap(e.into()))?;
                        let actual = digester.finish();
                        if actual != *d {
                            let mismatch = ContentError::DigestMismatch {
                                expected: d.clone(),
                                actual,
                            };
                            return Err(wrap(mismatch.into()));
                        }
                        entries.blobs.insert(path, (d.clone(), size));
                        continue;
                    }
                }
                let mut writer = store.writer(expected).map_err(|e| wrap(e.into()))?;
                io::copy(&mut entry, &mut writer).map_err(|e| wrap(e.into()))?;
                let (digest, size) = writer.commit().map_err(|e| wrap(e.into()))?;
                added.push(digest.clone());
                entries.blobs.insert(path, (digest, size));
            }
            _ => {}
        }
    }
    if let Some(index) = entries.metadata.get("index.json") {
        return read_oci_index(store, index);
    }
    if let Some(manifest) = entries.metadata.get("manifest.json") {
        return read_docker_manifest(store, &entries, manifest);
    }
    Err(ArchiveError::NotAnArchive)
}

fn read_oci_index(store: &ContentStore, bytes: &[u8]) -> Result<LoadedArchive, ArchiveError> {
    let index = Index::parse(bytes).map_err(|e| ArchiveError::Entry {
        entry: "index.json".into(),
        source: Box::new(e.into()),
    })?;
    let mut images: Vec<ArchiveImage> = Vec::new();
    for desc in &index.manifests {
        if !matches!(
            media_type::kind(&desc.media_type),
            media_type::Kind::Manifest | media_type::Kind::Index
        ) {
            return Err(ArchiveError::UnknownMediaType(desc.media_type.clone()));
        }
        let name = desc
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .or_else(|| desc.annotations.get(ANNOTATION_REF_NAME))
            // A bare tag (skopeo writes `latest`) names no repository.
            .filter(|n| n.contains('/') || n.contains(':'))
            .and_then(|n| Reference::parse(n).ok());
        let mut root = desc.clone();
        root.annotations.clear();
        let root = match reachable_blobs(store, &root) {
            Ok(_) => root,
            // An index copied without all its platforms: keep the one this host runs.
            Err(ArchiveError::MissingBlob(_)) if media_type::is_index(&root.media_type) => {
                resolve_platform(store, &root, &Platform::host())?.0
            }
            Err(e) => return Err(e),
        };
        validate_image(store, &root)?;
        match images
            .iter_mut()
            .find(|i| i.descriptor.digest == root.digest)
        {
            Some(existing) => existing.names.extend(name),
            None => images.push(ArchiveImage {
                names: name.into_iter().collect(),
                descriptor: root,
            }),
        }
    }
    Ok(LoadedArchive { images })
}

fn read_docker_manifest(
    store: &ContentStore,
    entries: &Entries,
    bytes: &[u8],
) -> Result<LoadedArchive, ArchiveError> {
    let manifest: Vec<DockerManifestEntry> =
        serde_json::from_slice(bytes).map_err(|source| ArchiveError::Metadata {
            file: "manifest.json",
            source,
        })?;
    let mut images = Vec::new();
    for entry in manifest {
        let (config_digest, config_size) = entries.blob(&entry.config)?;
        let mut layers = Vec::new();
        for layer_path in &entry.layers {
            let (digest, size) = entries.blob(layer_path)?;
            let mut head = [0u8; 4];
            let n = store.open_blob(&digest)?.read(&mut head)?;
            let compression = Compression::detect(&head[..n]);
            layers.push(Descriptor::new(
                media_type::oci_layer(compression),
                digest,
                size,
            ));
        }
        // The config keeps its exact bytes (and so the image ID); only the manifest is new.
        let manifest = Manifest::oci(
            Descriptor::new(media_type::OCI_CONFIG, config_digest, config_size),
            layers,
        );
        let manifest_bytes = to_json_bytes(&manifest);
        let digest = store.put(&manifest_bytes)?;
        let descriptor = Descriptor::new(
            media_type::OCI_MANIFEST,
            digest,
            manifest_bytes.len() as u64,
        );
        validate_image(store, &descriptor)?;
        let names = entry
            .repo_tags
            .iter()
            .map(|t| {
                Reference::parse(t)
                    .map_err(|e| ArchiveError::Invalid(format!("manifest.json: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        images.push(ArchiveImage { names, descriptor });
    }
    Ok(LoadedArchive { images })
}

/// Checks that every image manifest below `root` has a readable config whose diff IDs match
/// its layers in number.
fn validate_image(store: &ContentStore, root: &Descriptor) -> Result<(), ArchiveError> {
    for desc in reachable_blobs(store, root)? {
        if !media_type::is_manifest(&desc.media_type) {
            continue;
        }
        let manifest = Manifest::parse(&store.read(&desc.digest)?)?;
        if !matches!(
            media_type::kind(&manifest.config.media_type),
            media_type::Kind::Config
        ) {
            // Artifacts (signatures, SBOMs) have other config types and no diff IDs.
            continue;
        }
        let config = ImageConfig::parse(&store.read(&manifest.config.digest)?)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ArchiveError::LayerCount {
                image: desc.digest.to_string(),
                found: manifest.layers.len(),
                expected: config.rootfs.diff_ids.len(),
            });
        }
    }
    Ok(())
}
