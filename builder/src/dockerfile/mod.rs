//! The Dockerfile frontend's front half: text → parse tree → typed
//! instructions. The build solver consumes [`Dockerfile`] and expands
//! variables with [`shell::Lex`]; it never looks at Dockerfile syntax.
//!
//! Layers, each usable on its own:
//! - [`parse`] (modules `parser`, `lexer`, `directives`): the raw tree,
//!   shaped like BuildKit's `parser.Node`; [`Node::dump`] prints BuildKit's
//!   test-vector format.
//! - [`shell`]: BuildKit's word expansion (`${V:-d}`, quotes, escapes).
//! - [`instructions`] (with `flags`, `mount`, `chmod`): typed instructions
//!   with checked flags; every error carries its line ([`DockerfileError`]).

mod checks;
mod chmod;
mod directives;
mod error;
mod flags;
pub mod instructions;
mod lexer;
mod mount;
mod node;
mod parser;
pub mod shell;

pub use checks::{run_checks, undefined_var, CheckConfig, CheckWarning, PLATFORM_ARGS};
pub use chmod::{Chmod, Clause};
pub use directives::{is_dockerfile_frontend, Directive};
pub use error::{DockerfileError, ErrorKind};
pub use instructions::{Dockerfile, Instruction, Located, Stage};
pub use lexer::parse_heredoc;
pub use mount::{CacheSharing, Mount, MountType};
pub use node::{go_quote, Heredoc, Node};
pub use parser::{parse, ParseResult, Warning, DEFAULT_ESCAPE};
