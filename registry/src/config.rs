//! The YAML configuration. Keys distribution has keep distribution's names and meanings
//! (specs/distribution-configuration.md), so a registry:2 `config.yml` works unchanged; keys
//! distribution does not know are ignored. Our own keys sit beside them in the same style and
//! are documented in docs/REGISTRY.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci::timestamp::parse_go_duration;
use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub version: Option<String>,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    /// htpasswd or token auth, and our access rules (auth/mod.rs).
    pub auth: crate::auth::AuthConfig,
    /// The pull-through mirror: distribution's `proxy.*` and our upstreams (proxy/config.rs).
    pub proxy: crate::proxy::config::ProxyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// error, warn, info, debug (distribution's `log.level`).
    pub level: String,
    /// distribution's `log.formatter`: `text` (default), `json`; `logstash` is JSON lines too.
    pub formatter: LogFormatter,
    pub accesslog: AccessLogConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            formatter: LogFormatter::Text,
            accesslog: AccessLogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatter {
    #[default]
    Text,
    Json,
    Logstash,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccessLogConfig {
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// `host:port`; `:port` means every interface, as in distribution.
    pub addr: String,
    /// How long SIGTERM waits for in-flight requests (distribution's `http.draintimeout`).
    #[serde(deserialize_with = "go_duration")]
    pub draintimeout: Duration,
    /// Ours: the largest manifest accepted; larger ones get 413 (spec.md "Pushing Manifests").
    pub manifestmaxbytes: u64,
    /// Ours: the largest blob upload accepted, 0 for no limit; larger ones get 413.
    pub uploadmaxbytes: u64,
    /// Ours: a request body that sends nothing for this long is aborted (stalled uploads).
    #[serde(deserialize_with = "go_duration")]
    pub bodytimeout: Duration,
    /// HTTPS (tls.rs), distribution's `http.tls` and `http.http2`.
    pub tls: Option<crate::tls::TlsConfig>,
    pub http2: crate::tls::Http2Config,
    /// Ours: a connection that has not sent a whole request head for this long is closed
    /// (slowloris); this also ends keep-alive connections idle that long. 0 disables it.
    #[serde(deserialize_with = "go_duration")]
    pub headertimeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:5000".into(),
            draintimeout: Duration::from_secs(60),
            manifestmaxbytes: 4 << 20,
            uploadmaxbytes: 0,
            bodytimeout: Duration::from_secs(60),
            tls: None,
            http2: crate::tls::Http2Config::default(),
            headertimeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    pub filesystem: FilesystemConfig,
    /// When present, the S3 driver serves instead of the filesystem (`storage/s3`).
    pub s3: Option<crate::storage::s3::S3Config>,
    pub delete: DeleteConfig,
    /// Blob reads redirected to the backend (presigned S3 URLs) unless disabled.
    pub redirect: RedirectConfig,
    pub maintenance: MaintenanceConfig,
    /// Every other `storage.*` key, kept to refuse drivers we do not have rather than
    /// silently serving from the filesystem instead.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// Distribution's storage drivers that rregistry does not implement (yet).
const UNSUPPORTED_DRIVERS: &[&str] = &["azure", "gcs", "swift", "oss", "inmemory"];

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FilesystemConfig {
    pub rootdirectory: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            rootdirectory: PathBuf::from("./registry-data"),
        }
    }
}

/// distribution's `storage.redirect`: on by default for backends that can redirect (S3).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RedirectConfig {
    pub disable: bool,
}

