//! Pull: manifest (or index) by content negotiation, then config and layers in parallel, each
//! streamed into the content store while it is hashed, a broken download resumed with
//! `Range`, and finally the image tagged in the local store. Nothing is tagged unless every
//! blob arrived and matched its digest (distribution-spec spec.md, "Pulling manifests",
//! "Pulling blobs"; content-negotiation.md).

use std::io::{self, Read, Write};
use std::sync::Arc;

use image_store::Store;
use oci::content::{ContentError, ContentStore, Expected};
use oci::image::{Manifest, ManifestOrIndex};
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest, Digester, Platform, Reference};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use crate::auth::repository_scope;
use crate::error::ClientError;
use crate::parallel;
use crate::progress::{Outcome, Progress};
use crate::session::{Client, Retry, Session};

/// Every manifest type rbuild understands, OCI first (content-negotiation.md).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests are metadata; a registry sending more is not sending a manifest (the same limit
/// as distribution's).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// How often one blob download may break and be resumed before the pull gives up.
const MAX_RESUMES: u32 = 8;
const COPY_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform picked from an index.
    pub platform: Platform,
    /// Keep the whole index and every platform's image instead of one.
    pub all_platforms: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            all_platforms: false,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The digest the reference resolved to in the registry (an index's, for multi-arch tags).
    pub digest: Digest,
    /// What the store now names `reference`: that manifest, or the platform's manifest of an
    /// index when one platform was pulled.
    pub image: Descriptor,
    /// Blobs downloaded / already present.
    pub downloaded: usize,
    pub present: usize,
}

/// A manifest as the registry sent it.
struct FetchedManifest {
    descriptor: Descriptor,
    bytes: Vec<u8>,
    parsed: ManifestOrIndex,
}

