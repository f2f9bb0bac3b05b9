//! The instructions that only change an image's config (ENV, LABEL, CMD, ENTRYPOINT, USER,
//! WORKDIR, EXPOSE, VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER), applied as
//! BuildKit's dockerfile2llb applies them. Used by the build solver and by
//! `rbuild import --change`.

use std::collections::{BTreeMap, BTreeSet};

use oci::image::ImageConfig;
use serde_json::{json, Value};

use crate::dockerfile::instructions::{CommandLine, Healthcheck};
use crate::dockerfile::shell::{Lex, VarLookup};
use crate::dockerfile::Instruction;

/// The shell of shell-form commands when the image sets none (Linux).
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Variables visible to an instruction: the config's Env first, then the build args in scope.
pub struct Scope<'a> {
    env: BTreeMap<String, String>,
    args: &'a dyn VarLookup,
}

impl<'a> Scope<'a> {
    pub fn new(config: &ImageConfig, args: &'a dyn VarLookup) -> Scope<'a> {
        let env = config
            .config
            .as_ref()
            .map(|c| {
                c.env
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Scope { env, args }
    }
}

impl Scope<'_> {
    /// The names the image's environment defines.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env.keys().map(String::as_str)
    }
}

impl VarLookup for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .or_else(|| self.args.lookup(name))
    }
}

/// Whether `apply` handles this instruction (it changes the config and nothing else).
pub fn is_config_only(instruction: &Instruction) -> bool {
    !matches!(
        instruction,
        Instruction::From(_)
            | Instruction::Run(_)
            | Instruction::Copy(_)
            | Instruction::Add(_)
            | Instruction::Arg(_)
    )
}

/// Applies one config-only instruction. `args` are the build args in scope (none for import).
/// Returns the variables its words referred to that were not set (for the UndefinedVar
/// check). Errors are messages without a line; the caller adds where the instruction came
/// from.
pub fn apply(
    config: &mut ImageConfig,
    instruction: &Instruction,
    lex: &Lex,
    args: &dyn VarLookup,
) -> Result<BTreeSet<String>, String> {
    let unset = std::cell::RefCell::new(BTreeSet::new());
    let expand = |config: &ImageConfig, word: &str| -> Result<String, String> {
        let expansion = lex
            .expand(word, &Scope::new(config, args))
            .map_err(|e| e.to_string())?;
        unset.borrow_mut().extend(expansion.unset);
        Ok(expansion.word)
    };
    match instruction {
        Instruction::Env(pairs) => {
            // Every pair is expanded in the environment from before the instruction:
            // `ENV abc=bye def=$abc` gives def the old abc (reference.md, "Environment
            // replacement"), as BuildKit does.
            let expanded = pairs
                .iter()
                .map(|pair| Ok((expand(config, &pair.key)?, expand(config, &pair.value)?)))
                .collect::<Result<Vec<_>, String>>()?;
            for (key, value) in expanded {
                config.config_mut().set_env(&key, &value);
            }
        }
        Instruction::Label(pairs) => {
            for pair in pairs {
                let key = expand(config, &pair.key)?;
                let value = expand(config, &pair.value)?;
                config.config_mut().labels.insert(key, value);
            }
        }
        Instruction::Cmd(command) => {
            let cmd = command_args(config, command);
            config.config_mut().cmd = Some(cmd);
        }
        Instruction::Entrypoint(command) => {
            let entrypoint = command_args(config, command);
            let c = config.config_mut();
            c.entrypoint = Some(entrypoint);
            // Setting ENTRYPOINT drops a CMD inherited from the base image (reference.md,
            // "Understand how CMD and ENTRYPOINT interact"); a later CMD sets it again. The
            // builder keeps a CMD its stage set before (BuildKit's `cmdSet`).
            c.cmd = None;
        }
        Instruction::User(user) => {
            let user = expand(config, user)?;
            config.config_mut().user = user;
        }
        Instruction::Workdir(dir) => {
            let dir = expand(config, dir)?;
            let c = config.config_mut();
            c.working_dir = join_workdir(&c.working_dir, &dir);
        }
        Instruction::Expose(ports) => {
            for port in ports {
                for expanded in expand_ports(&expand(config, port)?)? {
                    config
                        .config_mut()
                        .exposed_ports
                        .insert(expanded, json!({}));
                }
            }
        }
        Instruction::Volume(paths) => {
            for path in paths {
                let path = expand(config, path)?;
                if path.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                config.config_mut().volumes.insert(path, json!({}));
            }
        }
        Instruction::Shell(shell) => config.config_mut().shell = shell.clone(),
        Instruction::StopSignal(signal) => {
            let signal = expand(config, signal)?;
            config.config_mut().stop_signal = signal;
        }
        Instruction::Healthcheck(health) => {
            let value = healthcheck_json(config, health);
            config.config_mut().healthcheck = Some(value);
        }
        Instruction::Onbuild(onbuild) => config
            .config_mut()
            .on_build
            .push(onbuild.expression.clone()),
        Instruction::Maintainer(name) => config.author = Some(name.clone()),
        Instruction::From(_)
        | Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::Arg(_) => {
            return Err("this instruction does not only change the image config".into())
        }
    }
    Ok(unset.into_inner())
}

