//! The data plane: what serves users, apart from the server that decides. One `gantry
//! dataplane` process per data directory holds every environment's router (its listening
//! sockets, its route table, its measurements); releases run under per-release shims
//! ([`crate::shim`]). Neither depends on `gantry serve` being up: the server talks to the data
//! plane over a unix socket (`<data>/dataplane.sock`, one JSON object per line each way) and can
//! crash, restart or be upgraded while users are served.
//!
//! Lifecycle and invariants:
//! - One data plane per data directory: it holds an `flock` on `dataplane.lock` for its life;
//!   another start on the same directory is refused unless it asks to replace the holder.
//! - The last table of every environment is on disk (`dataplane/routes.json`, written whole:
//!   temp file + rename) before a change is acknowledged, so a data plane started again serves
//!   what was last decided, on the same addresses.
//! - Replacement drops nothing: the new process asks the old one for its listening sockets
//!   (file descriptors over the unix socket, as HAProxy and nginx do), serves on the same
//!   sockets, then tells the old one, which stops accepting, lets open connections finish their
//!   requests, and exits. Connections waiting in a listen queue stay in it: the queue belongs
//!   to the socket, not to the process.
//! - A data plane that is handing over refuses changes (`handing over`): the server retries
//!   against the new one, so no table is lost in between.

mod client;
mod fds;
mod serve;

pub use client::{DataPlane, Measured, RouterLink, never_restart};
pub use serve::{run, stop};

use crate::router::{Backend, CanaryRoute, RouteTable, Users};
use gantry_engine::canary::Window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The control socket in a data directory.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("dataplane.sock")
}
/// Held (flock) by the data plane serving the directory.
pub fn lock_path(data: &Path) -> PathBuf {
    data.join("dataplane.lock")
}
/// The pid and socket of the data plane serving the directory (for operators and tests).
pub fn info_path(data: &Path) -> PathBuf {
    data.join("dataplane.json")
}
/// The last table of every environment.
pub fn routes_path(data: &Path) -> PathBuf {
    data.join("dataplane").join("routes.json")
}
/// The variable that marks the data plane process with its data directory.
pub const DATAPLANE_VAR: &str = "GANTRY_DATAPLANE";

/// A backend as the wire names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendWire {
    pub release: i64,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryWire {
    pub backend: BackendWire,
    pub share: u32,
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub allow: Vec<String>,
}

/// A route table as the wire (and `routes.json`) carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableWire {
    pub stable: Option<BackendWire>,
    pub canary: Option<CanaryWire>,
    pub fallback: Option<BackendWire>,
}

fn wire(b: &Backend) -> BackendWire {
    BackendWire {
        release: b.release,
        addr: b.addr,
    }
}

impl From<&RouteTable> for TableWire {
    fn from(t: &RouteTable) -> Self {
        TableWire {
            stable: t.stable.as_deref().map(wire),
            canary: t.canary.as_ref().map(|c| CanaryWire {
                backend: wire(&c.backend),
                share: c.share,
                header: c.users.header.clone(),
                cookie: c.users.cookie.clone(),
                allow: c.users.allow.clone(),
            }),
            fallback: t.fallback.as_deref().map(wire),
        }
    }
}

impl TableWire {
    /// The table with backends taken from `known` where the same release at the same address
    /// is there already (its measurements go on), new ones otherwise.
    pub fn build(&self, known: &[Arc<Backend>]) -> RouteTable {
        let backend = |w: &BackendWire| {
            known
                .iter()
                .find(|b| b.release == w.release && b.addr == w.addr)
                .cloned()
                .unwrap_or_else(|| Backend::new(w.release, w.addr))
        };
        RouteTable {
            stable: self.stable.as_ref().map(backend),
            canary: self.canary.as_ref().map(|c| CanaryRoute {
                backend: backend(&c.backend),
                share: c.share,
                users: Users {
                    header: c.header.clone(),
                    cookie: c.cookie.clone(),
                    allow: c.allow.clone(),
                },
            }),
            fallback: self.fallback.as_ref().map(backend),
        }
    }
}

/// The backends a table names (each once).
pub fn backends(t: &RouteTable) -> Vec<Arc<Backend>> {
    let mut out: Vec<Arc<Backend>> = Vec::new();
    for b in [
        t.stable.clone(),
        t.canary.as_ref().map(|c| c.backend.clone()),
        t.fallback.clone(),
    ]
    .into_iter()
    .flatten()
    {
        if !out.iter().any(|o| Arc::ptr_eq(o, &b)) {
            out.push(b);
        }
    }
    out
}

/// An environment's router as `routes.json` keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Routed {
    pub addr: Option<SocketAddr>,
    pub table: TableWire,
}

/// What `routes.json` holds: environment (`project/name`) → its router.
pub type Routes = BTreeMap<String, Routed>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who serves: pid, and the environments routed.
    Hello,
    /// Makes sure the environment's router listens on `addr` (port 0: anywhere, once).
    Listen { env: String, addr: SocketAddr },
    /// Swaps the environment's table.
    Set { env: String, table: TableWire },
    /// The environment's address and table.
    Get { env: String },
    /// What the router measured for each backend of the table since `since` (milliseconds).
    Measure { env: String, since: i64 },
    /// Stops the environment's router and forgets it.
    Close { env: String },
    /// Hands the listening sockets to the asking process (see the module's doc).
    Handover,
    /// Sent by the process that took over: stop accepting, drain, exit.
    Taken,
    /// Stops every router and exits (an operator's `gantry dataplane stop`).
    Quit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowWire {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<Window> for WindowWire {
    fn from(w: Window) -> Self {
        WindowWire {
            requests: w.requests,
            errors: w.errors,
            p50_ms: w.p50_ms,
            p90_ms: w.p90_ms,
            p99_ms: w.p99_ms,
        }
    }
}

impl From<WindowWire> for Window {
    fn from(w: WindowWire) -> Self {
        Window {
            requests: w.requests,
            errors: w.errors,
            p50_ms: w.p50_ms,
            p90_ms: w.p90_ms,
            p99_ms: w.p99_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasuredWire {
    pub release: i64,
    pub addr: SocketAddr,
    pub window: WindowWire,
    pub total_requests: u64,
    pub total_errors: u64,
    pub inflight: usize,
}

/// A router handed over: where it listens, its table, and how many sockets follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandedRouter {
    pub env: String,
    pub addr: SocketAddr,
    pub table: TableWire,
    pub sockets: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Hello {
        pid: u32,
        envs: Vec<String>,
    },
    Listening {
        addr: SocketAddr,
    },
    Done,
    Table {
        addr: Option<SocketAddr>,
        table: TableWire,
    },
    Measured {
        backends: Vec<MeasuredWire>,
    },
    /// The routers follow, each as one line and then a message carrying its sockets.
    Handover {
        routers: Vec<HandedRouter>,
    },
    Refused {
        error: String,
    },
}

#[cfg(test)]
mod tests;
