//! `matrix:` on a job: `{ python: ["3.11", "3.12"], os: [debian, alpine], exclude: [...],
//! include: [...] }` expands the job into one job per combination, named `test (3.12, debian)`,
//! whose steps see the values as variables named by the keys. An artifact's name may say
//! `${key}` so that each combination's is its own.

use super::*;
use gantry_model::MatrixCell;

/// The most combinations one matrix may make (a hostile file must not make a million jobs).
pub const MAX_CELLS: usize = 256;

type Cell = Vec<(String, String)>;

impl Checker {
    /// The combinations of `node`, in order: the product of the keys' values (first key
    /// slowest), less `exclude`, then `include`.
    pub(super) fn matrix(&mut self, node: &Node, path: &str) -> Option<Vec<Cell>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node,
                path,
                format!("`matrix` must be a mapping, found {}", node.kind_name()),
                Some("for example matrix: { python: [\"3.11\", \"3.12\"] }".into()),
            );
            return None;
        };
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        let (mut exclude, mut include) = (None, None);
        let mut ok = true;
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.error(key, path, "matrix keys must be plain names", None);
                ok = false;
                continue;
            };
            let f = join(path, name);
            match name {
                "exclude" => exclude = Some(value),
                "include" => include = Some(value),
                _ if !self.env_name(key, &f, name) => ok = false,
                _ if axes.iter().any(|(k, _)| k == name) => {
                    self.error(key, &f, format!("duplicate key `{name}`"), None);
                    ok = false;
                }
                _ => match self.axis(value, &f) {
                    Some(values) => axes.push((name.to_string(), values)),
                    None => ok = false,
                },
            }
        }
        if axes.is_empty() && ok {
            self.error(
                node,
                path,
                "`matrix` names no variable",
                Some("for example matrix: { python: [\"3.11\", \"3.12\"] }".into()),
            );
            return None;
        }
        if !ok {
            return None;
        }
        let total = axes
            .iter()
            .map(|(_, v)| v.len())
            .try_fold(1usize, |a, n| a.checked_mul(n));
        if total.is_none_or(|t| t > MAX_CELLS) {
            self.error(
                node,
                path,
                format!("the matrix makes more than {MAX_CELLS} jobs"),
                Some("split it, or list the combinations you need with `include`".into()),
            );
            return None;
        }
        let mut cells: Vec<Cell> = vec![Vec::new()];
        for (key, values) in &axes {
            cells = cells
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        if let Some(ex) = exclude {
            let f = join(path, "exclude");
            let (list, good) = self.combos(ex, &f, &axes);
            ok &= good;
            for (i, pattern, item) in list {
                let before = cells.len();
                cells.retain(|c| !pattern.iter().all(|kv| c.contains(kv)));
                if cells.len() == before {
                    self.error(
                        &item,
                        &format!("{f}[{i}]"),
                        "this exclusion matches no combination",
                        Some("its values must be ones the matrix lists".into()),
                    );
                    ok = false;
                }
            }
        }
        if let Some(inc) = include {
            let f = join(path, "include");
            let (list, good) = self.combos(inc, &f, &axes);
            ok &= good;
            for (i, combo, item) in list {
                if combo.len() != axes.len() {
                    let missing: Vec<&str> = axes
                        .iter()
                        .filter(|(k, _)| !combo.iter().any(|(c, _)| c == k))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    self.error(
                        &item,
                        &format!("{f}[{i}]"),
                        format!(
                            "an included combination gives every key: missing {}",
                            missing.join(", ")
                        ),
                        None,
                    );
                    ok = false;
                    continue;
                }
                // In the matrix's key order.
                let cell: Cell = axes
                    .iter()
                    .filter_map(|(k, _)| combo.iter().find(|(c, _)| c == k).cloned())
                    .collect();
                if cells.contains(&cell) {
                    self.error(
                        &item,
                        &format!("{f}[{i}]"),
                        "this combination is in the matrix already",
                        None,
                    );
                    ok = false;
                } else if cells.len() == MAX_CELLS {
                    self.error(
                        &item,
                        &format!("{f}[{i}]"),
                        format!("the matrix makes more than {MAX_CELLS} jobs"),
                        None,
                    );
                    return None;
                } else {
                    cells.push(cell);
                }
            }
        }
        if cells.is_empty() && ok {
            self.error(
                node,
                path,
                "every combination is excluded: the job would never run",
                None,
            );
            return None;
        }
        ok.then_some(cells)
    }

    /// One key's values: a non-empty list of scalars, none twice.
    fn axis(&mut self, node: &Node, field: &str) -> Option<Vec<String>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node,
                field,
                format!(
                    "a matrix key takes a list of values, found {}",
                    node.kind_name()
                ),
                Some("for example python: [\"3.11\", \"3.12\"]".into()),
            );
            return None;
        };
        if items.is_empty() {
            self.error(node, field, "an empty list makes no job", None);
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match &item.value {
                Value::Scalar { text, .. } if out.contains(text) => {
                    self.error(item, &f, format!("`{text}` is listed twice"), None);
                    ok = false;
                }
                Value::Scalar { text, .. } if text.chars().any(char::is_control) => {
                    self.error(
                        item,
                        &f,
                        "a matrix value may not hold control characters",
                        None,
                    );
                    ok = false;
                }
                Value::Scalar { text, .. } => out.push(text.clone()),
                _ => {
                    self.error(
                        item,
                        &f,
                        format!(
                            "a matrix value is a string or a number, found {}",
                            item.kind_name()
                        ),
                        None,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The well-formed mappings of `exclude` or `include` with their indices, each checked
    /// against the matrix's keys; and whether all were well-formed.
    fn combos(
        &mut self,
        node: &Node,
        field: &str,
        axes: &[(String, Vec<String>)],
    ) -> (Vec<(usize, Cell, Node)>, bool) {
        let Value::Seq(items) = &node.value else {
            self.error(
                node,
                field,
                format!(
                    "expected a list of combinations, found {}",
                    node.kind_name()
                ),
                Some("for example exclude: [{ python: \"3.11\", os: alpine }]".into()),
            );
            return (Vec::new(), false);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Value::Map(entries) = &item.value else {
                self.error(
                    item,
                    &f,
                    format!("a combination is a mapping, found {}", item.kind_name()),
                    None,
                );
                ok = false;
                continue;
            };
            let mut combo: Cell = Vec::new();
            let mut good = true;
            for (k, v) in entries {
                let name = k.as_scalar().unwrap_or("");
                let kf = join(&f, name);
                if !axes.iter().any(|(a, _)| a == name) {
                    let help = suggest(name, axes.iter().map(|(a, _)| a.as_str()))
                        .map(|s| format!("did you mean `{s}`?"));
                    self.error(k, &kf, format!("`{name}` is not a key of the matrix"), help);
                    good = false;
                    continue;
                }
                match v.as_scalar() {
                    Some(text) => combo.push((name.to_string(), text.to_string())),
                    None => {
                        self.error(v, &kf, "a matrix value is a string or a number", None);
                        good = false;
                    }
                }
            }
            if good {
                out.push((i, combo, item.clone()));
            }
            ok &= good;
        }
        (out, ok)
    }
}

/// The jobs of `job` for `cells`: named `name (v1, v2)` (a `/` in a value shows as `-`, as job
/// names have none), the values as their `matrix`, `${key}` in artifact names replaced.
pub(super) fn expand(job: Job, cells: Vec<Cell>) -> Vec<Job> {
    cells
        .into_iter()
        .map(|values| {
            let shown: Vec<String> = values.iter().map(|(_, v)| v.replace('/', "-")).collect();
            let mut j = job.clone();
            j.name = format!("{} ({})", job.name, shown.join(", "));
            for a in &mut j.artifacts {
                for (k, v) in &values {
                    a.name = a.name.replace(&format!("${{{k}}}"), &v.replace('/', "-"));
                }
            }
            j.matrix = Some(MatrixCell {
                of: job.name.clone(),
                values,
            });
            j
        })
        .collect()
}
