//! From the registry part of a reference to the endpoint rbuild talks to, the way docker
//! resolves it: Docker Hub's name `docker.io` is served by `registry-1.docker.io` (the
//! `library/` prefix is already in the reference, see `oci::reference`), HTTPS everywhere
//! except loopback and the registries configured as insecure, and extra CAs read from
//! `/etc/docker/certs.d/<host>/` as dockerd reads them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// The host that serves Docker Hub's API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key docker's config.json uses for Docker Hub credentials.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// How to reach hosts; built from flags, the environment and dockerd's configuration.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Hosts (`host[:port]`) or IPv4/IPv6 CIDR ranges to reach over plain HTTP, or over HTTPS
    /// without verifying the certificate (dockerd's `insecure-registries`).
    pub insecure: Vec<String>,
    /// A CA certificate (PEM) trusted for every registry, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Where per-host CAs and client certificates live (`<dir>/<host>/ca.crt`, `client.cert`,
    /// `client.key`).
    pub certs_dir: PathBuf,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            insecure: Vec::new(),
            ca_file: None,
            certs_dir: PathBuf::from("/etc/docker/certs.d"),
        }
    }
}

impl HostOptions {
    /// The defaults plus `RBUILD_INSECURE_REGISTRIES` (comma-separated) and dockerd's
    /// `insecure-registries` from `/etc/docker/daemon.json` when that file exists.
    pub fn from_environment() -> Result<HostOptions, ClientError> {
        let mut options = HostOptions::default();
        if let Ok(list) = std::env::var("RBUILD_INSECURE_REGISTRIES") {
            options.insecure.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        options
            .insecure
            .extend(daemon_json_insecure(Path::new("/etc/docker/daemon.json"))?);
        Ok(options)
    }

    /// Where `registry` (a reference's registry part) is served, and how.
    pub fn endpoint(&self, registry: &str) -> Endpoint {
        let host = if registry == oci::reference::DOCKER_HUB {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            registry.to_string()
        };
        let transport = if is_loopback(&host) {
            // A CA given for a loopback registry means it speaks TLS (a test registry with
            // its own CA); without one, loopback is plain HTTP as dockerd's default allows.
            if self.has_ca(&host) {
                Transport::HttpsOrHttp
            } else {
                Transport::Http
            }
        } else if self.is_insecure(&host) {
            Transport::InsecureHttps
        } else {
            Transport::Https
        };
        Endpoint {
            registry: registry.to_string(),
            host,
            transport,
        }
    }

    fn is_insecure(&self, host: &str) -> bool {
        let bare = host_without_port(host);
        self.insecure.iter().any(|entry| {
            entry == host
                || entry == bare
                || match (entry.split_once('/'), bare.parse::<IpAddr>()) {
                    (Some((net, bits)), Ok(ip)) => in_cidr(ip, net, bits),
                    _ => false,
                }
        })
    }

    /// PEM files of the CAs to trust for `host`: the global one and `certs_dir/<host>/*.crt`.
    pub fn ca_files(&self, host: &str) -> Result<Vec<PathBuf>, ClientError> {
        let mut files: Vec<PathBuf> = self.ca_file.iter().cloned().collect();
        let dir = self.certs_dir.join(host);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "crt"))
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClientError::io(&dir)(e)),
        }
        Ok(files)
    }

    /// Whether a CA is configured for `host` (`--ca-cert` or certs.d).
    fn has_ca(&self, host: &str) -> bool {
        self.ca_files(host).is_ok_and(|files| !files.is_empty())
    }

    /// `certs_dir/<host>/client.cert` and `client.key`, when both exist (docker's mTLS files).
    pub fn client_identity(&self, host: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.certs_dir.join(host);
        let (cert, key) = (dir.join("client.cert"), dir.join("client.key"));
        (cert.is_file() && key.is_file()).then_some((cert, key))
    }
}

/// How to speak to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    /// An insecure registry: HTTPS without verifying the certificate, or plain HTTP when the
    /// host does not speak TLS at all (dockerd does the same).
    InsecureHttps,
    Http,
    /// A loopback registry with a CA configured: verified HTTPS, or plain HTTP when HTTPS
    /// fails and the host answers plain HTTP.
    HttpsOrHttp,
}

/// A registry as the client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as references name it (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// The host (and port) that serves it.
    pub host: String,
    pub transport: Transport,
}

impl Endpoint {
    /// The key of this registry's entry in docker's config.json.
    pub fn config_key(&self) -> String {
        config_key(&self.registry)
    }
}

/// The config.json key for a registry name as a user types it (`docker.io` → Docker Hub's
/// historic URL key, as docker writes it).
pub fn config_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            DOCKER_HUB_CONFIG_KEY.to_string()
        }
        other => other.to_string(),
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host_without_port(host);
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `insecure-registries` of dockerd's daemon.json; an absent file means none.
fn daemon_json_insecure(path: &Path) -> Result<Vec<String>, ClientError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClientError::io(path)(e)),
    };
    #[derive(serde::Deserialize)]
    struct Daemon {
        #[serde(rename = "insecure-registries", default)]
        insecure: Vec<String>,
    }
    let daemon: Daemon = serde_json::from_slice(&bytes).map_err(|e| ClientError::Config {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(daemon.insecure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_and_transports() {
        let options = HostOptions {
            insecure: vec!["reg.internal:5000".into(), "10.1.0.0/16".into()],
            ..HostOptions::default()
        };
        let hub = options.endpoint("docker.io");
        assert_eq!(hub.host, "registry-1.docker.io");
        assert_eq!(hub.transport, Transport::Https);
        assert_eq!(hub.config_key(), "https://index.docker.io/v1/");
        assert_eq!(
            options.endpoint("localhost:5000").transport,
            Transport::Http
        );
        assert_eq!(
            options.endpoint("127.0.0.1:41000").transport,
            Transport::Http
        );
        assert_eq!(options.endpoint("[::1]:5000").transport, Transport::Http);
        assert_eq!(
            options.endpoint("reg.internal:5000").transport,
            Transport::InsecureHttps
        );
        assert_eq!(options.endpoint("reg.internal").transport, Transport::Https);
        assert_eq!(
            options.endpoint("10.1.2.3:443").transport,
            Transport::InsecureHttps
        );
        assert_eq!(options.endpoint("10.2.2.3").transport, Transport::Https);
        assert_eq!(options.endpoint("ghcr.io").config_key(), "ghcr.io");
        let with_ca = HostOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..HostOptions::default()
        };
        assert_eq!(
            with_ca.endpoint("127.0.0.1:41000").transport,
            Transport::HttpsOrHttp
        );
        assert_eq!(with_ca.endpoint("reg.internal").transport, Transport::Https);
    }

    #[test]
    fn certs_dir_cas() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::write(host_dir.join("ca.crt"), "x").unwrap();
        std::fs::write(host_dir.join("notes.txt"), "x").unwrap();
        let options = HostOptions {
            certs_dir: dir.path().to_path_buf(),
            ..HostOptions::default()
        };
        assert_eq!(
            options.ca_files("reg.example:5000").unwrap(),
            vec![host_dir.join("ca.crt")]
        );
        assert!(options.ca_files("other").unwrap().is_empty());
    }
}
