//! `cache:` on a job: `[{ key: "cargo-{{ hash('Cargo.lock') }}", paths: [target/],
//! restore_keys: ["cargo-"] }]`, each key, path and prefix checked where it is written.

use super::*;
use gantry_model::cache::{CacheSpec, KeyTemplate};

pub const CACHE_KEYS: &[&str] = &["key", "paths", "restore_keys"];
/// The most caches one job may keep.
pub const MAX_CACHES: usize = 8;

impl Checker {
    pub(super) fn caches(&mut self, node: &Node, path: &str) -> Option<Vec<CacheSpec>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node,
                path,
                format!("`cache` must be a list, found {}", node.kind_name()),
                Some("each cache is `- key: …` with `paths: [target/]`".into()),
            );
            return None;
        };
        if items.len() > MAX_CACHES {
            self.error(
                node,
                path,
                format!("a job keeps at most {MAX_CACHES} caches"),
                None,
            );
            return None;
        }
        let mut out: Vec<CacheSpec> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{path}[{i}]");
            match self.cache(item, &f) {
                Some(c) if out.iter().any(|o| o.key == c.key) => {
                    self.error(
                        item,
                        &f,
                        format!("the key `{}` is used twice", c.key.text),
                        None,
                    );
                    ok = false;
                }
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn cache(&mut self, node: &Node, path: &str) -> Option<CacheSpec> {
        let what = "a cache";
        let fields = self.fields(node, path, what, CACHE_KEYS)?;
        let key = self.required(&fields, node, "key", what).and_then(|n| {
            let f = fields.field("key");
            let text = self.string(n, &f)?;
            match KeyTemplate::parse(&text) {
                Ok(t) => Some(t),
                Err((at, message)) => {
                    let plain = matches!(n.value, Value::Scalar { plain: true, .. });
                    let mut at_node = n.clone();
                    at_node.pos.col += at + usize::from(!plain);
                    at_node.width = 2;
                    self.error(
                        &at_node,
                        &f,
                        format!("in the key: {message}"),
                        Some("for example key: \"cargo-{{ hash('Cargo.lock') }}\"".into()),
                    );
                    None
                }
            }
        });
        let paths = self.required(&fields, node, "paths", what).and_then(|n| {
            let f = fields.field("paths");
            let before = self.diags.len();
            let paths: Vec<String> = self
                .string_list(n, &f)
                .into_iter()
                .enumerate()
                .filter_map(|(i, (p, item))| match path_problem(&p) {
                    Some(problem) => {
                        self.error(
                            &item,
                            &format!("{f}[{i}]"),
                            format!("path `{p}` {problem}"),
                            Some("cache paths are relative to the job's directory".into()),
                        );
                        None
                    }
                    None => Some(p),
                })
                .collect();
            if paths.is_empty() && self.diags.len() == before {
                self.error(n, &f, "a cache keeps some paths: the list is empty", None);
            }
            (self.diags.len() == before).then_some(paths)
        });
        let restore_keys = match fields.some("restore_keys") {
            None => Some(Vec::new()),
            Some(n) => {
                let f = fields.field("restore_keys");
                let before = self.diags.len();
                let keys: Vec<String> = self
                    .string_list(n, &f)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, (k, item))| {
                        if k.trim().is_empty() || k.contains("{{") {
                            self.error(
                                &item,
                                &format!("{f}[{i}]"),
                                "a restore key is a plain, non-empty prefix of keys",
                                Some("for example restore_keys: [\"cargo-\"]".into()),
                            );
                            None
                        } else {
                            Some(k)
                        }
                    })
                    .collect();
                (self.diags.len() == before).then_some(keys)
            }
        };
        Some(CacheSpec {
            key: key?,
            paths: paths?,
            restore_keys: restore_keys?,
        })
    }
}
