//! The storage layout, in one place. It is distribution's (`registry/storage/paths.go`), so a
//! registry:2 data directory can be served as it is, plus a referrers index of our own:
//!
//! ```text
//! <root>/docker/registry/v2/
//!   blobs/<alg>/<first two hex>/<hex>/data           blob bytes, stored once for all repos
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                       "<alg>:<hex>": blob is in this repo
//!     _manifests/revisions/<alg>/<hex>/link          manifest is in this repo (bytes in blobs/)
//!     _manifests/tags/<tag>/current/link             the digest the tag points at
//!     _referrers/<alg>/<subject hex>/<alg>/<hex>/link  manifest <hex> has subject <subject hex>
//!     _uploads/<id>/data                             bytes received so far
//!     _uploads/<id>/startedat                        session marker: start time in Unix
//!                                                    seconds; purging goes by its mtime
//!     _uploads/<id>/hashstates/<alg>/<offset>        running digest after <offset> bytes
//! <root>/_tmp/                                       the filesystem driver's temporary files
//! ```
//!
//! Writers only ever add whole objects by rename (see `storage/filesystem.rs`), so readers
//! never see a torn blob, link or manifest. A blob DELETE removes the repository's link only;
//! blob bytes stay until garbage collection, so a pull racing a delete gets the whole blob or
//! a 404. Upload sessions live entirely in storage: a restarted server resumes them.

use oci::Digest;

const V2: &str = "docker/registry/v2";

pub fn blob_data(digest: &Digest) -> String {
    let hex = digest.encoded();
    format!(
        "{V2}/blobs/{}/{}/{hex}/data",
        digest.algorithm().name(),
        &hex[..2]
    )
}

pub fn repositories_root() -> String {
    format!("{V2}/repositories")
}

pub fn repository(name: &str) -> String {
    format!("{V2}/repositories/{name}")
}

pub fn layer_link(name: &str, digest: &Digest) -> String {
    format!(
        "{V2}/repositories/{name}/_layers/{}/{}/link",
        digest.algorithm().name(),
        digest.encoded()
    )
}

pub fn manifest_revision_link(name: &str, digest: &Digest) -> String {
    format!(
        "{V2}/repositories/{name}/_manifests/revisions/{}/{}/link",
        digest.algorithm().name(),
        digest.encoded()
    )
}

pub fn tags_dir(name: &str) -> String {
    format!("{V2}/repositories/{name}/_manifests/tags")
}

pub fn tag_dir(name: &str, tag: &str) -> String {
    format!("{V2}/repositories/{name}/_manifests/tags/{tag}")
}

pub fn tag_current_link(name: &str, tag: &str) -> String {
    format!("{V2}/repositories/{name}/_manifests/tags/{tag}/current/link")
}

/// The directory whose `<alg>/<hex>` children are the referrers of `subject`.
pub fn referrers_dir(name: &str, subject: &Digest) -> String {
    format!(
        "{V2}/repositories/{name}/_referrers/{}/{}",
        subject.algorithm().name(),
        subject.encoded()
    )
}

pub fn referrer_link(name: &str, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}/{}/link",
        referrers_dir(name, subject),
        referrer.algorithm().name(),
        referrer.encoded()
    )
}

pub fn uploads_dir(name: &str) -> String {
    format!("{V2}/repositories/{name}/_uploads")
}

pub fn upload_dir(name: &str, id: &str) -> String {
    format!("{V2}/repositories/{name}/_uploads/{id}")
}

pub fn upload_data(name: &str, id: &str) -> String {
    format!("{V2}/repositories/{name}/_uploads/{id}/data")
}

pub fn upload_started_at(name: &str, id: &str) -> String {
    format!("{V2}/repositories/{name}/_uploads/{id}/startedat")
}

/// A session's running digest after `offset` bytes (distribution's `hashstates/` layout; the
/// state is ours, `oci::Digester::save`).
pub fn upload_hash_state(name: &str, id: &str, algorithm: &str, offset: u64) -> String {
    format!("{V2}/repositories/{name}/_uploads/{id}/hashstates/{algorithm}/{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_shard_by_prefix() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            blob_data(&d),
            "docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert!(layer_link("a/b", &d)
            .starts_with("docker/registry/v2/repositories/a/b/_layers/sha256/e3b0"));
    }
}
