//! What the runner asks of the engine for jobs in images: a container per step (no ports, the
//! workspace bound in), its output as it comes, and the network a job shares with its
//! services.

use super::*;

/// A container that runs one step of a job: no ports, the workspace bound in, and removed by
/// its runner when the step ends.
#[derive(Debug, Clone, Default)]
pub struct StepContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    /// `host:container` binds.
    pub binds: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub labels: Vec<(String, String)>,
    /// The network it joins (a job's, beside its services), and its names there.
    pub network: Option<String>,
    pub aliases: Vec<String>,
}

impl Engine {
    /// Creates a step's container (not started).
    pub async fn create_step(&self, spec: &StepContainerSpec) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // The step's command as given, whatever the image's entrypoint is (a service's
            // empty command keeps the image's own).
            entrypoint: (!spec.command.is_empty()).then(Vec::new),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.iter().cloned().collect()),
            working_dir: (!spec.working_dir.is_empty()).then(|| spec.working_dir.clone()),
            networking_config: spec
                .network
                .as_ref()
                .map(|n| bollard::models::NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        n.clone(),
                        bollard::models::EndpointSettings {
                            aliases: (!spec.aliases.is_empty()).then(|| spec.aliases.clone()),
                            ..Default::default()
                        },
                    )])),
                }),
            host_config: Some(HostConfig {
                network_mode: spec.network.clone(),
                binds: Some(spec.binds.clone()),
                memory: spec.memory_bytes,
                // No swap beyond the limit: a breach is an OOM kill, not a crawl.
                memory_swap: spec.memory_bytes,
                nano_cpus: spec.nano_cpus,
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| {
                self.fail(
                    &format!("creating container {} from {}", spec.name, spec.image),
                    e,
                )
            })?;
        Ok(created.id)
    }

    /// The container's output from its start, as it comes: `(is_stderr, bytes)` chunks, until
    /// it exits.
    pub fn follow(
        &self,
        id: &str,
    ) -> impl futures_util::Stream<Item = Result<(bool, Vec<u8>)>> + Send + 'static {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let host = self.host.clone();
        self.docker
            .logs(id, Some(options))
            .map(move |chunk| match chunk {
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    Ok((true, message.to_vec()))
                }
                Ok(other) => Ok((false, other.into_bytes().to_vec())),
                Err(e) => Err(anyhow!("reading a container's output from {host}: {e}")),
            })
    }

    /// Creates a bridge network for one job and its services.
    pub async fn create_network(&self, name: &str, labels: &[(String, String)]) -> Result<()> {
        let config = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            labels: Some(labels.iter().cloned().collect()),
            ..Default::default()
        };
        self.docker
            .create_network(config)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&format!("creating network {name}"), e))
    }

    /// Removes a network; gone is fine.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing network {name}"), e)),
        }
    }

    /// Removes the networks carrying every one of `labels`; returns how many.
    pub async fn remove_networks(&self, labels: &[(&str, &str)]) -> Result<usize> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| self.fail("listing networks", e))?;
        let mut removed = 0;
        for n in found {
            if let Some(name) = n.name
                && self.remove_network(&name).await.is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The container's address on `network`, once it has one.
    pub async fn address(&self, id: &str, network: &str) -> Result<Option<String>> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.fail(&format!("inspecting container {}", short_id(id)), e))?;
        Ok(c.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).cloned())
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty()))
    }
}
