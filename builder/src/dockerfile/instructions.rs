//! Typed instructions on top of the parse tree (spec: reference.md, one
//! section per instruction; BuildKit's `parser/instructions/parse.go`).
//!
//! What is checked here is everything that does not depend on build
//! variables: instruction names, flag names and shapes, argument counts,
//! forms (exec vs shell), heredoc placement, ONBUILD restrictions, stage
//! names. Values stay as written (quotes and `$VAR`s included) because
//! BuildKit expands them per stage with that stage's ARG/ENV scope; the
//! solver expands them with [`super::shell::Lex`]. Flag values whose
//! structure can only be checked after expansion (`--mount`, `--chmod`)
//! are [`Expandable`]: parsed now when they hold no `$`, later otherwise.

use std::time::Duration;

use super::chmod::Chmod;
use super::directives::Directive;
use super::error::{DockerfileError, ErrorKind};
use super::flags::{FlagKind, Flags};
use super::lexer::parse_heredoc;
use super::mount::Mount;
use super::node::{Heredoc, Node};
use super::parser::{parse, Warning};
use oci::timestamp::parse_go_duration;

/// A value with the source lines it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The instruction.
    pub value: T,
    /// First line (1-based).
    pub line: usize,
    /// Last line, heredoc bodies included.
    pub end_line: usize,
    /// The logical source line, continuations joined (used for ONBUILD
    /// triggers and error views).
    pub original: String,
}

/// A flag value that may reference build variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expandable<T> {
    /// No `$` in the value: parsed and checked at parse time.
    Literal(T),
    /// Uses variables: [`Expandable::resolve`] it once they are known.
    Template(String),
}

impl Expandable<Mount> {
    /// The mount, expanding each option value with `expand` when needed.
    pub fn resolve(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount, String> {
        match self {
            Expandable::Literal(m) => Ok(m.clone()),
            Expandable::Template(raw) => Mount::parse(raw, expand),
        }
    }
}

impl Expandable<Chmod> {
    /// The mode, expanding the value with `expand` when needed.
    pub fn resolve(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Chmod, String> {
        match self {
            Expandable::Literal(c) => Ok(c.clone()),
            Expandable::Template(raw) => Chmod::parse(&expand(raw)?),
        }
    }
}

/// Exec form (JSON array) or shell form of RUN, CMD, ENTRYPOINT,
/// HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// `["executable", "arg"]`: run as is, no shell, no expansion.
    Exec(Vec<String>),
    /// `command text`: run through the stage's SHELL.
    Shell(String),
}

impl CommandLine {
    fn from_node(node: &Node) -> CommandLine {
        if node.json {
            CommandLine::Exec(node.arg_values())
        } else {
            CommandLine::Shell(node.arg_values().join(" "))
        }
    }
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFrom {
    /// Image reference, a previous stage's name, or `scratch` (unexpanded).
    pub image: String,
    /// Stage name, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// `--platform` (unexpanded, e.g. `$BUILDPLATFORM`).
    pub platform: Option<String>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The builder's default network.
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// The default confinement.
    Sandbox,
    /// Privileged (needs the `security.insecure` entitlement).
    Insecure,
}

/// `RUN --device=name[,required]`: a CDI device request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// CDI device name (`vendor.com/class=name`, `vendor.com/class`, a class).
    pub name: String,
    /// Fail when the device is not available.
    pub required: bool,
}

/// `RUN [flags] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command. With heredocs in shell form this is the command line
    /// as written (e.g. `<<EOF` or `python3 <<EOF`); the bodies are in
    /// `heredocs`, in the order their openers appear.
    pub command: CommandLine,
    /// Heredoc bodies following the instruction.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` flags, in order.
    pub mounts: Vec<Expandable<Mount>>,
    /// `--network`; `None` when not given.
    pub network: Option<NetworkMode>,
    /// `--security`; `None` when not given.
    pub security: Option<SecurityMode>,
    /// `--device` flags.
    pub devices: Vec<Device>,
}

