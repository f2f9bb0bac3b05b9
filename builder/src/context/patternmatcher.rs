//! `.dockerignore` / `--exclude` matching: a port of moby/patternmatcher, the matcher Docker
//! and BuildKit use, so that the same file is sent (or not) as with `docker build`.
//!
//! Semantics kept from upstream: patterns are trimmed and cleaned (`filepath.Clean`), `!`
//! marks an exception, the last matching pattern wins, `**` matches any number of path
//! components (including none), `*`/`?` never cross `/`, and a pattern matching a directory
//! matches everything below it. Upstream compiles each pattern to a regular expression; we
//! compile to the same small set of operations and match them directly, which gives the same
//! answers without a regex engine.

use super::wildcard::{self, decode_rune, BadPattern};

/// Why a list of patterns was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `!` alone excludes nothing and is refused, as upstream does.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    /// Go's `filepath.Match` rejects the pattern.
    #[error("syntax error in pattern {0:?}")]
    Syntax(String),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    /// `Err` when the pattern passed Go's syntax check but upstream's regexp compilation would
    /// fail (e.g. the reversed range in `[Local-Only]`): like upstream, matching then errors.
    compiled: Result<Compiled, BadPattern>,
}

#[derive(Debug, Clone)]
enum Compiled {
    Exact,
    /// `dir/**`: the pattern minus its trailing `**` is a plain prefix.
    Prefix,
    /// `**/name` or `**name`: the pattern minus its leading `**` is a plain suffix.
    Suffix,
    Ops(Vec<Op>),
}

/// The operations upstream's generated regexps are built from.
#[derive(Debug, Clone)]
enum Op {
    /// One literal rune (its UTF-8 bytes).
    Literal(Vec<u8>),
    /// `?` → `[^/]`.
    AnyRuneButSlash,
    /// `*` → `[^/]*`.
    StarButSlash,
    /// `**/` in the middle → `(.*/)?`.
    AnyDirs,
    /// `**` at the end (after something else) → `.*`.
    AnyTail,
    /// `[...]`, with Go's class syntax; a class may match `/`, as upstream's does.
    Class {
        negated: bool,
        ranges: Vec<(u32, u32)>,
    },
}

impl Pattern {
    /// The cleaned pattern text, without the `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Could this pattern match some path strictly below the directory `dir`? Compares the
    /// pattern's leading literal components with `dir`'s; any wildcard or escape answers yes.
    fn could_match_below(&self, dir: &[u8]) -> bool {
        let mut pattern = self.cleaned.as_bytes().split(|&b| b == b'/');
        for dir_component in dir.split(|&b| b == b'/') {
            match pattern.next() {
                None => return false,
                Some(p) if wildcard::has_wildcards(p) || p.contains(&b'\\') => return true,
                Some(p) if p != dir_component => return false,
                Some(_) => {}
            }
        }
        pattern.next().is_some()
    }

