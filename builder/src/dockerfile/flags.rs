//! Instruction flags (`--name=value`), checked like BuildKit's `BFlags`:
//! each instruction declares the flags it has; anything else is an
//! unknown flag; booleans take no value or `true`/`false`; string flags
//! need a value; only list flags may repeat.

use super::error::ErrorKind;

/// The shape of a declared flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link`, `--link=true`, `--link=false`.
    Bool,
    /// `--from=x`, at most once.
    String,
    /// `--mount=...`, any number of times.
    List,
}

/// The flags given to one instruction, validated against its declaration.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(&'static str, String)>,
    bools: Vec<(&'static str, bool)>,
}

impl Flags {
    /// Checks `raw` (`--name=value` words from the parse tree) against
    /// `declared`, reporting the first problem in the order written.
    pub(crate) fn parse(
        instruction: &str,
        raw: &[String],
        declared: &[(&'static str, FlagKind)],
    ) -> Result<Flags, ErrorKind> {
        let mut flags = Flags::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for word in raw {
            let Some(body) = word.strip_prefix("--") else {
                return Err(ErrorKind::BadArguments(format!(
                    "arguments to {instruction} must start with --: {word}"
                )));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(decl_name, kind)) = declared.iter().find(|(n, _)| *n == name) else {
                return Err(ErrorKind::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: name.to_string(),
                });
            };
            if kind != FlagKind::List && seen.contains(&decl_name) {
                return Err(ErrorKind::DuplicateFlag(name.to_string()));
            }
            seen.push(decl_name);
            match kind {
                FlagKind::Bool => {
                    let b = match value {
                        None | Some("") => true,
                        Some(v) => parse_bool(v).ok_or_else(|| ErrorKind::BadFlagValue {
                            flag: name.to_string(),
                            value: v.to_string(),
                            reason: "expecting a boolean value (true or false)".into(),
                        })?,
                    };
                    flags.bools.push((decl_name, b));
                }
                FlagKind::String | FlagKind::List => {
                    let Some(v) = value else {
                        return Err(ErrorKind::BadFlagValue {
                            flag: name.to_string(),
                            value: String::new(),
                            reason: "missing a value (use --name=value)".into(),
                        });
                    };
                    flags.values.push((decl_name, v.to_string()));
                }
            }
        }
        Ok(flags)
    }

    /// The value of a string flag, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// All values of a list flag, in order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean flag: `None` when absent.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

/// `true`/`false` in any case, as Go's flag values accept them.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn declared_flags() {
        let decl = [
            ("from", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ];
        let f = Flags::parse(
            "COPY",
            &words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            &decl,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.list("exclude"), vec!["x", "y"]);
        let f = Flags::parse("COPY", &words(&["--link=FALSE"]), &decl).unwrap();
        assert_eq!(f.bool("link"), Some(false));
    }

    #[test]
    fn flag_errors() {
        let decl = [("from", FlagKind::String), ("link", FlagKind::Bool)];
        let e = Flags::parse("COPY", &words(&["--form=a"]), &decl).unwrap_err();
        assert_eq!(e.to_string(), "unknown flag: form");
        assert!(matches!(
            Flags::parse("COPY", &words(&["--from"]), &decl),
            Err(ErrorKind::BadFlagValue { .. })
        ));
        assert!(matches!(
            Flags::parse("COPY", &words(&["--link=yes"]), &decl),
            Err(ErrorKind::BadFlagValue { .. })
        ));
        assert!(matches!(
            Flags::parse("COPY", &words(&["--from=a", "--from=b"]), &decl),
            Err(ErrorKind::DuplicateFlag(_))
        ));
    }
}
