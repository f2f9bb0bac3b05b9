//! Physical-line handling: line splitting, comments, line continuations
//! and heredoc delimiters. Mirrors the helpers of BuildKit's
//! `frontend/dockerfile/parser/parser.go`.

use super::node::Heredoc;
use super::shell::{Lex, NoVars};

/// Splits `src` into lines that keep their `\n` (a heredoc body needs
/// them); the last line may lack one.
pub(crate) fn split_lines(src: &str) -> Vec<&str> {
    src.split_inclusive('\n').collect()
}

/// Removes trailing CR/LF characters.
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

pub(crate) fn trim_leading_space(line: &str) -> &str {
    line.trim_start_matches(char::is_whitespace)
}

/// A comment is a line whose first non-space character is `#`.
pub(crate) fn is_comment(line: &str) -> bool {
    trim_leading_space(line).starts_with('#')
}

/// A continuation line with nothing but spaces (BuildKit warns about them).
pub(crate) fn is_empty_continuation_line(line: &str) -> bool {
    trim_leading_space(trim_newline(line)).is_empty()
}

/// Removes a line-continuation escape at the end of `line`.
///
/// The escape character followed only by spaces/tabs continues the line,
/// unless it is itself escaped (`foo\\` ends the line); a line holding only
/// the escape character continues too. Returns the line without the escape
/// and whether the logical line ends here.
pub(crate) fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line.to_string(), true);
    };
    if before.is_empty() {
        return (String::new(), false);
    }
    if before.ends_with(escape) {
        return (line.to_string(), true);
    }
    (before.to_string(), false)
}

/// Parses one word of an instruction as a heredoc opener
/// (`[fd]<<[-]WORD`), as BuildKit's `ParseHeredoc` does. `Ok(None)` when the
/// word is not a heredoc.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let (fd, rest) = word.split_at(digits);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, name_part) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if name_part.is_empty() || name_part.contains('<') {
        return Ok(None);
    }
    // Any quote in the delimiter disables expansion of the body: lex it
    // with and without quote removal and compare the quote counts.
    let mut lex = Lex::new('\\');
    lex.skip_unset_env = true;
    let words = lex
        .process_words(name_part, &NoVars)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw_words = lex
        .process_words(name_part, &NoVars)
        .map_err(|e| e.to_string())?;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {name_part}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        // Go's ParseUint failure yields 0; an absurdly long fd does too.
        file_descriptor: fd.parse().unwrap_or(0),
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        chomp,
        content: String::new(),
    }))
}

/// All heredoc openers on a logical line, in order.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    // BuildKit ignores lexing errors here: a line that does not lex has
    // no heredocs, and the instruction layer reports the real problem.
    let words = lex.process_words(line, &NoVars).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ".into(), false));
        assert_eq!(trim_continuation("a\\  \t", '\\'), ("a".into(), false));
        assert_eq!(trim_continuation("\\", '\\'), ("".into(), false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\".into(), true));
        assert_eq!(trim_continuation("a `", '`'), ("a ".into(), false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\".into(), true));
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
            ("EOF", true, false, 0)
        );
        let h = parse_heredoc("3<<-'EOF'").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
            ("EOF", false, true, 3)
        );
        let h = parse_heredoc("<<E\"O\"F").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand), ("EOF", false));
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("<<<EOF").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
    }

    #[test]
    fn several_heredocs_on_a_line() {
        let docs = heredocs_from_line("RUN <<A cat - <<-\"B\" > /x").unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| (d.name.as_str(), d.chomp, d.expand))
            .collect();
        assert_eq!(names, vec![("A", false, true), ("B", true, false)]);
    }
}
