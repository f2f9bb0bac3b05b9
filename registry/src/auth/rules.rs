//! Who may do what: `auth.access` rules (repository globs, users, actions) and
//! `auth.anonymous` repositories. Used by htpasswd Basic auth and by the built-in token
//! issuer; an external issuer's tokens carry their own grants.
//!
//! Grants add up: a user gets the union of the actions of every rule that names them (or
//! `*`) and matches the repository. Without any rule, every authenticated user may do
//! everything, which is distribution's htpasswd behaviour.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::scope::{canonical_order, ResourceActions, DELETE, PULL, PUSH};
use super::AuthSetupError;

/// One `auth.access` entry as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRuleConfig {
    /// A glob over repository names: `*` stays within one path component, `**` crosses `/`.
    pub repository: String,
    /// User names; `*` means every authenticated user.
    pub users: Vec<String>,
    /// `pull`, `push`, `delete`, or `*` for all three.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    repository: Glob,
    users: Vec<String>,
    actions: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    anonymous: Vec<Glob>,
}

impl Rules {
    pub fn new(access: &[AccessRuleConfig], anonymous: &[String]) -> Result<Rules, AuthSetupError> {
        let mut rules = Vec::with_capacity(access.len());
        for rule in access {
            let mut actions = Vec::new();
            for action in &rule.actions {
                match action.as_str() {
                    "*" => actions.extend([PULL, PUSH, DELETE].map(String::from)),
                    PULL | PUSH | DELETE => actions.push(action.clone()),
                    other => {
                        return Err(AuthSetupError::Invalid(format!(
                        "auth.access: unknown action {other:?} for {:?} (pull, push, delete or *)",
                        rule.repository
                    )))
                    }
                }
            }
            canonical_order(&mut actions);
            if rule.users.is_empty() {
                return Err(AuthSetupError::Invalid(format!(
                    "auth.access: the rule for {:?} names no users",
                    rule.repository
                )));
            }
            rules.push(Rule {
                repository: Glob::new(&rule.repository)?,
                users: rule.users.clone(),
                actions,
            });
        }
        let anonymous = anonymous
            .iter()
            .map(|g| Glob::new(g))
            .collect::<Result<_, _>>()?;
        Ok(Rules { rules, anonymous })
    }

    /// The actions of `requested` that `user` (None: anonymous) is granted, per token.md
    /// "the intersection of the requested and granted sets"; `None` when nothing is left.
    pub fn grant(
        &self,
        user: Option<&str>,
        requested: &ResourceActions,
    ) -> Option<ResourceActions> {
        let allowed = self.allowed(user, &requested.resource_type, &requested.name);
        let mut actions: Vec<String> = requested
            .actions
            .iter()
            .filter(|a| allowed.contains(a.as_str()) || (allowed.contains("*") && !a.is_empty()))
            .cloned()
            .collect();
        canonical_order(&mut actions);
        (!actions.is_empty()).then(|| ResourceActions {
            actions,
            ..requested.clone()
        })
    }

    /// Whether `user` is granted every action in `needed`.
    pub fn allows(&self, user: Option<&str>, needed: &[ResourceActions]) -> bool {
        needed.iter().all(|need| {
            self.grant(user, need)
                .is_some_and(|g| g.actions.len() == need.actions.len())
        })
    }

    fn allowed(&self, user: Option<&str>, resource_type: &str, name: &str) -> BTreeSet<&str> {
        let mut allowed = BTreeSet::new();
        match (resource_type, user) {
            ("repository", None) if self.anonymous.iter().any(|g| g.matches(name)) => {
                allowed.insert(PULL);
            }
            ("repository", Some(user)) => {
                if self.rules.is_empty() {
                    allowed.extend([PULL, PUSH, DELETE]);
                }
                for rule in &self.rules {
                    if rule.users.iter().any(|u| u == "*" || u == user)
                        && rule.repository.matches(name)
                    {
                        allowed.extend(rule.actions.iter().map(String::as_str));
                    }
                }
                if self.anonymous.iter().any(|g| g.matches(name)) {
                    allowed.insert(PULL);
                }
            }
            // Listing the catalog is for signed-in users; it shows names, not content.
            ("registry", Some(_)) if name == "catalog" => {
                allowed.insert("*");
            }
            _ => {}
        }
        allowed
    }
}

/// A repository glob: `*` matches within one path component, `**` any run of characters
/// including `/`, `?` one character other than `/`; everything else is literal.
#[derive(Debug, Clone)]
struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    fn new(pattern: &str) -> Result<Glob, AuthSetupError> {
        if pattern.is_empty() {
            return Err(AuthSetupError::Invalid(
                "auth: an empty repository pattern".into(),
            ));
        }
        Ok(Glob {
            pattern: pattern.chars().collect(),
        })
    }

    fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        glob_match(&self.pattern, &name)
    }
}

fn glob_match(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            (0..=s.len()).any(|i| glob_match(rest, &s[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            let limit = s.iter().position(|&c| c == '/').unwrap_or(s.len());
            (0..=limit).any(|i| glob_match(rest, &s[i..]))
        }
        Some('?') => s.first().is_some_and(|&c| c != '/') && glob_match(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repository: &str, users: &[&str], actions: &[&str]) -> AccessRuleConfig {
        AccessRuleConfig {
            repository: repository.into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, n: &str| Glob::new(p).unwrap().matches(n);
        assert!(g("team/*", "team/app"));
        assert!(!g("team/*", "team/app/x"));
        assert!(g("team/**", "team/app/x"));
        assert!(g("**", "a/b/c"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "a/c"));
        assert!(!g("team/*", "other/app"));
        assert!(g("exact", "exact"));
    }

    #[test]
    fn grants_add_up_and_intersect() {
        let rules = Rules::new(
            &[
                rule("team/**", &["alice"], &["*"]),
                rule("**", &["*"], &["pull"]),
                rule("bob/*", &["bob"], &["pull", "push"]),
            ],
            &["public/*".into()],
        )
        .unwrap();
        let pull_push = |n: &str| ResourceActions::repository(n, &["pull", "push"]);
        assert_eq!(
            rules
                .grant(Some("alice"), &pull_push("team/a"))
                .unwrap()
                .actions,
            ["pull", "push"]
        );
        assert_eq!(
            rules
                .grant(Some("bob"), &pull_push("team/a"))
                .unwrap()
                .actions,
            ["pull"]
        );
        assert!(rules.allows(Some("bob"), &[pull_push("bob/x")]));
        assert!(!rules.allows(Some("bob"), &[pull_push("team/a")]));
        assert!(rules.grant(None, &pull_push("team/a")).is_none());
        assert_eq!(
            rules.grant(None, &pull_push("public/x")).unwrap().actions,
            ["pull"]
        );
        assert!(rules.allows(Some("carol"), &[ResourceActions::catalog()]));
        assert!(!rules.allows(None, &[ResourceActions::catalog()]));
    }

    #[test]
    fn no_rules_means_everything_for_users() {
        let rules = Rules::new(&[], &[]).unwrap();
        let all = ResourceActions::repository("x", &["pull", "push", "delete"]);
        assert!(rules.allows(Some("anyone"), std::slice::from_ref(&all)));
        assert!(!rules.allows(None, &[all]));
        assert!(Rules::new(&[rule("x", &["a"], &["write"])], &[]).is_err());
        assert!(Rules::new(&[rule("x", &[], &["pull"])], &[]).is_err());
    }
}
