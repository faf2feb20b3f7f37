//! The `[repository."<name or prefix>"]` tables, compiled into the core's repository
//! settings: each table's access policy, immutable tags, mirror keys and retention, and the
//! client settings of every upstream the tables name.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use stowage_core::repositories::{ImmutableTags, Repositories, RepositorySettings};
use stowage_core::retention::Retention;
use stowage_upstream::UpstreamSettings;

use crate::access::{self, PolicyEntry};
use crate::invalid::Invalid;
use crate::mirror::{self, UpstreamEntry};

/// `[repository."<name or prefix>"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryEntry {
    pub access_policy: Option<PolicyEntry>,
    #[serde(default)]
    pub immutable_tags: bool,
    /// Regexes of tags that stay mutable (`^latest$`).
    #[serde(default)]
    pub immutable_tags_exclusions: Vec<String>,
    /// `[[repository."<prefix>".upstream]]`: the registries the prefix mirrors, in order.
    #[serde(default)]
    pub upstream: Vec<UpstreamEntry>,
    /// How long an upstream's answer about a tag is trusted (default 300).
    pub tag_ttl_secs: Option<u64>,
    /// Whether a mirrored prefix takes pushes and deletes.
    #[serde(default)]
    pub allow_push: bool,
    /// `[repository."<prefix>".retention]`: which tags a collection keeps.
    pub retention: Option<RetentionEntry>,
}

/// `[repository."<prefix>".retention]`: a tag is kept when any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionEntry {
    /// Keep this many of the most recently pushed tags.
    pub keep_last: Option<usize>,
    /// Keep the tags matching any of these regexes.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Keep the tags pushed within this many seconds.
    pub keep_within_secs: Option<u64>,
}

/// Regexes of a setting at `key`, compiled.
fn regexes(key: &str, patterns: &[String]) -> Result<Vec<Regex>, Invalid> {
    patterns
        .iter()
        .map(|pattern| {
            Regex::new(pattern).map_err(|e| Invalid {
                key: key.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A retention table, compiled; one without a rule is refused (it would keep every tag,
/// surely not what was meant).
fn retention(key: &str, entry: &RetentionEntry) -> Result<Retention, Invalid> {
    if entry.keep_last.is_none() && entry.keep_tags.is_empty() && entry.keep_within_secs.is_none() {
        return Err(Invalid {
            key: key.to_owned(),
            reason: "no rule: set keep_last, keep_tags or keep_within_secs".to_owned(),
        });
    }
    Ok(Retention {
        keep_last: entry.keep_last,
        keep_tags: regexes(&format!("{key}.keep_tags"), &entry.keep_tags)?,
        keep_within_ms: entry.keep_within_secs.map(|s| s.saturating_mul(1000)),
    })
}

/// Every `[repository."<prefix>"]` table, compiled.
pub fn compile(entries: &BTreeMap<String, RepositoryEntry>) -> Result<Repositories, Invalid> {
    let mut compiled = Vec::with_capacity(entries.len());
    let mut next_upstream = 0;
    for (prefix, entry) in entries {
        let key = format!("repository.{prefix:?}");
        let access_policy = entry
            .access_policy
            .as_ref()
            .map(|p| access::compile(format!("{key}.access_policy"), p))
            .transpose()?;
        let exclusions = regexes(
            &format!("{key}.immutable_tags_exclusions"),
            &entry.immutable_tags_exclusions,
        )?;
        let immutable_tags = entry.immutable_tags.then_some(ImmutableTags { exclusions });
        let mirror = mirror::compile(
            &key,
            &entry.upstream,
            entry.tag_ttl_secs,
            entry.allow_push,
            &mut next_upstream,
        )?;
        let retention = entry
            .retention
            .as_ref()
            .map(|r| retention(&format!("{key}.retention"), r))
            .transpose()?;
        compiled.push((
            prefix.clone(),
            RepositorySettings {
                access_policy,
                immutable_tags,
                mirror,
                retention,
            },
        ));
    }
    Ok(Repositories::new(compiled))
}

/// Every upstream of every table, in the order they are numbered.
fn numbered(
    entries: &BTreeMap<String, RepositoryEntry>,
) -> impl Iterator<Item = (&String, &UpstreamEntry)> {
    entries
        .iter()
        .flat_map(|(prefix, entry)| entry.upstream.iter().map(move |u| (prefix, u)))
}

/// The client settings of every upstream, by number.
pub fn upstream_settings(
    entries: &BTreeMap<String, RepositoryEntry>,
) -> Result<Vec<UpstreamSettings>, Invalid> {
    numbered(entries)
        .map(|(prefix, upstream)| {
            mirror::settings(&format!("repository.{prefix:?}.upstream"), upstream)
        })
        .collect()
}
