//! Build checks: BuildKit's Dockerfile lint rules (frontend/dockerfile/linter/ruleset.go), with
//! its rule names and messages, so that a finding reads the same from either builder. They
//! are configured as BuildKit's are: the `# check=skip=RULE,…|all;error=true` directive,
//! overridden by the `BUILDKIT_DOCKERFILE_CHECK` build arg.
//!
//! [`run_checks`] has the rules that the Dockerfile alone decides. UndefinedVar needs the
//! base images' environments: the solver finds it ([`undefined_var`]) while it builds, or
//! while it only evaluates the stages for `--check` (`build::check`).
//! InvalidBaseImagePlatform, CopyIgnoredFile and InvalidDefinitionDescription (experimental
//! in BuildKit) are not checked; DuplicateStageName is a parse error here.

use std::collections::{BTreeMap, BTreeSet};

use super::instructions::{CommandLine, Dockerfile, Healthcheck, Instruction, Located, Stage};
use super::shell::Lex;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckWarning {
    /// BuildKit's rule name, e.g. `FromAsCasing`.
    pub rule: &'static str,
    pub message: String,
    /// The line (1-based) of the instruction it concerns.
    pub line: usize,
}

impl CheckWarning {
    /// The rule's page in Docker's documentation: the name in kebab case, a word starting at
    /// each capital followed by a small letter (`JSONArgsRecommended` → `json-args-recommended`).
    pub fn url(&self) -> String {
        let chars: Vec<char> = self.rule.chars().collect();
        let mut slug = String::new();
        for (i, c) in chars.iter().enumerate() {
            let next_is_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if i > 0 && c.is_ascii_uppercase() && next_is_lower {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

/// What `# check=` or `BUILDKIT_DOCKERFILE_CHECK` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    /// `error=true`: a finding fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// Whether a finding of `rule` is reported.
    pub fn reports(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.contains(rule)
    }

    /// Parses `skip=A,B;error=true` (BuildKit's linter.ParseLintOptions).
    pub fn parse(spec: &str) -> Result<CheckConfig, String> {
        let mut config = CheckConfig::default();
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(config);
        }
        for part in spec.splitn(2, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            match key.trim() {
                "skip" if value.trim() == "all" => config.skip_all = true,
                "skip" => config.skip = value.split(',').map(|r| r.trim().to_string()).collect(),
                "error" => {
                    config.error = match value.trim().to_ascii_lowercase().as_str() {
                        "1" | "t" | "true" => true,
                        "0" | "f" | "false" => false,
                        other => {
                            return Err(format!("check option error={other:?} is not a boolean"))
                        }
                    }
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(config)
    }
}

/// Build args every build has without declaring them globally (reference.md, "Automatic
/// platform ARGs in the global scope"), usable in FROM.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Runs every rule `config` leaves on; findings in line order.
pub fn run_checks(dockerfile: &Dockerfile, config: &CheckConfig) -> Vec<CheckWarning> {
    if config.skip_all {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut warn = |rule: &'static str, line: usize, message: String| {
        found.push(CheckWarning {
            rule,
            message,
            line,
        })
    };
    for warning in &dockerfile.warnings {
        if warning.message.starts_with("Empty continuation line") {
            warn(
                "NoEmptyContinuation",
                warning.line,
                "Empty continuation line".into(),
            );
        }
    }
    instruction_casing(dockerfile, &mut warn);
    for located in &dockerfile.global_args {
        for def in &located.value {
            secret_name("ARG", &def.name, located.line, &mut warn);
        }
    }
    // What a stage inherits from the stage it starts FROM: a SHELL, an absolute WORKDIR.
    let mut inherited: Vec<(bool, bool)> = Vec::new();
    for (index, stage) in dockerfile.stages.iter().enumerate() {
        from_line(dockerfile, stage, &mut warn);
        let parent = dockerfile
            .stage(&stage.from.value.image)
            .filter(|(i, _)| *i < index)
            .map(|(i, _)| inherited[i]);
        let (mut shell_set, mut workdir_set) = parent.unwrap_or((false, false));
        let mut last_of: BTreeMap<&str, usize> = BTreeMap::new();
        for located in &stage.instructions {
            let keyword = keyword(&located.original);
            let (line, kind) = (located.line, &located.value);
            if let Some(once) = used_once(kind) {
                if let Some(previous) = last_of.insert(once, line) {
                    warn(
                        "MultipleInstructionsDisallowed",
                        previous,
                        format!("Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"),
                    );
                }
            }
            match kind {
                Instruction::Shell(_) => shell_set = true,
                Instruction::Cmd(CommandLine::Shell(_))
                | Instruction::Entrypoint(CommandLine::Shell(_))
                    if !shell_set =>
                {
                    warn(
                        "JSONArgsRecommended",
                        line,
                        format!("JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"),
                    );
                }
                Instruction::Workdir(path) if path.starts_with('/') => workdir_set = true,
                Instruction::Workdir(path) if !workdir_set && !path.contains('$') => warn(
                    "WorkdirRelativePath",
                    line,
                    format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                ),
                Instruction::Maintainer(_) => warn(
                    "MaintainerDeprecated",
                    line,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                ),
                Instruction::Env(pairs) | Instruction::Label(pairs) => {
                    if is_legacy_key_value(located) {
                        warn(
                            "LegacyKeyValueFormat",
                            line,
                            format!("\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"),
                        );
                    }
                    if matches!(kind, Instruction::Env(_)) {
                        for pair in pairs {
                            secret_name("ENV", &pair.key, line, &mut warn);
                        }
                    }
                }
                Instruction::Arg(defs) => {
                    for def in defs {
                        secret_name("ARG", &def.name, line, &mut warn);
                    }
                }
                Instruction::Expose(ports) => {
                    for port in ports {
                        let proto = port.split_once('/').map(|(_, p)| p);
                        if proto.is_some_and(|p| p != p.to_lowercase()) {
                            warn(
                                "ExposeProtoCasing",
                                line,
                                format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        inherited.push((shell_set, workdir_set));
    }
    found.sort_by_key(|w| w.line);
    found.retain(|w| config.reports(w.rule));
    found
}

/// ConsistentInstructionCasing: every FROM and instruction keyword against the majority's
/// casing (ARGs before the first FROM do not count, as in BuildKit).
fn instruction_casing(dockerfile: &Dockerfile, warn: &mut impl FnMut(&'static str, usize, String)) {
    let keywords: Vec<(&str, usize)> = dockerfile
        .stages
        .iter()
        .flat_map(|s| {
            std::iter::once((keyword(&s.from.original), s.from.line)).chain(
                s.instructions
                    .iter()
                    .map(|i| (keyword(&i.original), i.line)),
            )
        })
        .collect();
    let is_lower = |k: &str| k == k.to_lowercase();
    let is_upper = |k: &str| k == k.to_uppercase();
    let lower = keywords.iter().filter(|(k, _)| is_lower(k)).count();
    let upper = keywords
        .iter()
        .filter(|(k, _)| is_upper(k) && !is_lower(k))
        .count();
    let majority_lower = lower > upper;
    for (keyword, line) in keywords {
        let casing = if majority_lower && !is_lower(keyword) {
            "lowercase"
        } else if !majority_lower && !is_upper(keyword) {
            "uppercase"
        } else {
            continue;
        };
        warn(
            "ConsistentInstructionCasing",
            line,
            format!("Command '{keyword}' should match the case of the command majority ({casing})"),
        );
    }
}

/// The rules about a FROM line: its keywords, stage name, platform and ARGs.
fn from_line(
    dockerfile: &Dockerfile,
    stage: &Stage,
    warn: &mut impl FnMut(&'static str, usize, String),
) {
    let line = stage.from.line;
    let mut words = stage
        .from
        .original
        .split_whitespace()
        .filter(|w| !w.starts_with("--"));
    let from_keyword = words.next().unwrap_or_default();
    let (as_keyword, name) = (words.nth(1), words.next());
    if let (Some(as_keyword), Some(name)) = (as_keyword, name) {
        if name != name.to_lowercase() {
            warn(
                "StageNameCasing",
                line,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let matches = if from_keyword == from_keyword.to_lowercase() {
            as_keyword == as_keyword.to_lowercase()
        } else {
            as_keyword == as_keyword.to_uppercase()
        };
        if !matches {
            warn(
                "FromAsCasing",
                line,
                format!("'{as_keyword}' and '{from_keyword}' keywords' casing do not match"),
            );
        }
        let lower = name.to_lowercase();
        if lower == "scratch" || lower == "context" {
            warn(
                "ReservedStageName",
                line,
                format!("Stage name should not use the same name as reserved stage {lower:?}"),
            );
        }
    }

    if let Some(platform) = &stage.from.value.platform {
        if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
            warn(
                "RedundantTargetPlatform",
                line,
                format!("Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"),
            );
        } else if !platform.contains('$') {
            let mut parts = platform.split('/');
            let (os, arch) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let stage_name = stage.name.as_deref().unwrap_or("");
            let named_for_it = !os.is_empty()
                && (stage_name.contains(os) || !arch.is_empty() && stage_name.contains(arch));
            if !named_for_it {
                warn(
                    "FromPlatformFlagConstDisallowed",
                    line,
                    format!("FROM --platform flag should not use constant value {platform:?}"),
                );
            }
        }
    }

    let image = &stage.from.value.image;
    let declared: BTreeMap<String, Option<String>> = dockerfile
        .global_args
        .iter()
        .flat_map(|a| &a.value)
        .map(|d| (d.name.clone(), d.default.clone()))
        .collect();
    let words = std::iter::once(image.as_str()).chain(stage.from.value.platform.as_deref());
    for var in words.flat_map(variables) {
        if !declared.contains_key(&var) && !PLATFORM_ARGS.contains(&var.as_str()) {
            let hint = suggestion(&var, declared.keys().map(String::as_str))
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            warn(
                "UndefinedArgInFrom",
                line,
                format!("FROM argument '{var}' is not declared{hint}"),
            );
        }
    }
    if image.contains('$') && invalid_default(dockerfile, &declared, image) {
        warn(
            "InvalidDefaultArgInFrom",
            line,
            format!("Default value for ARG {image} results in empty or invalid base image name"),
        );
    }
}

/// Whether `image`, with the global ARGs at their defaults, names no valid image.
fn invalid_default(
    dockerfile: &Dockerfile,
    declared: &BTreeMap<String, Option<String>>,
    image: &str,
) -> bool {
    let lex = Lex::new(dockerfile.escape);
    let mut values: BTreeMap<String, String> = PLATFORM_ARGS
        .iter()
        .map(|a| (a.to_string(), String::new()))
        .collect();
    for (name, default) in declared {
        match default {
            Some(d) => {
                let value = lex.process_word(d, &values).unwrap_or_default();
                values.insert(name.clone(), value);
            }
            None => {
                values.remove(name);
            }
        }
    }
    match lex.process_word(image, &values) {
        Ok(expanded) => expanded != "scratch" && oci::Reference::parse(&expanded).is_err(),
        Err(_) => true,
    }
}

/// UndefinedVar: `$name` was used where nothing defines it; `options` are the names that are
/// defined there (BuildKit finds these while it converts, we while the build runs).
pub fn undefined_var<'a>(
    name: &str,
    options: impl IntoIterator<Item = &'a str>,
    line: usize,
) -> CheckWarning {
    let hint = suggestion(name, options)
        .map(|s| format!(" (did you mean ${s}?)"))
        .unwrap_or_default();
    CheckWarning {
        rule: "UndefinedVar",
        message: format!("Usage of undefined variable '${name}'{hint}"),
        line,
    }
}

/// BuildKit's suggestion (util/suggest): the first option nearest to `value` within an edit
/// distance of 2, none for an exact match.
fn suggestion<'a>(value: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best = None;
    let mut best_distance = 3;
    for option in options {
        if option == value {
            return None;
        }
        let distance = levenshtein(value, option);
        if distance < best_distance {
            best = Some(option);
            best_distance = distance;
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The names of the variables `word` refers to (`$NAME`, `${NAME…}`).
fn variables(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.strip_prefix('{');
        let body = braced.unwrap_or(rest);
        let len = body
            .char_indices()
            .take_while(|(i, c)| {
                c.is_ascii_alphanumeric() && (*i > 0 || !c.is_ascii_digit()) || *c == '_'
            })
            .count();
        if len > 0 {
            out.push(body[..len].to_string());
        }
        rest = body;
    }
    out
}

/// SecretsUsedInArgOrEnv: a name with a word (between underscores) that names a secret, and
/// none that says it is public (BuildKit's patterns).
fn secret_name(
    instruction: &str,
    name: &str,
    line: usize,
    warn: &mut impl FnMut(&'static str, usize, String),
) {
    const SECRET_WORDS: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let words: Vec<String> = name.split('_').map(str::to_ascii_lowercase).collect();
    let secret = words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()));
    if secret && !words.iter().any(|w| w == "public") {
        warn(
            "SecretsUsedInArgOrEnv",
            line,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {name:?})"
            ),
        );
    }
}

/// The instruction keyword as written.
fn keyword(original: &str) -> &str {
    original.split_whitespace().next().unwrap_or_default()
}

/// CMD, ENTRYPOINT and HEALTHCHECK: only a stage's last one counts.
fn used_once(instruction: &Instruction) -> Option<&'static str> {
    match instruction {
        Instruction::Cmd(_) => Some("CMD"),
        Instruction::Entrypoint(_) => Some("ENTRYPOINT"),
        Instruction::Healthcheck(Healthcheck::Cmd(_) | Healthcheck::None) => Some("HEALTHCHECK"),
        _ => None,
    }
}

/// `ENV key value` / `LABEL key value`: the first argument has no `=`.
fn is_legacy_key_value(located: &Located<Instruction>) -> bool {
    located
        .original
        .split_whitespace()
        .nth(1)
        .is_some_and(|first| !first.contains('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(source: &str) -> Vec<(String, usize, String)> {
        let dockerfile = Dockerfile::parse(source).expect("parse");
        run_checks(&dockerfile, &CheckConfig::default())
            .into_iter()
            .map(|w| (w.rule.to_string(), w.line, w.message))
            .collect()
    }

    #[test]
    fn each_rule_as_buildkit_words_it() {
        let source = "\
ARG GITHUB_TOKEN
ARG PUBLIC_KEY
FROM busybox:${TAG} as Build
MAINTAINER someone
ENV API_KEY secret
WORKDIR app
EXPOSE 80/TCP 443/tcp
CMD echo one
CMD [\"echo\", \"two\"]
from busybox AS b2
FROM --platform=$TARGETPLATFORM busybox AS b3
FROM --platform=linux/amd64 busybox AS b4
FROM --platform=linux/amd64 busybox AS b5-amd64
FROM busybox AS scratch
";
        let expected: Vec<(&str, usize, &str)> = vec![
            ("SecretsUsedInArgOrEnv", 1, "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"),
            ("StageNameCasing", 3, "Stage name 'Build' should be lowercase"),
            ("FromAsCasing", 3, "'as' and 'FROM' keywords' casing do not match"),
            ("UndefinedArgInFrom", 3, "FROM argument 'TAG' is not declared"),
            ("InvalidDefaultArgInFrom", 3, "Default value for ARG busybox:${TAG} results in empty or invalid base image name"),
            ("MaintainerDeprecated", 4, "Maintainer instruction is deprecated in favor of using label"),
            ("LegacyKeyValueFormat", 5, "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"),
            ("SecretsUsedInArgOrEnv", 5, "Do not use ARG or ENV instructions for sensitive data (ENV \"API_KEY\")"),
            ("WorkdirRelativePath", 6, "Relative workdir \"app\" can have unexpected results if the base image changes"),
            ("ExposeProtoCasing", 7, "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase"),
            ("JSONArgsRecommended", 8, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"),
            ("MultipleInstructionsDisallowed", 8, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
            ("ConsistentInstructionCasing", 10, "Command 'from' should match the case of the command majority (uppercase)"),
            ("FromAsCasing", 10, "'AS' and 'from' keywords' casing do not match"),
            ("RedundantTargetPlatform", 11, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
            ("FromPlatformFlagConstDisallowed", 12, "FROM --platform flag should not use constant value \"linux/amd64\""),
            ("ReservedStageName", 14, "Stage name should not use the same name as reserved stage \"scratch\""),
        ];
        let got = findings(source);
        let got: Vec<(&str, usize, &str)> = got
            .iter()
            .map(|(r, l, m)| (r.as_str(), *l, m.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn clean_files_and_inherited_state_pass() {
        let source = "\
ARG BASE=busybox
FROM ${BASE} AS base
SHELL [\"/bin/sh\", \"-c\"]
WORKDIR /app
FROM base
WORKDIR sub
CMD echo shell set in the parent stage
";
        assert_eq!(findings(source), vec![]);
    }

    #[test]
    fn configuration() {
        let config =
            CheckConfig::parse("skip=FromAsCasing, MaintainerDeprecated;error=true").unwrap();
        assert!(config.error && config.skip.contains("MaintainerDeprecated"));
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("bogus").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        let dockerfile = Dockerfile::parse("FROM busybox as b\nMAINTAINER x\n").unwrap();
        assert!(run_checks(&dockerfile, &config).is_empty());
    }

    #[test]
    fn suggestions() {
        assert_eq!(levenshtein("PAHT", "PATH"), 2);
        assert_eq!(suggestion("PAHT", ["HOME", "PATH"]), Some("PATH"));
        assert_eq!(suggestion("PATH", ["PAT", "PATH"]), None);
        assert_eq!(suggestion("VERSION", ["HOME"]), None);
        let w = undefined_var("PAHT", ["PATH"], 3);
        assert_eq!(
            w.message,
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)"
        );
        let d = Dockerfile::parse("ARG VERSION=1\nFROM busybox:$VERSIN\n").unwrap();
        let found = run_checks(&d, &CheckConfig::default());
        assert_eq!(
            found[0].message,
            "FROM argument 'VERSIN' is not declared (did you mean VERSION?)"
        );
    }

    #[test]
    fn documentation_urls() {
        let url = |rule| {
            CheckWarning {
                rule,
                message: String::new(),
                line: 1,
            }
            .url()
        };
        assert_eq!(
            url("JSONArgsRecommended"),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            url("FromAsCasing"),
            "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
        );
        assert_eq!(
            url("SecretsUsedInArgOrEnv"),
            "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
        );
    }
}
