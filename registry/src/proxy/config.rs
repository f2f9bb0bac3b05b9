//! The `proxy:` section. distribution's single-upstream keys (`remoteurl`, `username`,
//! `password`, `ttl`; specs/distribution-configuration.md "proxy") keep their meaning; our
//! multi-upstream keys sit beside them (docs/REGISTRY.md, "Pull-through mirror").

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::go_duration;

/// distribution's default `proxy.ttl`.
const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);
/// How long a cached tag is served without asking the upstream again.
const DEFAULT_FRESHNESS: Duration = Duration::from_secs(60);
/// The name the single `proxy.remoteurl` upstream gets (DESIGN.md: it means Docker Hub).
pub const SINGLE_UPSTREAM_NAME: &str = "docker.io";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// distribution: the one upstream; it becomes the upstream named `docker.io` and the default.
    pub remoteurl: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(deserialize_with = "opt_go_duration")]
    pub ttl: Option<Duration>,
    /// Ours: the tag freshness window of the `remoteurl` upstream.
    #[serde(deserialize_with = "opt_go_duration")]
    pub freshness: Option<Duration>,
    /// Ours: `servecachedonnotfound` of the `remoteurl` upstream.
    #[serde(default)]
    pub servecachedonnotfound: bool,
    /// Ours: several upstreams at once.
    pub upstreams: Vec<UpstreamConfig>,
    /// Ours: the upstream for names with neither a `?ns=` nor a known prefix (what dockerd's
    /// `registry-mirrors` sends). Defaults to `docker.io` when such an upstream exists.
    pub default: Option<String>,
    /// Ours: repository name prefixes that are local (pushable) even with a default upstream.
    pub local: Vec<String>,
    /// Ours: the most bytes of cached blobs kept; least recently used ones go first. 0: no limit.
    pub maxsize: u64,
    /// Ours: how often the cache is swept for expired tags and excess size.
    #[serde(deserialize_with = "opt_go_duration")]
    pub sweepinterval: Option<Duration>,
    /// Ours: where blobs being downloaded are spooled (unlinked temporary files, proxy/fill.rs).
    /// Unset: in the storage itself on the filesystem driver (the spool then becomes the blob
    /// without a copy), in the system's temporary directory (`TMPDIR`) otherwise.
    pub spooldirectory: Option<std::path::PathBuf>,
    /// Ours: when an image manifest is fetched from an upstream, start fetching its config and
    /// layers too, before the client asks for them (off by default: a client that has most
    /// layers already would make the mirror download ones nobody asked for).
    pub prefetchblobs: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamConfig {
    /// What `?ns=` and the first path component match: the registry's host as clients name it
    /// (`docker.io`, `ghcr.io`, `registry.example:5000`).
    pub name: String,
    pub remoteurl: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Cached tags not revalidated for this long are dropped; 0 keeps them.
    #[serde(default, deserialize_with = "opt_go_duration")]
    pub ttl: Option<Duration>,
    /// A cached tag younger than this is served without asking the upstream.
    #[serde(default, deserialize_with = "opt_go_duration")]
    pub freshness: Option<Duration>,
    /// When the upstream answers 404 for a cached tag (deleted or moved there), serve the
    /// cached copy, marked stale, instead of passing the 404 on (Harbor's
    /// `proxy_cache_local_on_not_found`). Off by default: a mirror shows what its upstream has.
    #[serde(default)]
    pub servecachedonnotfound: bool,
    /// More first path components that mean this upstream (podman's `registries.conf` mirror
    /// `location = "mirror:5000/hub"` sends `/v2/hub/...`).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Whether one-component names get Docker Hub's `library/`; by default when the remote is
    /// Docker Hub or the upstream is named `docker.io`.
    #[serde(default)]
    pub library: Option<bool>,
}

/// One upstream, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub name: String,
    /// Without a trailing slash.
    pub remoteurl: String,
    pub credentials: Option<(String, String)>,
    pub ttl: Duration,
    pub freshness: Duration,
    pub serve_cached_on_not_found: bool,
    pub prefixes: Vec<String>,
    pub library: bool,
}

/// The whole mirror, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSettings {
    pub upstreams: Vec<UpstreamSettings>,
    pub default: Option<String>,
    pub local: Vec<String>,
    pub maxsize: u64,
    pub sweep_interval: Duration,
    /// `proxy.spooldirectory`; unset, see `fill::new_spool`.
    pub spool_dir: Option<std::path::PathBuf>,
    /// `proxy.prefetchblobs`.
    pub prefetch_blobs: bool,
}