    fn matches(&self, path: &[u8]) -> Result<bool, BadPattern> {
        let compiled = self.compiled.as_ref().map_err(|e| *e)?;
        let pat = self.cleaned.as_bytes();
        Ok(match compiled {
            Compiled::Exact => path == pat,
            Compiled::Prefix => path.starts_with(&pat[..pat.len() - 2]),
            Compiled::Suffix => {
                let suffix = &pat[2..];
                // `**/foo` also matches `foo` itself.
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Compiled::Ops(ops) => {
                let mut failed = std::collections::HashSet::new();
                match_ops(ops, 0, path, 0, &mut failed)
            }
        })
    }
}

/// Upstream's `compile`: the match type is decided while scanning, with the same quirks
/// (e.g. `**` first makes a suffix match unless a later wildcard needs the general form).
fn compile(pattern: &str) -> Result<Compiled, BadPattern> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Ops,
    }
    let mut kind = Kind::Exact;
    let mut ops = Vec::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let mut iteration = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                // `**/` is treated as `**`.
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        ops.push(Op::AnyTail);
                        kind = Kind::Ops;
                    }
                } else {
                    ops.push(Op::AnyDirs);
                    kind = Kind::Ops;
                }
                if iteration == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                ops.push(Op::StarButSlash);
                kind = Kind::Ops;
            }
            '?' => {
                ops.push(Op::AnyRuneButSlash);
                kind = Kind::Ops;
            }
            '\\' => match chars.get(pos) {
                Some(&next) => {
                    pos += 1;
                    ops.push(literal(next));
                    kind = Kind::Ops;
                }
                None => ops.push(literal('\\')),
            },
            '[' => {
                let (op, used) = compile_class(&chars[pos..])?;
                pos += used;
                ops.push(op);
                kind = Kind::Ops;
            }
            other => ops.push(literal(other)),
        }
        iteration += 1;
    }
    Ok(match kind {
        Kind::Exact => Compiled::Exact,
        Kind::Prefix => Compiled::Prefix,
        Kind::Suffix => Compiled::Suffix,
        Kind::Ops => Compiled::Ops(ops),
    })
}

fn literal(c: char) -> Op {
    let mut buf = [0u8; 4];
    Op::Literal(c.encode_utf8(&mut buf).as_bytes().to_vec())
}

/// Parses a class body after `[` (already validated by Go's matcher). A reversed range is an
/// error, as it is for the regexp engine upstream hands the class to.
fn compile_class(chars: &[char]) -> Result<(Op, usize), BadPattern> {
    let mut pos = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        pos += 1;
    }
    let mut ranges = Vec::new();
    let read = |pos: &mut usize| -> Result<u32, BadPattern> {
        let mut c = *chars.get(*pos).ok_or(BadPattern)?;
        if c == '\\' {
            *pos += 1;
            c = *chars.get(*pos).ok_or(BadPattern)?;
        }
        *pos += 1;
        Ok(u32::from(c))
    };
    loop {
        match chars.get(pos) {
            None => return Err(BadPattern),
            Some(']') if !ranges.is_empty() => return Ok((Op::Class { negated, ranges }, pos + 1)),
            Some(_) => {
                let lo = read(&mut pos)?;
                let mut hi = lo;
                if chars.get(pos) == Some(&'-') {
                    pos += 1;
                    hi = read(&mut pos)?;
                }
                if lo > hi {
                    return Err(BadPattern);
                }
                ranges.push((lo, hi));
            }
        }
    }
}

/// Anchored match of `ops[oi..]` against `text[ti..]`, memoising failed states so that
/// patterns full of stars stay linear in practice.
fn match_ops(
    ops: &[Op],
    oi: usize,
    text: &[u8],
    ti: usize,
    failed: &mut std::collections::HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(oi, ti)) {
        return false;
    }
    let result = match ops.get(oi) {
        None => ti == text.len(),
        Some(Op::Literal(bytes)) => {
            text[ti..].starts_with(bytes) && match_ops(ops, oi + 1, text, ti + bytes.len(), failed)
        }
        Some(Op::AnyRuneButSlash) => {
            ti < text.len()
                && text[ti] != b'/'
                && match_ops(ops, oi + 1, text, ti + decode_rune(&text[ti..]).1, failed)
        }
        Some(Op::Class { negated, ranges }) => {
            if ti >= text.len() {
                false
            } else {
                let (r, n) = decode_rune(&text[ti..]);
                let inside = ranges.iter().any(|&(lo, hi)| lo <= r && r <= hi);
                inside != *negated && match_ops(ops, oi + 1, text, ti + n, failed)
            }
        }
        Some(Op::StarButSlash) => {
            let mut end = ti;
            loop {
                if match_ops(ops, oi + 1, text, end, failed) {
                    break true;
                }
                if end >= text.len() || text[end] == b'/' {
                    break false;
                }
                end += decode_rune(&text[end..]).1;
            }
        }
        // `(.*/)?`: nothing, or anything up to and including some later `/`.
        Some(Op::AnyDirs) => {
            match_ops(ops, oi + 1, text, ti, failed)
                || (ti..text.len()).any(|i| {
                    text[i] == b'/'
                        && !text[ti..i].contains(&b'\n')
                        && match_ops(ops, oi + 1, text, i + 1, failed)
                })
        }
        // `.*` at the end: regexp `.` does not match a newline.
        Some(Op::AnyTail) => !text[ti..].contains(&b'\n') && oi + 1 == ops.len(),
    };
    if !result {
        failed.insert((oi, ti));
    }
    result
}

