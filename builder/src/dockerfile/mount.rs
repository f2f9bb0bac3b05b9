//! `RUN --mount=...` values (spec: reference.md "RUN --mount", BuildKit's
//! `instructions/commands_runmount.go`).
//!
//! A mount is a comma-separated (CSV, so `"a,b"` quoting works) list of
//! `key=value` fields; `ro`, `rw` and `required` may stand alone. Every
//! value may use build variables, which BuildKit expands field by field;
//! [`Mount::parse`] therefore takes the expander.

/// The kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// Read-only (by default) bind of the context, a stage or an image.
    Bind,
    /// A persistent cache directory that never enters the image.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file or environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<MountType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }

    /// The name used in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Several writers at once (the default).
    Shared,
    /// A second writer gets a fresh directory.
    Private,
    /// A second writer waits for the first.
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`; bind when absent.
    pub kind: MountType,
    /// `target`/`dst`/`destination`: mount point in the container. Always
    /// set for bind, cache and tmpfs; for a secret without `env` it
    /// defaults to `/run/secrets/<id>`; for ssh the solver picks
    /// `/run/buildkit/ssh_agent.N` when absent.
    pub target: Option<String>,
    /// `source`/`src`: path inside `from` (bind, cache).
    pub source: Option<String>,
    /// `from`: stage, context or image providing the source (bind, cache).
    pub from: Option<String>,
    /// `ro`/`readonly`, `rw`/`readwrite`. Defaults: bind read-only, others writable.
    pub read_only: bool,
    /// `id`: cache id (defaults to the target in the solver), secret id
    /// (defaults to the target's base name), ssh id (defaults to `default`).
    pub id: Option<String>,
    /// `sharing` of a cache mount.
    pub sharing: Option<CacheSharing>,
    /// `mode` (octal) of a new cache directory, secret file or ssh socket.
    pub mode: Option<u32>,
    /// `uid` of a new cache directory, secret file or ssh socket.
    pub uid: Option<u32>,
    /// `gid` of a new cache directory, secret file or ssh socket.
    pub gid: Option<u32>,
    /// `size` limit of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// `required`: a missing secret or ssh key fails the step.
    pub required: bool,
    /// `env`: expose a secret as this environment variable.
    pub env: Option<String>,
}

const KEYS: [&str; 18] = [
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "size",
];

fn is_known_key(key: &str) -> bool {
    KEYS.contains(&key) || key == "env"
}

/// Splits one CSV record (Go's encoding/csv rules, which BuildKit uses):
/// commas separate fields; a field starting with `"` is quoted and `""`
/// inside it is a literal quote.
pub(crate) fn csv_fields(record: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {record:?}")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!("unexpected {c:?} after quoted field in {record:?}"))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// go-units `RAMInBytes`: `64m`, `1.5GiB`, `512` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let number: f64 = s[..num_len].parse().ok()?;
    let unit = s[num_len..].trim_start_matches(' ').to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some((number * multiplier) as u64)
}

fn parse_flag_bool(key: &str, value: &str) -> Result<bool, String> {
    // Go's strconv.ParseBool.
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

fn parse_id(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value} for {key}"))
}

