//! Resources and actions: what a request needs, what a token grants, and their text form in
//! `scope` parameters (specs/docker-registry-auth/scope.md, "Resource Scope Grammar").

use std::collections::BTreeSet;

use axum::http::Method;
use serde::{Deserialize, Serialize};

use crate::http::route::Route;

pub const PULL: &str = "pull";
pub const PUSH: &str = "push";
pub const DELETE: &str = "delete";

/// One resource and actions on it: an entry of a token's `access` claim (jwt.md) and one
/// `resourcescope` of a scope string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceActions {
    pub fn new(resource_type: &str, name: &str, actions: &[&str]) -> Self {
        ResourceActions {
            resource_type: resource_type.to_string(),
            name: name.to_string(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Self::new("repository", name, actions)
    }

    /// `/v2/_catalog` spans the registry (scope.md "Example Resource Types").
    pub fn catalog() -> Self {
        Self::new("registry", "catalog", &["*"])
    }

    /// Parses one `resourcescope`. The name may itself hold one `:` (a registry port), so
    /// the type ends at the first colon and the actions start after the last (scope.md's note).
    /// A resource class (`repository(plugin)`) is deprecated and ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let (resource_type, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let resource_type = resource_type
            .split_once('(')
            .map_or(resource_type, |(t, _)| t);
        if resource_type.is_empty() || name.is_empty() {
            return None;
        }
        Some(ResourceActions {
            resource_type: resource_type.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// `type:name:a,b` with the actions in [`canonical_order`].
    pub fn to_scope(&self) -> String {
        let mut actions = self.actions.clone();
        canonical_order(&mut actions);
        format!("{}:{}:{}", self.resource_type, self.name, actions.join(","))
    }

    pub fn same_resource(&self, other: &ResourceActions) -> bool {
        self.resource_type == other.resource_type && self.name == other.name
    }
}

/// Parses a space-separated scope list (the `scope` of a challenge or of an OAuth2 POST);
/// entries that do not parse are dropped, as a token server grants nothing for them.
pub fn parse_scope_list(text: &str) -> Vec<ResourceActions> {
    text.split_whitespace()
        .filter_map(ResourceActions::parse)
        .collect()
}

/// A space-separated scope list, as challenges and OAuth2 responses carry it.
pub fn scope_list(access: &[ResourceActions]) -> String {
    access
        .iter()
        .map(ResourceActions::to_scope)
        .collect::<Vec<_>>()
        .join(" ")
}

/// pull, push, delete first (the order clients write them in), others after, sorted.
pub fn canonical_order(actions: &mut Vec<String>) {
    let rank = |a: &str| match a {
        PULL => 0,
        PUSH => 1,
        DELETE => 2,
        _ => 3,
    };
    actions.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    actions.dedup();
}

/// Whether `granted` covers every action of every entry of `needed`.
pub fn covers(granted: &[ResourceActions], needed: &[ResourceActions]) -> bool {
    needed.iter().all(|need| {
        let have: BTreeSet<&str> = granted
            .iter()
            .filter(|g| g.same_resource(need))
            .flat_map(|g| g.actions.iter().map(String::as_str))
            .collect();
        need.actions.iter().all(|a| have.contains(a.as_str()))
    })
}

/// The access a request needs, as distribution's `appendAccessRecords` works it out: reads
/// need `pull`; writes need `pull` and `push` (a client that pushes also reads what it wrote);
/// DELETE needs `delete`; a cross-repository mount also needs `pull` on the source. `/v2/`
/// needs only a valid identity: the empty list.
pub fn needed_access(
    route: &Route,
    method: &Method,
    query: &[(String, String)],
) -> Vec<ResourceActions> {
    let name = match route {
        Route::Base => return Vec::new(),
        Route::Catalog => return vec![ResourceActions::catalog()],
        Route::Tags { name }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Uploads { name }
        | Route::Upload { name, .. }
        | Route::Referrers { name, .. } => name,
    };
    let actions: &[&str] = match *method {
        Method::POST | Method::PUT | Method::PATCH => &[PULL, PUSH],
        Method::DELETE => &[DELETE],
        _ => &[PULL],
    };
    let mut needed = vec![ResourceActions::repository(name, actions)];
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    if let (Route::Uploads { .. }, &Method::POST, Some(_), Some(from)) =
        (route, method, param("mount"), param("from"))
    {
        if from != name.as_str() {
            needed.push(ResourceActions::repository(from, &[PULL]));
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_ports_and_classes() {
        let s = ResourceActions::parse("repository:localhost:5000/a/b:push,pull").unwrap();
        assert_eq!(s.name, "localhost:5000/a/b");
        assert_eq!(s.to_scope(), "repository:localhost:5000/a/b:pull,push");
        let p = ResourceActions::parse("repository(plugin):x:pull").unwrap();
        assert_eq!(p.resource_type, "repository");
        assert_eq!(
            ResourceActions::parse("registry:catalog:*").unwrap(),
            ResourceActions::catalog()
        );
        assert_eq!(ResourceActions::parse("nonsense"), None);
        assert_eq!(parse_scope_list("  repository:a:pull  bad ").len(), 1);
    }

    #[test]
    fn needs_per_route_and_method() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let manifest = Route::Manifest {
            name: "a/b".into(),
            reference: "1".into(),
        };
        assert_eq!(
            scope_list(&needed_access(&manifest, &Method::HEAD, &[])),
            "repository:a/b:pull"
        );
        assert_eq!(
            scope_list(&needed_access(&manifest, &Method::PUT, &[])),
            "repository:a/b:pull,push"
        );
        assert_eq!(
            scope_list(&needed_access(&manifest, &Method::DELETE, &[])),
            "repository:a/b:delete"
        );
        let uploads = Route::Uploads { name: "dst".into() };
        assert_eq!(
            scope_list(&needed_access(
                &uploads,
                &Method::POST,
                &q(&[("mount", "sha256:x"), ("from", "src")])
            )),
            "repository:dst:pull,push repository:src:pull"
        );
        assert!(needed_access(&Route::Base, &Method::GET, &[]).is_empty());
        assert_eq!(
            scope_list(&needed_access(&Route::Catalog, &Method::GET, &[])),
            "registry:catalog:*"
        );
    }

    #[test]
    fn coverage() {
        let granted = vec![
            ResourceActions::repository("a", &["pull"]),
            ResourceActions::repository("a", &["push"]),
        ];
        assert!(covers(
            &granted,
            &[ResourceActions::repository("a", &["pull", "push"])]
        ));
        assert!(!covers(
            &granted,
            &[ResourceActions::repository("b", &["pull"])]
        ));
        assert!(covers(&granted, &[]));
    }
}