/// Exec form as is; shell form through the image's SHELL (default `/bin/sh -c`).
pub fn command_args(config: &ImageConfig, command: &CommandLine) -> Vec<String> {
    match command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(text) => {
            let mut args = shell_of(config);
            args.push(text.clone());
            args
        }
    }
}

pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    match config.config.as_ref().map(|c| &c.shell) {
        Some(shell) if !shell.is_empty() => shell.clone(),
        _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    }
}

/// WORKDIR: absolute paths replace, relative ones join the current one.
pub fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{}/{dir}", base.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `80` → `80/tcp`; `8000-8002/udp` → three ports.
fn expand_ports(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {p}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!("invalid port range: {ports}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn healthcheck_json(config: &ImageConfig, health: &Healthcheck) -> Value {
    let cmd = match health {
        Healthcheck::None => return json!({ "Test": ["NONE"] }),
        Healthcheck::Cmd(cmd) => cmd,
    };
    let test = match &cmd.test {
        CommandLine::Exec(args) => std::iter::once("CMD".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>(),
        CommandLine::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
    };
    let _ = config;
    let mut value = json!({ "Test": test });
    let nanos = |d: &std::time::Duration| json!(d.as_nanos() as u64);
    for (key, d) in [
        ("Interval", &cmd.interval),
        ("Timeout", &cmd.timeout),
        ("StartPeriod", &cmd.start_period),
        ("StartInterval", &cmd.start_interval),
    ] {
        if let Some(d) = d {
            value[key] = nanos(d);
        }
    }
    if let Some(retries) = cmd.retries {
        value["Retries"] = json!(retries);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::shell::NoVars;
    use crate::dockerfile::{parse, Instruction};
    use oci::Platform;

    fn apply_line(config: &mut ImageConfig, line: &str) -> Result<(), String> {
        let tree = parse(line).map_err(|e| e.to_string())?;
        let instruction =
            Instruction::from_node(&tree.ast.children[0]).map_err(|e| e.to_string())?;
        apply(config, &instruction, &Lex::default(), &NoVars).map(drop)
    }

    #[test]
    fn config_instructions() {
        let mut c = ImageConfig::for_platform(&Platform::host());
        apply_line(&mut c, "ENV A=1").unwrap();
        // B sees A from before the line (reference.md, "Environment replacement").
        apply_line(&mut c, "ENV A=2 B=\"$A two\"").unwrap();
        apply_line(&mut c, "CMD [\"sh\"]").unwrap();
        apply_line(&mut c, "ENTRYPOINT echo $A").unwrap();
        apply_line(&mut c, "WORKDIR /app").unwrap();
        apply_line(&mut c, "WORKDIR sub/../x").unwrap();
        apply_line(&mut c, "EXPOSE 80 8000-8001/udp").unwrap();
        apply_line(&mut c, "LABEL \"k\"=\"v $B\"").unwrap();
        apply_line(&mut c, "USER ${A}:nobody").unwrap();
        apply_line(
            &mut c,
            "HEALTHCHECK --interval=5s --retries=3 CMD curl -f localhost",
        )
        .unwrap();
        let rc = c.config.clone().unwrap();
        assert_eq!(rc.env, vec!["A=2", "B=1 two"]);
        assert_eq!(rc.cmd, None, "ENTRYPOINT resets CMD");
        assert_eq!(rc.entrypoint.unwrap(), vec!["/bin/sh", "-c", "echo $A"]);
        assert_eq!(rc.working_dir, "/app/x");
        assert_eq!(
            rc.exposed_ports.keys().collect::<Vec<_>>(),
            vec!["80/tcp", "8000/udp", "8001/udp"]
        );
        assert_eq!(rc.labels["k"], "v 1 two");
        assert_eq!(rc.user, "2:nobody");
        let hc = rc.healthcheck.unwrap();
        assert_eq!(hc["Test"], json!(["CMD-SHELL", "curl -f localhost"]));
        assert_eq!(hc["Interval"], json!(5_000_000_000u64));
        assert_eq!(hc["Retries"], json!(3));
        assert!(apply_line(&mut c, "EXPOSE 80/xyz").is_err());
    }
}
