//! Tag listing (spec.md "Listing Tags", end-8a/8b) and the catalog (`/v2/_catalog`, from the
//! Docker Registry HTTP API V2 that the spec grew out of), both paginated with `n` and `last`.

use super::Registry;
use crate::error::{ErrorCode, RegistryError};
use crate::paths;
use crate::storage::StorageDriver;

/// One page of a sorted listing. `next_last` is set when more entries follow: it is the
/// `last` parameter of the next page's `Link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub next_last: Option<String>,
}

/// Cuts a page out of a listing: entries after `last` (exclusive), at most `n` of them.
/// Sorting is byte order, Go's `sort.Strings` ("ASCIIbetical", as the spec allows).
pub fn paginate(mut all: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    all.sort_unstable();
    all.dedup();
    let start = match last {
        Some(last) => all.partition_point(|t| t.as_str() <= last),
        None => 0,
    };
    let mut items: Vec<String> = all.drain(start..).collect();
    let mut next_last = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            // n == 0 must return an empty list and no Link (spec.md "Listing Tags").
            next_last = items.last().cloned();
        }
    }
    Page { items, next_last }
}

impl<S: StorageDriver> Registry<S> {
    pub async fn tags(
        &self,
        name: &str,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        if !self.repository_exists(name).await? {
            return Err(RegistryError::not_found(
                ErrorCode::NameUnknown,
                format!("repository {name} not known to registry"),
            ));
        }
        Ok(paginate(self.list_tags_unpaged(name).await?, n, last))
    }

    pub(super) async fn list_tags_unpaged(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        match self.driver.list(&paths::tags_dir(name)).await {
            Ok(tags) => Ok(tags),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page, RegistryError> {
        Ok(paginate(
            self.repositories_holding(&["_manifests", "_layers"])
                .await?,
            n,
            last,
        ))
    }

    /// Every repository whose directory holds one of `markers` (`_manifests`, `_layers`,
    /// `_uploads`). Names nest (`a/b` and `a/b/c` can both be repositories), so the walk
    /// continues below a repository.
    pub(super) async fn repositories_holding(
        &self,
        markers: &[&str],
    ) -> Result<Vec<String>, RegistryError> {
        let root = paths::repositories_root();
        let mut repos = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() {
                root.clone()
            } else {
                format!("{root}/{rel}")
            };
            let children = match self.driver.list(&dir).await {
                Ok(c) => c,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if !rel.is_empty() && children.iter().any(|c| markers.contains(&c.as_str())) {
                repos.push(rel.clone());
            }
            for child in children {
                if child.starts_with('_') {
                    continue;
                }
                if self
                    .driver
                    .stat(&format!("{dir}/{child}"))
                    .await
                    .is_ok_and(|m| m.is_dir)
                {
                    pending.push(if rel.is_empty() {
                        child
                    } else {
                        format!("{rel}/{child}")
                    });
                }
            }
        }
        Ok(repos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = s(&["b", "a", "d", "c"]);
        assert_eq!(
            paginate(all.clone(), None, None).items,
            s(&["a", "b", "c", "d"])
        );
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!((p.items, p.next_last), (s(&["a", "b"]), Some("b".into())));
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.next_last), (s(&["c", "d"]), None));
        let p = paginate(all.clone(), Some(0), None);
        assert_eq!((p.items, p.next_last), (vec![], None));
        assert_eq!(paginate(all, None, Some("bb")).items, s(&["c", "d"]));
    }
}