impl ProxyConfig {
    /// `None` when no upstream is configured (a plain registry).
    pub fn settings(&self) -> Result<Option<MirrorSettings>, String> {
        let mut upstreams = Vec::new();
        if let Some(url) = &self.remoteurl {
            upstreams.push(UpstreamConfig {
                name: SINGLE_UPSTREAM_NAME.to_string(),
                remoteurl: url.clone(),
                username: self.username.clone(),
                password: self.password.clone(),
                ttl: self.ttl,
                freshness: self.freshness,
                servecachedonnotfound: self.servecachedonnotfound,
                prefixes: Vec::new(),
                library: None,
            });
        }
        upstreams.extend(self.upstreams.iter().cloned());
        if upstreams.is_empty() {
            return Ok(None);
        }
        let mut out: Vec<UpstreamSettings> = Vec::new();
        for u in upstreams {
            let settings = u.settings()?;
            let taken = |s: &UpstreamSettings, key: &str| {
                s.name == key || s.prefixes.iter().any(|p| p == key)
            };
            for key in std::iter::once(&settings.name).chain(&settings.prefixes) {
                if out.iter().any(|o| taken(o, key)) {
                    return Err(format!(
                        "proxy: {key:?} names two upstreams (proxy.remoteurl is the upstream {SINGLE_UPSTREAM_NAME:?})"
                    ));
                }
            }
            out.push(settings);
        }
        let default = match &self.default {
            Some(d) if out.iter().any(|u| &u.name == d) => Some(d.clone()),
            Some(d) => return Err(format!("proxy.default {d:?} is not an upstream's name")),
            None => out
                .iter()
                .find(|u| u.name == SINGLE_UPSTREAM_NAME)
                .map(|u| u.name.clone()),
        };
        let local = self
            .local
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect::<Vec<_>>();
        if let Some(empty) = local.iter().find(|p| p.is_empty()) {
            return Err(format!("proxy.local: empty prefix {empty:?}"));
        }
        let sweep_interval = self.sweepinterval.unwrap_or(Duration::from_secs(600));
        if sweep_interval.is_zero() {
            return Err("proxy.sweepinterval must be more than 0".into());
        }
        Ok(Some(MirrorSettings {
            upstreams: out,
            default,
            local,
            maxsize: self.maxsize,
            sweep_interval,
            spool_dir: self.spooldirectory.clone(),
            prefetch_blobs: self.prefetchblobs,
        }))
    }
}

impl UpstreamConfig {
    fn settings(&self) -> Result<UpstreamSettings, String> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:".contains(&b));
        if !valid_name {
            return Err(format!(
                "proxy upstream name {:?}: use the registry host as clients name it (lower case, e.g. ghcr.io)",
                self.name
            ));
        }
        let url = self.remoteurl.trim_end_matches('/');
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| {
                format!(
                    "proxy upstream {:?}: remoteurl {:?} must be http(s)://host[:port] without a path",
                    self.name, self.remoteurl
                )
            })?;
        let credentials = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "proxy upstream {:?}: give both username and password, or neither",
                    self.name
                ))
            }
        };
        let prefixes = self
            .prefixes
            .iter()
            .map(|p| p.trim_matches('/').to_string())
            .collect::<Vec<_>>();
        if let Some(bad) = prefixes.iter().find(|p| p.is_empty() || p.contains('/')) {
            return Err(format!(
                "proxy upstream {:?}: prefix {bad:?} must be one path component",
                self.name
            ));
        }
        let hub_host = matches!(
            host,
            "registry-1.docker.io" | "index.docker.io" | "docker.io"
        );
        Ok(UpstreamSettings {
            name: self.name.clone(),
            remoteurl: url.to_string(),
            credentials,
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            freshness: self.freshness.unwrap_or(DEFAULT_FRESHNESS),
            serve_cached_on_not_found: self.servecachedonnotfound,
            prefixes,
            library: self
                .library
                .unwrap_or(hub_host || self.name == SINGLE_UPSTREAM_NAME),
        })
    }
}

fn opt_go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct GoDuration(#[serde(deserialize_with = "go_duration")] Duration);
    Ok(Option::<GoDuration>::deserialize(d)?.map(|g| g.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Option<MirrorSettings>, String> {
        serde_yaml::from_str::<ProxyConfig>(yaml)
            .map_err(|e| e.to_string())?
            .settings()
    }

    #[test]
    fn distribution_keys() {
        let s =
            parse("remoteurl: https://registry-1.docker.io\nusername: u\npassword: p\nttl: 2h\n")
                .unwrap()
                .unwrap();
        assert_eq!(s.default.as_deref(), Some("docker.io"));
        let u = &s.upstreams[0];
        assert_eq!(u.name, "docker.io");
        assert_eq!(u.ttl, Duration::from_secs(7200));
        assert_eq!(u.credentials, Some(("u".into(), "p".into())));
        assert!(u.library);
        assert_eq!(parse("{}").unwrap(), None);
    }

    #[test]
    fn several_upstreams() {
        let s = parse(
            "upstreams:\n  - name: docker.io\n    remoteurl: http://127.0.0.1:5001/\n    freshness: 0s\n  - name: ghcr.io\n    remoteurl: https://ghcr.io\n    prefixes: [gh]\nlocal: [team/]\nmaxsize: 1000\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.default.as_deref(), Some("docker.io"));
        assert_eq!(s.upstreams[0].remoteurl, "http://127.0.0.1:5001");
        assert_eq!(s.upstreams[0].freshness, Duration::ZERO);
        assert!(!s.upstreams[1].library);
        assert_eq!(s.local, vec!["team".to_string()]);
        assert!(parse("upstreams:\n  - name: a.io\n    remoteurl: ftp://x\n").is_err());
        assert!(parse("upstreams:\n  - name: A\n    remoteurl: http://x\n").is_err());
        assert!(parse(
            "remoteurl: http://a\nupstreams:\n  - name: docker.io\n    remoteurl: http://b\n"
        )
        .is_err());
        assert!(parse("default: nope\nremoteurl: http://a\n").is_err());
        assert!(
            parse("upstreams:\n  - name: a.io\n    remoteurl: http://x\n    username: u\n")
                .is_err()
        );
    }
}
