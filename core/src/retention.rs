//! Retention rules: which tags of a repository a collection keeps
//! (`[repository."<prefix>".retention]`), decided from when each tag was pushed.

use std::collections::BTreeSet;

use regex::Regex;

use crate::names::Tag;
use crate::time::Millis;

/// One repository's rules. A tag is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep the tags pushed most recently, this many.
    pub keep_last: Option<usize>,
    /// Keep the tags matching any of these.
    pub keep_tags: Vec<Regex>,
    /// Keep the tags pushed within this many milliseconds.
    pub keep_within_ms: Option<u64>,
}

/// A tag as retention sees it: when it was pushed (`None` when that could not be told).
#[derive(Debug, Clone)]
pub struct TagPush {
    pub tag: Tag,
    pub pushed: Option<Millis>,
}

impl Retention {
    /// The tags of `tags` no rule keeps, at `now`. A tag whose push time is unknown is kept:
    /// a rule that cannot be evaluated keeps what it would judge. Without any rule, every
    /// tag is kept.
    pub fn untagged(&self, tags: &[TagPush], now: Millis) -> Vec<Tag> {
        if self.keep_last.is_none() && self.keep_tags.is_empty() && self.keep_within_ms.is_none() {
            return Vec::new();
        }
        let mut by_age: Vec<&TagPush> = tags.iter().filter(|t| t.pushed.is_some()).collect();
        // Newest first; ties by name, so two runs over the same tags decide alike.
        by_age.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.tag.cmp(&b.tag)));
        let newest: BTreeSet<&Tag> = by_age
            .iter()
            .take(self.keep_last.unwrap_or(0))
            .map(|t| &t.tag)
            .collect();
        tags.iter()
            .filter(|t| {
                let Some(pushed) = t.pushed else {
                    return false;
                };
                let recent = self
                    .keep_within_ms
                    .is_some_and(|within| now.since(pushed) < within);
                let matches = self.keep_tags.iter().any(|r| r.is_match(t.tag.as_str()));
                !(recent || matches || newest.contains(&t.tag))
            })
            .map(|t| t.tag.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(tag: &str, pushed: Option<u64>) -> TagPush {
        TagPush {
            tag: tag.parse().unwrap(),
            pushed: pushed.map(Millis),
        }
    }

    fn names(tags: Vec<Tag>) -> Vec<String> {
        tags.into_iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_the_matching_and_the_recent() {
        let tags = [
            push("v1", Some(100)),
            push("v2", Some(200)),
            push("v3", Some(300)),
            push("v4", Some(400)),
            push("release-1", Some(50)),
            push("unknown", None),
        ];
        let rule = Retention {
            keep_last: Some(2),
            keep_tags: vec![Regex::new("^release-").unwrap()],
            keep_within_ms: None,
        };
        assert_eq!(names(rule.untagged(&tags, Millis(1_000))), ["v1", "v2"]);
        let recent = Retention {
            keep_within_ms: Some(750),
            ..Retention::default()
        };
        // Pushed at 300 is 700 ms old at 1,000: kept; at 200, 800 ms: untagged.
        assert_eq!(
            names(recent.untagged(&tags, Millis(1_000))),
            ["v1", "v2", "release-1"]
        );
    }

    #[test]
    fn without_rules_every_tag_stays() {
        let tags = [push("a", Some(1)), push("b", None)];
        assert!(Retention::default().untagged(&tags, Millis(10)).is_empty());
        let none_kept = Retention {
            keep_last: Some(0),
            ..Retention::default()
        };
        assert_eq!(names(none_kept.untagged(&tags, Millis(10))), ["a"]);
    }
}
