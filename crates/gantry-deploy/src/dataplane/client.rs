//! The server's side of the data plane: [`DataPlane`] is the connection to the directory's
//! data plane (started, detached, when none answers), [`RouterLink`] one environment's router
//! through it. Calls are retried while the data plane is being started or replaced (bounded:
//! 20 s), so a replacement is invisible to the server but for the wait.

use super::{Answer, Request, TableWire, socket_path};
use crate::router::RouteTable;
use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use gantry_engine::canary::Window;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long a call waits for a data plane to answer (one starting, one being replaced).
const PATIENCE: Duration = Duration::from_secs(20);

pub struct DataPlane {
    data: PathBuf,
    /// The gantry binary, to start a data plane when none answers (`None`: never start one).
    exe: Option<PathBuf>,
    conn: tokio::sync::Mutex<Option<BufReader<UnixStream>>>,
}

/// What the router measured for one backend.
#[derive(Debug, Clone)]
pub struct Measured {
    pub release: i64,
    pub addr: SocketAddr,
    pub window: Window,
    pub total_requests: u64,
    pub total_errors: u64,
    pub inflight: usize,
}

impl DataPlane {
    pub fn new(data: &Path, exe: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            data: data.to_path_buf(),
            exe,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// One request and its answer. A refusal is an error with the data plane's words.
    pub async fn call(&self, req: &Request) -> anyhow::Result<Answer> {
        let line = serde_json::to_string(req)? + "\n";
        let deadline = Instant::now() + PATIENCE;
        let mut started = false;
        let mut last = String::new();
        let mut conn = self.conn.lock().await;
        while Instant::now() < deadline {
            if conn.is_none() {
                match UnixStream::connect(socket_path(&self.data)).await {
                    Ok(s) => *conn = Some(BufReader::new(s)),
                    Err(e) => {
                        last = format!("connecting to {}: {e}", socket_path(&self.data).display());
                        if !started && let Some(exe) = &self.exe {
                            start(exe, &self.data)?;
                            started = true;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let stream = conn.as_mut().expect("connected");
            match exchange(stream, &line).await {
                Ok(Answer::Refused { error }) if error.starts_with("handing over") => {
                    last = error;
                    *conn = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Answer::Refused { error }) => bail!("the data plane refused: {error}"),
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    last = format!("{e:#}");
                    *conn = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(anyhow!(
            "the data plane of {} did not answer within {} s: {last}",
            self.data.display(),
            PATIENCE.as_secs()
        ))
    }

    /// The data plane's pid (starting one if none answers).
    pub async fn hello(&self) -> anyhow::Result<(u32, Vec<String>)> {
        match self.call(&Request::Hello).await? {
            Answer::Hello { pid, envs } => Ok((pid, envs)),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// The environment's router, listening on `listen` (moved there if it listened elsewhere;
    /// port 0 keeps where it listens), with the table it serves now.
    pub async fn router(
        self: &Arc<Self>,
        env: &str,
        listen: SocketAddr,
    ) -> anyhow::Result<Arc<RouterLink>> {
        let addr = match self
            .call(&Request::Listen {
                env: env.to_string(),
                addr: listen,
            })
            .await?
        {
            Answer::Listening { addr } => addr,
            other => bail!("unexpected answer {other:?}"),
        };
        let table = match self
            .call(&Request::Get {
                env: env.to_string(),
            })
            .await?
        {
            Answer::Table { table, .. } => table,
            other => bail!("unexpected answer {other:?}"),
        };
        Ok(Arc::new(RouterLink {
            addr,
            env: env.to_string(),
            plane: self.clone(),
            table: ArcSwap::from_pointee(table.build(&[])),
        }))
    }

    /// Stops the router of `env` (`project/environment`), if it has one.
    pub async fn close_router(&self, env: &str) -> anyhow::Result<()> {
        self.call(&Request::Close {
            env: env.to_string(),
        })
        .await
        .map(|_| ())
    }

    /// The environment's address (if it has a router) and the table it serves.
    pub async fn table(&self, env: &str) -> anyhow::Result<(Option<SocketAddr>, TableWire)> {
        match self
            .call(&Request::Get {
                env: env.to_string(),
            })
            .await?
        {
            Answer::Table { addr, table } => Ok((addr, table)),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}

async fn exchange(stream: &mut BufReader<UnixStream>, line: &str) -> anyhow::Result<Answer> {
    stream.get_mut().write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut answer))
        .await
        .context("waiting for the data plane's answer")??;
    if n == 0 {
        bail!("the data plane closed the connection");
    }
    serde_json::from_str(&answer)
        .with_context(|| format!("reading the data plane's answer {answer:?}"))
}

/// Data directories whose data plane this process is stopping for good: no call of this
/// process starts another there.
static NOT_RESTARTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// From now on, no [`DataPlane`] of this process starts a data plane for `data` when none
/// answers: its calls fail instead. For a process that stops its data plane while its own
/// tasks (a canary's measuring, a deployment) may still be calling it, so that the stop is not
/// undone behind it (`gantry demo`'s Ctrl-C).
pub fn never_restart(data: &Path) {
    NOT_RESTARTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(real(data));
}

/// `path` with its links resolved, as far as it exists.
fn real(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Starts a data plane for `data`, detached (its own session, no parent to die with): it
/// outlives the server that started it. Refused for a directory [`never_restart`] named.
fn start(exe: &Path, data: &Path) -> anyhow::Result<()> {
    let here = real(data);
    if NOT_RESTARTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&here)
    {
        bail!(
            "the data plane of {} is being stopped by this process: not starting another",
            data.display()
        );
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("dataplane.log"))
        .context("opening dataplane.log")?;
    let mut cmd = crate::shim::detached(exe, &log)?;
    cmd.arg("dataplane")
        .arg("--data")
        .arg(data)
        .env(super::DATAPLANE_VAR, data)
        .stdin(std::process::Stdio::null());
    crate::shim::spawn_detached(cmd, None)
        .with_context(|| format!("starting the data plane ({})", exe.display()))?;
    Ok(())
}

/// One environment's router in the data plane, with the table this server last set (the
/// data plane's own when the link was made).
pub struct RouterLink {
    pub addr: SocketAddr,
    env: String,
    plane: Arc<DataPlane>,
    table: ArcSwap<RouteTable>,
}

impl RouterLink {
    /// The table last set (its backends are this side's: measurements come from
    /// [`RouterLink::measure`]).
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Switches traffic: once this returns, the next request uses `table` — and the data
    /// plane has it on disk.
    pub async fn set(&self, table: RouteTable) -> anyhow::Result<()> {
        match self
            .plane
            .call(&Request::Set {
                env: self.env.clone(),
                table: TableWire::from(&table),
            })
            .await?
        {
            Answer::Done => {
                self.table.store(Arc::new(table));
                Ok(())
            }
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Each backend of the data plane's table: its window since `since`, totals, in flight.
    pub async fn measure(&self, since: i64) -> anyhow::Result<Vec<Measured>> {
        match self
            .plane
            .call(&Request::Measure {
                env: self.env.clone(),
                since,
            })
            .await?
        {
            Answer::Measured { backends } => Ok(backends
                .into_iter()
                .map(|m| Measured {
                    release: m.release,
                    addr: m.addr,
                    window: m.window.into(),
                    total_requests: m.total_requests,
                    total_errors: m.total_errors,
                    inflight: m.inflight,
                })
                .collect()),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Stops the environment's router (nothing listens on its address afterwards).
    pub async fn close(&self) -> anyhow::Result<()> {
        self.plane
            .call(&Request::Close {
                env: self.env.clone(),
            })
            .await
            .map(|_| ())
    }
}
