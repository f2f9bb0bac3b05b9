//! Manifests and tags (spec.md "Pulling manifests", "Pushing Manifests", "Deleting tags",
//! "Deleting Manifests") and the referrers index ("Listing Referrers").
//!
//! Manifest bytes are stored as blobs, exactly as pushed, and served with the media type the
//! document declares. Tags are links to a digest, replaced atomically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use oci::image::ManifestOrIndex;
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest, Digester};

use super::Registry;
use crate::error::{ErrorCode, RegistryError};
use crate::names::{valid_tag, Reference};
use crate::paths;
use crate::storage::StorageDriver;

/// A stored manifest as served.
#[derive(Debug, Clone)]
pub struct ManifestBody {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a successful manifest PUT reports back (headers of the 201).
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    /// `OCI-Subject` (spec.md "Pushing Manifests with Subject").
    pub subject: Option<Digest>,
    /// Tags created, for `OCI-Tag` (end-7b).
    pub tags: Vec<String>,
}

/// Parsed manifests by digest. Content-addressed, so an entry can never be stale; bounded by
/// dropping everything when full (manifests are re-read from storage on the next miss).
#[derive(Default)]
pub(super) struct ManifestCache {
    entries: Mutex<HashMap<Digest, Arc<CachedManifest>>>,
}

const MANIFEST_CACHE_ENTRIES: usize = 4096;

struct CachedManifest {
    media_type: String,
    bytes: Bytes,
    parsed: ManifestOrIndex,
}

impl ManifestCache {
    fn get(&self, digest: &Digest) -> Option<Arc<CachedManifest>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    fn insert(&self, digest: Digest, entry: Arc<CachedManifest>) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MANIFEST_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(digest, entry);
    }
}

fn manifest_unknown(what: impl std::fmt::Display) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::ManifestUnknown,
        format!("manifest {what} unknown to repository"),
    )
}

fn manifest_invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::bad_request(ErrorCode::ManifestInvalid, message)
}

/// The media type a PUT declares: the `Content-Type` without parameters, or the document's own
/// `mediaType` (or shape) when the client sent none or a generic JSON type.
fn push_media_type(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<(String, ManifestOrIndex), RegistryError> {
    let declared = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string())
        .filter(|ct| {
            !ct.is_empty() && ct != "application/json" && ct != "application/octet-stream"
        });
    match declared {
        Some(mt) => {
            if mt == media_type::DOCKER_MANIFEST_V1_SIGNED
                || mt == "application/vnd.docker.distribution.manifest.v1+json"
            {
                return Err(manifest_invalid(
                    "Docker schema1 manifests are not supported; push schema2 or OCI",
                ));
            }
            if !matches!(media_type::kind(&mt), Kind::Manifest | Kind::Index) {
                return Err(manifest_invalid(format!(
                    "unsupported manifest media type {mt:?}"
                )));
            }
            let parsed =
                ManifestOrIndex::parse(&mt, bytes).map_err(|e| manifest_invalid(e.to_string()))?;
            Ok((mt, parsed))
        }
        None => ManifestOrIndex::parse_any(bytes).map_err(|e| manifest_invalid(e.to_string())),
    }
}

/// The descriptor of a referrer as the referrers API lists it (spec.md "Listing Referrers").
fn referrer_descriptor(entry: &CachedManifest, digest: Digest) -> Descriptor {
    let mut d = Descriptor::new(entry.media_type.clone(), digest, entry.bytes.len() as u64);
    d.artifact_type = match &entry.parsed {
        ManifestOrIndex::Manifest(m) => m
            .artifact_type
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| Some(m.config.media_type.clone())),
        ManifestOrIndex::Index(i) => i.artifact_type.clone().filter(|a| !a.is_empty()),
    };
    d.annotations = entry.parsed.annotations().clone();
    d
}

