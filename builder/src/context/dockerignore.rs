//! Reading `.dockerignore` files and choosing which one applies.
//!
//! Line handling follows moby/patternmatcher's `ignorefile.ReadAll`: a UTF-8 BOM is dropped,
//! lines starting with `#` are comments (only in the first column), whitespace is trimmed, and
//! each pattern is cleaned with `filepath.Clean` and made relative (`/foo` means `foo`).

use std::path::{Path, PathBuf};

use super::wildcard::clean;
use super::ContextError;

/// Parses the contents of an ignore file into the pattern list a `PatternMatcher` takes.
pub fn parse_ignore_file(contents: &str) -> Vec<String> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut patterns = Vec::new();
    for line in contents.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        patterns.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    patterns
}

/// The ignore file that applies to a build (BuildKit's rule): for a Dockerfile at
/// `path/to/name.Dockerfile`, `path/to/name.Dockerfile.dockerignore` wins when it exists;
/// otherwise the context root's `.dockerignore`. Returns `None` when neither exists.
pub fn ignore_file_for(context_root: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
    if let Some(dockerfile) = dockerfile {
        if let Some(name) = dockerfile.file_name() {
            let mut own = name.to_os_string();
            own.push(".dockerignore");
            let candidate = dockerfile.with_file_name(own);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let root_file = context_root.join(".dockerignore");
    root_file.is_file().then_some(root_file)
}

/// Reads and parses the ignore file that applies (see [`ignore_file_for`]); no file means
/// no patterns.
pub fn load_ignore_patterns(
    context_root: &Path,
    dockerfile: Option<&Path>,
) -> Result<Vec<String>, ContextError> {
    let Some(path) = ignore_file_for(context_root, dockerfile) else {
        return Ok(Vec::new());
    };
    let bytes = std::fs::read(&path).map_err(|source| ContextError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(parse_ignore_file(&String::from_utf8_lossy(&bytes)))
}
