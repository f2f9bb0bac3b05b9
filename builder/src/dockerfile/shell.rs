//! Shell-word expansion as the Dockerfile frontend does it (BuildKit's
//! `frontend/dockerfile/shell/lex.go`): quote removal, escapes, `$V` / `${V}`
//! and the `${V:-d}` `${V-d}` `${V:+a}` `${V+a}` `${V?e}` `${V:?e}`
//! `${V#p}` `${V##p}` `${V%p}` `${V%%p}` `${V/p/r}` `${V//p/r}` forms, then
//! optional splitting into words.
//!
//! This is deliberately *not* a POSIX shell: no command substitution, no
//! globbing, no field splitting on IFS; the reference for every quirk is the
//! vector files `shell/envVarTest` and `shell/wordsTest`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why an expansion failed. The message matches BuildKit's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {source_word:?}: {message}")]
pub struct ShellError {
    /// The word that was being expanded.
    pub source_word: String,
    /// What went wrong, e.g. `syntax error: bad substitution`.
    pub message: String,
}

/// Where variable values come from during expansion.
pub trait VarLookup {
    /// The value of `name`, `None` when the variable is not set (set but
    /// empty is `Some("")`: `${V-d}` and `${V:-d}` tell them apart).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl VarLookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl VarLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An environment with no variables at all.
pub struct NoVars;

impl VarLookup for NoVars {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// The full outcome of one expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word (quotes removed, spaces kept).
    pub word: String,
    /// The same text split into words the way `ProcessWords` splits it:
    /// on unquoted whitespace, including whitespace that came out of `$V`.
    pub words: Vec<String>,
    /// Variables that were referenced and set (cache keys depend on them).
    pub used: BTreeSet<String>,
    /// Variables that were referenced but not set.
    pub unset: BTreeSet<String>,
}

/// A configured expander. The default escape character is `\`; a
/// Dockerfile's `# escape=` directive may switch it to a backtick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lex {
    escape: char,
    /// Keep quote characters in the output (used to find heredoc names).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written instead of erasing them.
    pub skip_unset_env: bool,
}

impl Default for Lex {
    fn default() -> Self {
        Lex::new('\\')
    }
}

impl Lex {
    /// An expander with escape character `escape` and default options.
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, vars: &dyn VarLookup) -> Result<String, ShellError> {
        self.expand(word, vars).map(|e| e.word)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        vars: &dyn VarLookup,
    ) -> Result<Vec<String>, ShellError> {
        self.expand(word, vars).map(|e| e.words)
    }

    /// Expands `word`, returning the string, the words and which variables
    /// were consulted.
    pub fn expand(&self, word: &str, vars: &dyn VarLookup) -> Result<Expansion, ShellError> {
        let mut sw = ShellWord {
            lex: self,
            chars: word.chars().collect(),
            pos: 0,
            vars,
            raw_escapes: self.raw_escapes,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((word_out, words)) => Ok(Expansion {
                word: word_out,
                words,
                used: sw.used,
                unset: sw.unset,
            }),
            Err(message) => Err(ShellError {
                source_word: word.to_string(),
                message,
            }),
        }
    }
}

/// Go's `unicode.IsSpace` and Rust's `char::is_whitespace` agree on the
/// White_Space property, which is what word splitting uses.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Accumulates split words; mirrors `wordsStruct` in lex.go, including its
/// rule that an empty quoted string does not make a word on its own. Each
/// nesting level (the operand of `${V:-w}`) gets its own accumulator:
/// BuildKit's current lexer shares one buffer between levels, which can
/// drop the text before a `${V:-w}` from `ProcessWords`; we keep it.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if is_space(c) {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

/// One expansion in progress. Errors are plain messages; `Lex::expand`
/// wraps them with the source word.
struct ShellWord<'a> {
    lex: &'a Lex,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn VarLookup,
    raw_escapes: bool,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

