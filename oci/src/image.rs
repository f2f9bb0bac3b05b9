//! Manifests, indexes and image configs (image-spec manifest.md, image-index.md, config.md) and
//! Docker's schema2 equivalents, which share their shape.
//!
//! These are views for reading and for writing JSON of our own. Every type keeps the fields it
//! does not know in `extra`, and serializes deterministically: struct fields in a fixed order,
//! maps sorted (`BTreeMap`, and serde_json's map is sorted too). JSON received from elsewhere is
//! never re-serialized for storage or serving: keep its bytes and parse them only to look.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::descriptor::{Descriptor, Platform};
use crate::media_type;

#[derive(Debug, thiserror::Error)]
pub enum ImageJsonError {
    #[error("invalid {what} JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported schemaVersion {0} (expected 2)")]
    SchemaVersion(u64),
    #[error("mediaType {found:?} in the document does not match {expected:?}")]
    MediaTypeMismatch { expected: String, found: String },
    #[error("unknown manifest media type {0:?}")]
    UnknownMediaType(String),
}

fn parse<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ImageJsonError> {
    serde_json::from_slice(bytes).map_err(|source| ImageJsonError::Json { what, source })
}

/// Serializes one of our own documents: compact, fields in declaration order, maps sorted.
pub fn to_json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these types cannot fail: every key is a string and no custom serializer errs.
    serde_json::to_vec(value).expect("image JSON serializes")
}

/// An image manifest (OCI or Docker schema2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ImageJsonError> {
        let m: Manifest = parse("manifest", bytes)?;
        if m.schema_version != 2 {
            return Err(ImageJsonError::SchemaVersion(m.schema_version));
        }
        Ok(m)
    }

    /// A new OCI manifest for a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Index, ImageJsonError> {
        let i: Index = parse("index", bytes)?;
        if i.schema_version != 2 {
            return Err(ImageJsonError::SchemaVersion(i.schema_version));
        }
        Ok(i)
    }

    pub fn oci(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The first manifest for `platform`, as a pull picks one from a multi-arch index.
    pub fn find_platform(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            media_type::is_manifest(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| p.matches(platform))
        })
    }
}

/// A manifest or an index: what a tag can point at.
// Short-lived parse results; boxing would only add noise at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestOrIndex {
    Manifest(Manifest),
    Index(Index),
}

impl ManifestOrIndex {
    /// Parses `bytes` as the manifest kind `media_type` names, checking that a `mediaType`
    /// field in the document agrees (distribution-spec spec.md, "Pushing Manifests").
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<ManifestOrIndex, ImageJsonError> {
        let parsed = match media_type::kind(media_type) {
            media_type::Kind::Manifest => ManifestOrIndex::Manifest(Manifest::parse(bytes)?),
            media_type::Kind::Index => ManifestOrIndex::Index(Index::parse(bytes)?),
            _ => return Err(ImageJsonError::UnknownMediaType(media_type.to_string())),
        };
        if let Some(found) = parsed.media_type() {
            if found != media_type {
                return Err(ImageJsonError::MediaTypeMismatch {
                    expected: media_type.to_string(),
                    found: found.to_string(),
                });
            }
        }
        Ok(parsed)
    }