impl Run {
    /// What to execute, heredocs applied. BuildKit ignores the "expand"
    /// property of RUN heredocs: the shell sees the text as written.
    pub fn script(&self) -> RunScript {
        let (CommandLine::Shell(line), Some(first)) = (&self.command, self.heredocs.first()) else {
            return RunScript::Command(self.command.clone());
        };
        if parse_heredoc(line).ok().flatten().is_some() {
            let content = first.body();
            if content.starts_with("#!") {
                return RunScript::Executable {
                    name: first.name.clone(),
                    content,
                };
            }
            return RunScript::Shell(content);
        }
        let mut full = line.clone();
        for doc in &self.heredocs {
            full.push('\n');
            full.push_str(&doc.content);
            full.push_str(&doc.name);
        }
        RunScript::Shell(full)
    }
}

/// What a RUN step executes once its heredocs are taken into account
/// (BuildKit's `dispatchRun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// No heredocs: the command as written.
    Command(CommandLine),
    /// `RUN <<EOF` alone with a body starting `#!`: write the body to an
    /// executable file `/dev/pipes/<name>` (mounted read-only) and run it
    /// directly.
    Executable {
        /// The heredoc name, used as the file name.
        name: String,
        /// The script (tabs stripped for `<<-`).
        content: String,
    },
    /// Shell text to run with the stage's SHELL: the body of a lone
    /// `RUN <<EOF`, or the command line with every heredoc appended
    /// (`cmd <<A\nbody\nA`) so the shell itself feeds them.
    Shell(String),
}

/// A heredoc used as a COPY/ADD source: a file created from inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// File name (the heredoc delimiter) under the destination.
    pub name: String,
    /// Contents (tabs already stripped for `<<-`).
    pub content: String,
    /// Expand variables in the content (delimiter was not quoted).
    pub expand: bool,
}

/// Sources and destination of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// Source paths/patterns/URLs (unexpanded), heredocs excluded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineFile>,
    /// Destination (unexpanded).
    pub dest: String,
    /// Written as a JSON array.
    pub json: bool,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// What to copy where.
    pub files: Files,
    /// `--from`: a stage name or index, a named context or an image (unexpanded).
    pub from: Option<String>,
    /// `--chown=user[:group]` (unexpanded).
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Expandable<Chmod>>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns (unexpanded).
    pub exclude: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// What to add where.
    pub files: Files,
    /// `--chown=user[:group]` (unexpanded).
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<Expandable<Chmod>>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns (unexpanded).
    pub exclude: Vec<String>,
    /// `--checksum`: `sha256:<hex>` for URLs, a commit prefix for git (unexpanded).
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`: `None` means the default (local archives unpacked, URLs not).
    pub unpack: Option<bool>,
}

/// One `key=value` of ENV or LABEL (both unexpanded, quotes kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One ARG declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The variable name.
    pub name: String,
    /// Default value (unexpanded, quotes kept); `None` for `ARG name`.
    pub default: Option<String>,
}

/// HEALTHCHECK CMD settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCmd {
    /// The probe command.
    pub test: CommandLine,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disable any inherited health check.
    None,
    /// Run a probe.
    Cmd(HealthcheckCmd),
}

/// `ONBUILD instruction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger, parsed and checked.
    pub trigger: Box<Instruction>,
    /// The trigger as written, stored in the image config's `OnBuild`.
    pub expression: String,
}

