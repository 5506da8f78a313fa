//! Copying a whole state store into another (`gantry migrate-state`): every table, row by row
//! with its ids, in one transaction of the target, so the copy is all there or not at all. The
//! source is read in one transaction too (one snapshot, even if something writes meanwhile).
//! The target must be empty; its identity sequences are moved past the copied ids, so the next
//! run gets the number after the last one copied. Tables are copied parents first, the order
//! read from the target's foreign keys.

use super::{Backend, SqlStore};
use anyhow::{Context, Result, bail};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row};
use std::collections::BTreeMap;

/// The most parameters one `INSERT` binds (PostgreSQL allows 65,535; SQLite 32,766).
const MAX_BINDS: usize = 30_000;

/// Tables not copied: owners' leases belong to the processes of the old store, and end with them.
const NOT_COPIED: &[&str] = &["owners"];

/// Rows read from the source at a time, for tables with ids.
const PAGE: usize = 10_000;

/// What a copy moved: each table's name and its number of rows, in the order copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// A table of the schema: its columns (in order) and whether each holds integers.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<(String, bool)>,
    /// Whether `id` is an identity column (PostgreSQL) whose sequence must follow the copy.
    identity: bool,
}

impl SqlStore {
    /// Copies every row of `self` into `target`, which must hold no rows yet. Nothing is
    /// written to `target` unless all of it is, and both sides' counts agree.
    pub async fn copy_into(&self, target: &SqlStore) -> Result<CopyReport> {
        let tables = target.schema().await?;
        // Before the source's transaction: a store of one connection (a command's) has none
        // to spare while that transaction holds it.
        let source_tables = self.schema().await?;
        let mut source = self
            .pool
            .begin()
            .await
            .with_context(|| format!("reading {}", self.name))?;
        let mut tx = target
            .write_tx()
            .await
            .with_context(|| format!("writing to {}", target.name))?;
        for t in &tables {
            let n = count(&mut tx, &t.name).await?;
            if n > 0 {
                bail!(
                    "{} already holds state ({n} rows in `{}`): copy into an empty database, so no history is mixed or overwritten",
                    target.name,
                    t.name
                );
            }
        }
        // A table only the source has would be left behind: refused while it holds rows.
        for t in source_tables {
            if !tables.iter().any(|o| o.name == t.name) && count(&mut source, &t.name).await? > 0 {
                bail!(
                    "{} has a table `{}` that {} has not: is the target an older version's schema?",
                    self.name,
                    t.name,
                    target.name
                );
            }
        }
        let mut report = CopyReport { tables: Vec::new() };
        for t in &tables {
            let per_insert = (MAX_BINDS / t.columns.len().max(1)).clamp(1, 1000);
            let id_column = t.columns.iter().position(|(c, _)| c == "id");
            let mut read = 0u64;
            let mut after: Option<i64> = None;
            loop {
                // Tables with ids are read a page at a time, so a long history is never held
                // in memory at once.
                let page = read_table(&mut source, self.backend, t, id_column.map(|_| after))
                    .await
                    .with_context(|| format!("reading `{}` from {}", t.name, self.name))?;
                for chunk in page.chunks(per_insert) {
                    insert_rows(&mut tx, t, chunk)
                        .await
                        .map_err(|e| target.write_error(e, &format!("copying `{}`", t.name)))?;
                }
                read += page.len() as u64;
                let last = id_column.and_then(|i| match page.last().map(|r| &r[i]) {
                    Some(Value::Integer(id)) => *id,
                    _ => None,
                });
                match last {
                    Some(id) if page.len() == PAGE => after = Some(id),
                    _ => break,
                }
            }
            let copied = count(&mut tx, &t.name).await?;
            if copied != read {
                bail!(
                    "copying `{}`: {read} rows read but {copied} written; nothing was copied",
                    t.name
                );
            }
            if t.identity {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'), (SELECT COALESCE(MAX(id), 0) + 1 FROM {0}), false)",
                    t.name
                );
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("moving the ids of `{}` past the copy", t.name))?;
            }
            report.tables.push((t.name.clone(), copied));
        }
        tx.commit()
            .await
            .map_err(|e| target.write_error(e, "committing the copy"))?;
        source.rollback().await.ok();
        Ok(report)
    }

    /// The tables of this store's schema (not the migrations' own), parents before children.
    async fn schema(&self) -> Result<Vec<Table>> {
        let mut columns: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        let mut identity: Vec<String> = Vec::new();
        let mut parents: Vec<(String, String)> = Vec::new();
        match self.backend {
            Backend::Postgres => {
                let rows = sqlx::query(
                    "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, is_identity::text AS ident \
                     FROM information_schema.columns WHERE table_schema = current_schema() \
                     AND table_name <> '_sqlx_migrations' ORDER BY table_name, ordinal_position",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    let (t, c, ty, ident): (String, String, String, String) = (
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                    );
                    if c == "id" && ident == "YES" {
                        identity.push(t.clone());
                    }
                    let integer = matches!(ty.as_str(), "bigint" | "integer" | "smallint");
                    columns.entry(t).or_default().push((c, integer));
                }
                let rows = sqlx::query(
                    "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint \
                     WHERE contype = 'f' AND connamespace = current_schema()::regnamespace",
                )
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    parents.push((row.try_get(0)?, row.try_get(1)?));
                }
            }
            Backend::Sqlite => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                for t in names {
                    let rows = sqlx::query(
                        "SELECT name, CAST(upper(type) AS TEXT) FROM pragma_table_info($1) ORDER BY cid",
                    )
                    .bind(&t)
                    .fetch_all(&self.pool)
                    .await?;
                    for row in rows {
                        let (c, ty): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                        let integer = ty.contains("INT") || ty == "BOOLEAN";
                        columns.entry(t.clone()).or_default().push((c, integer));
                    }
                    let refs: Vec<String> =
                        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list($1)")
                            .bind(&t)
                            .fetch_all(&self.pool)
                            .await?;
                    parents.extend(refs.into_iter().map(|p| (t.clone(), p)));
                }
            }
        }
        let mut tables: Vec<Table> = columns
            .into_iter()
            .filter(|(name, _)| !NOT_COPIED.contains(&name.as_str()))
            .map(|(name, columns)| Table {
                identity: identity.contains(&name),
                name,
                columns,
            })
            .collect();
        order_parents_first(&mut tables, &parents)?;
        Ok(tables)
    }
}