/// Deletes are off unless enabled, as in distribution.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    pub uploadpurging: UploadPurgingConfig,
    /// Ours: online garbage collection (`gc/mod.rs`, docs/REGISTRY.md).
    pub gc: GcConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    /// Unreferenced blobs, untagged manifests and idle upload sessions younger than this stay.
    #[serde(deserialize_with = "go_duration")]
    pub graceperiod: Duration,
    pub dryrun: bool,
    /// Also delete manifests no tag reaches (needs `storage.delete.enabled`).
    pub deleteuntagged: bool,
    /// Several replicas share the storage: set it on every one of them (with GC enabled on
    /// any), so that a pass pauses the writers of all (gc/replicas.rs).
    pub replicas: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: false,
            interval: Duration::from_secs(3600),
            graceperiod: Duration::from_secs(3600),
            dryrun: false,
            deleteuntagged: false,
            replicas: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UploadPurgingConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "go_duration")]
    pub age: Duration,
    #[serde(deserialize_with = "go_duration")]
    pub interval: Duration,
    pub dryrun: bool,
}

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        UploadPurgingConfig {
            enabled: true,
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dryrun: false,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(Some(path), std::iter::empty())
    }

    /// The config file (or the defaults, without one) with distribution's environment
    /// overrides applied (`REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x`, see
    /// [`apply_env_overrides`]), then checked.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let origin = path.map_or_else(|| PathBuf::from("(environment)"), Path::to_path_buf);
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let parse_error = |source| ConfigError::Parse {
            path: origin.clone(),
            source,
        };
        let overrides = env_overrides(env);
        // Overrides are applied to the YAML tree, which is then written out and read again as
        // text: read from a tree, `version: 0.1` would stay a number where a string is wanted.
        let text = if overrides.is_empty() {
            text
        } else {
            let mut tree: serde_yaml::Value = serde_yaml::from_str(&text).map_err(parse_error)?;
            if tree.is_null() {
                tree = serde_yaml::Value::Mapping(Default::default());
            }
            apply_env_overrides(&mut tree, overrides);
            serde_yaml::to_string(&tree).map_err(parse_error)?
        };
        let config: Config = serde_yaml::from_str(&text).map_err(parse_error)?;
        config.checked(&origin)
    }

    /// The mistakes distribution refuses at start, each with the key to fix.
    fn checked(self, path: &Path) -> Result<Config, ConfigError> {
        let config = self;
        if let Some(driver) = UNSUPPORTED_DRIVERS
            .iter()
            .find(|d| config.storage.other.contains_key(**d))
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "storage driver {driver:?} is not supported; use storage.filesystem or storage.s3"
                ),
            });
        }
        if let Some(message) = config
            .storage
            .s3
            .as_ref()
            .and_then(|s3| s3.validate().err())
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            });
        }
        if config.storage.maintenance.uploadpurging.enabled
            && config.storage.maintenance.uploadpurging.interval.is_zero()
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "storage.maintenance.uploadpurging.interval must be more than 0".into(),
            });
        }
        let gc = &config.storage.maintenance.gc;
        if gc.enabled && gc.interval.is_zero() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "storage.maintenance.gc.interval must be more than 0".into(),
            });
        }
        if gc.enabled && gc.deleteuntagged && !config.storage.delete.enabled {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "storage.maintenance.gc.deleteuntagged needs storage.delete.enabled"
                    .into(),
            });
        }
        if let Err(message) = config.proxy.settings() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            });
        }
        Ok(config)
    }

    /// The listen address with distribution's `:port` shorthand expanded.
    pub fn listen_addr(&self) -> String {
        if self.http.addr.starts_with(':') {
            format!("0.0.0.0{}", self.http.addr)
        } else {
            self.http.addr.clone()
        }
    }
}

/// The `REGISTRY_…` variables of `env` (all but REGISTRY_CONFIGURATION_PATH), by name.
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("REGISTRY_") && name != "REGISTRY_CONFIGURATION_PATH")
        .collect();
    overrides.sort();
    overrides
}

