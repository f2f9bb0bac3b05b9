//! The raw parse tree, shaped like BuildKit's `parser.Node` so that the
//! dumper prints exactly what BuildKit prints for its test vectors.
//!
//! The root node has one child per instruction. An instruction node holds
//! its keyword in `value`, its `--flags`, and its arguments as a chain of
//! `next` nodes. ONBUILD is the one instruction whose argument is itself an
//! instruction: its first `next` node carries that instruction as a child.

use std::fmt::Write as _;

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is then
    /// taken literally, without variable expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and the delimiter.
    pub chomp: bool,
    /// The body exactly as read, each line with its newline.
    pub content: String,
}

impl Heredoc {
    /// The body as the instruction should see it: leading tabs removed
    /// from every line for `<<-`, untouched otherwise.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// One node of the parse tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// The token: an instruction keyword as written (any case), or an argument.
    pub value: String,
    /// The next argument of the same instruction.
    pub next: Option<Box<Node>>,
    /// Instructions (under the root) or the nested instruction of ONBUILD.
    pub children: Vec<Node>,
    /// Heredocs whose bodies follow this instruction.
    pub heredocs: Vec<Heredoc>,
    /// Arguments were given as a JSON array (exec form).
    pub json: bool,
    /// The logical line the instruction was parsed from (continuations joined).
    pub original: String,
    /// `--name=value` flags, verbatim after quote removal (instruction nodes only).
    pub flags: Vec<String>,
    /// First physical line (1-based) of the instruction, 0 when not set.
    pub start_line: usize,
    /// Last physical line (1-based), including heredoc bodies.
    pub end_line: usize,
    /// Comment lines directly above the instruction, `#` and spaces removed.
    pub prev_comment: Vec<String>,
}

impl Node {
    /// The argument nodes of an instruction node, in order.
    pub fn args(&self) -> impl Iterator<Item = &Node> {
        std::iter::successors(self.next.as_deref(), |n| n.next.as_deref())
    }

    /// The argument values of an instruction node, in order.
    pub fn arg_values(&self) -> Vec<String> {
        self.args().map(|n| n.value.clone()).collect()
    }

    /// Builds a `next` chain from plain values (None for no values).
    pub(crate) fn chain<I: IntoIterator<Item = String>>(values: I) -> Option<Box<Node>> {
        let values: Vec<String> = values.into_iter().collect();
        let mut head: Option<Box<Node>> = None;
        for value in values.into_iter().rev() {
            head = Some(Box::new(Node {
                value,
                next: head,
                ..Node::default()
            }));
        }
        head
    }

    /// The S-expression BuildKit's `Node.Dump` prints; for the root, one
    /// instruction per line (without the final newline).
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            let _ = write!(s, " [{}]", quoted.join(" "));
        }
        for child in &self.children {
            let _ = writeln!(s, "({})", child.dump());
        }
        for n in self.args() {
            s.push(' ');
            if n.children.is_empty() {
                s.push_str(&go_quote(&n.value));
            } else {
                s.push_str(&n.dump());
            }
        }
        s.trim().to_string()
    }
}

/// Go's `strconv.Quote`: the dump format escapes like Go, not like Rust's
/// `{:?}` (which prints `\u{0}` where Go prints `\x00`).
///
/// Go decides printability with Unicode categories (letters, marks,
/// numbers, punctuation, symbols, ASCII space); std has no category
/// tables, so "not a control character and not whitespace other than the
/// ASCII space" stands in for it. That agrees for every character the
/// vectors use; it can differ for format characters such as U+200B.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c == ' ' || !(c.is_control() || c.is_whitespace()) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\u{8}\u{7f}"), r#""\x00\b\x7f""#);
        assert_eq!(go_quote("♥ \u{a0}"), "\"♥ \\u00a0\"");
    }

    #[test]
    fn chomped_heredoc_body() {
        let h = Heredoc {
            name: "EOF".into(),
            file_descriptor: 0,
            expand: true,
            chomp: true,
            content: "\t\thello\n\tworld\n".into(),
        };
        assert_eq!(h.body(), "hello\nworld\n");
    }
}