impl Mount {
    /// Checks what can be checked before variables are known: every field
    /// has a known key, and `from` does not use variables (BuildKit
    /// requires an alias stage for that).
    pub(crate) fn check_template(value: &str) -> Result<(), String> {
        for field in csv_fields(value)? {
            let (key, val) = field.split_once('=').unwrap_or((field.as_str(), ""));
            let key = key.to_ascii_lowercase();
            if !is_known_key(&key) {
                return Err(format!("unexpected key '{key}' in '{field}'"));
            }
            if key == "from" && val.contains('$') && !val.ends_with('$') {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
        }
        Ok(())
    }

    /// Parses a `--mount` value, expanding each field value with `expand`.
    pub fn parse(
        value: &str,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount, String> {
        let mut m = Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            read_only: false,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        };
        let mut read_only: Option<bool> = None;
        for field in csv_fields(value)? {
            let Some((key, raw)) = field.split_once('=') else {
                match field.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => read_only = Some(true),
                    "readwrite" | "rw" => read_only = Some(false),
                    "required" => m.required = true,
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key == "from" && raw.contains('$') && !raw.ends_with('$') {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
            let value = expand(raw)?;
            match key.as_str() {
                "type" => {
                    m.kind = MountType::parse(&value)
                        .ok_or_else(|| format!("unsupported mount type {value:?}"))?
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => read_only = Some(parse_flag_bool(&key, &value)?),
                "readwrite" | "rw" => read_only = Some(!parse_flag_bool(&key, &value)?),
                "required" => m.required = parse_flag_bool(&key, &value)?,
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => return Err(format!("unsupported sharing value {value:?}")),
                    })
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(&value, 8)
                            .map_err(|_| format!("invalid value {value} for mode"))?,
                    )
                }
                "uid" => m.uid = Some(parse_id("uid", &value)?),
                "gid" => m.gid = Some(parse_id("gid", &value)?),
                "size" => {
                    m.size = Some(
                        parse_size(&value)
                            .ok_or_else(|| format!("invalid value {value} for size"))?,
                    )
                }
                "env" => m.env = Some(value),
                _ => return Err(format!("unexpected key '{key}' in '{field}'")),
            }
        }

        let kind = m.kind.as_str();
        let file_info_allowed = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info_allowed {
            for (name, set) in [
                ("mode", m.mode.is_some()),
                ("uid", m.uid.is_some()),
                ("gid", m.gid.is_some()),
            ] {
                if set {
                    return Err(format!("{name} not allowed for {kind:?} type mounts"));
                }
            }
        }
        if m.required && !matches!(m.kind, MountType::Secret | MountType::Ssh) {
            return Err(format!("unexpected key 'required' for mount type '{kind}'"));
        }
        if m.size.is_some() && m.kind != MountType::Tmpfs {
            return Err(format!("unexpected key 'size' for mount type '{kind}'"));
        }
        if m.env.is_some() && m.kind != MountType::Secret {
            return Err(format!("unexpected key 'env' for mount type '{kind}'"));
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(format!("invalid cache sharing set for {kind} mount"));
        }
        if matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Tmpfs
        ) {
            if m.from.is_some() {
                return Err(format!("{kind} mount should not have a from"));
            }
            if m.source.is_some() {
                return Err(format!("{kind} source not supported"));
            }
        }
        m.read_only = read_only.unwrap_or(m.kind == MountType::Bind);
        match m.kind {
            MountType::Cache => {
                m.sharing.get_or_insert(CacheSharing::Shared);
            }
            MountType::Secret => {
                if m.id.is_none() {
                    let base = m
                        .target
                        .as_deref()
                        .and_then(|t| t.trim_end_matches('/').rsplit('/').next());
                    match base.filter(|b| !b.is_empty()) {
                        Some(b) => m.id = Some(b.to_string()),
                        None => return Err("secret mount requires an id or a target".into()),
                    }
                }
                if m.target.is_none() && m.env.is_none() {
                    m.target = m.id.as_ref().map(|id| format!("/run/secrets/{id}"));
                }
            }
            MountType::Ssh => {
                m.id.get_or_insert_with(|| "default".to_string());
            }
            MountType::Bind | MountType::Tmpfs => {}
        }
        if matches!(
            m.kind,
            MountType::Bind | MountType::Cache | MountType::Tmpfs
        ) && m.target.is_none()
        {
            return Err(format!("mount type={kind} requires a target"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(s: &str) -> Result<Mount, String> {
        Mount::parse(s, &mut |v: &str| Ok(v.to_string()))
    }

    #[test]
    fn cache_mount_with_every_option() {
        let m = literal("type=cache,target=/root/.cache,id=go,sharing=locked,mode=0700,uid=1000,gid=1000,from=base,source=/c,ro").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(
            (m.mode, m.uid, m.gid),
            (Some(0o700), Some(1000), Some(1000))
        );
        assert!(m.read_only);
        assert_eq!(
            literal("type=cache,dst=/c").unwrap().sharing,
            Some(CacheSharing::Shared)
        );
    }

    #[test]
    fn defaults_per_type() {
        let bind = literal("target=/src,rw").unwrap();
        assert_eq!((bind.kind, bind.read_only), (MountType::Bind, false));
        assert!(literal("destination=/src").unwrap().read_only);
        let secret = literal("type=secret,id=aws").unwrap();
        assert_eq!(secret.target.as_deref(), Some("/run/secrets/aws"));
        let secret = literal("type=secret,target=/root/.aws/credentials,required").unwrap();
        assert_eq!(
            (secret.id.as_deref(), secret.required),
            (Some("credentials"), true)
        );
        let env_secret = literal("type=secret,id=API_KEY,env=API_KEY").unwrap();
        assert_eq!(
            (env_secret.target, env_secret.env.as_deref()),
            (None, Some("API_KEY"))
        );
        let ssh = literal("type=ssh,required=true,mode=0600").unwrap();
        assert_eq!(
            (ssh.id.as_deref(), ssh.required, ssh.mode),
            (Some("default"), true, Some(0o600))
        );
        let tmp = literal("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(tmp.size, Some(64 << 20));
    }

    #[test]
    fn rejects_bad_mounts() {
        for bad in [
            "type=volume,target=/x",
            "type=cache",
            "type=bind,target=/x,mode=0700",
            "type=cache,target=/x,sharing=sometimes",
            "type=cache,target=/x,mode=999",
            "type=tmpfs,target=/x,size=lots",
            "type=bind,target=/x,sharing=locked",
            "type=secret,from=x,id=a",
            "type=bind,target=/x,required",
            "type=cache,target=/x,bogus=1",
            "target=/x,exec",
            "type=secret",
        ] {
            assert!(literal(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn values_are_expanded_per_field() {
        let m = Mount::parse("type=cache,target=$DIR", &mut |v: &str| {
            Ok(v.replace("$DIR", "/a,b"))
        })
        .unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(Mount::check_template("type=cache,target=$DIR").is_ok());
        assert!(Mount::check_template("type=cache,from=$X,target=/x").is_err());
        assert!(Mount::check_template("type=cache,tagret=$X").is_err());
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields("a=1,\"b=2,3\",c").unwrap(),
            vec!["a=1", "b=2,3", "c"]
        );
        assert!(csv_fields("\"a").is_err());
    }
}
