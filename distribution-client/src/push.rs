//! Push: every blob the image reaches (HEAD first; a cross-repository mount when a source
//! repository on the same registry may have it; else an upload: monolithic for small blobs,
//! chunked PATCHes for large ones), several at once, then the manifests as their exact bytes,
//! children before the index that names them (distribution-spec spec.md, "Pushing blobs",
//! "Mounting a blob from another repository", "Pushing Manifests").
//!
//! An upload that loses its connection asks the registry where it stands (`GET` on the upload
//! URL answers `Range: 0-N`) and continues from there; a registry that dropped the session
//! (distribution cancels uploads whose stored size no longer matches their state) gets a fresh
//! one.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use image_store::Store;
use oci::archive::reachable_blobs;
use oci::media_type::{self, Kind};
use oci::{Descriptor, Digest, Reference};
use reqwest::blocking::Body;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use crate::auth::repository_scope;
use crate::error::ClientError;
use crate::parallel;
use crate::progress::{Outcome, Progress};
use crate::session::{Client, Retry, Session};

/// Blobs up to this size go in one PUT; larger ones in chunks.
const MONOLITHIC_MAX: u64 = 16 << 20;
/// Our chunk size; a registry's `OCI-Chunk-Min-Length` can only raise it.
const CHUNK: u64 = 64 << 20;
/// How often one upload may lose its connection or session before the push gives up.
const MAX_RESTARTS: u32 = 6;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repositories on the target registry that may already hold the blobs (the repository
    /// the image was pulled from): tried as cross-repository mount sources.
    pub mount_from: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub uploaded: usize,
    pub existing: usize,
    pub mounted: usize,
}

