//! Runs, their stages, jobs, steps, logs and diagnoses (the `RunStore` port).

use super::*;

#[async_trait]
impl RunStore for SqlStore {
    async fn create_run(&self, run: NewRun) -> Result<RunIds> {
        let mut tx = self.write_tx().await?;
        let project = upsert_project_in(&mut *tx, &run.project, &run.repo).await?;
        let started = (run.status == RunStatus::Running).then_some(run.created_at);
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status, created_at, started_at, owner, event, vars) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(project)
        .bind(&run.commit)
        .bind(&run.branch)
        .bind(&run.pipeline_file)
        .bind(&run.trigger)
        .bind(run.status.as_str())
        .bind(run.created_at)
        .bind(started)
        .bind(&run.owner)
        .bind(&run.event)
        .bind(vars_json(&run.vars))
        .fetch_one(&mut *tx)
        .await
        .context("recording the run")?;
        let ids = insert_plan(&mut tx, run_id, &run.stages).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn set_run_status(
        &self,
        run: i64,
        status: RunStatus,
        at: Millis,
        error: Option<&str>,
    ) -> Result<()> {
        let finished = status.is_finished().then_some(at);
        sqlx::query(
            "UPDATE runs SET status = $1, finished_at = COALESCE($2, finished_at), \
             started_at = COALESCE(started_at, $3), error = COALESCE($4, error) WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(finished)
        .bind(at)
        .bind(error)
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(|e| self.write_error(e, "recording the run's status"))?;
        Ok(())
    }

    async fn set_stage_status(
        &self,
        stage: i64,
        status: StageStatus,
        at: Millis,
        note: Option<&str>,
    ) -> Result<()> {
        let (started, finished) = match status {
            StageStatus::Running => (Some(at), None),
            StageStatus::Pending => (None, None),
            _ => (None, Some(at)),
        };
        sqlx::query(
            "UPDATE stages SET status = $1, started_at = COALESCE(started_at, $2), \
             finished_at = COALESCE($3, finished_at), note = COALESCE($4, note) WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(started)
        .bind(finished)
        .bind(note)
        .bind(stage)
        .execute(&self.pool)
        .await
        .context("recording the stage's status")?;
        Ok(())
    }

    async fn set_job_status(
        &self,
        job: i64,
        status: JobStatus,
        attempt: u32,
        at: Millis,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        let started = (status == JobStatus::Running).then_some(at);
        let finished = status.is_finished().then_some(at);
        sqlx::query(
            "UPDATE jobs SET status = $1, attempt = $2, started_at = COALESCE(started_at, $3), \
             finished_at = $4, exit_code = $5, error = $6 WHERE id = $7",
        )
        .bind(status.as_str())
        .bind(attempt as i64)
        .bind(started)
        .bind(finished)
        .bind(exit_code)
        .bind(error)
        .bind(job)
        .execute(&self.pool)
        .await
        .context("recording the job's status")?;
        Ok(())
    }

    async fn start_step(
        &self,
        job: i64,
        attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO steps (job_id, attempt, position, name, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(job)
        .bind(attempt as i64)
        .bind(position as i64)
        .bind(name)
        .bind(StepStatus::Running.as_str())
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .context("recording the step")?;
        Ok(id)
    }

    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> Result<()> {
        sqlx::query("UPDATE steps SET status = $1, exit_code = $2, finished_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(exit_code)
            .bind(at)
            .bind(step)
            .execute(&self.pool)
            .await
            .context("recording the step's end")?;
        Ok(())
    }

    async fn append_logs(&self, lines: &[NewLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let what = "storing log lines";
        let mut tx = self
            .write_tx()
            .await
            .map_err(|e| self.write_error(e, what))?;
        let mut rest = lines;
        while !rest.is_empty() {
            let rows = log_rows_per_insert(rest.len());
            let (these, after) = rest.split_at(rows);
            let mut insert = sqlx::query(AssertSqlSafe(log_insert(self.backend, rows)));
            for l in these {
                insert = insert
                    .bind(l.step_id)
                    .bind(l.line)
                    .bind(l.at)
                    .bind(l.stream.as_str())
                    .bind(&l.text);
            }
            insert
                .execute(&mut *tx)
                .await
                .map_err(|e| self.write_error(e, what))?;
            rest = after;
        }
        tx.commit().await.map_err(|e| self.write_error(e, what))?;
        Ok(())
    }

    async fn mark_interrupted(&self, run: i64, at: Millis) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let unfinished = "('pending', 'running', 'queued')";
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE steps SET status = 'interrupted', finished_at = $1 \
             WHERE status IN {unfinished} AND job_id IN (SELECT id FROM jobs WHERE run_id = $2)"
        )))
        .bind(at)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        for table in ["jobs", "stages"] {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET status = CASE WHEN status = 'running' THEN 'interrupted' ELSE 'skipped' END, \
                 finished_at = CASE WHEN status = 'running' THEN $1 ELSE finished_at END \
                 WHERE run_id = $2 AND status IN {unfinished}"
            )))
            .bind(at)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'interrupted', finished_at = $1, \
             error = COALESCE(error, 'the process running it stopped before the run finished') \
             WHERE id = $2 AND status IN {unfinished}"
        )))
        .bind(at)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let rows = listing_bound(sqlx::query(AssertSqlSafe(runs_listing(filter))), filter)
            .fetch_all(&self.pool)
            .await
            .context("listing runs")?;
        rows.iter().map(run_from).collect()
    }

    async fn run_detail(&self, run: i64) -> Result<Option<RunDetail>> {
        let Some(row) = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id WHERE r.id = $1"
        )))
        .bind(run)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let run_rec = run_from(&row)?;
        let stages = sqlx::query("SELECT * FROM stages WHERE run_id = $1 ORDER BY position")
            .bind(run)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| -> Result<StageRecord> {
                Ok(StageRecord {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    position: r.try_get("position")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    status: parse(r.try_get("status")?)?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    note: r.try_get("note")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let jobs = sqlx::query(
            "SELECT j.id, j.run_id, j.stage_id, j.position, j.name, j.status, j.attempt, \
             CAST(j.allow_failure AS INTEGER) AS allow_failure, j.exit_code, j.started_at, j.finished_at, \
             j.error, j.waits_for FROM jobs j JOIN stages s ON s.id = j.stage_id WHERE j.run_id = $1 \
             ORDER BY s.position, j.position",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| -> Result<JobRecord> {
            Ok(JobRecord {
                id: r.try_get("id")?,
                run_id: r.try_get("run_id")?,
                stage_id: r.try_get("stage_id")?,
                position: r.try_get("position")?,
                name: r.try_get("name")?,
                status: parse(r.try_get("status")?)?,
                attempt: r.try_get("attempt")?,
                allow_failure: flag(r, "allow_failure")?,
                exit_code: r.try_get("exit_code")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                error: r.try_get("error")?,
                waits_for: serde_json::from_str(&r.try_get::<String, _>("waits_for")?)
                    .map_err(|e| anyhow::anyhow!("corrupt state: the needs of a job: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let steps = sqlx::query(
            "SELECT st.* FROM steps st JOIN jobs j ON j.id = st.job_id WHERE j.run_id = $1 \
             ORDER BY st.job_id, st.attempt, st.position",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| -> Result<StepRecord> {
            Ok(StepRecord {
                id: r.try_get("id")?,
                job_id: r.try_get("job_id")?,
                attempt: r.try_get("attempt")?,
                position: r.try_get("position")?,
                name: r.try_get("name")?,
                status: parse::<StepStatus>(r.try_get("status")?)?,
                exit_code: r.try_get("exit_code")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let artifacts = sqlx::query("SELECT * FROM artifacts WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(artifact_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(RunDetail {
            run: run_rec,
            stages,
            jobs,
            steps,
            artifacts,
        }))
    }

    async fn logs(
        &self,
        run: i64,
        job: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogRecord>> {
        // The steps whose lines we want (few), then lines in id order from the cursor. Reading
        // by id (the primary key) from a known start keeps every page cheap however long the
        // log is; letting the planner join first would sort the whole log for each page.
        let steps: Vec<i64> = sqlx::query_scalar(
            "SELECT st.id FROM steps st JOIN jobs j ON j.id = st.job_id WHERE j.run_id = $1 AND ($2 IS NULL OR j.name = $2)",
        )
        .bind(run)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut start = after;
        if after == 0 {
            let mut first: Option<i64> = None;
            for step in &steps {
                let min: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(id) FROM log_lines WHERE step_id = $1")
                        .bind(step)
                        .fetch_one(&self.pool)
                        .await?;
                first = match (first, min) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            match first {
                Some(f) => start = f - 1,
                None => return Ok(Vec::new()),
            }
        }
        let list = steps
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT l.id, j.name AS job, st.attempt, st.name AS step, l.line, l.at, l.stream, l.text \
             FROM log_lines l JOIN steps st ON st.id = l.step_id JOIN jobs j ON j.id = st.job_id \
             WHERE +l.step_id IN ({list}) AND l.id > $1 ORDER BY l.id LIMIT $2"
        )))
        .bind(start)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        rows.iter().map(log_record).collect()
    }

    async fn logs_before(
        &self,
        run: i64,
        job: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LogRecord>> {
        let steps: Vec<i64> = sqlx::query_scalar(
            "SELECT st.id FROM steps st JOIN jobs j ON j.id = st.job_id WHERE j.run_id = $1 AND ($2 IS NULL OR j.name = $2)",
        )
        .bind(run)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        // From the newest line of these steps (each found on the (step, id) index), down the
        // primary key: a page costs the same at the end of a log of any length.
        let mut end: Option<i64> = None;
        for step in &steps {
            let max: Option<i64> =
                sqlx::query_scalar("SELECT MAX(id) FROM log_lines WHERE step_id = $1")
                    .bind(step)
                    .fetch_one(&self.pool)
                    .await?;
            end = end.max(max);
        }
        let Some(end) = end else {
            return Ok(Vec::new());
        };
        let below = before.map_or(end + 1, |b| b.min(end + 1));
        let list = steps
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT l.id, j.name AS job, st.attempt, st.name AS step, l.line, l.at, l.stream, l.text \
             FROM log_lines l JOIN steps st ON st.id = l.step_id JOIN jobs j ON j.id = st.job_id \
             WHERE +l.step_id IN ({list}) AND l.id < $1 ORDER BY l.id DESC LIMIT $2"
        )))
        .bind(below)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        rows.iter().map(log_record).collect()
    }

    async fn log_line_id(&self, run: i64, job: &str, step: &str, line: i64) -> Result<Option<i64>> {
        let step: Option<i64> = sqlx::query_scalar(
            "SELECT st.id FROM steps st JOIN jobs j ON j.id = st.job_id \
             WHERE j.run_id = $1 AND j.name = $2 AND st.name = $3 ORDER BY st.attempt DESC, st.id DESC LIMIT 1",
        )
        .bind(run)
        .bind(job)
        .bind(step)
        .fetch_optional(&self.pool)
        .await
        .context("finding a log line")?;
        let Some(step) = step else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar(
            "SELECT id FROM log_lines WHERE step_id = $1 AND line = $2 ORDER BY id LIMIT 1",
        )
        .bind(step)
        .bind(line)
        .fetch_optional(&self.pool)
        .await
        .context("finding a log line")?)
    }

    async fn set_run_diagnosis(&self, run: i64, json: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET diagnosis = $1 WHERE id = $2")
            .bind(json)
            .bind(run)
            .execute(&self.pool)
            .await
            .context("storing the diagnosis")?;
        Ok(())
    }

    async fn remove_logs_before(&self, before: Millis, at: Millis) -> Result<(u64, u64)> {
        let mut tx = self.write_tx().await?;
        let finished = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 \
                        AND status NOT IN ('queued', 'running') AND logs_removed_at IS NULL";
        let lines = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM log_lines WHERE step_id IN (SELECT s.id FROM steps s \
             JOIN jobs j ON s.job_id = j.id WHERE j.run_id IN ({finished}))"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await
        .context("removing old log lines")?
        .rows_affected();
        let runs = sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET logs_removed_at = $2 WHERE id IN ({finished})"
        )))
        .bind(before)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((runs, lines))
    }

    async fn logs_removed_at(&self, run: i64) -> Result<Option<Millis>> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT logs_removed_at FROM runs WHERE id = $1")
                .bind(run)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.flatten())
    }

    async fn run_diagnosis(&self, run: i64) -> Result<Option<String>> {
        let d: Option<Option<String>> =
            sqlx::query_scalar("SELECT diagnosis FROM runs WHERE id = $1")
                .bind(run)
                .fetch_optional(&self.pool)
                .await?;
        Ok(d.flatten())
    }
}

