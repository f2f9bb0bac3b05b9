//! Parser directives: `# syntax=`, `# escape=` and `# check=` comments at
//! the very top of a Dockerfile (spec: reference.md "Parser directives").
//!
//! Directives are only recognised before the first instruction, blank
//! line-less comment or unknown directive; each may appear once. The
//! matching follows BuildKit's regular expression
//! `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` where `\s` is ASCII
//! space, tab, CR, LF or form feed.

/// One recognised directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value, surrounding spaces removed.
    pub value: String,
    /// Line (1-based) the directive is on.
    pub line: usize,
}

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Tracks directive state line by line.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    done: bool,
    seen: Vec<Directive>,
}

fn is_re_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{c}')
}

/// Splits `# name = value` into name and value, or None when the line does
/// not have the directive shape.
fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    let trimmed = rest.trim_matches(is_re_space);
    if !trimmed.is_empty() {
        return Some((name.to_string(), trimmed.to_string()));
    }
    // `(.+?)` needs one character: with only spaces after `=`, the regex
    // backtracks and captures the last one.
    rest.chars()
        .last()
        .map(|c| (name.to_string(), c.to_string()))
}

impl DirectiveParser {
    /// Feeds the next physical line (newline and leading spaces already
    /// removed). Returns the directive found on it, if any.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, String> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.iter().any(|d| d.name == name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        let directive = Directive {
            name,
            value,
            line: self.line,
        };
        self.seen.push(directive.clone());
        Ok(Some(directive))
    }

    /// All directives seen, in order.
    pub(crate) fn into_directives(self) -> Vec<Directive> {
        self.seen
    }
}

/// Whether a `# syntax=` value names the Dockerfile frontend we implement
/// (`docker/dockerfile`, any tag, digest or registry prefix). Anything
/// else asks for a frontend image we cannot run.
pub fn is_dockerfile_frontend(syntax: &str) -> bool {
    let image = syntax.split_whitespace().next().unwrap_or_default();
    let without_digest = image.split('@').next().unwrap_or_default();
    // Strip a tag (a ':' after the last '/').
    let repo = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    matches!(
        repo,
        "docker/dockerfile"
            | "docker.io/docker/dockerfile"
            | "index.docker.io/docker/dockerfile"
            | "docker/dockerfile-upstream"
            | "docker.io/docker/dockerfile-upstream"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_shapes() {
        assert_eq!(
            match_directive("# escape=`"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            match_directive("#\tdIrEcTiVe= value  "),
            Some(("dIrEcTiVe".into(), "value".into()))
        );
        assert_eq!(match_directive("# direc tive=x"), None);
        assert_eq!(match_directive("# 1x=y"), None);
        assert_eq!(match_directive("FROM x"), None);
    }

    #[test]
    fn only_at_the_top_and_once() {
        let mut p = DirectiveParser::default();
        assert!(p
            .parse_line("# syntax=docker/dockerfile:1")
            .unwrap()
            .is_some());
        assert!(p.parse_line("# SYNTAX=x").is_err());
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# about").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
    }

    #[test]
    fn frontend_names() {
        assert!(is_dockerfile_frontend("docker/dockerfile:1"));
        assert!(is_dockerfile_frontend(
            "docker.io/docker/dockerfile:1.7-labs@sha256:abc"
        ));
        assert!(is_dockerfile_frontend("docker/dockerfile"));
        assert!(!is_dockerfile_frontend("example.com/my/frontend:1"));
    }
}