/// distribution's environment overrides ("Override specific configuration options" in
/// ../shared/specs/distribution-configuration.md): `REGISTRY_` then the key's path with `_`
/// between levels, a number indexing a list; the value is read as YAML, so `true` and `5000`
/// keep their types. Applied in name order, so a scalar set first can be descended into by a
/// longer name: `REGISTRY_STORAGE=s3` then `REGISTRY_STORAGE_S3_BUCKET=b` make `storage: {s3:
/// {bucket: b}}` (the driver chosen, the file's one dropped), as distribution does.
fn apply_env_overrides(tree: &mut serde_yaml::Value, overrides: Vec<(String, String)>) {
    use serde_yaml::{Mapping, Value};
    for (name, text) in overrides {
        let path: Vec<String> = name["REGISTRY_".len()..]
            .split('_')
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let value = match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Null) | Err(_) => Value::String(text),
            Ok(value) => value,
        };
        let mut node = &mut *tree;
        for key in &path {
            if let Value::String(named) = node {
                let mut only = Mapping::new();
                only.insert(Value::String(named.clone()), Value::Null);
                *node = Value::Mapping(only);
            }
            node = match (node, key.parse::<usize>()) {
                (Value::Sequence(items), Ok(index)) => {
                    if items.len() <= index {
                        items.resize(index + 1, Value::Null);
                    }
                    &mut items[index]
                }
                (node, _) => {
                    if !node.is_mapping() {
                        *node = Value::Mapping(Mapping::new());
                    }
                    let Value::Mapping(map) = node else {
                        unreachable!("made a mapping just above")
                    };
                    map.entry(Value::String(key.clone())).or_insert(Value::Null)
                }
            };
        }
        *node = value;
    }
}

pub(crate) fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Nanos(n) => Ok(Duration::from_nanos(n)),
        Raw::Text(t) => parse_go_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_as_distribution_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yml");
        std::fs::write(
            &file,
            "version: 0.1\nhttp:\n  addr: :5000\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: false\n",
        )
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("HOME".to_string(), "/root".to_string())])
                .collect()
        };
        let config = Config::load_with_env(
            Some(&file),
            env(&[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/somewhere"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
            ]),
        )
        .unwrap();
        assert_eq!(config.version.as_deref(), Some("0.1"));
        assert_eq!(config.http.addr, "127.0.0.1:6000");
        assert_eq!(
            config.storage.filesystem.rootdirectory,
            PathBuf::from("/somewhere")
        );
        assert!(config.storage.delete.enabled);
        assert_eq!(
            config.proxy.remoteurl.as_deref(),
            Some("https://registry-1.docker.io")
        );

        // A driver named by REGISTRY_STORAGE, its keys by longer names: the file's driver goes.
        let s3 = Config::load_with_env(
            Some(&file),
            env(&[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
                ("REGISTRY_STORAGE_S3_BUCKET", "images"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s3.storage.s3.as_ref().map(|c| c.bucket.as_str()),
            Some("images")
        );

        // A list element by its index.
        let mut tree: serde_yaml::Value =
            serde_yaml::from_str("http:\n  tls:\n    letsencrypt:\n      hosts: [a.example]\n")
                .unwrap();
        apply_env_overrides(
            &mut tree,
            env_overrides(env(&[(
                "REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_0",
                "registry.example.com",
            )])),
        );
        assert_eq!(
            tree["http"]["tls"]["letsencrypt"]["hosts"][0].as_str(),
            Some("registry.example.com")
        );
    }

    #[test]
    fn durations() {
        let parse = |s: &str| parse_go_duration(s).ok();
        assert_eq!(parse("168h"), Some(Duration::from_secs(604800)));
        assert_eq!(parse("2h10m"), Some(Duration::from_secs(7800)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse("10x"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn distribution_config_reads() {
        let yaml = "version: 0.1\nlog:\n  level: debug\n  fields:\n    service: registry\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 2h\n      interval: 10m\n      dryrun: false\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\n";
        let c: Config = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(c.log.level, "debug");
        assert!(c.storage.delete.enabled);
        assert_eq!(
            c.storage.maintenance.uploadpurging.age,
            Duration::from_secs(7200)
        );
        assert_eq!(c.listen_addr(), "0.0.0.0:5000");
        assert_eq!(
            c.storage.filesystem.rootdirectory,
            PathBuf::from("/var/lib/registry")
        );
        let dir = tempfile::tempdir().unwrap();
        let s3 = dir.path().join("s3.yml");
        std::fs::write(&s3, "storage:\n  s3:\n    bucket: b\n").unwrap();
        assert!(matches!(
            Config::load(&s3),
            Err(ConfigError::Invalid { .. })
        ));
        let d = Config::default();
        assert_eq!(d.listen_addr(), "127.0.0.1:5000");
        assert!(!d.storage.delete.enabled);
    }
}
