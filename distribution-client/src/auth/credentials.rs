//! Credentials in docker's `config.json`, read and written in docker's own format so that
//! `docker login` and `rbuild login` share one file: `auths.<key>.auth` (base64 `user:pass`),
//! `auths.<key>.identitytoken` (an OAuth2 refresh token), `credsStore` (one helper for every
//! registry) and `credHelpers.<host>` (a helper for one registry), both through the
//! `docker-credential-<name> get|store|erase` protocol. `DOCKER_CONFIG` picks the directory.
//!
//! Fields rbuild does not know are kept: the file is edited as a JSON object, not re-modelled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::ClientError;
use crate::hosts::config_key;

/// Who we are to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged for access tokens with
    /// `grant_type=refresh_token` (oauth.md).
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, ***)")
            }
        }
    }
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Basic { username, .. } | Credentials::IdentityToken { username, .. } => {
                username
            }
        }
    }
}

/// docker's config.json, loaded as a JSON object.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        dir.join("config.json")
    }

    /// Loads the file; a missing one is an empty configuration.
    pub fn load(path: impl Into<PathBuf>) -> Result<DockerConfig, ClientError> {
        let path = path.into();
        let doc = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(config_err(&path, "not a JSON object")),
                Err(e) => return Err(config_err(&path, &e.to_string())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(ClientError::io(&path)(e)),
        };
        Ok(DockerConfig { path, doc })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper that holds `registry`'s credentials, if any: `credHelpers` first, then
    /// `credsStore`.
    fn helper_for(&self, registry: &str) -> Option<String> {
        let host = registry_host_key(registry);
        self.doc
            .get("credHelpers")
            .and_then(|h| h.get(&host).or_else(|| h.get(registry)))
            .or_else(|| self.doc.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credentials for `registry` (as references name it), or `None` for anonymous.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, ClientError> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(&helper, registry);
        }
        let Some(auths) = self.doc.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let wanted = registry_host_key(registry);
        // Keys may be `host`, `https://host` or `https://host/v1/` (docker's ConvertToHostname).
        let entry = auths.get(&config_key(registry)).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| registry_host_key(k) == wanted)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else { return Ok(None) };
        let err =
            |detail: &str| config_err(&self.path, &format!("auths entry for {registry}: {detail}"));
        let (mut username, mut password) = (String::new(), String::new());
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| err("`auth` is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| err("`auth` is not UTF-8"))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| err("`auth` is not user:password"))?;
            (username, password) = (u.to_string(), p.to_string());
        }
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Ok(Some(Credentials::IdentityToken {
                username,
                token: token.to_string(),
            }));
        }
        Ok((!username.is_empty()).then_some(Credentials::Basic { username, password }))
    }

    /// Stores credentials for `registry` where docker would: in its helper when one is
    /// configured, else in `auths`. Writes the file atomically with mode 0600.
    pub fn store(&mut self, registry: &str, credentials: &Credentials) -> Result<(), ClientError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            let (username, secret) = match credentials {
                Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
                // The helper protocol marks identity tokens with the user name `<token>`.
                Credentials::IdentityToken { token, .. } => ("<token>", token.as_str()),
            };
            let input =
                serde_json::json!({"ServerURL": key, "Username": username, "Secret": secret});
            run_helper(&helper, "store", input.to_string().as_bytes(), registry)?;
            // docker leaves an empty auths entry so that `docker info` lists the registry.
            self.edit_auths(|auths| auths.insert(key, Value::Object(Map::new())));
        } else {
            let entry = match credentials {
                Credentials::Basic { username, password } => serde_json::json!({
                    "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
                }),
                Credentials::IdentityToken { username, token } => serde_json::json!({
                    "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:")),
                    "identitytoken": token,
                }),
            };
            self.edit_auths(|auths| auths.insert(key, entry));
        }
        self.save()
    }

    /// Forgets `registry`'s credentials; `false` when there were none.
    pub fn erase(&mut self, registry: &str) -> Result<bool, ClientError> {
        let key = config_key(registry);
        let mut erased = false;
        if let Some(helper) = self.helper_for(registry) {
            // A helper that has nothing for this server fails; that is "not logged in".
            erased = run_helper(&helper, "erase", key.as_bytes(), registry).is_ok();
        }
        let wanted = registry_host_key(registry);
        erased |= self.edit_auths(|auths| {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| registry_host_key(k) == wanted)
                .cloned()
                .collect();
            for k in &keys {
                auths.remove(k);
            }
            !keys.is_empty()
        });
        self.save()?;
        Ok(erased)
    }

    /// Edits the `auths` object (created when absent or not an object).
    fn edit_auths<T>(&mut self, edit: impl FnOnce(&mut Map<String, Value>) -> T) -> T {
        let mut auths = match self.doc.remove("auths") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let result = edit(&mut auths);
        self.doc.insert("auths".to_string(), Value::Object(auths));
        result
    }

    fn save(&self) -> Result<(), ClientError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(ClientError::io(dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json-")
            .tempfile_in(dir)
            .map_err(ClientError::io(dir))?;
        // The file holds secrets: readable by its owner only, as docker writes it.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(ClientError::io(&self.path))?;
        let bytes = serde_json::to_vec_pretty(&self.doc)
            .map_err(|e| config_err(&self.path, &e.to_string()))?;
        tmp.write_all(&bytes).map_err(ClientError::io(&self.path))?;
        tmp.as_file()
            .sync_all()
            .map_err(ClientError::io(&self.path))?;
        tmp.persist(&self.path)
            .map_err(|e| ClientError::io(&self.path)(e.error))?;
        Ok(())
    }
}