/// Sorts `tables` so that every table comes after the tables it references (`(child,
/// parent)` pairs); a table referencing itself is allowed, a longer cycle is not.
fn order_parents_first(tables: &mut Vec<Table>, parents: &[(String, String)]) -> Result<()> {
    let mut left: Vec<Table> = std::mem::take(tables);
    while !left.is_empty() {
        let ready = left.iter().position(|t| {
            parents.iter().all(|(child, parent)| {
                child != &t.name || parent == &t.name || !left.iter().any(|o| &o.name == parent)
            })
        });
        let Some(i) = ready else {
            bail!(
                "the tables {} reference each other in a cycle; they cannot be copied in order",
                left.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        tables.push(left.remove(i));
    }
    Ok(())
}

async fn count(tx: &mut sqlx::Transaction<'static, Any>, table: &str) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut **tx)
        .await
        .with_context(|| format!("counting the rows of `{table}`"))?;
    Ok(n as u64)
}

/// One value of a row being copied.
#[derive(Debug, Clone)]
enum Value {
    Integer(Option<i64>),
    Text(Option<String>),
}

/// Rows of `t` from the source, each column cast to what the target keeps (SQLite's booleans
/// read back as integers; the `Any` driver reads no SQLite BOOLEAN). `page`: `Some(after)` for
/// a table with ids, the next [`PAGE`] rows past `after`; `None`, every row.
async fn read_table(
    tx: &mut sqlx::Transaction<'static, Any>,
    backend: Backend,
    t: &Table,
    page: Option<Option<i64>>,
) -> Result<Vec<Vec<Value>>> {
    let select: Vec<String> = t
        .columns
        .iter()
        .map(|(c, integer)| match (integer, backend) {
            (true, Backend::Sqlite) => format!("CAST({c} AS INTEGER)"),
            (true, Backend::Postgres) => format!("CAST({c} AS BIGINT)"),
            (false, _) => format!("CAST({c} AS TEXT)"),
        })
        .collect();
    let rest = match page {
        Some(Some(after)) => format!(" WHERE id > {after} ORDER BY id LIMIT {PAGE}"),
        Some(None) => format!(" ORDER BY id LIMIT {PAGE}"),
        None => String::new(),
    };
    let sql = format!("SELECT {} FROM {}{rest}", select.join(", "), t.name);
    let rows: Vec<AnyRow> = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            t.columns
                .iter()
                .enumerate()
                .map(|(i, (c, integer))| {
                    Ok(match integer {
                        true => Value::Integer(row.try_get(i).with_context(|| c.clone())?),
                        false => Value::Text(row.try_get(i).with_context(|| c.clone())?),
                    })
                })
                .collect()
        })
        .collect()
}

async fn insert_rows(
    tx: &mut sqlx::Transaction<'static, Any>,
    t: &Table,
    rows: &[Vec<Value>],
) -> sqlx::Result<()> {
    let names: Vec<&str> = t.columns.iter().map(|(c, _)| c.as_str()).collect();
    let width = names.len();
    let tuples: Vec<String> = (0..rows.len())
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let overriding = match t.identity {
        true => " OVERRIDING SYSTEM VALUE",
        false => "",
    };
    let sql = format!(
        "INSERT INTO {} ({}){overriding} VALUES {}",
        t.name,
        names.join(", "),
        tuples.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        for value in row {
            query = match value {
                Value::Integer(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.clone()),
            };
        }
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            name: name.into(),
            columns: vec![("id".into(), true)],
            identity: false,
        }
    }

    #[test]
    fn tables_are_copied_parents_first_and_a_cycle_is_refused() {
        /// Tables, (child, parent) references, and the order wanted or what the error says.
        type Case<'a> = (
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
            Result<&'a [&'a str], &'a str>,
        );
        let cases: &[Case] = &[
            (&["a", "b"], &[], Ok(&["a", "b"])),
            (
                &["log_lines", "runs", "steps", "projects"],
                &[
                    ("log_lines", "steps"),
                    ("steps", "runs"),
                    ("runs", "projects"),
                ],
                Ok(&["projects", "runs", "steps", "log_lines"]),
            ),
            (&["a"], &[("a", "a")], Ok(&["a"])),
            (&["a", "b"], &[("a", "b"), ("b", "a")], Err("cycle")),
        ];
        for (names, parents, want) in cases {
            let mut tables: Vec<Table> = names.iter().map(|n| table(n)).collect();
            let parents: Vec<(String, String)> = parents
                .iter()
                .map(|(c, p)| (c.to_string(), p.to_string()))
                .collect();
            let got = order_parents_first(&mut tables, &parents)
                .map(|()| tables.iter().map(|t| t.name.clone()).collect::<Vec<_>>());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{names:?}"),
                (Err(e), Err(says)) => assert!(e.to_string().contains(says), "{e}"),
                (got, want) => panic!("{names:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
