//! Caches of a job (`cache:`): what is kept between runs, under a key made from the workspace's
//! files, and how keys are written: text with `{{ hash('Cargo.lock') }}` parts.

/// `cache: [{ key, paths, restore_keys }]` on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub key: KeyTemplate,
    /// Files, directories or globs relative to the job's directory.
    pub paths: Vec<String>,
    /// Prefixes tried in order when no cache has the key: the newest cache whose key starts
    /// with one is restored (and the job saves its own key after).
    pub restore_keys: Vec<String>,
}

/// A cache key as written: literal text and `hash(...)` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    pub text: String,
    pub parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Text(String),
    /// The hash of these files of the workspace (relative paths), in order.
    Hash(Vec<String>),
}

/// The longest key, once made.
pub const MAX_KEY_BYTES: usize = 512;

impl KeyTemplate {
    /// Parses `cargo-{{ hash('Cargo.lock', 'rust-toolchain') }}`; the error says what and at
    /// which character.
    pub fn parse(text: &str) -> Result<KeyTemplate, (usize, String)> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(KeyPart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err((offset + open, "this `{{` is not closed with `}}`".into()));
            };
            let inner = after[..close].trim();
            let at = offset + open;
            let args = inner
                .strip_prefix("hash(")
                .and_then(|s| s.strip_suffix(')'))
                .ok_or((
                    at,
                    format!("`{inner}` is not `hash('file', …)`, the one thing a key may compute"),
                ))?;
            let mut files = Vec::new();
            for arg in args.split(',') {
                let arg = arg.trim();
                let unquoted = arg
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| arg.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match unquoted {
                    Some(f)
                        if !f.is_empty()
                            && !f.starts_with('/')
                            && !f.split('/').any(|c| c == "..") =>
                    {
                        files.push(f.to_string())
                    }
                    Some(f) => {
                        return Err((
                            at,
                            format!("`{f}` is not a file of the workspace (relative, no `..`)"),
                        ));
                    }
                    None => {
                        return Err((
                            at,
                            format!("`{arg}` should be a quoted file name: hash('Cargo.lock')"),
                        ));
                    }
                }
            }
            parts.push(KeyPart::Hash(files));
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        if rest.contains("}}") {
            return Err((
                offset + rest.find("}}").unwrap_or(0),
                "a `}}` without its `{{`".into(),
            ));
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err((0, "a cache key may not be empty".into()));
        }
        Ok(KeyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The key, each `hash(...)` made by `hash` (of the files' contents).
    pub fn make(&self, mut hash: impl FnMut(&[String]) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                KeyPart::Text(t) => t.clone(),
                KeyPart::Hash(files) => hash(files),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_a_table() {
        let t =
            KeyTemplate::parse("cargo-{{ hash('Cargo.lock', \"rust-toolchain\") }}-v1").unwrap();
        assert_eq!(
            t.parts,
            [
                KeyPart::Text("cargo-".into()),
                KeyPart::Hash(vec!["Cargo.lock".into(), "rust-toolchain".into()]),
                KeyPart::Text("-v1".into()),
            ]
        );
        assert_eq!(t.make(|f| format!("<{}>", f.len())), "cargo-<2>-v1");
        assert_eq!(
            KeyTemplate::parse("plain")
                .unwrap()
                .make(|_| unreachable!()),
            "plain"
        );
        for (bad, at, said) in [
            ("", 0, "may not be empty"),
            ("a-{{ hash('x')", 2, "not closed"),
            ("a-{{ env('HOME') }}", 2, "the one thing a key may compute"),
            ("{{ hash(x) }}", 0, "should be a quoted file name"),
            ("{{ hash('../secret') }}", 0, "not a file of the workspace"),
            (
                "{{ hash('/etc/passwd') }}",
                0,
                "not a file of the workspace",
            ),
            ("a }} b", 2, "without its `{{`"),
        ] {
            let (got_at, message) = KeyTemplate::parse(bad).unwrap_err();
            assert_eq!(got_at, at, "{bad}: {message}");
            assert!(message.contains(said), "{bad}: {message}");
        }
    }
}