fn config_err(path: &Path, detail: &str) -> ClientError {
    ClientError::Config {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The host part of a config key or registry name: `https://index.docker.io/v1/` →
/// `index.docker.io`, with Docker Hub's aliases folded together.
fn registry_host_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

/// `docker-credential-<helper> get` with the server URL on stdin (docker-credential-helpers'
/// protocol). "Not found" is not an error: it means anonymous.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, ClientError> {
    let out = match run_helper(helper, "get", config_key(registry).as_bytes(), registry) {
        Ok(out) => out,
        Err(ClientError::Credentials { detail, .. })
            if detail.contains("credentials not found") =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer =
        serde_json::from_slice(&out).map_err(|e| ClientError::Credentials {
            registry: registry.to_string(),
            detail: format!("docker-credential-{helper} get: invalid answer: {e}"),
        })?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        return Ok(Some(Credentials::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }));
    }
    Ok(Some(Credentials::Basic {
        username: answer.username,
        password: answer.secret,
    }))
}

fn run_helper(
    helper: &str,
    action: &str,
    input: &[u8],
    registry: &str,
) -> Result<Vec<u8>, ClientError> {
    let program = format!("docker-credential-{helper}");
    let err = |detail: String| ClientError::Credentials {
        registry: registry.to_string(),
        detail,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("{program} {action}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("{program} {action}: {e}")))?;
    if !out.status.success() {
        // Helpers print their error on stdout (the protocol) or stderr (crashes).
        let text = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        })
        .trim()
        .to_string();
        return Err(err(format!("{program} {action}: {text}")));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_in_docker_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "http://reg.example:5000/v1/":{"auth":"YTpiOmM="},
                "tok.example":{"auth":"dTo=","identitytoken":"refresh-me"}},
               "psFormat":"table"}"#,
        )
        .unwrap();
        let config = DockerConfig::load(&path).unwrap();
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            config.credentials("docker.io").unwrap(),
            Some(basic("user", "pass"))
        );
        assert_eq!(
            config.credentials("reg.example:5000").unwrap(),
            Some(basic("a", "b:c"))
        );
        assert_eq!(
            config.credentials("tok.example").unwrap(),
            Some(Credentials::IdentityToken {
                username: "u".into(),
                token: "refresh-me".into()
            })
        );
        assert_eq!(config.credentials("other.example").unwrap(), None);
    }

    #[test]
    fn store_and_erase_keep_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"psFormat":"table"}"#).unwrap();
        let mut config = DockerConfig::load(&path).unwrap();
        let creds = Credentials::Basic {
            username: "me".into(),
            password: "secret".into(),
        };
        config.store("localhost:5000", &creds).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        assert!(text.contains("bWU6c2VjcmV0"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            DockerConfig::load(&path)
                .unwrap()
                .credentials("localhost:5000")
                .unwrap(),
            Some(creds)
        );
        assert!(config.erase("localhost:5000").unwrap());
        assert!(!config.erase("localhost:5000").unwrap());
        assert_eq!(
            DockerConfig::load(&path)
                .unwrap()
                .credentials("localhost:5000")
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap();
        let e = DockerConfig::load(&path)
            .unwrap()
            .credentials("h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
    }
}