pub fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Pulled, ClientError> {
    let session = client.session(&reference.registry)?;
    let repository = &reference.repository;
    let scopes = vec![repository_scope(repository, &["pull"])];
    let root_ref = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    let root = fetch_manifest(
        &session,
        repository,
        &root_ref,
        reference.digest.as_ref(),
        &scopes,
        &reference.to_string(),
    )?;

    // Which manifests to keep, and what the local name will point at.
    let mut manifests: Vec<FetchedManifest> = Vec::new();
    let image = match &root.parsed {
        ManifestOrIndex::Manifest(_) => root.descriptor.clone(),
        ManifestOrIndex::Index(index) if options.all_platforms => {
            for child in index
                .manifests
                .iter()
                .filter(|d| media_type::is_manifest(&d.media_type))
            {
                let what = format!("{}@{}", reference.name(), child.digest);
                manifests.push(fetch_manifest(
                    &session,
                    repository,
                    child.digest.as_str(),
                    Some(&child.digest),
                    &scopes,
                    &what,
                )?);
            }
            root.descriptor.clone()
        }
        ManifestOrIndex::Index(index) => {
            let child =
                index
                    .find_platform(&options.platform)
                    .ok_or_else(|| ClientError::NoPlatform {
                        reference: reference.to_string(),
                        platform: options.platform.to_string(),
                        available: index
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            let what = format!("{}@{}", reference.name(), child.digest);
            let fetched = fetch_manifest(
                &session,
                repository,
                child.digest.as_str(),
                Some(&child.digest),
                &scopes,
                &what,
            )?;
            let image = fetched.descriptor.clone();
            manifests.push(fetched);
            image
        }
    };
    let keep_root = matches!(root.parsed, ManifestOrIndex::Manifest(_)) || options.all_platforms;

    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in manifests.iter().chain(std::iter::once(&root)) {
        if let ManifestOrIndex::Manifest(manifest) = &m.parsed {
            for blob in manifest_blobs(manifest) {
                if !blobs.iter().any(|b| b.digest == blob.digest) {
                    blobs.push(blob.clone());
                }
            }
        }
    }

    // Held for the whole pull so that a concurrent `rbuild prune` never deletes blobs that
    // are stored but not yet referenced by an image.
    let _writer = store.writer_lock()?;
    let content = store.content();
    let present = blobs.iter().filter(|b| content.contains(&b.digest)).count();
    parallel::for_each(&blobs, client.parallel, |blob| {
        download_blob(
            &session,
            repository,
            blob,
            content,
            &scopes,
            progress.as_ref(),
        )
    })?;
    // Manifests last, as their exact bytes: a stored manifest's blobs are always present.
    for m in manifests.iter().chain(keep_root.then_some(&root)) {
        content.ingest(
            &m.bytes[..],
            Expected::exact(m.descriptor.digest.clone(), m.descriptor.size),
        )?;
    }
    store.add_image(&image, std::slice::from_ref(reference))?;
    Ok(Pulled {
        digest: root.descriptor.digest,
        image,
        downloaded: blobs.len() - present,
        present,
    })
}

/// A manifest fetched by reference, as its exact bytes: what `rbuild build --cache-from
/// type=registry` reads (an artifact, not an image, so nothing is stored or tagged). `None`
/// when the registry has no such manifest (yet).
pub fn fetch_manifest_bytes(
    client: &Client,
    reference: &Reference,
) -> Result<Option<(Descriptor, Vec<u8>)>, ClientError> {
    let session = client.session(&reference.registry)?;
    let scopes = vec![repository_scope(&reference.repository, &["pull"])];
    let root_ref = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    match fetch_manifest(
        &session,
        &reference.repository,
        &root_ref,
        reference.digest.as_ref(),
        &scopes,
        &reference.to_string(),
    ) {
        Ok(fetched) => Ok(Some((fetched.descriptor, fetched.bytes))),
        Err(ClientError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Downloads one blob of `reference`'s repository into the store's content store (verified,
/// resumed like a pull's blobs); a blob already stored is not fetched again.
pub fn fetch_blob(
    client: &Client,
    store: &Store,
    reference: &Reference,
    blob: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), ClientError> {
    let session = client.session(&reference.registry)?;
    let scopes = vec![repository_scope(&reference.repository, &["pull"])];
    download_blob(
        &session,
        &reference.repository,
        blob,
        store.content(),
        &scopes,
        progress,
    )
}

/// The config and the layers a registry must have (non-distributable layers live elsewhere).
fn manifest_blobs(manifest: &Manifest) -> impl Iterator<Item = &Descriptor> {
    std::iter::once(&manifest.config).chain(
        manifest
            .layers
            .iter()
            .filter(|l| !media_type::is_non_distributable(&l.media_type)),
    )
}

/// `GET /v2/<name>/manifests/<reference>`, checked against the digest we asked for, or the
/// `Docker-Content-Digest` the registry claims.
fn fetch_manifest(
    session: &Session,
    repository: &str,
    reference: &str,
    expected: Option<&Digest>,
    scopes: &[String],
    what: &str,
) -> Result<FetchedManifest, ClientError> {
    let registry = session.registry();
    let url = session.url(repository, &format!("manifests/{reference}"));
    let response = session.send(Method::GET, &url, scopes, Retry::Yes, |r| {
        r.header(ACCEPT, MANIFEST_ACCEPT)
    })?;
    if response.status() != StatusCode::OK {
        return Err(session.fail(response, "GET", &format!("manifest {what}")));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let claimed = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let mut bytes = Vec::new();
    response
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::protocol(registry, format!("manifest {what}: {e}")))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ClientError::protocol(
            registry,
            format!("manifest {what} is larger than {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    if let Some(want) = expected.or(claimed.as_ref()) {
        let mut digester = Digester::new(want.algorithm());
        digester.update(&bytes);
        let actual = digester.finish();
        if &actual != want {
            return Err(ClientError::WrongDigest {
                registry: registry.to_string(),
                what: format!("manifest {what}"),
                expected: want.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    // Trust the Content-Type when it names a manifest kind; otherwise (some registries answer
    // `application/json`) read the document's own mediaType.
    let (media_type, parsed) = match content_type
        .filter(|t| matches!(media_type::kind(t), Kind::Manifest | Kind::Index))
    {
        Some(t) => {
            let parsed = ManifestOrIndex::parse(&t, &bytes)?;
            (t, parsed)
        }
        None => ManifestOrIndex::parse_any(&bytes)?,
    };
    let digest = match expected.or(claimed.as_ref()) {
        Some(d) => d.clone(),
        None => Digest::sha256_of(&bytes),
    };
    Ok(FetchedManifest {
        descriptor: Descriptor::new(media_type, digest, bytes.len() as u64),
        bytes,
        parsed,
    })
}

/// Why one attempt at copying a blob stopped early.
enum CopyStop {
    /// The network side broke; the download can resume.
    Network(String),
    /// Writing to the store failed; resuming would not help.
    Store(io::Error),
}

/// Downloads one blob into the content store, resuming with `Range: bytes=N-` after a broken
/// connection; the blob becomes visible only once its size and digest are verified.
fn download_blob(
    session: &Session,
    repository: &str,
    blob: &Descriptor,
    content: &ContentStore,
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<(), ClientError> {
    let digest = &blob.digest;
    if content.contains(digest) {
        progress.finished(digest, &Outcome::AlreadyExists);
        return Ok(());
    }
    let registry = session.registry();
    progress.started(digest, blob.size);
    let mut writer = content.writer(Expected::exact(digest.clone(), blob.size))?;
    let url = session.url(repository, &format!("blobs/{digest}"));
    let mut breaks = 0;
    loop {
        let offset = writer.written();
        let response = session.send(Method::GET, &url, scopes, Retry::Yes, |r| {
            if offset > 0 {
                r.header(RANGE, format!("bytes={offset}-"))
            } else {
                r
            }
        })?;
        let mut skip = 0;
        match response.status() {
            StatusCode::OK => skip = offset,
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if range_start(range) != Some(offset) {
                    return Err(ClientError::protocol(
                        registry,
                        format!("blob {digest}: asked for bytes {offset}- and got Content-Range {range:?}"),
                    ));
                }
            }
            _ => {
                return Err(session.fail(
                    response,
                    "GET",
                    &format!("blob {digest} in {repository}"),
                ))
            }
        }
        // A registry that ignores Range sends the whole blob again: skip what we have.
        let mut body = response;
        let stop = match io::copy(&mut (&mut body).take(skip), &mut io::sink()) {
            Ok(n) if n == skip => {
                copy_blob(body.take(blob.size - offset), &mut writer, digest, progress)
            }
            Ok(_) => Some(CopyStop::Network("connection closed early".into())),
            Err(e) => Some(CopyStop::Network(e.to_string())),
        };
        let reason = match stop {
            None if writer.written() == blob.size => break,
            None => "connection closed early".to_string(),
            Some(CopyStop::Network(reason)) => reason,
            Some(CopyStop::Store(e)) => {
                return Err(ClientError::Io {
                    path: content.root().join("ingest"),
                    source: e,
                })
            }
        };
        breaks += 1;
        if breaks > MAX_RESUMES {
            return Err(ClientError::Http {
                registry: registry.to_string(),
                detail: format!("blob {digest}: gave up after {breaks} broken downloads: {reason}"),
            });
        }
        progress.resumed(digest, writer.written(), &reason);
    }
    writer.commit().map_err(|e| match e {
        ContentError::DigestMismatch { expected, actual } => ClientError::WrongDigest {
            registry: registry.to_string(),
            what: format!("blob {digest} of repository {repository}"),
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
        other => ClientError::Content(other),
    })?;
    progress.finished(digest, &Outcome::Downloaded);
    Ok(())
}

/// Copies until the body ends; `None` when it ended cleanly (the caller checks the length).
fn copy_blob(
    mut body: impl Read,
    writer: &mut impl WriteCount,
    digest: &Digest,
    progress: &dyn Progress,
) -> Option<CopyStop> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(CopyStop::Network(e.to_string())),
        };
        if let Err(e) = writer.write_all(&buf[..n]) {
            return Some(CopyStop::Store(e));
        }
        progress.advanced(digest, writer.count());
    }
}

/// A writer that knows how much it has taken (the content store's blob writer).
trait WriteCount: Write {
    fn count(&self) -> u64;
}

impl WriteCount for oci::content::BlobWriter {
    fn count(&self) -> u64 {
        self.written()
    }
}

/// The first byte of `bytes START-END/TOTAL` (RFC 9110 §14.4).
fn range_start(content_range: &str) -> Option<u64> {
    content_range
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start(""), None);
    }
}
