//! The ports of jobs that run on `gantry runner`s: the queue they are claimed from, and what one
//! attempt records and reads wherever it runs (a slot of the server, or a runner).

use super::*;

/// Job attempts handed to runners. The lifecycle of a row: `enqueue_job` (queued) →
/// `claim_job` (claimed, by one runner: the database makes sure of it) → `renew_job` while it
/// runs → `finish_job` (finished) by the lease's holder; or `lose_job` (lost) by the server
/// driving the run once the lease has passed unrenewed; or `cancel_job` (cancelled while
/// queued; a claimed one is asked to stop through `renew_job`). A job whose run is not
/// running is never handed out.
#[async_trait]
pub trait JobQueueStore: Send + Sync {
    async fn enqueue_job(&self, job: NewQueuedJob) -> anyhow::Result<i64>;
    /// The oldest queued job of a running run whose labels are all among the claim's, now
    /// claimed under its lease; `None` when there is none.
    async fn claim_job(&self, claim: &JobClaim) -> anyhow::Result<Option<QueuedJob>>;
    async fn queued_job(&self, id: i64) -> anyhow::Result<Option<QueuedJob>>;
    /// Extends the lease to `until` if it is still held under `lease_hash` and has not passed
    /// at `at`.
    async fn renew_job(
        &self,
        id: i64,
        lease_hash: &str,
        at: Millis,
        until: Millis,
    ) -> anyhow::Result<LeaseRenewal>;
    /// Records how the attempt ended, if the lease is still held (it may have passed, as long
    /// as nobody has called the job lost): true when recorded.
    async fn finish_job(
        &self,
        id: i64,
        lease_hash: &str,
        outcome: &str,
        exit_code: Option<i32>,
        error: Option<&str>,
        at: Millis,
    ) -> anyhow::Result<bool>;
    /// Calls a claimed job lost when its lease has passed at `at`: true when it did.
    async fn lose_job(&self, id: i64, at: Millis, error: &str) -> anyhow::Result<bool>;
    /// Cancels a queued job, or asks its runner to stop a claimed one; the state it is in now.
    async fn cancel_job(&self, id: i64, at: Millis) -> anyhow::Result<Option<QueuedJobState>>;
    /// How many job attempts are in each state (for `/metrics`).
    async fn count_jobs_by_state(&self) -> anyhow::Result<Vec<(QueuedJobState, i64)>>;
}

/// What one job attempt records and reads, wherever it runs: in the server's own slots (the
/// state store itself, [`StoreAttempts`]) or on a `gantry runner` (the server's API, under the
/// claim's lease). Lifecycle: made for one attempt, dropped at its end.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    async fn start_step(
        &self,
        job: i64,
        attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> anyhow::Result<i64>;
    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> anyhow::Result<()>;
    /// Appends lines in one transaction.
    async fn append_logs(&self, lines: &[NewLogLine]) -> anyhow::Result<()>;
    async fn record_artifact(
        &self,
        run: i64,
        job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> anyhow::Result<()>;
    /// See [`ArtifactIndex::latest_project_artifact`].
    async fn latest_project_artifact(
        &self,
        project: &str,
        name: &str,
        branch: Option<&str>,
    ) -> anyhow::Result<Option<ArtifactRecord>>;
    /// The artifacts run `run` has made so far.
    async fn run_artifacts(&self, run: i64) -> anyhow::Result<Vec<ArtifactRecord>>;
    /// See [`ArtifactIndex::find_cache`].
    async fn find_cache(
        &self,
        project: &str,
        key: &str,
        prefixes: &[String],
    ) -> anyhow::Result<Option<CacheRecord>>;
    async fn save_cache(&self, cache: &CacheRecord) -> anyhow::Result<bool>;
    async fn touch_cache(&self, id: i64, at: Millis) -> anyhow::Result<()>;
    async fn caches(&self, project: &str) -> anyhow::Result<Vec<CacheRecord>>;
    async fn remove_cache(&self, id: i64) -> anyhow::Result<()>;
    async fn digest_in_use(&self, digest: &str) -> anyhow::Result<bool>;
}

/// The attempts the server runs itself: straight to its state store.
pub struct StoreAttempts(pub std::sync::Arc<dyn StateStore>);

#[async_trait]
impl AttemptStore for StoreAttempts {
    async fn start_step(
        &self,
        job: i64,
        attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> anyhow::Result<i64> {
        self.0.start_step(job, attempt, position, name, at).await
    }
    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> anyhow::Result<()> {
        self.0.finish_step(step, status, exit_code, at).await
    }
    async fn append_logs(&self, lines: &[NewLogLine]) -> anyhow::Result<()> {
        self.0.append_logs(lines).await
    }
    async fn record_artifact(
        &self,
        run: i64,
        job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> anyhow::Result<()> {
        self.0
            .record_artifact(run, job, name, stored, at)
            .await
            .map(|_| ())
    }
    async fn latest_project_artifact(
        &self,
        project: &str,
        name: &str,
        branch: Option<&str>,
    ) -> anyhow::Result<Option<ArtifactRecord>> {
        self.0.latest_project_artifact(project, name, branch).await
    }
    async fn run_artifacts(&self, run: i64) -> anyhow::Result<Vec<ArtifactRecord>> {
        match self.0.run_detail(run).await? {
            Some(detail) => Ok(detail.artifacts),
            None => anyhow::bail!("run {run} vanished from the state store"),
        }
    }
    async fn find_cache(
        &self,
        project: &str,
        key: &str,
        prefixes: &[String],
    ) -> anyhow::Result<Option<CacheRecord>> {
        self.0.find_cache(project, key, prefixes).await
    }
    async fn save_cache(&self, cache: &CacheRecord) -> anyhow::Result<bool> {
        self.0.save_cache(cache).await
    }
    async fn touch_cache(&self, id: i64, at: Millis) -> anyhow::Result<()> {
        self.0.touch_cache(id, at).await
    }
    async fn caches(&self, project: &str) -> anyhow::Result<Vec<CacheRecord>> {
        self.0.caches(Some(project)).await
    }
    async fn remove_cache(&self, id: i64) -> anyhow::Result<()> {
        self.0.remove_cache(id).await
    }
    async fn digest_in_use(&self, digest: &str) -> anyhow::Result<bool> {
        self.0.digest_in_use(digest).await
    }
}
