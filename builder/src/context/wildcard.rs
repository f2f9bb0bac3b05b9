//! Go's `path/filepath` pattern semantics, byte for byte.
//!
//! COPY/ADD sources and `--exclude` follow Go's `filepath.Match` (spec: dockerfile/reference.md,
//! "COPY --exclude": "matching using Go's filepath.Match rules"); `.dockerignore` patterns are
//! validated with it and cleaned with `filepath.Clean`. Porting the algorithms (rather than
//! approximating them with a glob crate) keeps edge cases such as `[\-x]`, `a*/b` or a trailing
//! `\` identical to Docker's.

/// A pattern Go's `filepath.Match` rejects (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

/// Go's `utf8.RuneError`, what a malformed UTF-8 sequence decodes to.
const RUNE_ERROR: u32 = 0xFFFD;

/// Decodes the first UTF-8 rune of `b` like Go's `utf8.DecodeRune`: an invalid sequence yields
/// `(RUNE_ERROR, 1)`. Paths are bytes on Linux, so matching never assumes valid UTF-8.
pub(crate) fn decode_rune(b: &[u8]) -> (u32, usize) {
    let Some(&first) = b.first() else {
        return (RUNE_ERROR, 0);
    };
    let len = match first {
        0x00..=0x7f => return (u32::from(first), 1),
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match b.get(..len).and_then(|p| std::str::from_utf8(p).ok()) {
        Some(s) => (s.chars().next().map_or(RUNE_ERROR, u32::from), len),
        None => (RUNE_ERROR, 1),
    }
}

/// Go's `filepath.Match(pattern, name)` on Unix: `*` matches any run of non-`/` bytes, `?` one
/// non-`/` rune, `[...]` a class (`^` negates, `a-z` ranges), `\` escapes. A malformed pattern is
/// an error even when the name fails to match early (Go ≥ 1.16 scans the rest of the pattern).
pub fn go_match(pattern: &[u8], name: &[u8]) -> Result<bool, BadPattern> {
    let mut pattern = pattern;
    let mut name = name;
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the name unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        let (matched, err) = match match_chunk(chunk, name) {
            Ok(Some(t)) => (Some(t), None),
            Ok(None) => (None, None),
            Err(e) => (None, Some(e)),
        };
        // The last chunk must consume the whole name.
        if let Some(t) = matched {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        if star {
            // Let the star eat 1..n bytes, never a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                match match_chunk(chunk, &name[i + 1..]) {
                    Ok(Some(t)) => {
                        if pattern.is_empty() && !t.is_empty() {
                            i += 1;
                            continue;
                        }
                        name = t;
                        continue 'pattern;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
                i += 1;
            }
        }
        // No match: still report a syntax error anywhere in the rest of the pattern.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the next star-free chunk (Go's `scanChunk`).
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    let mut pattern = pattern;
    while let Some(rest) = pattern.strip_prefix(b"*") {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // An escaped character cannot end the chunk; a trailing `\` is caught later.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches one star-free chunk at the start of `s`, returning the unmatched rest (Go's
/// `matchChunk`). After a mismatch it keeps parsing the chunk so syntax errors still surface.
fn match_chunk<'s>(chunk: &[u8], s: &'s [u8]) -> Result<Option<&'s [u8]>, BadPattern> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = RUNE_ERROR;
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Reads one possibly escaped rune of a character class (Go's `getEsc`).
fn get_esc(chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    // A class must be closed by `]`, so running out of pattern here is an error.
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

/// BuildKit's `containsWildcards`: does this path component use `*`, `?` or `[`, skipping
/// characters escaped by `\`.
pub fn has_wildcards(component: &[u8]) -> bool {
    let mut i = 0;
    while i < component.len() {
        match component[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `filepath.Clean` on Unix: collapse `//`, drop `.`, resolve `..` lexically (never above
/// `/` for a rooted path), `""` becomes `"."`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if !rooted => parts.push(".."),
                _ => {}
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}
