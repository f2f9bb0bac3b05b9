//! Image references with Docker's normalisation (distribution's `reference` grammar):
//! `busybox` → `docker.io/library/busybox:latest`, `host:5000/a/b:t@sha256:…`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}: empty")]
    Empty(String),
    #[error("invalid reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid reference {input:?}: bad path component {component:?} (lowercase letters, digits and the separators . _ __ - between them)")]
    Component { input: String, component: String },
    #[error("invalid reference {input:?}: bad registry host {host:?}")]
    Host { input: String, host: String },
    #[error("invalid reference {input:?}: bad tag {tag:?} (up to 128 of [A-Za-z0-9_.-], not starting with . or -)")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: {source}")]
    Digest {
        input: String,
        source: crate::digest::DigestError,
    },
    #[error("invalid reference {input:?}: repository name longer than 255 characters")]
    TooLong { input: String },
}

/// A fully qualified reference: registry host, repository path, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as `docker images` shows it: Docker Hub's `library/` and host dropped.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// Parses a reference; with no tag and no digest the tag is `latest`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let mut r = Self::parse_name_only(input)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_string());
        }
        Ok(r)
    }

    /// Parses a reference and keeps "no tag" as it is (for `pull --all-tags`-like uses and
    /// for checking that a repository name alone was given).
    pub fn parse_name_only(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest {
                        input: input.to_string(),
                        source,
                    })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last colon that comes after the last slash (a colon before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag {
                    input: input.to_string(),
                    tag: tag.to_string(),
                });
            }
        }
        let (registry, repository) = split_registry(name);
        if !valid_host(&registry) {
            return Err(ReferenceError::Host {
                input: input.to_string(),
                host: registry,
            });
        }
        if repository.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: input.to_string(),
            });
        }
        if let Some(bad) = repository.split('/').find(|c| !valid_path_component(c)) {
            return Err(ReferenceError::Component {
                input: input.to_string(),
                component: bad.to_string(),
            });
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                input: input.to_string(),
            });
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

/// Splits off the registry host as Docker does: the first component is a host when it has a
/// `.` or a `:`, is `localhost`, or has upper-case letters; otherwise the host is Docker Hub,
/// where single-component names live under `library/`.
fn split_registry(name: &str) -> (String, String) {
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let is_host = |s: &str| {
        s.contains('.')
            || s.contains(':')
            || s == "localhost"
            || s.chars().any(|c| c.is_ascii_uppercase())
    };
    let (registry, repository) = match rest {
        Some(rest) if is_host(first) => (first.to_string(), rest.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    (registry, repository)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
pub fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or any number of "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        // [IPv6]:port
        match bracketed.split_once(']') {
            Some((ip, rest)) => (ip, rest.strip_prefix(':')),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') {
        return name.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("host:5000/a/b:t@{d}")).unwrap();
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest.as_ref().unwrap().as_str(), d);
        let by_digest = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(by_digest.tag, None);
        assert_eq!(by_digest.familiar_name(), "busybox");
        assert_eq!(Reference::parse("a/b").unwrap().familiar_name(), "a/b");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = Reference::parse("Busybox").unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        assert!(matches!(
            Reference::parse("a:-bad").unwrap_err(),
            ReferenceError::Tag { .. }
        ));
        assert!(matches!(
            Reference::parse("a/../b").unwrap_err(),
            ReferenceError::Component { .. }
        ));
        assert!(matches!(
            Reference::parse("a@sha256:xyz").unwrap_err(),
            ReferenceError::Digest { .. }
        ));
        assert!(matches!(
            Reference::parse("").unwrap_err(),
            ReferenceError::Empty(_)
        ));
        assert!(matches!(
            Reference::parse("host:po/a").unwrap_err(),
            ReferenceError::Host { .. }
        ));
        let long = format!("a/{}", "b".repeat(260));
        assert!(matches!(
            Reference::parse(&long).unwrap_err(),
            ReferenceError::TooLong { .. }
        ));
        assert!(valid_path_component("a__b"));
        assert!(valid_path_component("a---b"));
        assert!(!valid_path_component("a___b"));
        assert!(!valid_path_component("a..b"));
    }
}
