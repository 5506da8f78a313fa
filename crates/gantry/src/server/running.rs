//! A server from start to stop: [`Server::start`] is the composition root (the server and
//! its deploy manager, recovery of environments, the API on its listener, queue workers,
//! pollers, retention) and [`RunningServer::shutdown`] the stop sequence (no new runs, running
//! runs get the grace period and are then cancelled, the API stops, releases stop, the store
//! closes). `gantry serve` and `gantry demo` are both "parse, start, wait, shut down".

use super::lock::ServerLock;
use super::{Server, spawn_pollers, spawn_workers};
use crate::client::SERVER_FILE;
use crate::context::Context;
use anyhow::{Context as _, Result};
use gantry_api::{AppState, metrics::Metrics};
use gantry_config::server::ServerConfig;
use gantry_runner::owner::OwnerLock;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;
use tokio::task::JoinHandle;

/// A started server; stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    pub server: Arc<Server>,
    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    ctx: Context,
    owner: OwnerLock,
    /// This server's hold on its data directory: released last.
    lock: ServerLock,
    server_file: PathBuf,
    workers: Vec<JoinHandle<()>>,
    pollers: Vec<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
    http: JoinHandle<std::io::Result<()>>,
    stop_http: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// Starts a server on `listener` with `config`, its state in `ctx` (the data directory
    /// held by `lock`, taken before `ctx` was opened): recovers what a
    /// previous server left (environments serve again, locks of dead holders released), writes
    /// `server.json` for the CLI, and starts the API, the queue workers, the pollers and
    /// retention. Returns once all of that runs.
    pub async fn start(
        config: ServerConfig,
        ctx: Context,
        listener: tokio::net::TcpListener,
        lock: ServerLock,
    ) -> Result<RunningServer> {
        let data_dir = ctx.data_dir.clone();
        super::keys::ensure_admin_token(&*ctx.state, &data_dir).await?;
        let owner = OwnerLock::acquire(&ctx.lock_dir(), ctx.state.clone()).await?;
        for p in &config.projects {
            ctx.state.upsert_project(&p.name, &p.repo).await?;
        }
        let addr = listener.local_addr()?;
        let tls = match &config.tls {
            Some(t) => Some(gantry_api::tls::server_config(&t.cert, &t.key)?),
            None => None,
        };
        let url = match tls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let metrics = Arc::new(Metrics::new());
        let sandbox = match config.sandbox {
            Some(false) => None,
            demand => crate::sandbox::steps_sandbox(
                &data_dir,
                config.secrets_file.as_deref(),
                demand == Some(true),
            )?,
        };
        let mut server = Server::new(
            config.clone(),
            data_dir.clone(),
            ctx.state.clone(),
            ctx.use_artifacts(config.artifacts.as_ref())?,
            metrics.clone(),
            owner.name().to_string(),
            url.clone(),
        );
        server.deploys.set_sandbox(sandbox.clone());
        server.sandbox = sandbox;
        let server = Arc::new(server);
        super::spawn_failure_notifications(server.clone(), &server.deploys);
        let lock_dir = ctx.lock_dir();
        for note in server
            .deploys
            .recover(|name| gantry_runner::owner::released_here(&lock_dir, name))
            .await?
        {
            eprintln!("gantry: {note}");
        }
        let share_key = Arc::new(gantry_api::ShareKey::new(match &config.state {
            None => super::keys::share_key(&data_dir)?,
            Some(_) => super::keys::shared_share_key(ctx.state.as_ref(), &data_dir).await?,
        }));
        let state = AppState {
            store: ctx.state.clone(),
            control: server.clone(),
            metrics,
            max_body_bytes: config.max_body_bytes,
            artifacts: server.artifacts.clone(),
            share_key: share_key.clone(),
            public_url: config.public_url.clone().unwrap_or_else(|| url.clone()),
            history: Default::default(),
        };
        // Written whole or not at all (temp file + rename): the CLI and scripts read it the
        // moment it appears.
        let server_file = data_dir.join(SERVER_FILE);
        let tmp = server_file.with_extension("json.tmp");
        let ca = config.tls.as_ref().and_then(|t| t.ca.clone());
        std::fs::write(
            &tmp,
            serde_json::json!({ "url": url, "pid": std::process::id(), "ca": ca }).to_string(),
        )
        .and_then(|()| std::fs::rename(&tmp, &server_file))
        .with_context(|| format!("writing {}", server_file.display()))?;
        if config.requeue_interrupted {
            requeue(&server, &ctx.recovered).await?;
        }
        let retention = spawn_retention(server.clone());
        let workers = spawn_workers(server.clone());
        let mut pollers = spawn_pollers(server.clone());
        pollers.extend(super::schedules::spawn_schedules(server.clone()));
        // Runs queued by other servers sharing the store wake this one's workers too.
        if let Some(mut signals) = ctx.state.queue_signals().await? {
            let server = server.clone();
            pollers.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                while signals.next().await.is_some() {
                    server.queued.notify_one();
                }
            }));
        }
        if config.state.is_some() {
            pollers.extend(super::shared::spawn_watchers(&server, &ctx, share_key));
        }
        let (stop_http, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stop_http_rx.await;
        };
        let http = match tls {
            Some(tls) => {
                let listener = gantry_api::tls::TlsListener::new(listener, tls)?;
                tokio::spawn(gantry_api::serve(listener, state, stopped))
            }
            None => tokio::spawn(gantry_api::serve(listener, state, stopped)),
        };
        Ok(RunningServer {
            server,
            url,
            ctx,
            owner,
            lock,
            server_file,
            workers,
            pollers,
            retention,
            http,
            stop_http,
        })
    }
}