impl<S: StorageDriver> Registry<S> {
    /// Resolves a tag or digest to the manifest the repository holds (end-3).
    pub async fn get_manifest(
        &self,
        name: &str,
        reference: &Reference,
    ) -> Result<ManifestBody, RegistryError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => self
                .read_link(&paths::tag_current_link(name, tag))
                .await?
                .ok_or_else(|| manifest_unknown(tag))?,
        };
        if !self
            .exists(&paths::manifest_revision_link(name, &digest))
            .await?
        {
            return Err(manifest_unknown(&digest));
        }
        let entry = self
            .load_manifest(&digest)
            .await?
            .ok_or_else(|| manifest_unknown(&digest))?;
        Ok(ManifestBody {
            digest,
            media_type: entry.media_type.clone(),
            bytes: entry.bytes.clone(),
        })
    }

    /// Reads and parses a stored manifest by digest (through the cache); `None` if absent.
    async fn load_manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<CachedManifest>>, RegistryError> {
        if let Some(entry) = self.manifest_cache.get(digest) {
            return Ok(Some(entry));
        }
        let bytes = match self.driver.get_content(&paths::blob_data(digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (media_type, parsed) = ManifestOrIndex::parse_any(&bytes).map_err(|e| {
            RegistryError::internal(format!("stored manifest {digest} does not parse: {e}"))
        })?;
        let entry = Arc::new(CachedManifest {
            media_type,
            bytes,
            parsed,
        });
        self.manifest_cache.insert(digest.clone(), entry.clone());
        Ok(Some(entry))
    }

    /// Stores a manifest exactly as pushed (end-7a/7b). `extra_tags` are `?tag=` parameters.
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        extra_tags: &[String],
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest, RegistryError> {
        let reference = match Reference::parse(reference) {
            Some(r) => r,
            None if reference.contains(':') => {
                return Err(RegistryError::bad_request(
                    ErrorCode::DigestInvalid,
                    format!("invalid digest {reference:?}"),
                ))
            }
            None => {
                return Err(RegistryError::bad_request(
                    ErrorCode::TagInvalid,
                    format!("invalid tag {reference:?}"),
                ))
            }
        };
        let (media_type, parsed) = push_media_type(content_type, &bytes)?;
        let digest = match &reference {
            Reference::Digest(expected) => {
                let mut h = Digester::new(expected.algorithm());
                h.update(&bytes);
                let actual = h.finish();
                if actual != *expected {
                    return Err(RegistryError::bad_request(
                        ErrorCode::DigestInvalid,
                        format!("manifest digest {actual} does not match {expected}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        for tag in extra_tags {
            if !valid_tag(tag) {
                return Err(RegistryError::bad_request(
                    ErrorCode::TagInvalid,
                    format!("invalid tag {tag:?}"),
                ));
            }
        }
        self.check_references(name, &parsed).await?;

        let mut tags: Vec<String> = extra_tags.to_vec();
        if let Reference::Tag(tag) = &reference {
            tags.insert(0, tag.clone());
        }
        let subject = self
            .write_manifest(name, &digest, media_type, parsed, bytes, &tags)
            .await?;
        let tags = if matches!(reference, Reference::Digest(_)) {
            tags
        } else {
            Vec::new()
        };
        Ok(PutManifest {
            digest,
            subject,
            tags,
        })
    }

    /// Stores a manifest fetched by the pull-through mirror (`proxy/`): the upstream's exact
    /// bytes under `digest`, which the caller has verified, tagged `tag`. Unlike a push, the
    /// blobs it references need not be here yet: the mirror fetches them when asked.
    pub async fn put_mirrored_manifest(
        &self,
        name: &str,
        digest: &Digest,
        content_type: Option<&str>,
        bytes: Bytes,
        tag: Option<&str>,
    ) -> Result<ManifestBody, RegistryError> {
        let (media_type, parsed) = push_media_type(content_type, &bytes)?;
        let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
        self.write_manifest(
            name,
            digest,
            media_type.clone(),
            parsed,
            bytes.clone(),
            &tags,
        )
        .await?;
        Ok(ManifestBody {
            digest: digest.clone(),
            media_type,
            bytes,
        })
    }

    /// Writes a checked manifest and returns its subject. Order matters for readers: bytes,
    /// then the revision link, then referrers and tags.
    async fn write_manifest(
        &self,
        name: &str,
        digest: &Digest,
        media_type: String,
        parsed: ManifestOrIndex,
        bytes: Bytes,
        tags: &[String],
    ) -> Result<Option<Digest>, RegistryError> {
        let blob = paths::blob_data(digest);
        if !self.exists(&blob).await? {
            self.driver.put_content(&blob, bytes.clone()).await?;
        }
        self.write_link(&paths::manifest_revision_link(name, digest), digest)
            .await?;
        let subject = parsed.subject().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            self.write_link(&paths::referrer_link(name, subject, digest), digest)
                .await?;
        }
        for tag in tags {
            self.write_link(&paths::tag_current_link(name, tag), digest)
                .await?;
        }
        self.manifest_cache.insert(
            digest.clone(),
            Arc::new(CachedManifest {
                media_type,
                bytes,
                parsed,
            }),
        );
        Ok(subject)
    }

    /// Refuses a manifest whose blobs or child manifests the repository lacks (spec.md
    /// "Push": MANIFEST_BLOB_UNKNOWN). `subject` is deliberately not checked.
    async fn check_references(
        &self,
        name: &str,
        parsed: &ManifestOrIndex,
    ) -> Result<(), RegistryError> {
        let mut missing = Vec::new();
        match parsed {
            ManifestOrIndex::Manifest(m) => {
                for d in std::iter::once(&m.config).chain(&m.layers) {
                    // Non-distributable layers live elsewhere (image-spec layer.md).
                    if media_type::is_non_distributable(&d.media_type) || !d.urls.is_empty() {
                        continue;
                    }
                    let linked = self.exists(&paths::layer_link(name, &d.digest)).await?;
                    if !linked {
                        missing.push(d.digest.to_string());
                    }
                }
            }
            ManifestOrIndex::Index(i) => {
                for d in &i.manifests {
                    if !self
                        .exists(&paths::manifest_revision_link(name, &d.digest))
                        .await?
                    {
                        missing.push(d.digest.to_string());
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::bad_request(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest references content unknown to the repository: {}",
                    missing.join(", ")
                ),
            ))
        }
    }

    /// Deletes a tag (untag) or a manifest with every tag pointing at it (end-9).
    pub async fn delete_manifest(
        &self,
        name: &str,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.delete_allowed()?;
        match reference {
            Reference::Tag(tag) => {
                if self
                    .read_link(&paths::tag_current_link(name, tag))
                    .await?
                    .is_none()
                {
                    return Err(manifest_unknown(tag));
                }
                self.delete_if_present(&paths::tag_dir(name, tag)).await?;
            }
            Reference::Digest(digest) => {
                let revision = paths::manifest_revision_link(name, digest);
                if !self.exists(&revision).await? {
                    return Err(manifest_unknown(digest));
                }
                for tag in self.list_tags_unpaged(name).await? {
                    if self
                        .read_link(&paths::tag_current_link(name, &tag))
                        .await?
                        .as_ref()
                        == Some(digest)
                    {
                        self.delete_if_present(&paths::tag_dir(name, &tag)).await?;
                    }
                }
                if let Some(entry) = self.load_manifest(digest).await? {
                    if let Some(subject) = entry.parsed.subject() {
                        let link = paths::referrer_link(name, &subject.digest, digest);
                        self.delete_if_present(link.trim_end_matches("/link"))
                            .await?;
                    }
                }
                self.delete_if_present(revision.trim_end_matches("/link"))
                    .await?;
            }
        }
        Ok(())
    }

    /// The referrers of `subject` in the repository, optionally filtered by artifact type
    /// (end-12a/12b), sorted by digest so that answers are stable.
    pub async fn referrers(
        &self,
        name: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let dir = paths::referrers_dir(name, subject);
        let mut found = Vec::new();
        let algorithms = match self.driver.list(&dir).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(found),
            Err(e) => return Err(e.into()),
        };
        for alg in algorithms {
            let hexes = match self.driver.list(&format!("{dir}/{alg}")).await {
                Ok(h) => h,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for hex in hexes {
                let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                    continue;
                };
                // A referrer deleted by digest no longer counts even if its link lingers.
                if !self
                    .exists(&paths::manifest_revision_link(name, &digest))
                    .await?
                {
                    continue;
                }
                let Some(entry) = self.load_manifest(&digest).await? else {
                    continue;
                };
                let descriptor = referrer_descriptor(&entry, digest);
                if artifact_type
                    .is_none_or(|want| descriptor.artifact_type.as_deref() == Some(want))
                {
                    found.push(descriptor);
                }
            }
        }
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(found)
    }
}
