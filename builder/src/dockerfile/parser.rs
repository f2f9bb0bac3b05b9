//! Dockerfile text → parse tree, following BuildKit's
//! `frontend/dockerfile/parser` (parser.go, line_parsers.go,
//! split_command.go) so that the tree dumps identically for every test
//! vector.
//!
//! Pipeline per logical line: directives are looked for at the top; comment
//! lines are dropped; continuation lines are joined (comment and blank lines
//! inside a continuation are skipped); the keyword and `--flags` are split
//! off; a per-instruction line parser turns the rest into argument nodes;
//! finally RUN/COPY/ADD (also under ONBUILD) collect their heredoc bodies.

use super::directives::{is_dockerfile_frontend, Directive, DirectiveParser};
use super::error::{DockerfileError, ErrorKind};
use super::lexer::{
    heredocs_from_line, is_comment, is_empty_continuation_line, split_lines, trim_continuation,
    trim_leading_space, trim_newline,
};
use super::node::Node;

/// The default escape character; `# escape=` may change it to a backtick.
pub const DEFAULT_ESCAPE: char = '\\';

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub message: String,
    /// The line it concerns (1-based).
    pub line: usize,
}

/// The parse tree plus what the directives set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseResult {
    /// Root node: one child per instruction.
    pub ast: Node,
    /// The escape character in effect (`\` or `` ` ``).
    pub escape: char,
    /// The directives found at the top (`syntax`, `escape`, `check`).
    pub directives: Vec<Directive>,
    /// Empty continuation lines, foreign `# syntax=` frontends.
    pub warnings: Vec<Warning>,
}

impl ParseResult {
    /// The value of directive `name`, if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// Per-file parser state: the escape character and the directive tracker.
struct State {
    escape: char,
    directives: DirectiveParser,
}

impl State {
    /// Trims a physical line like BuildKit's `processLine`: newline off,
    /// optionally leading spaces off, directive detection, comment lines
    /// emptied. Returns the text and whether the line was a directive.
    fn process_line(&mut self, raw: &str, strip_left: bool) -> Result<(String, bool), String> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = trim_leading_space(token);
        }
        let directive = self.directives.parse_line(token)?;
        if let Some(d) = directive.as_ref().filter(|d| d.name == "escape") {
            self.escape = match d.value.as_str() {
                "`" => '`',
                "\\" => '\\',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    ))
                }
            };
        }
        let text = if is_comment(token) {
            String::new()
        } else {
            token.to_string()
        };
        Ok((text, directive.is_some()))
    }
}

/// Parses a whole Dockerfile into BuildKit's tree shape.
pub fn parse(source: &str) -> Result<ParseResult, DockerfileError> {
    let mut st = State {
        escape: DEFAULT_ESCAPE,
        directives: DirectiveParser::default(),
    };
    let lines = split_lines(source);
    let mut idx = 0usize; // next physical line to read (0-based)
    let mut root = Node::default();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    while idx < lines.len() {
        let mut raw = lines[idx];
        if idx == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        idx += 1;
        let start_line = idx;

        if is_comment(raw) {
            // BuildKit slices off the first byte of the *untrimmed* line.
            let comment = raw.get(1..).unwrap_or_default().trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let (text, is_directive) = st
            .process_line(raw, true)
            .map_err(|m| DockerfileError::syntax(start_line, start_line, m))?;
        if is_directive {
            comments.pop();
        }

        let (first, mut end_of_line) = trim_continuation(&text, st.escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first;

        let mut has_empty_continuation = false;
        while !end_of_line && idx < lines.len() {
            let raw = lines[idx];
            idx += 1;
            let (text, _) = st
                .process_line(raw, false)
                .map_err(|m| DockerfileError::syntax(idx, idx, m))?;
            if is_comment(raw) {
                continue;
            }
            if is_empty_continuation_line(&text) {
                has_empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(&text, st.escape);
            end_of_line = eol;
            line.push_str(&part);
        }

        if has_empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {line}"),
                line: idx,
            });
        }

        let mut child = node_from_line(&line, st.escape, std::mem::take(&mut comments))
            .map_err(|m| DockerfileError::syntax(start_line, idx, m))?;

        if can_contain_heredoc(&child) && line.contains("<<") {
            let heredocs = heredocs_from_line(&line)
                .map_err(|m| DockerfileError::syntax(start_line, idx, m))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                while idx < lines.len() {
                    let body_line = lines[idx];
                    idx += 1;
                    let mut candidate = trim_newline(body_line);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    heredoc.content.push_str(body_line);
                }
                if !terminated {
                    return Err(DockerfileError::syntax(
                        start_line,
                        idx,
                        "unterminated heredoc",
                    ));
                }
                child.heredocs.push(heredoc);
            }
        }

        child.start_line = start_line;
        child.end_line = idx;
        if root.children.is_empty() {
            root.start_line = start_line;
        }
        root.end_line = idx;
        root.children.push(child);
    }

    if root.children.is_empty() {
        let last = lines.len().max(1);
        return Err(DockerfileError::new(last, last, ErrorKind::Empty));
    }

    let directives = st.directives.into_directives();
    for d in directives.iter().filter(|d| d.name == "syntax") {
        if !is_dockerfile_frontend(&d.value) {
            warnings.push(Warning {
                message: format!(
                    "# syntax={} names a frontend other than docker/dockerfile; using the built-in Dockerfile frontend",
                    d.value
                ),
                line: d.line,
            });
        }
    }

    Ok(ParseResult {
        ast: root,
        escape: st.escape,
        directives,
        warnings,
    })
}