/// A Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM`.
    From(StageFrom),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `ENV`: one or more pairs.
    Env(Vec<KeyValue>),
    /// `ARG`: one or more declarations.
    Arg(Vec<ArgDef>),
    /// `LABEL`: one or more pairs.
    Label(Vec<KeyValue>),
    /// `EXPOSE`: ports like `80`, `80/udp`, `8000-8010/tcp` (unexpanded).
    Expose(Vec<String>),
    /// `VOLUME`: paths (unexpanded).
    Volume(Vec<String>),
    /// `WORKDIR` (unexpanded).
    Workdir(String),
    /// `USER user[:group]` (unexpanded).
    User(String),
    /// `SHELL ["executable", "args"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL` (unexpanded).
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD`.
    Onbuild(Onbuild),
    /// `MAINTAINER` (deprecated; becomes the image's author).
    Maintainer(String),
}

/// A build stage: its FROM and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The FROM that opens the stage.
    pub from: Located<StageFrom>,
    /// The instructions of the stage, in order (no FROM among them).
    pub instructions: Vec<Located<Instruction>>,
}

/// A parsed and checked Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character in effect.
    pub escape: char,
    /// Directives found at the top.
    pub directives: Vec<Directive>,
    /// Non-fatal findings of the parser.
    pub warnings: Vec<Warning>,
    /// ARG instructions before the first FROM (global build args, usable
    /// in FROM lines and re-declarable inside stages).
    pub global_args: Vec<Located<Vec<ArgDef>>>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Parses and checks a Dockerfile.
    pub fn parse(source: &str) -> Result<Dockerfile, DockerfileError> {
        let tree = parse(source)?;
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut last_line = 0;
        for node in &tree.ast.children {
            last_line = node.end_line;
            let instruction = Instruction::from_node(node)?;
            match instruction {
                Instruction::From(from) => {
                    if let Some(name) = &from.name {
                        if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                            return Err(DockerfileError::new(
                                node.start_line,
                                node.end_line,
                                ErrorKind::NotAllowed(format!("duplicate stage name {name:?}")),
                            ));
                        }
                    }
                    stages.push(Stage {
                        name: from.name.clone(),
                        from: located(node, from),
                        instructions: Vec::new(),
                    });
                }
                Instruction::Arg(args) if stages.is_empty() => {
                    global_args.push(located(node, args))
                }
                other => match stages.last_mut() {
                    Some(stage) => stage.instructions.push(located(node, other)),
                    None => {
                        return Err(DockerfileError::new(
                            node.start_line,
                            node.end_line,
                            ErrorKind::NotAllowed("no build stage in current context".into()),
                        ))
                    }
                },
            }
        }
        if stages.is_empty() {
            return Err(DockerfileError::new(
                last_line,
                last_line,
                ErrorKind::NotAllowed("dockerfile contains no stages to build".into()),
            ));
        }
        Ok(Dockerfile {
            escape: tree.escape,
            directives: tree.directives,
            warnings: tree.warnings,
            global_args,
            stages,
        })
    }

    /// Parses a Dockerfile read as bytes. Dockerfiles must be UTF-8; the
    /// error names the line of the first invalid byte.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Dockerfile, DockerfileError> {
        let source = std::str::from_utf8(bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            DockerfileError::syntax(line, line, "the Dockerfile is not valid UTF-8 text")
        })?;
        Dockerfile::parse(source)
    }

    /// The stage a `--target` or `--from` names: a stage name (any case)
    /// or a stage index.
    pub fn stage(&self, name_or_index: &str) -> Option<(usize, &Stage)> {
        let wanted = name_or_index.to_ascii_lowercase();
        if let Some(found) = self
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name.as_deref() == Some(wanted.as_str()))
        {
            return Some(found);
        }
        let index: usize = name_or_index.parse().ok()?;
        self.stages.get(index).map(|s| (index, s))
    }
}

fn located<T>(node: &Node, value: T) -> Located<T> {
    Located {
        value,
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
    }
}

impl Instruction {
    /// Types one instruction node of the parse tree.
    pub fn from_node(node: &Node) -> Result<Instruction, DockerfileError> {
        typed(node).map_err(|kind| DockerfileError::new(node.start_line, node.end_line, kind))
    }
}

fn bad_args(message: String) -> ErrorKind {
    ErrorKind::BadArguments(message)
}

fn bad_flag(flag: &str, value: &str, reason: impl Into<String>) -> ErrorKind {
    ErrorKind::BadFlagValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn no_flags(keyword: &str, node: &Node) -> Result<(), ErrorKind> {
    Flags::parse(keyword, &node.flags, &[]).map(|_| ())
}

fn exactly_one(keyword: &str, node: &Node) -> Result<String, ErrorKind> {
    no_flags(keyword, node)?;
    match node.arg_values().as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(bad_args(format!("{keyword} requires exactly one argument"))),
    }
}

fn at_least_one(keyword: &str, node: &Node) -> Result<Vec<String>, ErrorKind> {
    let args = node.arg_values();
    if args.is_empty() {
        return Err(bad_args(format!(
            "{keyword} requires at least one argument"
        )));
    }
    Ok(args)
}

fn typed(node: &Node) -> Result<Instruction, ErrorKind> {
    let keyword = node.value.to_ascii_uppercase();
    Ok(match keyword.as_str() {
        "FROM" => Instruction::From(typed_from(node)?),
        "RUN" => Instruction::Run(typed_run(node)?),
        "CMD" | "ENTRYPOINT" => {
            no_flags(&keyword, node)?;
            let command = CommandLine::from_node(node);
            if keyword == "CMD" {
                Instruction::Cmd(command)
            } else {
                Instruction::Entrypoint(command)
            }
        }
        "COPY" => Instruction::Copy(typed_copy(node)?),
        "ADD" => Instruction::Add(typed_add(node)?),
        "ENV" => {
            no_flags(&keyword, node)?;
            Instruction::Env(key_values(&keyword, node)?)
        }
        "LABEL" => {
            no_flags(&keyword, node)?;
            Instruction::Label(key_values(&keyword, node)?)
        }
        "ARG" => {
            no_flags(&keyword, node)?;
            let defs = at_least_one(&keyword, node)?
                .into_iter()
                .map(|word| {
                    let (name, default) = match word.split_once('=') {
                        Some((n, d)) => (n.to_string(), Some(d.to_string())),
                        None => (word, None),
                    };
                    if name.is_empty() {
                        return Err(bad_args("ARG names can not be blank".into()));
                    }
                    Ok(ArgDef { name, default })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Instruction::Arg(defs)
        }
        "EXPOSE" => {
            no_flags(&keyword, node)?;
            Instruction::Expose(at_least_one(&keyword, node)?)
        }
        "VOLUME" => {
            no_flags(&keyword, node)?;
            let paths = at_least_one(&keyword, node)?;
            if paths.iter().any(|p| p.trim().is_empty()) {
                return Err(bad_args(
                    "VOLUME specified can not be an empty string".into(),
                ));
            }
            Instruction::Volume(paths)
        }
        "WORKDIR" => Instruction::Workdir(exactly_one(&keyword, node)?),
        "USER" => Instruction::User(exactly_one(&keyword, node)?),
        "STOPSIGNAL" => Instruction::StopSignal(exactly_one(&keyword, node)?),
        "MAINTAINER" => Instruction::Maintainer(exactly_one(&keyword, node)?),
        "SHELL" => {
            no_flags(&keyword, node)?;
            let args = at_least_one(&keyword, node)?;
            if !node.json {
                return Err(bad_args(
                    "SHELL requires the arguments to be in JSON form".into(),
                ));
            }
            Instruction::Shell(args)
        }
        "HEALTHCHECK" => Instruction::Healthcheck(typed_healthcheck(node)?),
        "ONBUILD" => Instruction::Onbuild(typed_onbuild(node)?),
        _ => return Err(ErrorKind::UnknownInstruction(node.value.clone())),
    })
}

fn typed_from(node: &Node) -> Result<StageFrom, ErrorKind> {
    let flags = Flags::parse("FROM", &node.flags, &[("platform", FlagKind::String)])?;
    let args = node.arg_values();
    let (image, name) = match args.as_slice() {
        [image] => (image.clone(), None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            (image.clone(), Some(name.to_ascii_lowercase()))
        }
        _ => {
            return Err(bad_args(
                "FROM requires either one or three arguments".into(),
            ))
        }
    };
    if let Some(name) = &name {
        // reference.md "FROM": a name must be a valid stage name.
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !valid {
            return Err(bad_args(format!(
                "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
            )));
        }
    }
    Ok(StageFrom {
        image,
        name,
        platform: flags.string("platform"),
    })
}

fn typed_run(node: &Node) -> Result<Run, ErrorKind> {
    let flags = Flags::parse(
        "RUN",
        &node.flags,
        &[
            ("mount", FlagKind::List),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
            ("device", FlagKind::List),
        ],
    )?;
    if node.next.is_none() {
        return Err(bad_args("RUN requires at least one argument".into()));
    }
    let mounts = flags
        .list("mount")
        .into_iter()
        .map(|raw| {
            if raw.contains('$') {
                Mount::check_template(&raw).map_err(|e| bad_flag("mount", &raw, e))?;
                Ok(Expandable::Template(raw))
            } else {
                Mount::parse(&raw, &mut |v: &str| Ok(v.to_string()))
                    .map(Expandable::Literal)
                    .map_err(|e| bad_flag("mount", &raw, e))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let network = flags
        .string("network")
        .map(|v| match v.as_str() {
            "default" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(bad_flag(
                "network",
                &v,
                "supported modes are default, none and host",
            )),
        })
        .transpose()?;
    let security = flags
        .string("security")
        .map(|v| match v.as_str() {
            "sandbox" => Ok(SecurityMode::Sandbox),
            "insecure" => Ok(SecurityMode::Insecure),
            _ => Err(bad_flag(
                "security",
                &v,
                "supported modes are sandbox and insecure",
            )),
        })
        .transpose()?;
    let devices = flags
        .list("device")
        .into_iter()
        .map(|raw| parse_device(&raw))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Run {
        command: CommandLine::from_node(node),
        heredocs: node.heredocs.clone(),
        mounts,
        network,
        security,
        devices,
    })
}

fn parse_device(raw: &str) -> Result<Device, ErrorKind> {
    let fields = super::mount::csv_fields(raw).map_err(|e| bad_flag("device", raw, e))?;
    let mut fields = fields.into_iter();
    let name = fields
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_flag("device", raw, "missing device name"))?;
    let mut required = false;
    for field in fields {
        required = match field.split_once('=') {
            None if field == "required" => true,
            Some(("required", v)) => super::flags::parse_bool(v).ok_or_else(|| {
                bad_flag("device", raw, format!("invalid value for required: {v}"))
            })?,
            _ => {
                return Err(bad_flag(
                    "device",
                    raw,
                    format!("unexpected option {field:?}"),
                ))
            }
        };
    }
    Ok(Device { name, required })
}

fn chmod_flag(flags: &Flags) -> Result<Option<Expandable<Chmod>>, ErrorKind> {
    flags
        .string("chmod")
        .map(|raw| {
            if raw.contains('$') {
                Ok(Expandable::Template(raw))
            } else {
                Chmod::parse(&raw)
                    .map(Expandable::Literal)
                    .map_err(|e| bad_flag("chmod", &raw, e))
            }
        })
        .transpose()
}

/// Splits COPY/ADD arguments into sources, heredoc sources and destination.
fn files(keyword: &str, node: &Node) -> Result<Files, ErrorKind> {
    let args = node.arg_values();
    let Some((dest, sources)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(bad_args(format!(
            "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined."
        )));
    };
    let heredoc_word = |word: &str| {
        if node.json {
            Ok(None)
        } else {
            parse_heredoc(word).map_err(bad_args)
        }
    };
    if heredoc_word(dest)?.is_some() {
        return Err(bad_args(format!(
            "{keyword} cannot accept a heredoc as a destination"
        )));
    }
    let mut files = Files {
        sources: Vec::new(),
        inline: Vec::new(),
        dest: dest.clone(),
        json: node.json,
    };
    for source in sources {
        match heredoc_word(source)? {
            Some(opener) => {
                let body = node
                    .heredocs
                    .iter()
                    .find(|h| h.name == opener.name)
                    .ok_or_else(|| bad_args(format!("heredoc {} has no body", opener.name)))?;
                files.inline.push(InlineFile {
                    name: opener.name,
                    content: body.body(),
                    expand: opener.expand,
                });
            }
            None => files.sources.push(source.clone()),
        }
    }
    Ok(files)
}

fn typed_copy(node: &Node) -> Result<Copy, ErrorKind> {
    let flags = Flags::parse(
        "COPY",
        &node.flags,
        &[
            ("from", FlagKind::String),
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ],
    )?;
    Ok(Copy {
        files: files("COPY", node)?,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: chmod_flag(&flags)?,
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.list("exclude"),
    })
}

/// `sha256:<64 hex>` for HTTP sources or a (prefix of a) git commit.
fn check_checksum(raw: &str) -> Result<(), ErrorKind> {
    let is_hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    let ok = match raw.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && is_hex(hex),
        Some(_) => false,
        None => raw.len() <= 64 && is_hex(raw),
    };
    if ok {
        Ok(())
    } else {
        Err(bad_flag(
            "checksum",
            raw,
            "expected sha256:<64 hex digits> or a git commit",
        ))
    }
}

fn typed_add(node: &Node) -> Result<Add, ErrorKind> {
    let flags = Flags::parse(
        "ADD",
        &node.flags,
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
            ("checksum", FlagKind::String),
            ("keep-git-dir", FlagKind::Bool),
            ("unpack", FlagKind::Bool),
        ],
    )?;
    let checksum = flags.string("checksum");
    if let Some(raw) = checksum.as_deref().filter(|c| !c.contains('$')) {
        check_checksum(raw)?;
    }
    Ok(Add {
        files: files("ADD", node)?,
        chown: flags.string("chown"),
        chmod: chmod_flag(&flags)?,
        link: flags.bool("link").unwrap_or(false),
        exclude: flags.list("exclude"),
        checksum,
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        unpack: flags.bool("unpack"),
    })
}

/// ENV/LABEL pairs from the parser's key, value, separator triples.
fn key_values(keyword: &str, node: &Node) -> Result<Vec<KeyValue>, ErrorKind> {
    let args = at_least_one(keyword, node)?;
    if args.len() % 3 != 0 {
        return Err(bad_args(format!(
            "Bad input to {keyword}, too many arguments"
        )));
    }
    args.chunks(3)
        .map(|kv| {
            if kv[0].is_empty() {
                return Err(bad_args(format!("{keyword} names can not be blank")));
            }
            Ok(KeyValue {
                key: kv[0].clone(),
                value: kv[1].clone(),
            })
        })
        .collect()
}

fn duration_flag(flags: &Flags, name: &str) -> Result<Option<Duration>, ErrorKind> {
    let Some(raw) = flags.string(name) else {
        return Ok(None);
    };
    let d = parse_go_duration(&raw).map_err(|e| bad_flag(name, &raw, e))?;
    // Zero means "use the default"; anything else must be at least 1ms.
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(bad_flag(name, &raw, "cannot be less than 1ms"));
    }
    Ok(Some(d))
}

fn typed_healthcheck(node: &Node) -> Result<Healthcheck, ErrorKind> {
    let flags = Flags::parse(
        "HEALTHCHECK",
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    let Some(kind_node) = node.next.as_deref() else {
        return Err(bad_args(
            "HEALTHCHECK requires at least one argument".into(),
        ));
    };
    match kind_node.value.to_ascii_uppercase().as_str() {
        "NONE" => {
            if kind_node.next.is_some() || !node.flags.is_empty() {
                return Err(bad_args("HEALTHCHECK NONE takes no arguments".into()));
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            let command: Vec<String> = kind_node.args().map(|n| n.value.clone()).collect();
            if command.is_empty() {
                return Err(bad_args("Missing command after HEALTHCHECK CMD".into()));
            }
            let test = if node.json {
                CommandLine::Exec(command)
            } else {
                CommandLine::Shell(command.join(" "))
            };
            let retries = flags
                .string("retries")
                .map(|raw| {
                    let n: i64 = raw
                        .parse()
                        .map_err(|_| bad_flag("retries", &raw, "not an integer"))?;
                    u32::try_from(n).map_err(|_| bad_flag("retries", &raw, "cannot be negative"))
                })
                .transpose()?;
            Ok(Healthcheck::Cmd(HealthcheckCmd {
                test,
                interval: duration_flag(&flags, "interval")?,
                timeout: duration_flag(&flags, "timeout")?,
                start_period: duration_flag(&flags, "start-period")?,
                start_interval: duration_flag(&flags, "start-interval")?,
                retries,
            }))
        }
        other => Err(bad_args(format!(
            "Unknown type {other:?} in HEALTHCHECK (try CMD)"
        ))),
    }
}

fn typed_onbuild(node: &Node) -> Result<Onbuild, ErrorKind> {
    no_flags("ONBUILD", node)?;
    let Some(trigger_node) = node.next.as_deref().and_then(|n| n.children.first()) else {
        return Err(bad_args("ONBUILD requires at least one argument".into()));
    };
    let trigger_keyword = trigger_node.value.to_ascii_uppercase();
    match trigger_keyword.as_str() {
        "ONBUILD" => {
            return Err(ErrorKind::NotAllowed(
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
            ))
        }
        "FROM" | "MAINTAINER" => {
            return Err(ErrorKind::NotAllowed(format!(
                "{trigger_keyword} isn't allowed as an ONBUILD trigger"
            )))
        }
        _ => {}
    }
    // The trigger node shares the instruction's heredocs (they follow the
    // ONBUILD line in the file).
    let mut trigger_node = trigger_node.clone();
    trigger_node.heredocs = node.heredocs.clone();
    let trigger = typed(&trigger_node)?;
    // What follows the ONBUILD keyword, as the image config stores it.
    let original = node.original.trim_start();
    let expression = original
        .get(node.value.len()..)
        .unwrap_or_default()
        .trim_start()
        .to_string();
    Ok(Onbuild {
        trigger: Box::new(trigger),
        expression,
    })
}
