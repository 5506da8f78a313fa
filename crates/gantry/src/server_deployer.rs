//! The deployer of `gantry run`: deploy stages are carried out by a gantry server (the one in
//! `GANTRY_SERVER`/`--server`, else the one recorded in the data directory). The run waits for
//! the server's answer, bake included, and fails when the deployment fails or no server answers.

use crate::client::{Client, Refused};
use anyhow::{Result, anyhow};
use async_trait::async_trait;
use gantry_api::types::DeployBody;
use gantry_engine::ports::{DeployReport, DeployRequest, Deployer};
use std::path::PathBuf;

pub struct ServerDeployer {
    pub explicit: Option<String>,
    pub data_dir: PathBuf,
}

const HOW_TO_START: &str = "deploy stages are carried out by a gantry server: start one in this repository with `gantry serve` (see README, \"Deploy and roll back\"), or point GANTRY_SERVER at one";

#[async_trait]
impl Deployer for ServerDeployer {
    async fn deploy(&self, request: DeployRequest) -> Result<DeployReport> {
        let client = Client::resolve(self.explicit.as_deref(), &self.data_dir)
            .map_err(|e| anyhow!("no gantry server answers ({e}); {HOW_TO_START}"))?;
        let body = DeployBody {
            artifact: request.artifact.clone(),
            run: request.run,
            digest: request.digest.clone(),
            force: request.force,
            wait: true,
            by: Some(format!("{} (gantry run)", request.requested_by)),
            bake_ms: request.bake_ms,
        };
        let outcome = client
            .deploy(&request.project, &request.environment, &body)
            .await
            .map_err(|e| match e.downcast_ref::<Refused>() {
                Some(r) => anyhow!(
                    "the server at {} refused the deployment ({}): {}",
                    client.base,
                    r.status.as_u16(),
                    r.message
                ),
                None => anyhow!("{e}; {HOW_TO_START}"),
            })?;
        Ok(DeployReport {
            release: outcome.release.map(Into::into),
            succeeded: outcome.succeeded,
            message: outcome.message,
        })
    }
}
