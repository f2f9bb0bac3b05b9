//! Taking one image out of an OCI image layout directory (buildx's
//! `--build-context NAME=oci-layout://PATH[:TAG][@DIGEST]`).

use std::fs;
use std::path::Path;

use oci::archive::{resolve_platform, ANNOTATION_REF_NAME};
use oci::content::ContentStore;
use oci::image::{Index, ManifestOrIndex};
use oci::{media_type, Descriptor, Digest, Platform};

use crate::store::{io_err, Store, StoreError};

impl Store {
    /// Copies the image `digest` (else the one tagged `tag`, else `latest`) of the OCI layout at
    /// `layout` into the store, as an untagged image: its manifest for `platform`, that
    /// manifest's config and layers. Blobs are verified as they are copied; the layout is only
    /// read. Returns the manifest's descriptor.
    pub fn import_from_layout(
        &self,
        layout: &Path,
        tag: Option<&str>,
        digest: Option<&Digest>,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        let blobs = ContentStore::open_layout(layout)?;
        let index_path = layout.join("index.json");
        let index = Index::parse(&fs::read(&index_path).map_err(io_err(&index_path))?)?;
        let root = match digest {
            Some(digest) => match index.manifests.iter().find(|d| &d.digest == digest) {
                Some(found) => found.clone(),
                // A manifest inside one of the layout's indexes: its type is in the document.
                None => {
                    let bytes = blobs.read(digest)?;
                    let (media_type, _) = ManifestOrIndex::parse_any(&bytes)?;
                    Descriptor::new(media_type, digest.clone(), bytes.len() as u64)
                }
            },
            None => {
                let tag = tag.unwrap_or("latest");
                let tagged = |d: &&Descriptor| {
                    d.annotations.get(ANNOTATION_REF_NAME).is_some_and(|name| {
                        name == tag || name.strip_suffix(tag).is_some_and(|n| n.ends_with(':'))
                    })
                };
                index
                    .manifests
                    .iter()
                    .find(tagged)
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::NotFound(format!(
                            "{}:{tag} (no such tag in its index.json)",
                            layout.display()
                        ))
                    })?
            }
        };
        let (manifest_descriptor, manifest) = resolve_platform(&blobs, &root, platform)?;
        for blob in std::iter::once(&manifest_descriptor)
            .chain(std::iter::once(&manifest.config))
            .chain(&manifest.layers)
        {
            if !blobs.contains(&blob.digest) && media_type::is_non_distributable(&blob.media_type) {
                continue;
            }
            self.content().copy_from(&blobs, &blob.digest, blob.size)?;
        }
        self.add_image(&manifest_descriptor, &[])?;
        Ok(manifest_descriptor)
    }
}
