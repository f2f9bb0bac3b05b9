//! Repository names, tags and references as distribution-spec spec.md "Pulling manifests"
//! defines them.

use oci::Digest;

/// Clients limit `host[:port]/name` to 255 characters (spec.md, "Implementers note").
pub const MAX_QUALIFIED_NAME: usize = 255;
const MAX_TAG: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid repository name {0:?}: it must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*")]
    Syntax(String),
    #[error("repository name {name:?} is too long: with the registry host {host:?} it exceeds {MAX_QUALIFIED_NAME} characters")]
    TooLong { name: String, host: String },
}

/// Checks `name` against the spec's regular expression, and its length with the registry
/// host the client used (`host` is the request's Host header).
pub fn validate_repository(name: &str, host: &str) -> Result<(), NameError> {
    if !name.split('/').all(valid_component) {
        return Err(NameError::Syntax(name.to_string()));
    }
    if host.len() + 1 + name.len() > MAX_QUALIFIED_NAME {
        return Err(NameError::TooLong {
            name: name.to_string(),
            host: host.to_string(),
        });
    }
    Ok(())
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // A separator: ".", "_", "__" or "-"+.
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The `<tag-or-digest>` of a manifest URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// `None` when the text is neither a valid tag nor a valid digest.
    pub fn parse(s: &str) -> Option<Reference> {
        if s.contains(':') {
            s.parse().ok().map(Reference::Digest)
        } else if valid_tag(s) {
            Some(Reference::Tag(s.to_string()))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "library/ubuntu", "a-b--c/d.e/f__g", "x_y/0"] {
            assert_eq!(validate_repository(ok, "localhost:5000"), Ok(()), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a.", "a___b", "a.-b", "-a", "a b",
        ] {
            assert!(validate_repository(bad, "h").is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(250);
        assert!(validate_repository(&long, "h:1").is_ok());
        assert!(matches!(
            validate_repository(&long, "registry.example.org:5000"),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn tags_and_references() {
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag(&"a".repeat(128)));
        assert!(
            !valid_tag(".x") && !valid_tag("-x") && !valid_tag(&"a".repeat(129)) && !valid_tag("")
        );
        assert!(matches!(Reference::parse("v1.0"), Some(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(Digest::sha256_of(b"").as_str()),
            Some(Reference::Digest(_))
        ));
        assert_eq!(Reference::parse("sha256:abc"), None);
    }
}