impl RunningServer {
    /// Stops the server: no new runs; running runs have `grace` to finish, then are cancelled
    /// and recorded; then the API, the environments' routers and releases, and the store.
    pub async fn shutdown(self, grace: Duration) {
        let server = &self.server;
        eprintln!(
            "gantry: shutting down: taking no new runs; running runs have {} to finish",
            gantry_model::duration::format_duration(grace)
        );
        let _ = server.draining.send(true);
        for p in &self.pollers {
            p.abort();
        }
        if let Some(r) = &self.retention {
            r.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !server.running.lock().expect("running map").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left: Vec<i64> = server
            .running
            .lock()
            .expect("running map")
            .keys()
            .copied()
            .collect();
        if !left.is_empty() {
            eprintln!("gantry: cancelling runs still running: {left:?}");
            for tx in server.running.lock().expect("running map").values() {
                let _ = tx.send(true);
            }
        }
        for w in self.workers {
            let _ = w.await;
        }
        let extra: Vec<_> =
            std::mem::take(&mut *server.extra_workers.lock().expect("extra workers"));
        for w in extra {
            let _ = w.await;
        }
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        server.deploys.shutdown().await;
        // Only ever by its writer: the lock keeps other servers from writing one, and the pid
        // in it says whose it is.
        if let Some(name) = self.server_file.file_name().and_then(|n| n.to_str()) {
            self.lock.remove_own(name);
        }
        self.ctx.state.close().await;
        drop(self.owner);
        drop(self.lock);
        eprintln!("gantry: stopped");
    }
}

/// Queues a new run for each run the start found interrupted (`[queue] requeue_interrupted`).
pub(super) async fn requeue(server: &Server, recovered: &[i64]) -> Result<()> {
    for id in recovered {
        let Some(d) = server.store.run_detail(*id).await? else {
            continue;
        };
        let Some(project) = server.project(&d.run.project).cloned() else {
            continue;
        };
        if let Some(new) = server
            .enqueue(&project, super::Order::again(&d.run, "requeue"))
            .await?
        {
            eprintln!("gantry: run {id} was interrupted; queued again as run {new}");
        }
    }
    Ok(())
}

/// Applies retention every `[retention] interval` (the first sweep one interval after start).
fn spawn_retention(server: Arc<Server>) -> Option<JoinHandle<()>> {
    let every = server.config.retention_interval;
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let (keep, young) = (server.config.keep_runs, server.config.keep_younger_than);
            match crate::gc::collect(&*server.store, &*server.artifacts, keep, young, false).await {
                Ok(r) if !r.removed.is_empty() => tracing::info!(
                    removed = r.removed.len(),
                    objects = r.objects_deleted,
                    bytes = r.bytes_freed,
                    "retention applied"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "retention failed"),
            }
            if let Some(age) = server.config.keep_logs {
                let now = gantry_engine::ports::now_millis();
                let before = now - age.as_millis() as i64;
                match server.store.remove_logs_before(before, now).await {
                    Ok((runs, lines)) if runs > 0 => {
                        tracing::info!(runs, lines, "log retention removed old runs' logs")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "log retention failed"),
                }
            }
        }
    }))
}