/// RUN, COPY and ADD in shell form take heredocs, also as ONBUILD triggers.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if n.value.eq_ignore_ascii_case("onbuild") {
        if let Some(inner) = n.next.as_deref().and_then(|next| next.children.first()) {
            n = inner;
        }
    }
    let keyword = n.value.to_ascii_lowercase();
    matches!(keyword.as_str(), "run" | "copy" | "add") && !n.json
}

/// Splits keyword, flags and arguments and dispatches to the line parser
/// of the instruction (BuildKit's `newNodeFromLine`).
fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_token_space) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_token_space)),
        ),
        None => (trimmed, None),
    };
    let (args, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (String::new(), Vec::new()),
    };
    let args = args.trim();

    let (next, json) = match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(args)?,
        "arg" => (parse_name_or_name_val(args, escape), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(args)?,
        "env" => (parse_name_val(args, "ENV", escape)?, false),
        "label" => (parse_name_val(args, "LABEL", escape)?, false),
        "expose" | "from" => (parse_whitespace_delimited(args), false),
        "healthcheck" => parse_health_config(args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (parse_string(args), false),
        "onbuild" => (parse_sub_command(args, escape)?, false),
        // Unknown keywords keep an empty argument node; the instruction
        // layer rejects them with the line number.
        _ => (Some(Box::default()), false),
    };

    Ok(Node {
        value: cmd.to_string(),
        next,
        json,
        original: line.to_string(),
        flags,
        prev_comment: comments,
        ..Node::default()
    })
}