fn log_record(r: &AnyRow) -> Result<LogRecord> {
    Ok(LogRecord {
        id: r.try_get("id")?,
        job: r.try_get("job")?,
        attempt: r.try_get("attempt")?,
        step: r.try_get("step")?,
        line: r.try_get("line")?,
        at: r.try_get("at")?,
        stream: Stream::parse(&r.try_get::<String, _>("stream")?),
        text: r.try_get("text")?,
    })
}

/// The most log lines one INSERT carries (5 parameters each: 640, far below either engine's
/// limit). A statement is a round trip to the database (for SQLite, to its connection's
/// thread), and one a line made storing a log cost more than the step printing it.
const LOG_ROWS: usize = 128;

/// How many of `left` lines the next INSERT carries: [`LOG_ROWS`] while there are that many,
/// then the largest power of two that fits, so that a batch of any size uses at most eight
/// statement shapes, each prepared once per connection.
fn log_rows_per_insert(left: usize) -> usize {
    if left >= LOG_ROWS {
        LOG_ROWS
    } else {
        1 << left.ilog2()
    }
}

/// `INSERT INTO log_lines` of `rows` rows. SQLite's parameters are anonymous (`?`): sqlx
/// finds which argument a numbered one takes by asking SQLite its name, a search of every
/// name of the statement, so that binding `$n` parameters costs the square of their number
/// (half of storing a log, with 640 of them).
fn log_insert(backend: Backend, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| match backend {
            Backend::Sqlite => "(?, ?, ?, ?, ?)".to_string(),
            Backend::Postgres => {
                let p = r * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            }
        })
        .collect();
    format!(
        "INSERT INTO log_lines (step_id, line, at, stream, text) VALUES {}",
        values.join(", ")
    )
}

