//! URL paths of the API (spec.md "Endpoints"). Repository names contain slashes, so routes
//! are matched on their trailing segments, the way distribution's router regexes do.

/// The resource a path names; `name` is the repository, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/` (end-1).
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list` (end-8).
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>` (end-3, 7, 9).
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>` (end-2, 10).
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/` (end-4, 11).
    Uploads { name: String },
    /// `/v2/<name>/blobs/uploads/<id>` (end-5, 6, 13, 14).
    Upload { name: String, id: String },
    /// `/v2/<name>/referrers/<digest>` (end-12).
    Referrers { name: String, digest: String },
}

impl Route {
    /// The repository the route names, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| -> Option<String> { (n > k).then(|| segs[..n - k].join("/")) };
        let at = |i: usize| segs.get(n.wrapping_sub(i)).copied().unwrap_or("");
        if n >= 3 && at(3) == "blobs" && at(2) == "uploads" {
            let name = name(3)?;
            let id = at(1);
            return Some(if id.is_empty() {
                Route::Uploads { name }
            } else {
                Route::Upload {
                    name,
                    id: id.to_string(),
                }
            });
        }
        if n >= 3 && at(2) == "blobs" && at(1) == "uploads" {
            return Some(Route::Uploads { name: name(2)? });
        }
        if n >= 3 && at(2) == "tags" && at(1) == "list" {
            return Some(Route::Tags { name: name(2)? });
        }
        if n >= 2 && !at(1).is_empty() {
            let value = percent_decode(at(1));
            match at(2) {
                "manifests" => {
                    return Some(Route::Manifest {
                        name: name(2)?,
                        reference: value,
                    })
                }
                "blobs" => {
                    return Some(Route::Blob {
                        name: name(2)?,
                        digest: value,
                    })
                }
                "referrers" => {
                    return Some(Route::Referrers {
                        name: name(2)?,
                        digest: value,
                    })
                }
                _ => {}
            }
        }
        None
    }
}

/// Decodes `%XX` escapes; some clients escape the `:` of a digest.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/a/b/tags/list"),
            Some(Route::Tags { name: n("a/b") })
        );
        assert_eq!(
            Route::parse("/v2/a/manifests/latest"),
            Some(Route::Manifest {
                name: n("a"),
                reference: n("latest")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/sha256%3Aab"),
            Some(Route::Blob {
                name: n("a"),
                digest: n("sha256:ab")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/b/blobs/uploads/"),
            Some(Route::Uploads { name: n("a/b") })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads"),
            Some(Route::Uploads { name: n("a") })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/x-y"),
            Some(Route::Upload {
                name: n("a"),
                id: n("x-y")
            })
        );
        assert_eq!(
            Route::parse("/v2/blobs/blobs/x"),
            Some(Route::Blob {
                name: n("blobs"),
                digest: n("x")
            })
        );
        assert_eq!(
            Route::parse("/v2/a/referrers/d"),
            Some(Route::Referrers {
                name: n("a"),
                digest: n("d")
            })
        );
        assert_eq!(Route::parse("/v2/manifests/x"), None);
        assert_eq!(Route::parse("/v3/a/manifests/x"), None);
        assert_eq!(Route::parse("/v2/a/other/x"), None);
    }
}
