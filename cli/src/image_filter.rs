//! docker's `--filter` for `rbuild images` and `rbuild prune`: `dangling=true|false`,
//! `reference=PATTERN`, `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`, `before=IMAGE`,
//! `since=IMAGE`, `until=TIME`. As docker's: several `reference` filters match any of them,
//! several `label` filters all of them; a name matches a reference pattern (Go's `path.Match`)
//! by its familiar form with or without its tag (`app:*`, `*/busybox`).

use anyhow::{bail, Context, Result};
use image_store::{ImageRecord, Store};
use oci::image::ImageConfig;
use oci::timestamp::{now_unix, parse_go_duration, parse_rfc3339};
use oci::Reference;

#[derive(Default)]
pub struct ImageFilter {
    dangling: Option<bool>,
    references: Vec<String>,
    /// (key, value if given, whether it must *not* match)
    labels: Vec<(String, Option<String>, bool)>,
    /// Images created before this (seconds since the epoch), from `before`.
    before: Option<i64>,
    /// Images created after this, from `since`.
    since: Option<i64>,
    /// Images created before this, from `until`.
    until: Option<i64>,
}

impl ImageFilter {
    /// Parses `KEY=VALUE` filters; `allowed` are the keys this command takes.
    pub fn parse(store: &Store, filters: &[String], allowed: &[&str]) -> Result<ImageFilter> {
        let mut filter = ImageFilter::default();
        for text in filters {
            let (key, value) = match text.split_once("!=") {
                Some(("label", value)) => ("label!", value),
                _ => text.split_once('=').with_context(|| {
                    format!("bad format of filter {text:?} (expected name=value)")
                })?,
            };
            if !allowed.contains(&key.trim_end_matches('!')) {
                bail!("invalid filter {key:?}");
            }
            match key {
                "dangling" => {
                    filter.dangling = Some(match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter 'dangling={value}'"),
                    })
                }
                "reference" => {
                    builder::context::wildcard::go_match(value.as_bytes(), b"")
                        .map_err(|e| anyhow::anyhow!("--filter {text:?}: {e}"))?;
                    filter.references.push(value.to_string());
                }
                "label" | "label!" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_string())),
                        None => (value, None),
                    };
                    filter.labels.push((k.to_string(), v, key == "label!"));
                }
                "before" | "since" => {
                    let image = store.resolve(value)?;
                    let (_, config, _) = store.image_config(&image)?;
                    let created = created_unix(&config);
                    match key {
                        "before" => filter.before = Some(created),
                        _ => filter.since = Some(created),
                    }
                }
                "until" => filter.until = Some(parse_timestamp(value)?),
                _ => bail!("invalid filter {key:?}"),
            }
        }
        Ok(filter)
    }

    /// Whether the image passes the filters on what it is (dangling, labels, times).
    pub fn image_matches(&self, image: &ImageRecord, config: &ImageConfig) -> bool {
        if self.dangling.is_some_and(|d| d != image.names.is_empty()) {
            return false;
        }
        let labels = config.config.as_ref().map(|c| &c.labels);
        let labels_match = self.labels.iter().all(|(key, value, negated)| {
            let found = labels.and_then(|l| l.get(key));
            let matches = match value {
                Some(v) => found == Some(v),
                None => found.is_some(),
            };
            matches != *negated
        });
        let created = created_unix(config);
        labels_match
            && self.before.is_none_or(|t| created < t)
            && self.since.is_none_or(|t| created > t)
            && self.until.is_none_or(|t| created < t)
    }

    /// Whether a name of the image passes the `reference` filters.
    pub fn name_matches(&self, name: &Reference) -> bool {
        if self.references.is_empty() {
            return true;
        }
        let familiar = name.familiar_name();
        let with_tag = match &name.tag {
            Some(tag) => format!("{familiar}:{tag}"),
            None => familiar.clone(),
        };
        self.references.iter().any(|pattern| {
            [&with_tag, &familiar].iter().any(|candidate| {
                builder::context::wildcard::go_match(pattern.as_bytes(), candidate.as_bytes())
                    .unwrap_or(false)
            })
        })
    }

    /// Whether only images with a name matching a `reference` filter pass.
    pub fn has_references(&self) -> bool {
        !self.references.is_empty()
    }
}

fn created_unix(config: &ImageConfig) -> i64 {
    config
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or(0)
}

/// A time as docker's filters take it: a Go duration before now (`24h`), seconds since the
/// epoch, an RFC 3339 time, or a date.
fn parse_timestamp(value: &str) -> Result<i64> {
    if let Ok(ago) = parse_go_duration(value) {
        return Ok(now_unix() - ago.as_secs() as i64);
    }
    if let Ok(seconds) = value.split('.').next().unwrap_or(value).parse::<i64>() {
        return Ok(seconds);
    }
    let rfc3339 = match value.len() {
        10 => format!("{value}T00:00:00Z"),
        _ => value.to_string(),
    };
    parse_rfc3339(&rfc3339).with_context(|| format!("invalid time {value:?} in filter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_as_docker_familiar_match() {
        let filter = ImageFilter {
            references: vec!["app:*".into(), "*/busybox".into()],
            ..ImageFilter::default()
        };
        let name = |s: &str| Reference::parse(s).unwrap();
        assert!(filter.name_matches(&name("app:1")));
        assert!(filter.name_matches(&name("docker.io/library/app:latest")));
        assert!(filter.name_matches(&name("me/busybox:1")));
        assert!(!filter.name_matches(&name("other:1")));
        assert!(!filter.name_matches(&name("a/b/busybox:1")));
    }

    #[test]
    fn timestamps_as_docker_takes_them() {
        assert_eq!(parse_timestamp("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_timestamp("2023-11-14").unwrap(), 1_699_920_000);
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000
        );
        assert!((now_unix() - 86_400 - parse_timestamp("24h").unwrap()).abs() <= 1);
        assert!(parse_timestamp("yesterday").is_err());
    }
}
