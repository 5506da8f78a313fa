//! Approval stages in the server: a run that reaches one waits here (in memory: the run is
//! this process's) until a token with one of the stage's roles approves it
//! (`POST /api/runs/{id}/approve`, `gantry approve RUN`), its timeout passes, or a newer run of
//! the same branch reaches the same stage and supersedes it. While it waits the run does not
//! hold a worker: its worker hands the queue to a new one and ends with the run. Who approved
//! and when is the stage's note.

use super::Server;
use async_trait::async_trait;
use gantry_api::{ControlError, types};
use gantry_engine::ports::{ApprovalDecision, ApprovalRequest, Approvals, now_millis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

struct Waiting {
    request: ApprovalRequest,
    decide: oneshot::Sender<ApprovalDecision>,
}

/// The runs waiting at approval stages.
#[derive(Default)]
pub struct Waits {
    waiting: Mutex<HashMap<i64, Waiting>>,
}

impl Waits {
    /// Records `request` and returns the runs it supersedes (each told so).
    fn add(&self, request: ApprovalRequest, decide: oneshot::Sender<ApprovalDecision>) -> Vec<i64> {
        let mut waiting = self.waiting.lock().expect("approval waits");
        let older: Vec<i64> = waiting
            .iter()
            .filter(|(run, w)| {
                **run < request.run
                    && w.request.spec.supersede
                    && w.request.project == request.project
                    && w.request.stage == request.stage
                    && w.request.branch.is_some()
                    && w.request.branch == request.branch
            })
            .map(|(run, _)| *run)
            .collect();
        for run in &older {
            if let Some(w) = waiting.remove(run) {
                let _ = w.decide.send(ApprovalDecision::Superseded {
                    by_run: request.run,
                });
            }
        }
        waiting.insert(request.run, Waiting { request, decide });
        older
    }

    fn remove(&self, run: i64) {
        self.waiting.lock().expect("approval waits").remove(&run);
    }

    /// Approves the stage `run` waits at, as the token named `by` with `role`.
    pub fn approve(
        &self,
        run: i64,
        by: &str,
        role: gantry_model::Role,
    ) -> Result<types::Approved, ControlError> {
        let mut waiting = self.waiting.lock().expect("approval waits");
        let Some(w) = waiting.get(&run) else {
            return Err(ControlError::conflict(format!(
                "run {run} is not waiting for an approval here"
            )));
        };
        if !w.request.spec.allows(role) {
            let roles: Vec<&str> = w.request.spec.roles.iter().map(|r| r.as_str()).collect();
            return Err(ControlError::forbidden(format!(
                "approving stage `{}` of run {run} needs a {} token; token `{}` is {}",
                w.request.stage,
                roles.join(" or "),
                by,
                role
            )));
        }
        let w = waiting.remove(&run).expect("looked up above");
        let at = now_millis();
        let stage = w.request.stage.clone();
        // The run may have ended meanwhile (cancelled): then nobody listens, and that is fine.
        let _ = w.decide.send(ApprovalDecision::Approved {
            by: by.to_string(),
            at,
        });
        tracing::info!(run, stage, by, "approved");
        Ok(types::Approved {
            run,
            stage,
            by: by.to_string(),
            at,
        })
    }
}

/// The port the runner of one run holds.
pub struct RunApprovals {
    pub server: Arc<Server>,
}

/// Withdraws a wait when its future is dropped (the run was cancelled).
struct Withdraw<'a>(&'a Waits, i64);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

#[async_trait]
impl Approvals for RunApprovals {
    async fn wait(&self, request: ApprovalRequest) -> anyhow::Result<ApprovalDecision> {
        let (tx, rx) = oneshot::channel();
        let (run, timeout) = (request.run, request.spec.timeout);
        tracing::info!(run, stage = %request.stage, "waiting for approval");
        for old in self.server.approvals.add(request, tx) {
            tracing::info!(run = old, by = run, "an approval wait was superseded");
        }
        let _withdraw = Withdraw(&self.server.approvals, run);
        // Waiting holds no worker: the queue goes on with a new one.
        super::worker::release(&self.server, run);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(_)) => anyhow::bail!("the approval of run {run} was dropped"),
            Err(_) => Ok(ApprovalDecision::TimedOut),
        }
    }
}