/// The query of [`RunStore::list_runs`] for `filter`: only the conditions asked for, so that
/// the engine can use an index for them (a condition written `$1 IS NULL OR …` can use none:
/// every command's recovery asks for the running runs, which must not be a scan of the whole
/// history). Parameters in the order project, branch, status, before, then the limit.
fn runs_listing(filter: &RunFilter) -> String {
    let asked = [
        (filter.project.is_some(), "p.name ="),
        (filter.branch.is_some(), "r.branch ="),
        (filter.status.is_some(), "r.status ="),
        (filter.before.is_some(), "r.id <"),
    ];
    let conditions: Vec<String> = asked
        .iter()
        .filter(|(given, _)| *given)
        .enumerate()
        .map(|(i, (_, test))| format!("{test} ${}", i + 1))
        .collect();
    let filtered = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {} ", conditions.join(" AND ")),
    };
    format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id \
         {filtered}ORDER BY r.id DESC LIMIT ${}",
        conditions.len() + 1
    )
}

/// `query` (of [`runs_listing`]'s text) with `filter`'s values bound in its parameters' order.
fn listing_bound<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    filter: &'q RunFilter,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    if let Some(project) = &filter.project {
        query = query.bind(project);
    }
    if let Some(branch) = &filter.branch {
        query = query.bind(branch);
    }
    if let Some(status) = filter.status {
        query = query.bind(status.as_str());
    }
    if let Some(before) = filter.before {
        query = query.bind(before);
    }
    query.bind(if filter.limit > 0 { filter.limit } else { 50 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite plans for listing with `filter`, one line per step.
    async fn plan(store: &SqlStore, filter: &RunFilter) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {}", runs_listing(filter));
        let rows = listing_bound(sqlx::query(AssertSqlSafe(explain)), filter)
            .fetch_all(&store.pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    #[tokio::test]
    async fn listing_by_status_or_project_reads_an_index_not_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&dir.path().join("gantry.db"), 1)
            .await
            .unwrap();
        let cases = [
            (
                RunFilter {
                    status: Some(RunStatus::Running),
                    limit: 1000,
                    ..Default::default()
                },
                "runs_",
            ),
            (
                RunFilter {
                    project: Some("p".into()),
                    ..Default::default()
                },
                "runs_by_project",
            ),
        ];
        for (filter, index) in cases {
            let plan = plan(&store, &filter).await;
            assert!(
                plan.iter()
                    .any(|step| step.contains("USING INDEX") && step.contains(index)),
                "{filter:?}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN r")),
                "{filter:?}: {plan:?}"
            );
        }
        store.close().await;
    }

    #[test]
    fn a_batch_of_log_lines_is_few_inserts_of_few_shapes() {
        let cases = [
            (1, vec![1]),
            (2, vec![2]),
            (3, vec![2, 1]),
            (127, vec![64, 32, 16, 8, 4, 2, 1]),
            (128, vec![128]),
            (500, vec![128, 128, 128, 64, 32, 16, 4]),
        ];
        for (lines, want) in cases {
            let mut left = lines;
            let mut inserts = Vec::new();
            while left > 0 {
                let rows = log_rows_per_insert(left);
                inserts.push(rows);
                left -= rows;
            }
            assert_eq!(inserts, want, "{lines} lines");
        }
        let head = "INSERT INTO log_lines (step_id, line, at, stream, text) VALUES";
        assert_eq!(
            log_insert(Backend::Postgres, 2),
            format!("{head} ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)")
        );
        assert_eq!(
            log_insert(Backend::Sqlite, 2),
            format!("{head} (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)")
        );
    }

    #[test]
    fn the_listing_asks_only_for_what_the_filter_gives() {
        let all = RunFilter {
            project: Some("p".into()),
            branch: Some("main".into()),
            status: Some(RunStatus::Failed),
            before: Some(9),
            limit: 5,
        };
        let cases = [
            (RunFilter::default(), "ORDER BY r.id DESC LIMIT $1"),
            (
                RunFilter {
                    branch: Some("main".into()),
                    before: Some(3),
                    ..Default::default()
                },
                "WHERE r.branch = $1 AND r.id < $2 ORDER BY r.id DESC LIMIT $3",
            ),
            (
                all,
                "WHERE p.name = $1 AND r.branch = $2 AND r.status = $3 AND r.id < $4 ORDER BY r.id DESC LIMIT $5",
            ),
        ];
        for (filter, tail) in cases {
            let sql = runs_listing(&filter);
            assert!(sql.ends_with(tail), "{filter:?}: {sql}");
            assert!(!sql.contains("IS NULL"), "{sql}");
        }
    }
}
