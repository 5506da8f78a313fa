//! The router in front of an environment's releases: an HTTP/1.1 reverse proxy on the
//! environment's `router.listen` address. Every request goes to a backend chosen from the route
//! table ([`table`]); the table is swapped atomically, so a switch is one pointer store —
//! requests already in flight finish on the backend they started on, and the next request goes
//! to the new one.
//!
//! The table holds the stable backend, optionally a canary with its share (in basis points) and
//! who its users are, and a fallback: when the chosen backend refuses the connection (it
//! crashed), a request without a body is sent to the fallback (the previous release) instead of
//! failing.
//!
//! Every answer is measured per backend ([`crate::stats`]): status (5xx and unanswered requests
//! are errors) and time to the response head. The proxying itself is [`proxy`] over the heads
//! and bodies of [`http1`].

mod http1;
mod proxy;
pub mod sched;
mod table;
#[cfg(test)]
mod tests;

pub use table::{ALL, Backend, CanaryRoute, FORCE_HEADER, Fields, RouteTable, Side, Users};

use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct Router {
    pub addr: SocketAddr,
    table: ArcSwap<RouteTable>,
    /// Its listening sockets (the threads accept on copies of them): handed to a data plane
    /// that takes over, so no connection waiting in a queue is lost.
    sockets: Vec<std::net::TcpListener>,
    /// Client connections open now (a stopping router waits for them, bounded).
    connections: AtomicUsize,
    /// Handed over to another process: each open connection gets one more answer, marked
    /// `Connection: close`, so its client reconnects — to the successor — without a request
    /// lost to a connection closed under it.
    retiring: std::sync::atomic::AtomicBool,
    /// Router threads still accepting: once 0 (and no connection is open), nothing more can
    /// arrive at this process.
    accepting: AtomicUsize,
    stop: watch::Sender<bool>,
    /// Measure every answer per backend (off only to measure what measuring costs).
    measure: bool,
    /// The router threads, to even out their connections.
    lanes: Vec<Lane>,
}

/// One router thread, as the others see it.
struct Lane {
    /// Client connections it serves now.
    open: AtomicUsize,
    /// Connections another thread accepted and hands to this one.
    handoff: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
}

impl Router {
    /// Binds `listen` and starts serving (with an empty table: 503 until a release is routed).
    pub async fn start(listen: SocketAddr) -> anyhow::Result<Arc<Self>> {
        Self::start_with(listen, true).await
    }

    /// [`Router::start`], choosing whether answers are measured.
    ///
    /// The router runs on threads of its own, one per core (at most 4), each a single-threaded
    /// runtime with its own listening socket (`SO_REUSEPORT`: the kernel spreads connections)
    /// and its own pool of connections to the releases: a request, its upstream connection and
    /// its answer stay on one thread, without cross-thread wake-ups. The threads run under
    /// `SCHED_BATCH` unless `GANTRY_ROUTER_SCHED=normal` ([`sched`]).
    pub async fn start_with(listen: SocketAddr, measure: bool) -> anyhow::Result<Arc<Self>> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let first = bind(listen).map_err(|e| {
            anyhow::anyhow!("the router cannot listen on {listen}: {e} (is another process using it? change `router.listen`)")
        })?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(bind(addr)?);
        }
        Self::start_on(listeners, measure)
    }

    /// Serves on sockets that listen already (bound by [`Router::start_with`], or handed over
    /// by the data plane this one replaces), one router thread each.
    pub fn start_on(
        listeners: Vec<std::net::TcpListener>,
        measure: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let Some(first) = listeners.first() else {
            anyhow::bail!("a router needs at least one listening socket");
        };
        let policy = sched::Policy::from_env().map_err(anyhow::Error::msg)?;
        let addr = first.local_addr()?;
        let sockets = listeners
            .iter()
            .map(|l| l.try_clone())
            .collect::<std::io::Result<Vec<_>>>()?;
        let (lanes, inboxes): (Vec<Lane>, Vec<_>) = listeners
            .iter()
            .map(|_| {
                let (handoff, inbox) = tokio::sync::mpsc::unbounded_channel();
                let lane = Lane {
                    open: AtomicUsize::new(0),
                    handoff,
                };
                (lane, inbox)
            })
            .unzip();
        let router = Arc::new(Self {
            addr,
            table: ArcSwap::from_pointee(RouteTable::default()),
            sockets,
            connections: AtomicUsize::new(0),
            retiring: std::sync::atomic::AtomicBool::new(false),
            accepting: AtomicUsize::new(0),
            stop: watch::channel(false).0,
            measure,
            lanes,
        });
        for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            listener.set_nonblocking(true)?;
            let router = router.clone();
            // Counted before the thread runs; the thread uncounts itself when it stops
            // accepting (or could not start).
            router.accepting.fetch_add(1, Ordering::AcqRel);
            std::thread::Builder::new()
                .name(format!("gantry-router-{i}"))
                .spawn(move || {
                    if let Err(e) = policy.apply() {
                        tracing::warn!(error = %e, ?policy, "the router thread keeps the normal scheduling policy");
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "the router could not start a runtime");
                            router.accepting.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                    };
                    rt.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => accept_loop(router, i, l, inbox).await,
                            Err(e) => {
                                tracing::error!(error = %e, "the router could not listen");
                                router.accepting.fetch_sub(1, Ordering::AcqRel);
                            }
                        }
                    });
                })?;
        }
        Ok(router)
    }

    /// Switches traffic: the next request uses `table`.
    pub fn set(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Its listening sockets, for a process that takes over.
    pub fn sockets(&self) -> &[std::net::TcpListener] {
        &self.sockets
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Whether the router has stopped accepting on every thread and every connection it
    /// accepted has ended.
    pub fn drained(&self) -> bool {
        self.accepting.load(Ordering::Acquire) == 0 && self.open_connections() == 0
    }

    /// Stops accepting connections (another process accepts on the same sockets now); each
    /// open connection is closed after its next answer, or after 5 s idle.
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::Release);
        let _ = self.stop.send(true);
    }

    /// Stops accepting connections; open ones finish their current request.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Counts a request in flight to a backend until dropped.
