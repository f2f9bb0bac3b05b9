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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
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
