//! The `process` target: each release is a supervised service on a fresh local port, started in
//! its release directory with `PORT` set. The router sends users to it once it is healthy.

use super::{ReleaseContext, Running, Target, free_port};
use crate::supervisor::{self, Service, ServiceEvent, ServiceSpec};
use anyhow::bail;
use async_trait::async_trait;
use gantry_model::{TargetKind, TargetSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::sync::mpsc;

pub struct ProcessTarget {
    services: Mutex<HashMap<i64, (Service, SocketAddr)>>,
    events: mpsc::UnboundedSender<ServiceEvent>,
    /// What its services run in, if anything.
    sandbox: Option<gantry_runner::sandbox::Sandbox>,
}

impl ProcessTarget {
    pub fn new(
        events: mpsc::UnboundedSender<ServiceEvent>,
        sandbox: Option<gantry_runner::sandbox::Sandbox>,
    ) -> Self {
        Self {
            services: Mutex::new(HashMap::new()),
            events,
            sandbox,
        }
    }
}

#[async_trait]
impl Target for ProcessTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Process
    }

    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(TargetSpec::Process { command, env }) = &r.spec.target else {
            bail!("environment {} has no process target", r.environment);
        };
        // A release restarted (rollback to a stopped one) replaces what ran before.
        self.stop(r.source).await;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut vars = r.env();
        vars.extend(env.iter().cloned());
        vars.push(("PORT".into(), port.to_string()));
        let service = supervisor::start(
            ServiceSpec {
                release: r.source,
                release_id: r.source_id,
                command: command.clone(),
                dir: r.dir.clone(),
                env: vars,
                log: r.log.clone(),
                sandbox: self.sandbox.clone(),
            },
            self.events.clone(),
        );
        self.services
            .lock()
            .expect("services")
            .insert(r.source, (service, addr));
        Ok(Some(addr))
    }

    async fn roll_back(&self, _to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        Ok(()) // The router moves users.
    }

    fn running(&self, source: i64) -> Option<Running> {
        let services = self.services.lock().expect("services");
        let (s, addr) = services.get(&source)?;
        Some(Running {
            addr: Some(*addr),
            pid: Some(s.pid()),
            uptime: s.started.elapsed(),
            crashes: s.crashes(),
            last_crash: s.last_crash(),
            log: s.log.clone(),
        })
    }

    async fn stop(&self, source: i64) {
        let service = self.services.lock().expect("services").remove(&source);
        if let Some((s, _)) = service {
            s.stop().await;
        }
    }

    async fn stop_all(&self) {
        let all: Vec<(Service, SocketAddr)> = self
            .services
            .lock()
            .expect("services")
            .drain()
            .map(|(_, v)| v)
            .collect();
        for (s, _) in all {
            s.stop().await;
        }
    }
}
