//! Service containers (`services:`): started beside a job in a container, on a network of the
//! job's own where the steps reach each by its name, each healthy (its `tcp` port accepting
//! connections) before the first step, and removed with their network when the attempt ends,
//! however it ends. They carry the run's and the runner's labels, so a crash's leftovers go
//! with the step containers ([`crate::container::remove_leftovers`]).

use gantry_docker::{Engine, LABEL_JOB, LABEL_RUN, LABEL_STEP_OWNER, StepContainerSpec};
use gantry_model::ServiceSpec;
use std::time::Duration;
use tokio::time::Instant;

/// A job's running services and their network, until [`Services::stop`].
pub(crate) struct Services {
    engine: Engine,
    pub network: String,
    prefix: String,
    ids: Vec<String>,
}

impl Services {
    /// Creates the job's network and starts `services` on it, each healthy before the next
    /// starts. An error says which service and why (with its last lines of output).
    pub(crate) async fn start(
        engine: &Engine,
        services: &[ServiceSpec],
        run: i64,
        job: &str,
        owner: Option<&str>,
        prefix: &str,
    ) -> Result<Services, String> {
        let mut labels = vec![
            (LABEL_RUN.to_string(), run.to_string()),
            (LABEL_JOB.to_string(), job.to_string()),
        ];
        if let Some(owner) = owner {
            labels.push((LABEL_STEP_OWNER.to_string(), owner.to_string()));
        }
        let network = format!("{prefix}-net");
        engine
            .create_network(&network, &labels)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let mut up = Services {
            engine: engine.clone(),
            network: network.clone(),
            prefix: prefix.to_string(),
            ids: Vec::new(),
        };
        for s in services {
            if let Err(e) = up.start_one(s, &labels).await {
                up.stop().await;
                return Err(e);
            }
        }
        Ok(up)
    }

    async fn start_one(
        &mut self,
        s: &ServiceSpec,
        labels: &[(String, String)],
    ) -> Result<(), String> {
        let (engine, network, prefix) = (
            self.engine.clone(),
            self.network.clone(),
            self.prefix.clone(),
        );
        {
            let spec = StepContainerSpec {
                name: format!("{prefix}-{}", s.name),
                image: s.image.clone(),
                command: Vec::new(),
                env: s.env.clone(),
                working_dir: String::new(),
                binds: Vec::new(),
                memory_bytes: None,
                nano_cpus: None,
                labels: labels.to_vec(),
                network: Some(network.clone()),
                aliases: vec![s.name.clone()],
            };
            let id = engine
                .create_step(&spec)
                .await
                .map_err(|e| format!("service `{}`: {e:#}", s.name))?;
            self.ids.push(id.clone());
            engine
                .start(&id)
                .await
                .map_err(|e| format!("service `{}`: {e:#}", s.name))?;
            if let Some(port) = s.tcp {
                self.healthy(&id, s, port).await?;
            }
        }
        Ok(())
    }

    /// Waits until the service accepts a TCP connection on `port` at its address on the job's
    /// network, or its timeout passes.
    async fn healthy(&self, id: &str, s: &ServiceSpec, port: u16) -> Result<(), String> {
        let end = Instant::now() + s.timeout;
        let mut last = String::from("it has no address yet");
        while Instant::now() < end {
            match self.engine.inspect(id).await {
                Ok(Some(state)) if !state.running => {
                    last = format!("it {}", state.ended());
                    break;
                }
                _ => {}
            }
            if let Ok(Some(ip)) = self.engine.address(id, &self.network).await {
                let addr = format!("{ip}:{port}");
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(&addr),
                )
                .await
                {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => last = format!("{addr}: {e}"),
                    Err(_) => last = format!("{addr}: no answer within 1s"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let output = self.engine.logs(id, 10).await.join("\n  ");
        Err(format!(
            "service `{}` was not healthy within {} ({last}); its last output:\n  {output}",
            s.name,
            gantry_model::duration::format_duration(s.timeout)
        ))
    }
}

impl Services {
    /// Removes the services and their network.
    pub(crate) async fn stop(self) {
        for id in &self.ids {
            if let Err(e) = self.engine.remove(id).await {
                tracing::warn!(error = %format!("{e:#}"), "removing a service container");
            }
        }
        if let Err(e) = self.engine.remove_network(&self.network).await {
            tracing::warn!(error = %format!("{e:#}"), "removing a job's network");
        }
    }
}