type Step<T> = Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end of input. `raw_escapes`
    /// applies to this level and to quotes nested in it: pattern operands of
    /// `${V#p}`, `${V%p}` and `${V/p/r}` keep their escapes so that the
    /// pattern compiler can tell `\*` from `*`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;

        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            if c == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                // Expanded values are split on their whitespace, as in sh.
                words.add_string(&value);
            } else if quotes && c == '\'' {
                let value = self.process_single_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else if quotes && c == '"' {
                let value = self.process_double_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else {
                self.next();
                if c == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // An escape at the very end of the word is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        match stop {
            Some(s) => Err(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    /// `'...'`: everything literal, no escapes at all (sh semantics).
    fn process_single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character only escapes `"`, `$` and
    /// itself, otherwise it stays literal (sh semantics).
    fn process_double_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let mut c = self.next().unwrap_or_default();
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            result.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.next();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.vars.lookup(name) {
            Some(v) => {
                self.used.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unset.insert(name.to_string());
                None
            }
        }
    }

    fn process_dollar(&mut self) -> Step<String> {
        self.next(); // the '$'

        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }

        self.next(); // the '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(first) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };

        match first {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = first == ':';
                let op = if null_is_unset {
                    self.next().ok_or("syntax error: missing '}'")?
                } else {
                    first
                };
                let op_text = if null_is_unset {
                    format!(":{op}")
                } else {
                    op.to_string()
                };
                let pattern_op = op == '#' || op == '%';
                if null_is_unset && pattern_op {
                    return Err(format!("unsupported modifier ({op_text}) in substitution"));
                }
                let (word, _) = self.process_stop_on(Some('}'), pattern_op).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '}'".to_string()
                    } else {
                        e
                    }
                })?;

                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{op_text}{word}}}"));
                }
                // `:` makes an empty value count as unset.
                let effectively_unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if effectively_unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if effectively_unset {
                        String::new()
                    } else {
                        word
                    }),
                    '?' => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        // A doubled operator (`##`, `%%`) asks for the longest match.
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let pattern = Pattern::compile(pattern)?;
                        let value = value.unwrap_or_default();
                        Ok(if op == '#' {
                            pattern.trim_prefix(&value, greedy)
                        } else {
                            pattern.trim_suffix(&value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({op_text}) in substitution")),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let (pattern, _) = self.process_stop_on(Some('/'), true).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '/' in ${}".to_string()
                    } else {
                        e
                    }
                })?;
                let (replacement, _) = self.process_stop_on(Some('}'), true).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '}'".to_string()
                    } else {
                        e
                    }
                })?;
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let compiled = Pattern::compile(&pattern)?;
                Ok(compiled.replace(&value, &replacement, replace_all))
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    /// Reads a variable name: letters/digits/underscore, or a run of digits
    /// (positional parameter), or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }
}

/// A shell pattern as `${V#p}`, `${V%p}` and `${V/p/r}` use it: `*` any
/// run, `?` any one character, `\*` `\?` `\\` literals; no bracket
/// expressions (BuildKit's `convertShellPatternToRegex` has none either).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatToken {
    Star,
    Any,
    Lit(char),
}

struct Pattern(Vec<PatToken>);

