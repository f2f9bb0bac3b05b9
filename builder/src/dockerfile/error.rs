//! Errors of the parser and of the typed-instruction layer. Every error
//! carries the lines it concerns so the CLI can print
//! `Dockerfile:LINE: message` followed by the offending source.

use std::fmt::Write as _;

/// What is wrong, without the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// Malformed syntax found while building the parse tree (bad JSON array,
    /// `ENV` without value, unterminated heredoc, bad directive, ...).
    #[error("{0}")]
    Syntax(String),
    /// The file holds no instruction at all.
    #[error("file with no instructions")]
    Empty,
    /// A keyword that is not a Dockerfile instruction.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// A `--flag` the instruction does not have.
    #[error("unknown flag: {flag}")]
    UnknownFlag {
        /// The instruction, upper case (`COPY`).
        instruction: String,
        /// The flag name without dashes.
        flag: String,
    },
    /// A flag given twice where only one is allowed.
    #[error("duplicate flag specified: {0}")]
    DuplicateFlag(String),
    /// A flag whose value cannot be used.
    #[error("invalid value {value:?} for flag --{flag}: {reason}")]
    BadFlagValue {
        /// The flag name without dashes.
        flag: String,
        /// The value as written.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Too few or too many arguments, or arguments of the wrong shape.
    #[error("{0}")]
    BadArguments(String),
    /// An instruction that is not allowed where it appears.
    #[error("{0}")]
    NotAllowed(String),
}

/// An error located in the Dockerfile. Lines are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile:{line}: {kind}")]
pub struct DockerfileError {
    /// First line of the offending instruction.
    pub line: usize,
    /// Last line of the offending instruction (equal to `line` for one-liners).
    pub end_line: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl DockerfileError {
    pub(crate) fn new(line: usize, end_line: usize, kind: ErrorKind) -> Self {
        DockerfileError {
            line,
            end_line: end_line.max(line),
            kind,
        }
    }

    pub(crate) fn syntax(line: usize, end_line: usize, message: impl Into<String>) -> Self {
        Self::new(line, end_line, ErrorKind::Syntax(message.into()))
    }

    /// The message as the CLI shows it: `NAME:LINE: message`, then the
    /// offending lines of `source` numbered like BuildKit's error view.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let mut out = format!("{file_name}:{}: {}\n", self.line, self.kind);
        let lines: Vec<&str> = source.lines().collect();
        if self.line == 0 || self.line > lines.len() {
            return out;
        }
        out.push_str("--------------------\n");
        let last = self.end_line.min(lines.len());
        for n in self.line..=last {
            let _ = writeln!(out, " {n:>3} | >>> {}", lines[n - 1]);
        }
        out.push_str("--------------------\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_the_lines() {
        let e = DockerfileError::new(2, 3, ErrorKind::UnknownInstruction("FOO".into()));
        let shown = e.render("Dockerfile", "FROM a\nFOO \\\n  bar\n");
        assert_eq!(
            shown,
            "Dockerfile:2: unknown instruction: FOO\n--------------------\n   2 | >>> FOO \\\n   3 | >>>   bar\n--------------------\n"
        );
        assert_eq!(e.to_string(), "Dockerfile:2: unknown instruction: FOO");
    }
}