pub fn push(
    client: &Client,
    store: &Store,
    source: &str,
    target: &Reference,
    options: &PushOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Pushed, ClientError> {
    let image = store.resolve(source)?;
    push_descriptor(client, store, &image.descriptor, target, options, progress)
}

/// Pushes the manifest or index `root` from the store's content store, with every blob it
/// reaches: an image, or an artifact such as rbuild's build cache (`--cache-to
/// type=registry`), which has no name in the local store.
pub fn push_descriptor(
    client: &Client,
    store: &Store,
    root: &Descriptor,
    target: &Reference,
    options: &PushOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Pushed, ClientError> {
    let content = store.content();
    let reachable = reachable_blobs(content, root)?;
    let (manifests, blobs): (Vec<Descriptor>, Vec<Descriptor>) = reachable
        .into_iter()
        .filter(|d| !media_type::is_non_distributable(&d.media_type))
        .partition(|d| {
            matches!(
                media_type::kind(&d.media_type),
                Kind::Manifest | Kind::Index
            )
        });

    let session = client.session(&target.registry)?;
    let repository = &target.repository;
    let mount_from: Vec<&String> = options
        .mount_from
        .iter()
        .filter(|r| *r != repository)
        .collect();
    // Exactly the scopes this push needs: push to the target, pull from each mount source.
    let mut scopes = vec![repository_scope(repository, &["pull", "push"])];
    scopes.extend(mount_from.iter().map(|r| repository_scope(r, &["pull"])));

    let outcomes = std::sync::Mutex::new(Vec::new());
    parallel::for_each(&blobs, client.parallel, |blob| {
        let path = content.path(&blob.digest);
        let outcome = push_blob(
            &session,
            repository,
            blob,
            &path,
            &mount_from,
            &scopes,
            progress.as_ref(),
        )?;
        progress.finished(&blob.digest, &outcome);
        outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(outcome);
        Ok(())
    })?;
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());

    // reachable_blobs lists a parent before its children: push in reverse, the root last and
    // under the tag (or by digest when the target has none).
    for manifest in manifests.iter().rev() {
        let is_root = manifest.digest == root.digest;
        let reference = match (&target.tag, is_root) {
            (Some(tag), true) => tag.clone(),
            _ => manifest.digest.to_string(),
        };
        let bytes = content.read(&manifest.digest)?;
        put_manifest(&session, repository, &reference, manifest, bytes, &scopes)?;
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    Ok(Pushed {
        digest: root.digest.clone(),
        size: root.size,
        media_type: root.media_type.clone(),
        uploaded: count(|o| *o == Outcome::Pushed),
        existing: count(|o| *o == Outcome::AlreadyExists),
        mounted: count(|o| matches!(o, Outcome::Mounted { .. })),
    })
}

fn put_manifest(
    session: &Session,
    repository: &str,
    reference: &str,
    manifest: &Descriptor,
    bytes: Vec<u8>,
    scopes: &[String],
) -> Result<(), ClientError> {
    let url = session.url(repository, &format!("manifests/{reference}"));
    let response = session.send(Method::PUT, &url, scopes, Retry::Yes, |r| {
        r.header(CONTENT_TYPE, manifest.media_type.as_str())
            .body(bytes.clone())
    })?;
    if response.status() != StatusCode::CREATED && !response.status().is_success() {
        return Err(session.fail(
            response,
            "PUT",
            &format!("manifest {repository}:{reference}"),
        ));
    }
    let stored = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    if let Some(stored) = stored {
        if stored.algorithm() == manifest.digest.algorithm() && stored != manifest.digest {
            return Err(ClientError::protocol(
                session.registry(),
                format!(
                    "manifest {repository}:{reference}: sent {} but the registry stored {stored}",
                    manifest.digest
                ),
            ));
        }
    }
    Ok(())
}

/// Where an upload stands: its URL (which changes with every answer) and the next byte.
struct Upload {
    location: String,
    offset: u64,
    chunk: u64,
}

fn push_blob(
    session: &Session,
    repository: &str,
    blob: &Descriptor,
    path: &std::path::Path,
    mount_from: &[&String],
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<Outcome, ClientError> {
    let digest = &blob.digest;
    let blob_url = session.url(repository, &format!("blobs/{digest}"));
    let head = session.send(Method::HEAD, &blob_url, scopes, Retry::Yes, |r| r)?;
    match head.status() {
        StatusCode::OK => return Ok(Outcome::AlreadyExists),
        StatusCode::NOT_FOUND => {}
        _ => return Err(session.fail(head, "HEAD", &format!("blob {digest} in {repository}"))),
    }
    // A mount is one request and moves no data; the first source that has the blob wins.
    let mut upload = None;
    for (i, from) in mount_from.iter().enumerate() {
        let url = session.url(
            repository,
            &format!("blobs/uploads/?mount={digest}&from={from}"),
        );
        let response = session.send(Method::POST, &url, scopes, Retry::Yes, |r| {
            r.body(Vec::new())
        })?;
        match response.status() {
            StatusCode::CREATED => {
                return Ok(Outcome::Mounted {
                    from: from.to_string(),
                })
            }
            // Not mountable from there: the registry opened an ordinary upload instead. Keep
            // the last one; cancel the others (spec.md, "Canceling an upload").
            StatusCode::ACCEPTED => {
                let opened = upload_state(session, &response, repository)?;
                if i + 1 == mount_from.len() {
                    upload = Some(opened);
                } else {
                    let _ =
                        session.send(Method::DELETE, &opened.location, scopes, Retry::Yes, |r| r);
                }
            }
            _ => {
                return Err(session.fail(
                    response,
                    "POST",
                    &format!("mount of {digest} from {from}"),
                ))
            }
        }
    }
    progress.started(digest, blob.size);
    let mut restarts = 0;
    loop {
        let mut current = match upload.take() {
            Some(u) => u,
            None => start_upload(session, repository, scopes)?,
        };
        match send_blob(session, &mut current, blob, path, scopes, progress) {
            Ok(()) => return Ok(Outcome::Pushed),
            Err(Broken::Fatal(e)) => return Err(e),
            Err(Broken::Connection(reason)) => {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(ClientError::Http {
                        registry: session.registry().to_string(),
                        detail: format!(
                            "blob {digest}: gave up after {restarts} broken uploads: {reason}"
                        ),
                    });
                }
                // Give a busy or restarting registry a moment, then ask where the upload stands.
                std::thread::sleep(crate::session::backoff(restarts - 1));
                match upload_status(session, &current.location, scopes) {
                    Some((location, offset)) => {
                        progress.resumed(digest, offset, &reason);
                        upload = Some(Upload {
                            location,
                            offset,
                            chunk: current.chunk,
                        });
                    }
                    None => progress.resumed(
                        digest,
                        0,
                        &format!("{reason}; the registry dropped the upload, starting over"),
                    ),
                }
            }
        }
    }
}

/// An upload that stopped: a broken connection (resumable) or an answer that is final.
enum Broken {
    Connection(String),
    Fatal(ClientError),
}

fn start_upload(
    session: &Session,
    repository: &str,
    scopes: &[String],
) -> Result<Upload, ClientError> {
    let url = session.url(repository, "blobs/uploads/");
    let response = session.send(Method::POST, &url, scopes, Retry::Yes, |r| {
        r.body(Vec::new())
    })?;
    if response.status() != StatusCode::ACCEPTED {
        return Err(session.fail(response, "POST", &format!("upload to {repository}")));
    }
    upload_state(session, &response, repository)
}

/// The upload URL and chunk size from a 202 answer (spec.md: `Location`, and
/// `OCI-Chunk-Min-Length` when the registry has a minimum).
fn upload_state(
    session: &Session,
    response: &reqwest::blocking::Response,
    repository: &str,
) -> Result<Upload, ClientError> {
    let location = header(response, LOCATION.as_str()).ok_or_else(|| {
        ClientError::protocol(
            session.registry(),
            format!("upload to {repository}: 202 without Location"),
        )
    })?;
    let min_chunk = header(response, "OCI-Chunk-Min-Length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Upload {
        location: session.absolute(&location),
        offset: 0,
        chunk: CHUNK.max(min_chunk),
    })
}

fn header(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `GET <upload URL>`: 204 with `Range: 0-N` says bytes up to N arrived. `None` when the
/// registry no longer knows the upload.
fn upload_status(session: &Session, location: &str, scopes: &[String]) -> Option<(String, u64)> {
    let response = session
        .send(Method::GET, location, scopes, Retry::Yes, |r| r)
        .ok()?;
    if response.status() != StatusCode::NO_CONTENT {
        return None;
    }
    let next = header(&response, "Range")
        .and_then(|r| range_end(&r))
        .map_or(0, |end| end + 1);
    let location = header(&response, LOCATION.as_str())
        .map_or_else(|| location.to_string(), |l| session.absolute(&l));
    Some((location, next))
}

/// The last byte of `0-N` (spec.md's upload `Range`, without a unit). distribution writes
/// `0-0` for an empty upload, so a single byte is sent again rather than skipped.
fn range_end(range: &str) -> Option<u64> {
    let (start, end) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    (start == 0 && end > 0).then_some(end)
}

/// Sends the rest of the blob from `upload.offset` and closes the upload with its digest.
fn send_blob(
    session: &Session,
    upload: &mut Upload,
    blob: &Descriptor,
    path: &std::path::Path,
    scopes: &[String],
    progress: &dyn Progress,
) -> Result<(), Broken> {
    let digest = &blob.digest;
    let fatal = |e: ClientError| Broken::Fatal(e);
    let monolithic = upload.offset == 0 && blob.size <= MONOLITHIC_MAX;
    if !monolithic {
        while upload.offset < blob.size {
            let len = upload.chunk.min(blob.size - upload.offset);
            let start = upload.offset;
            let body = file_range(path, start, len).map_err(fatal)?;
            let sent = session.send(Method::PATCH, &upload.location, scopes, Retry::No, |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{start}-{}", start + len - 1))
                    .body(
                        body.try_clone()
                            .map_or_else(|_| Body::from(Vec::new()), |b| Body::sized(b, len)),
                    )
            });
            let response = match sent {
                Ok(r) => r,
                Err(ClientError::Http { detail, .. }) => return Err(Broken::Connection(detail)),
                Err(e) => return Err(fatal(e)),
            };
            if response.status() != StatusCode::ACCEPTED {
                // 416 and 5xx: the registry and we disagree about the offset; ask it.
                if resumable(response.status()) {
                    return Err(Broken::Connection(format!(
                        "HTTP {} on a chunk",
                        response.status()
                    )));
                }
                return Err(fatal(session.fail(
                    response,
                    "PATCH",
                    &format!("upload of {digest}"),
                )));
            }
            let next = header(&response, "Range")
                .and_then(|r| range_end(&r))
                .map_or(start + len, |end| end + 1);
            if let Some(location) = header(&response, LOCATION.as_str()) {
                upload.location = session.absolute(&location);
            }
            upload.offset = next;
            progress.advanced(digest, next);
        }
    }
    let separator = if upload.location.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}digest={digest}", upload.location);
    let length = if monolithic { blob.size } else { 0 };
    let body = if monolithic {
        Some(file_range(path, 0, blob.size).map_err(fatal)?)
    } else {
        None
    };
    let sent = session.send(Method::PUT, &url, scopes, Retry::No, |r| {
        let r = r.header(CONTENT_TYPE, "application/octet-stream");
        match body.as_ref().and_then(|b| b.try_clone().ok()) {
            Some(b) => r.body(Body::sized(b, length)),
            None => r.body(Vec::new()),
        }
    });
    let response = match sent {
        Ok(r) => r,
        Err(ClientError::Http { detail, .. }) => return Err(Broken::Connection(detail)),
        Err(e) => return Err(fatal(e)),
    };
    if resumable(response.status()) {
        return Err(Broken::Connection(format!(
            "HTTP {} closing the upload",
            response.status()
        )));
    }
    if response.status() != StatusCode::CREATED {
        return Err(fatal(session.fail(
            response,
            "PUT",
            &format!("blob {digest}"),
        )));
    }
    progress.advanced(digest, blob.size);
    Ok(())
}

/// Answers after which the upload may continue once the registry says where it stands: it
/// disagrees about the offset (416), is busy (429) or failed for a while (5xx).
fn resumable(status: StatusCode) -> bool {
    status == StatusCode::RANGE_NOT_SATISFIABLE
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `len` bytes of `path` from `start`, as an upload body.
fn file_range(path: &std::path::Path, start: u64, len: u64) -> Result<FileRange, ClientError> {
    let mut file = File::open(path).map_err(ClientError::io(path))?;
    file.seek(SeekFrom::Start(start))
        .map_err(ClientError::io(path))?;
    Ok(FileRange { file, start, len })
}

/// A window of a blob file; cloned (re-opened at the window's start) for each attempt.
struct FileRange {
    file: File,
    start: u64,
    len: u64,
}

impl FileRange {
    fn try_clone(&self) -> io::Result<io::Take<File>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(self.start))?;
        Ok(file.take(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        assert_eq!(range_end("0-99"), Some(99));
        assert_eq!(range_end("0-0"), None);
        assert_eq!(range_end("bytes=0-10"), Some(10));
        assert_eq!(range_end("5-9"), None);
        assert_eq!(range_end("junk"), None);
    }
}
