//! The deployer of `gantry run`: deploy stages are carried out by a gantry server (the one in
//! `GANTRY_SERVER`/`--server`, else the one recorded in the data directory). The run waits for
//! the server's answer, bake included, and fails when the deployment fails or no server answers.

use crate::client::Client;
use anyhow::{Result, anyhow, bail};
use async_trait::async_trait;
use gantry_engine::ports::{DeployReport, DeployRequest, Deployer};
use serde_json::json;
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
        let path = format!(
            "/api/projects/{}/environments/{}/deploy",
            request.project, request.environment
        );
        let body = json!({
            "artifact": request.artifact,
            "run": request.run,
            "digest": request.digest,
            "force": request.force,
            "wait": true,
            "bake_ms": request.bake_ms,
            "by": format!("{} (gantry run)", request.requested_by),
        });
        let (status, body) = client
            .post_full(&path, body)
            .await
            .map_err(|e| anyhow!("{e}; {HOW_TO_START}"))?;
        match status {
            200 | 422 => Ok(serde_json::from_value(body)?),
            _ => bail!(
                "the server at {} refused the deployment ({status}): {}",
                client.base,
                body["error"]["message"].as_str().unwrap_or("no details")
            ),
        }
    }
}