    /// Parses a document whose media type is only known from its own `mediaType` field, or
    /// guessed from its shape when that is absent (some OCI layouts omit it).
    pub fn parse_any(bytes: &[u8]) -> Result<(String, ManifestOrIndex), ImageJsonError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<Value>,
        }
        let probe: Probe = parse("manifest", bytes)?;
        let media_type = match (probe.media_type, probe.manifests) {
            (Some(mt), _) => mt,
            (None, Some(_)) => media_type::OCI_INDEX.to_string(),
            (None, None) => media_type::OCI_MANIFEST.to_string(),
        };
        let parsed = ManifestOrIndex::parse(&media_type, bytes)?;
        Ok((media_type, parsed))
    }

    pub fn media_type(&self) -> Option<&str> {
        match self {
            ManifestOrIndex::Manifest(m) => m.media_type.as_deref(),
            ManifestOrIndex::Index(i) => i.media_type.as_deref(),
        }
    }

    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            ManifestOrIndex::Manifest(m) => m.subject.as_ref(),
            ManifestOrIndex::Index(i) => i.subject.as_ref(),
        }
    }

    pub fn artifact_type(&self) -> Option<&str> {
        match self {
            ManifestOrIndex::Manifest(m) => m.artifact_type.as_deref(),
            ManifestOrIndex::Index(i) => i.artifact_type.as_deref(),
        }
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            ManifestOrIndex::Manifest(m) => &m.annotations,
            ManifestOrIndex::Index(i) => &i.annotations,
        }
    }

    /// Every descriptor this document references (config and layers, or child manifests),
    /// not counting `subject`.
    pub fn references(&self) -> Vec<&Descriptor> {
        match self {
            ManifestOrIndex::Manifest(m) => std::iter::once(&m.config).chain(&m.layers).collect(),
            ManifestOrIndex::Index(i) => i.manifests.iter().collect(),
        }
    }
}

/// An image configuration (image-spec config.md), with Docker's extra fields kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ImageJsonError> {
        parse("image config", bytes)
    }

    /// An empty config for the host platform, as `docker import` starts from.
    pub fn for_platform(platform: &Platform) -> ImageConfig {
        ImageConfig {
            created: None,
            author: None,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: platform.os_version.clone(),
            variant: platform.variant.clone(),
            config: None,
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: Vec::new(),
                extra: BTreeMap::new(),
            },
            history: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: Vec::new(),
            variant: self.variant.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// The runtime config, created empty on first use.
    pub fn config_mut(&mut self) -> &mut ContainerConfig {
        self.config.get_or_insert_with(ContainerConfig::default)
    }
}

/// `rootfs` of a config: the uncompressed digests (diff IDs) of the layers, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<crate::Digest>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The runtime part of a config. Field names are Docker's capitalised ones, which OCI adopted;
/// `Healthcheck`, `OnBuild` and `Shell` are Docker extensions that BuildKit writes too.
/// `Entrypoint`/`Cmd` distinguish absent (`None`) from empty, as docker's combination rules do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub on_build: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub shell: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ContainerConfig {
    /// The value of `key` in `Env`, if set.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in `Env`, replacing an earlier value in place as docker does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }
}

/// Docker writes `null` for empty maps and lists; read it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_keeps_unknown_fields() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[],"annotations":{"b":"2","a":"1"},"zz-vendor":true}"#;
        let m = Manifest::parse(json).unwrap();
        assert_eq!(m.extra["zz-vendor"], true);
        let out = String::from_utf8(to_json_bytes(&m)).unwrap();
        assert!(out.contains(r#""annotations":{"a":"1","b":"2"}"#), "{out}");
        assert!(out.ends_with(r#""zz-vendor":true}"#), "{out}");
    }

    #[test]
    fn media_type_must_agree() {
        let json = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(ManifestOrIndex::parse(media_type::OCI_MANIFEST, json).is_err());
        let (mt, parsed) = ManifestOrIndex::parse_any(json).unwrap();
        assert_eq!(mt, media_type::OCI_INDEX);
        assert!(matches!(parsed, ManifestOrIndex::Index(_)));
    }

    #[test]
    fn docker_config_with_nulls() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["sh"],"Entrypoint":null,"Labels":null,"Hostname":""},"rootfs":{"type":"layers","diff_ids":[]},"docker_version":"20.10"}"#;
        let c = ImageConfig::parse(json).unwrap();
        let rc = c.config.as_ref().unwrap();
        assert_eq!(rc.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert!(rc.entrypoint.is_none());
        assert_eq!(rc.extra["Hostname"], "");
        assert_eq!(c.extra["docker_version"], "20.10");
    }

    #[test]
    fn env_helpers() {
        let mut c = ContainerConfig::default();
        c.set_env("PATH", "/bin");
        c.set_env("A", "1");
        c.set_env("PATH", "/usr/bin");
        assert_eq!(c.env, vec!["PATH=/usr/bin", "A=1"]);
        assert_eq!(c.env_value("A"), Some("1"));
    }
}