pub struct Inflight(Arc<Backend>);

impl Inflight {
    fn new(backend: Arc<Backend>) -> Self {
        backend.inflight.fetch_add(1, Ordering::AcqRel);
        Self(backend)
    }

    fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A listening socket with `SO_REUSEPORT`, so each router thread can have its own. Called
/// within a runtime.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // Registered with the caller's runtime only for a moment: each router thread takes it over.
    socket.listen(1024)?.into_std()
}

/// One router thread: accepts connections and serves them (each thread keeps its own idle
/// connections to the releases).
///
/// The kernel spreads new connections over the threads' sockets by a hash, which can leave one
/// thread with many more than another; a thread that accepts a connection while it serves more
/// than the least busy one hands it over (once per connection, not per request).
async fn accept_loop(
    router: Arc<Router>,
    me: usize,
    listener: TcpListener,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
) {
    let mut stop = router.stop.subscribe();
    // The thread's connections learn of the stop from the thread's own channel: nothing is
    // shared with the other router threads while they wait for a request.
    let (local_stop, _) = watch::channel(false);
    let serve = |stream: tokio::net::TcpStream, peer: SocketAddr| {
        let router = router.clone();
        let stop = local_stop.subscribe();
        router.connections.fetch_add(1, Ordering::AcqRel);
        router.lanes[me].open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            proxy::serve(router.clone(), stream, peer, stop).await;
            router.lanes[me].open.fetch_sub(1, Ordering::AcqRel);
            router.connections.fetch_sub(1, Ordering::AcqRel);
        });
    };
    let adopt = |stream: std::net::TcpStream, peer: SocketAddr| {
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            serve(stream, peer);
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "router accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some((stream, peer)) = inbox.recv() => {
                adopt(stream, peer);
                continue;
            }
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let mine = router.lanes[me].open.load(Ordering::Acquire);
        let least = (0..router.lanes.len())
            .min_by_key(|i| router.lanes[*i].open.load(Ordering::Acquire))
            .unwrap_or(me);
        if least == me || mine <= router.lanes[least].open.load(Ordering::Acquire) + 1 {
            serve(stream, peer);
            continue;
        }
        if let Ok(std_stream) = stream.into_std()
            && let Err(back) = router.lanes[least].handoff.send((std_stream, peer))
        {
            // That thread has ended: served here after all.
            let (std_stream, peer) = back.0;
            adopt(std_stream, peer);
        }
    }
    let _ = local_stop.send(true);
    router.accepting.fetch_sub(1, Ordering::AcqRel);
    // Stopped: let open connections finish their current request (bounded), then end the
    // thread; a connection handed over meanwhile is still served.
    for _ in 0..120 {
        while let Ok((stream, peer)) = inbox.try_recv() {
            adopt(stream, peer);
        }
        if router.connections.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
