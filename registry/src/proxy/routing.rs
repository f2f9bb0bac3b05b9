//! Which upstream a request means, and under which names. Clients name an upstream three ways:
//!
//! - containerd's hosts.toml mirrors add `?ns=<registry host>` and send the upstream's own
//!   repository name (`/v2/library/busybox/manifests/latest?ns=docker.io`);
//! - a path prefix: the registry host or a configured prefix as the first component
//!   (`/v2/ghcr.io/org/app/...`; podman's registries.conf mirror `mirror:5000/hub`);
//! - nothing at all: dockerd's `registry-mirrors` (Docker Hub only) sends `/v2/library/x/...`,
//!   which goes to the default upstream unless the name is under a `proxy.local` prefix.
//!
//! Everything else is a local repository that accepts pushes.
//!
//! Cached content is stored in the ordinary storage under `<upstream name>/<upstream repo>`
//! (a `:` in the name becomes `-`), so that two upstreams' `library/busybox` never mix.

use std::sync::Arc;

use super::config::MirrorSettings;
use super::upstream::Upstream;

/// A mirrored repository: where it comes from and where it is cached.
#[derive(Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The repository's name at the upstream.
    pub remote: String,
    /// The repository in our storage that caches it.
    pub storage: String,
}

pub enum Resolution {
    Local,
    Mirrored(Target),
    /// `?ns=` named a registry no upstream is configured for.
    UnknownNamespace(String),
}

pub struct Routes {
    upstreams: Vec<Arc<Upstream>>,
    default: Option<Arc<Upstream>>,
    local: Vec<String>,
}

impl Routes {
    pub fn new(settings: &MirrorSettings, upstreams: Vec<Arc<Upstream>>) -> Routes {
        let default = settings
            .default
            .as_ref()
            .and_then(|d| upstreams.iter().find(|u| &u.settings.name == d).cloned());
        Routes {
            upstreams,
            default,
            local: settings.local.clone(),
        }
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Resolves the repository `name` of a request that carried `ns` (if any).
    pub fn resolve(&self, name: &str, ns: Option<&str>) -> Resolution {
        if let Some(ns) = ns.filter(|n| !n.is_empty()) {
            return match self.find(ns) {
                Some(u) => Resolution::Mirrored(target(u, name)),
                None => Resolution::UnknownNamespace(ns.to_string()),
            };
        }
        if let Some((first, rest)) = name.split_once('/') {
            if let Some(u) = self.find(first) {
                return Resolution::Mirrored(target(u, rest));
            }
        }
        let is_local = self
            .local
            .iter()
            .any(|p| name == p || name.starts_with(&format!("{p}/")));
        match &self.default {
            Some(u) if !is_local => Resolution::Mirrored(target(u, name)),
            _ => Resolution::Local,
        }
    }

    fn find(&self, key: &str) -> Option<&Arc<Upstream>> {
        self.upstreams
            .iter()
            .find(|u| u.settings.name == key || u.settings.prefixes.iter().any(|p| p == key))
    }

    /// The storage repositories of every upstream start with one of these + `/`.
    pub fn storage_prefixes(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .map(|u| storage_prefix(&u.settings.name))
            .collect()
    }
}

fn target(upstream: &Arc<Upstream>, name: &str) -> Target {
    // Docker Hub keeps official images under `library/` (docker's reference normalisation,
    // oci::reference); clients that name the upstream explicitly may leave it out.
    let remote = if upstream.settings.library && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_string()
    };
    Target {
        upstream: upstream.clone(),
        storage: format!("{}/{remote}", storage_prefix(&upstream.settings.name)),
        remote,
    }
}

/// The first storage path component of an upstream's cache: its name, made a valid repository
/// component (spec.md name grammar has no `:`).
pub fn storage_prefix(name: &str) -> String {
    name.replace(':', "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::ProxyConfig;

    fn routes(yaml: &str) -> Routes {
        let settings = serde_yaml::from_str::<ProxyConfig>(yaml)
            .unwrap()
            .settings()
            .unwrap()
            .unwrap();
        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone()).unwrap()))
            .collect();
        Routes::new(&settings, upstreams)
    }

    fn mirrored(r: Resolution) -> (String, String, String) {
        match r {
            Resolution::Mirrored(t) => (t.upstream.settings.name.clone(), t.remote, t.storage),
            _ => panic!("not mirrored"),
        }
    }

    #[test]
    fn three_ways_to_name_an_upstream() {
        let r = routes("upstreams:\n  - name: docker.io\n    remoteurl: http://127.0.0.1:1\n    prefixes: [hub]\n  - name: ghcr.io:443\n    remoteurl: https://ghcr.io\nlocal: [team]\n");
        let m = |name: &str, ns: Option<&str>| mirrored(r.resolve(name, ns));
        let hub = |remote: &str| {
            (
                "docker.io".to_string(),
                remote.to_string(),
                format!("docker.io/{remote}"),
            )
        };
        assert_eq!(m("library/busybox", None), hub("library/busybox"));
        assert_eq!(
            m("library/busybox", Some("docker.io")),
            hub("library/busybox")
        );
        assert_eq!(m("docker.io/busybox", None), hub("library/busybox"));
        assert_eq!(m("hub/library/busybox", None), hub("library/busybox"));
        assert_eq!(
            m("org/app", Some("ghcr.io:443")),
            (
                "ghcr.io:443".into(),
                "org/app".into(),
                "ghcr.io-443/org/app".into()
            )
        );
        assert!(matches!(r.resolve("team/app", None), Resolution::Local));
        assert!(matches!(
            r.resolve("x", Some("quay.io")),
            Resolution::UnknownNamespace(_)
        ));
        let no_default = routes("upstreams:\n  - name: ghcr.io\n    remoteurl: https://ghcr.io\n");
        assert!(matches!(
            no_default.resolve("library/busybox", None),
            Resolution::Local
        ));
        assert_eq!(mirrored(no_default.resolve("ghcr.io/a", None)).1, "a");
    }
}