/// `[\t\v\f\r ]`: the whitespace BuildKit's `reWhitespace` splits on.
fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits leading `--flag[=value]` words off `line`. A bare `--` ends the
/// flags. Quotes and backslashes inside flags are removed (BuildKit's
/// `extractBuilderFlags`). This walks characters where BuildKit walks
/// bytes, so non-ASCII flag values survive intact instead of being
/// re-encoded byte by byte.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;

    loop {
        let at_end = pos == chars.len();
        let ch = chars.get(pos).map(|(_, c)| *c).unwrap_or_default();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            let starts_flag = ch == '-' && chars.get(pos + 1).map(|(_, c)| *c) == Some('-');
            if !starts_flag {
                return (line[chars[pos].0..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[chars[pos].0..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == '\\' {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == '\\' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// Splits on whitespace keeping quotes and escapes in the words (they are
/// removed later, at expansion). BuildKit's `parseWords`.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;

    loop {
        let at_end = pos == chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or_default();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue; // an escape at the very end is dropped
                }
                // Unquoted escape: keep it and the escaped character, even a quote.
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        // Nothing can be escaped inside single quotes.
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// ENV and LABEL: either the legacy `KEY value with spaces` or
/// `k=v k2="v 2"`. Each pair becomes key, value and separator nodes
/// (`=` or empty for the legacy form), as BuildKit dumps them.
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Option<Box<Node>>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(None);
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_token_space) else {
            return Err(format!("{keyword} must have two arguments"));
        };
        let key = &rest[..i];
        let value = rest[i..].trim_start_matches(is_token_space);
        return Ok(Node::chain([
            key.to_string(),
            value.to_string(),
            String::new(),
        ]));
    }
    let mut values = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        values.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(Node::chain(values))
}

/// ARG: words, each `name` or `name=value`, quotes kept.
fn parse_name_or_name_val(rest: &str, escape: char) -> Option<Box<Node>> {
    Node::chain(parse_words(rest, escape))
}

/// FROM and EXPOSE: plain whitespace-separated words.
fn parse_whitespace_delimited(rest: &str) -> Option<Box<Node>> {
    if rest.is_empty() {
        return None;
    }
    Node::chain(
        rest.split(is_token_space)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    )
}

/// MAINTAINER, STOPSIGNAL, USER, WORKDIR: the rest of the line as one value.
fn parse_string(rest: &str) -> Option<Box<Node>> {
    if rest.is_empty() {
        return None;
    }
    Node::chain([rest.to_string()])
}

/// Why a JSON-looking argument is not a JSON string array.
enum JsonError {
    /// Not JSON (or not an array): fall back to the shell form.
    NotJson,
    /// A JSON array with a non-string element: a hard error.
    NotStringArray,
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_json(rest: &str) -> Result<Option<Box<Node>>, JsonError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    let values: Vec<serde_json::Value> =
        serde_json::from_str(rest).map_err(|_| JsonError::NotJson)?;
    let strings = values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonError::NotStringArray),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Node::chain(strings))
}

/// CMD, ENTRYPOINT, RUN, SHELL: a JSON array (exec form) or the rest of
/// the line as one value (shell form).
fn parse_maybe_json(rest: &str) -> Result<(Option<Box<Node>>, bool), String> {
    if rest.is_empty() {
        return Ok((None, false));
    }
    match parse_json(rest) {
        Ok(node) => Ok((node, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.to_string()),
        Err(JsonError::NotJson) => Ok((Node::chain([rest.to_string()]), false)),
    }
}

/// ADD, COPY, VOLUME: a JSON array or whitespace-separated words.
fn parse_maybe_json_to_list(rest: &str) -> Result<(Option<Box<Node>>, bool), String> {
    match parse_json(rest) {
        Ok(node) => Ok((node, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.to_string()),
        Err(JsonError::NotJson) => Ok((parse_whitespace_delimited(rest), false)),
    }
}

/// HEALTHCHECK: a type word (`CMD`, `NONE`, ...) then, like CMD, a JSON
/// array or a shell string.
fn parse_health_config(rest: &str) -> Result<(Option<Box<Node>>, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((None, false));
    }
    let typ = &rest[..sep];
    let cmd_text = rest[sep..].trim_start_matches(char::is_whitespace);
    let (cmd, json) = parse_maybe_json(cmd_text)?;
    Ok((
        Some(Box::new(Node {
            value: typ.to_string(),
            next: cmd,
            ..Node::default()
        })),
        json,
    ))
}

/// ONBUILD: the rest of the line is an instruction of its own, held as the
/// child of the single argument node.
fn parse_sub_command(rest: &str, escape: char) -> Result<Option<Box<Node>>, String> {
    if rest.is_empty() {
        return Ok(None);
    }
    let child = node_from_line(rest, escape, Vec::new())?;
    Ok(Some(Box::new(Node {
        children: vec![child],
        ..Node::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(parse_words("foo\\ bar", '\\'), vec!["foo\\ bar"]);
        assert_eq!(
            parse_words("foo bar 'abc xyz'", '\\'),
            vec!["foo", "bar", "'abc xyz'"]
        );
        assert_eq!(
            parse_words("föo bàr \"âbc xÿz\"", '\\'),
            vec!["föo", "bàr", "\"âbc xÿz\""]
        );
    }

    #[test]
    fn flags_are_split_off() {
        assert_eq!(
            extract_builder_flags("--a=1 --b=\"x y\" -- src dst"),
            (
                " src dst".to_string(),
                vec!["a=1".to_string(), "b=x y".to_string()]
                    .into_iter()
                    .map(|s| format!("--{s}"))
                    .collect()
            )
        );
        assert_eq!(extract_builder_flags("-x y"), ("-x y".to_string(), vec![]));
    }

    #[test]
    fn heredoc_lines_extend_the_instruction() {
        let r = parse("FROM a\nRUN <<EOF\necho hi\nEOF\nRUN true\n").unwrap();
        let run = &r.ast.children[1];
        assert_eq!((run.start_line, run.end_line), (2, 4));
        assert_eq!(run.heredocs[0].content, "echo hi\n");
        assert_eq!(r.ast.children[2].start_line, 5);
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(
            (e.line, e.to_string().as_str()),
            (2, "Dockerfile:2: unterminated heredoc")
        );
    }

    #[test]
    fn foreign_syntax_warns() {
        let r = parse("# syntax=example.com/x\nFROM a\n").unwrap();
        assert_eq!(r.directive("syntax"), Some("example.com/x"));
        assert_eq!(r.warnings.len(), 1);
        let r = parse("# syntax=docker/dockerfile:1\nFROM a\n").unwrap();
        assert!(r.warnings.is_empty());
    }
}