/// Parent-directory match results carried down a walk (upstream's `MatchInfo`): entry `i`
/// says whether pattern `i` matched the parent directory or one of its ancestors.
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns; the last one matching a path decides.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles `patterns` (upstream's `New`): blank ones are dropped, each is trimmed and
    /// cleaned, and checked with Go's `filepath.Match`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut out = PatternMatcher::default();
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut text = wildcard::clean(trimmed);
            let exclusion = text.starts_with('!');
            if exclusion {
                if text.len() == 1 {
                    return Err(PatternError::LoneExclamation);
                }
                text.remove(0);
                out.exclusions = true;
            }
            if wildcard::go_match(text.as_bytes(), b".").is_err() {
                return Err(PatternError::Syntax(raw.as_ref().to_string()));
            }
            let compiled = compile(&text);
            out.patterns.push(Pattern {
                cleaned: text,
                exclusion,
                compiled,
            });
        }
        Ok(out)
    }

    /// Does any pattern start with `!`?
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Does `file` (slash-separated, relative) itself match, ignoring its parents?
    pub fn matches_exact(&self, file: &[u8]) -> Result<bool, BadPattern> {
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an already matched path, nor an exception an unmatched one.
            if p.exclusion != matched {
                continue;
            }
            if p.matches(file)? {
                matched = !p.exclusion;
            }
        }
        Ok(matched)
    }

    /// Does `file` or one of its parent directories match (upstream's
    /// `MatchesOrParentMatches`)?
    pub fn matches_or_parent_matches(&self, file: &[u8]) -> Result<bool, BadPattern> {
        let mut matched = false;
        let parents = parent_prefixes(file);
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(file)?;
            if !hit {
                // Upstream ignores errors on the parent checks.
                hit = parents.iter().any(|dir| p.matches(dir).unwrap_or(false));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        Ok(matched)
    }

    /// The walk-friendly form (upstream's `MatchesUsingParentResults`): `parent` holds the
    /// results for the parent directory, from the previous call, or is empty (then parents
    /// are checked from scratch). Returns the result and the info to pass to children.
    pub fn matches_using_parent_results(
        &self,
        file: &[u8],
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), BadPattern> {
        let known = &parent.parent_matched;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = known.get(i).copied().unwrap_or(false);
            if !hit {
                if p.exclusion != matched {
                    continue;
                }
                hit = p.matches(file)?;
                if !hit && known.is_empty() {
                    hit = parent_prefixes(file)
                        .iter()
                        .any(|dir| p.matches(dir).unwrap_or(false));
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !p.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// Could an exception re-include something below the excluded directory `dir`? If not, a
    /// walk may skip the directory entirely (BuildKit's fsutil prunes the same way, only more
    /// coarsely).
    pub(crate) fn may_reinclude_below(&self, dir: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|p| p.exclusion && p.could_match_below(dir))
    }

    /// Could an inclusion pattern match something below `dir`? Lets a `--parents` walk skip
    /// directories its pattern cannot reach.
    pub(crate) fn may_match_below(&self, dir: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exclusion && p.could_match_below(dir))
    }
}

/// `a/b/c` → [`a`, `a/b`]: the parent directories of a relative path, outermost first.
fn parent_prefixes(file: &[u8]) -> Vec<&[u8]> {
    file.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| &file[..i])
        .filter(|p| !p.is_empty())
        .collect()
}