impl Pattern {
    fn compile(pattern: &str) -> Step<Pattern> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => tokens.push(PatToken::Star),
                '?' => tokens.push(PatToken::Any),
                '\\' => {
                    // `\}` and `\/` only protect the delimiter of ${...}; the
                    // backslash is not part of the pattern.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(e @ ('*' | '?' | '\\')) => tokens.push(PatToken::Lit(e)),
                        other => {
                            let shown = other.map(String::from).unwrap_or_default();
                            return Err(format!(
                                "invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                            ));
                        }
                    }
                }
                lit => tokens.push(PatToken::Lit(lit)),
            }
        }
        Ok(Pattern(tokens))
    }

    /// Whether the whole of `text` matches.
    fn matches(&self, text: &[char]) -> bool {
        // Classic wildcard matching with single-star backtracking: linear
        // enough for the short values Dockerfiles deal with.
        let p = &self.0;
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            match p.get(pi) {
                Some(PatToken::Star) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(PatToken::Any) => {
                    pi += 1;
                    ti += 1;
                }
                Some(PatToken::Lit(c)) if *c == text[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == PatToken::Star)
    }

    /// `${V#p}` / `${V##p}`: drop the shortest (longest) matching prefix.
    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let lens: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=chars.len()).rev())
        } else {
            Box::new(0..=chars.len())
        };
        for len in lens {
            if self.matches(&chars[..len]) {
                return chars[len..].iter().collect();
            }
        }
        value.to_string()
    }

    /// `${V%p}` / `${V%%p}`: drop the shortest (longest) matching suffix.
    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let n = chars.len();
        let lens: Box<dyn Iterator<Item = usize>> = if greedy {
            Box::new((0..=n).rev())
        } else {
            Box::new(0..=n)
        };
        for len in lens {
            if self.matches(&chars[n - len..]) {
                return chars[..n - len].iter().collect();
            }
        }
        value.to_string()
    }

    /// Leftmost match, longest at that position (`*` is greedy here).
    fn find(&self, chars: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=chars.len()).find_map(|start| {
            (start..=chars.len())
                .rev()
                .find(|&end| self.matches(&chars[start..end]))
                .map(|end| (start, end))
        })
    }

    /// `${V/p/r}` replaces the first match, `${V//p/r}` all of them; an
    /// empty match right after a previous match is skipped, as Go's
    /// `ReplaceAllString` does.
    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        if !all {
            return match self.find(&chars, 0) {
                Some((a, b)) => {
                    let mut out: String = chars[..a].iter().collect();
                    out.push_str(replacement);
                    out.extend(&chars[b..]);
                    out
                }
                None => value.to_string(),
            };
        }
        let mut out = String::new();
        let mut last_end = 0usize;
        let mut search = 0usize;
        while search <= chars.len() {
            let Some((a, b)) = self.find(&chars, search) else {
                break;
            };
            out.extend(&chars[last_end..a]);
            if b > last_end || a == 0 {
                out.push_str(replacement);
            }
            last_end = b;
            search = if search + 1 > b { search + 1 } else { b };
        }
        out.extend(&chars[last_end.min(chars.len())..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(input: &str, vars: &HashMap<String, String>) -> Result<String, ShellError> {
        Lex::default().process_word(input, vars)
    }

    #[test]
    fn pattern_operators() {
        let vars = env(&[("P", "/usr/local/bin/tool.tar.gz")]);
        assert_eq!(word("${P#*/}", &vars).unwrap(), "usr/local/bin/tool.tar.gz");
        assert_eq!(word("${P##*/}", &vars).unwrap(), "tool.tar.gz");
        assert_eq!(word("${P%.*}", &vars).unwrap(), "/usr/local/bin/tool.tar");
        assert_eq!(word("${P%%.*}", &vars).unwrap(), "/usr/local/bin/tool");
        assert_eq!(
            word("${P/local/opt}", &vars).unwrap(),
            "/usr/opt/bin/tool.tar.gz"
        );
        assert_eq!(
            word("${P//\\//_}", &vars).unwrap(),
            "_usr_local_bin_tool.tar.gz"
        );
        assert_eq!(
            word("${P/#x/y}", &vars).unwrap(),
            "/usr/local/bin/tool.tar.gz"
        );
        assert!(word("${P:#x}", &vars).is_err());
        assert!(word("${P#\\x}", &vars).is_err());
    }

    #[test]
    fn unset_versus_empty() {
        let vars = env(&[("E", "")]);
        assert_eq!(word("${E-d}", &vars).unwrap(), "");
        assert_eq!(word("${E:-d}", &vars).unwrap(), "d");
        assert_eq!(word("${U-d}", &vars).unwrap(), "d");
        assert_eq!(word("${E+a}", &vars).unwrap(), "a");
        assert_eq!(word("${E:+a}", &vars).unwrap(), "");
        let err = word("${U?must be set}", &vars).unwrap_err();
        assert_eq!(err.message, "U: must be set");
    }

    #[test]
    fn reports_used_and_unset_variables() {
        let vars = env(&[("A", "1")]);
        let e = Lex::default().expand("$A ${B:-x}", &vars).unwrap();
        assert_eq!(e.used.into_iter().collect::<Vec<_>>(), vec!["A"]);
        assert_eq!(e.unset.into_iter().collect::<Vec<_>>(), vec!["B"]);
    }

    #[test]
    fn skip_unset_keeps_references() {
        let lex = Lex {
            skip_unset_env: true,
            ..Lex::default()
        };
        assert_eq!(
            lex.process_word("$X ${Y} ${Z:-d}", &NoVars).unwrap(),
            "$X ${Y} ${Z:-d}"
        );
    }

    #[test]
    fn words_around_nested_expansions() {
        let vars = env(&[("S", "x y")]);
        let words = Lex::default()
            .process_words("a${U:-b}c ${S}d", &vars)
            .unwrap();
        assert_eq!(words, vec!["abc", "x", "yd"]);
    }

    #[test]
    fn backtick_escape() {
        let lex = Lex::new('`');
        assert_eq!(lex.process_word("a`$b\\c", &NoVars).unwrap(), "a$b\\c");
    }
}
