//! The router in front of an environment's releases: an HTTP/1.1 reverse proxy on the
//! environment's `router.listen` address. Every request goes to a backend chosen from the route
//! table; the table is swapped atomically, so a switch is one pointer store — requests already
//! in flight finish on the backend they started on, and the next request goes to the new one.
//!
//! The table holds the stable backend, optionally a canary with its share (in basis points) and
//! who its users are, and a fallback: when the chosen backend refuses the connection (it
//! crashed), a request without a body is sent to the fallback (the previous release) instead of
//! failing.
//!
//! Choosing the canary: `X-Gantry-Release: canary|stable` forces a side (for testers); a user
//! named in `allow` always gets the canary; any other user (named by a header or a cookie) is
//! hashed into one of 10,000 buckets and gets the canary when the bucket is below the share —
//! so a user stays on one side while the share holds, and only ever moves from stable to the
//! canary as it grows. Requests without a user split by share.
//!
//! Every answer is measured per backend ([`crate::stats`]): status (5xx and unanswered requests
//! are errors) and time to the response head.

use crate::stats::Stats;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the router answers with: a release's body (holding its in-flight count until it has
/// been sent or dropped), or a short text of its own. No allocation per request.
pub enum OutBody {
    Upstream { body: Incoming, _guard: Inflight },
    Text(Full<Bytes>),
}

impl hyper::body::Body for OutBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            OutBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            OutBody::Text(text) => Pin::new(text)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Upstream { body, .. } => body.is_end_stream(),
            OutBody::Text(text) => text.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Upstream { body, .. } => body.size_hint(),
            OutBody::Text(text) => text.size_hint(),
        }
    }
}

/// What the router sends a release: the client's body, or nothing (a resent request).
pub enum InBody {
    Client(Incoming),
    Empty,
}

impl hyper::body::Body for InBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            InBody::Client(body) => Pin::new(body).poll_frame(cx),
            InBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InBody::Client(body) => body.is_end_stream(),
            InBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InBody::Client(body) => body.size_hint(),
            InBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Shares are in basis points: 10_000 is everything.
pub const ALL: u32 = 10_000;

/// The header a tester sends to force a side.
pub const FORCE_HEADER: &str = "x-gantry-release";

/// One release the router can send requests to.
pub struct Backend {
    pub release: i64,
    pub addr: SocketAddr,
    authority: hyper::http::uri::Authority,
    /// Requests sent to it whose response has not ended yet.
    inflight: AtomicUsize,
    pub stats: Stats,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend(release {} at {})", self.release, self.addr)
    }
}

impl Backend {
    pub fn new(release: i64, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            release,
            addr,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
            inflight: AtomicUsize::new(0),
            stats: Stats::default(),
        })
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
    pub fn requests(&self) -> u64 {
        self.stats.totals().0
    }
}

/// How users are told apart, and who always gets the canary.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Lowercase header name (`x-user`), or
    pub header: Option<String>,
    /// a cookie name.
    pub cookie: Option<String>,
    pub allow: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CanaryRoute {
    pub backend: Arc<Backend>,
    /// Share of users, in basis points.
    pub share: u32,
    pub users: Users,
}

/// Where requests go. Built whole and swapped in one store.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub stable: Option<Arc<Backend>>,
    pub canary: Option<CanaryRoute>,
    /// Used when the chosen backend refuses the connection.
    pub fallback: Option<Arc<Backend>>,
}

/// Which side a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Stable,
    Canary,
}

/// FNV-1a: a stable hash, the same for a user on every gantry and every version.
fn user_bucket(user: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are poorly spread for short keys.
    ((h ^ (h >> 32)) % u64::from(ALL)) as u32
}

fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

impl RouteTable {
    /// Everything to `backend`, with `fallback` behind it.
    pub fn single(backend: Arc<Backend>, fallback: Option<Arc<Backend>>) -> Self {
        Self {
            stable: Some(backend),
            canary: None,
            fallback,
        }
    }

    /// The stable release (the live one).
    pub fn primary(&self) -> Option<&Arc<Backend>> {
        self.stable.as_ref()
    }

    /// The user a request names, if the canary tells users apart.
    fn user<'h>(users: &Users, headers: &'h hyper::HeaderMap) -> Option<std::borrow::Cow<'h, str>> {
        if let Some(h) = &users.header {
            return headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(std::borrow::Cow::Borrowed);
        }
        let name = users.cookie.as_deref()?;
        headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| cookie_value(c, name))
            .filter(|v| !v.is_empty())
            .map(std::borrow::Cow::Borrowed)
    }

    /// The side for a request with `headers`, `n` counting requests (for those without a user).
    pub fn side(&self, headers: &hyper::HeaderMap, n: u64) -> Side {
        let Some(canary) = &self.canary else {
            return Side::Stable;
        };
        if self.stable.is_none() {
            return Side::Canary;
        }
        match headers.get(FORCE_HEADER).and_then(|v| v.to_str().ok()) {
            Some(v) if v.eq_ignore_ascii_case("canary") => return Side::Canary,
            Some(v) if v.eq_ignore_ascii_case("stable") => return Side::Stable,
            _ => {}
        }
        let bucket = match Self::user(&canary.users, headers) {
            Some(user) if canary.users.allow.iter().any(|a| a == user.as_ref()) => {
                return Side::Canary;
            }
            Some(user) => user_bucket(&user),
            // A multiplicative scramble of the counter spreads the sides evenly without a lock.
            None => ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(ALL)) as u32,
        };
        if bucket < canary.share {
            Side::Canary
        } else {
            Side::Stable
        }
    }

    fn choose(&self, headers: &hyper::HeaderMap, n: u64) -> Option<&Arc<Backend>> {
        match self.side(headers, n) {
            Side::Canary => self.canary.as_ref().map(|c| &c.backend),
            Side::Stable => self.stable.as_ref(),
        }
    }
}

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
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

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
    /// its answer stay on one thread, without cross-thread wake-ups.
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
        let addr = first.local_addr()?;
        let sockets = listeners
            .iter()
            .map(|l| l.try_clone())
            .collect::<std::io::Result<Vec<_>>>()?;
        let router = Arc::new(Self {
            addr,
            table: ArcSwap::from_pointee(RouteTable::default()),
            sockets,
            connections: AtomicUsize::new(0),
            retiring: std::sync::atomic::AtomicBool::new(false),
            accepting: AtomicUsize::new(0),
            stop: watch::channel(false).0,
            measure,
        });
        for (i, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let router = router.clone();
            // Counted before the thread runs; the thread uncounts itself when it stops
            // accepting (or could not start).
            router.accepting.fetch_add(1, Ordering::AcqRel);
            std::thread::Builder::new()
                .name(format!("gantry-router-{i}"))
                .spawn(move || {
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
                            Ok(l) => accept_loop(router, l).await,
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

    async fn handle(
        self: Arc<Self>,
        client: &Client<HttpConnector, InBody>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<OutBody> {
        let table = self.table.load_full();
        // Per thread: no counter shared between router threads on the request path; each
        // thread's sequence is spread evenly on its own.
        thread_local! {
            static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let n = COUNTER.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        let Some(backend) = table.choose(req.headers(), n).cloned() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "gantry router: no release is live in this environment yet\n",
            );
        };
        let (mut parts, body) = req.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        parts.headers.remove(FORCE_HEADER);
        let forwarded = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            parts
                .headers
                .insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        // A request without a body can be sent again to the fallback when the backend is down:
        // any such request if the connection was refused (the backend never saw it), and an
        // idempotent one (GET, HEAD, OPTIONS) if no answer came (the backend died under it).
        let replayable = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
            && !parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
        let idempotent = matches!(
            parts.method,
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        );
        // Copied only when there is somewhere to resend it.
        let retry_parts = (replayable && table.fallback.is_some()).then(|| parts.clone());
        let first = self
            .send(client, &backend, parts, InBody::Client(body))
            .await;
        match first {
            Ok(resp) => resp,
            Err((connect_failed, e)) => {
                if (connect_failed || idempotent)
                    && let (Some(parts), Some(fallback)) = (retry_parts, table.fallback.as_ref())
                    && fallback.addr != backend.addr
                    && let Ok(resp) = self.send(client, fallback, parts, InBody::Empty).await
                {
                    return resp;
                }
                plain(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "gantry router: release {} did not answer: {e}\n",
                        backend.release
                    ),
                )
            }
        }
    }

    /// Sends one request to `backend`; `Err((connect_failed, error))` when no response came.
    async fn send(
        &self,
        client: &Client<HttpConnector, InBody>,
        backend: &Arc<Backend>,
        mut parts: hyper::http::request::Parts,
        body: InBody,
    ) -> Result<Response<OutBody>, (bool, String)> {
        // The same path and query, to the backend's address (its authority is made once).
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
        uri.authority = Some(backend.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = hyper::Uri::from_parts(uri).map_err(|e| (false, format!("{e}")))?;
        backend.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = Inflight(backend.clone());
        let started = std::time::Instant::now();
        let result = client.request(Request::from_parts(parts, body)).await;
        if self.measure {
            let error = result
                .as_ref()
                .map_or(true, |r| r.status().is_server_error());
            backend.stats.record(
                gantry_engine::ports::now_millis(),
                started.elapsed().as_micros() as u64,
                error,
            );
        }
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                parts.headers.insert(
                    HeaderName::from_static("x-gantry-release"),
                    HeaderValue::from(backend.release),
                );
                if self.retiring.load(Ordering::Relaxed) {
                    parts
                        .headers
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                }
                // The in-flight count drops when the body has been sent (or dropped).
                Ok(Response::from_parts(
                    parts,
                    OutBody::Upstream {
                        body,
                        _guard: guard,
                    },
                ))
            }
            Err(e) => {
                drop(guard);
                let text = match std::error::Error::source(&e) {
                    Some(src) => format!("{e}: {src}"),
                    None => e.to_string(),
                };
                Err((e.is_connect(), text))
            }
        }
    }
}

/// Counts a request in flight to a backend until dropped.
pub struct Inflight(Arc<Backend>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<OutBody> {
    let mut resp = Response::new(OutBody::Text(Full::new(Bytes::from(text.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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

/// One router thread: accepts connections and serves them, with its own upstream pool.
async fn accept_loop(router: Arc<Router>, listener: TcpListener) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, InBody> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let mut stop = router.stop.subscribe();
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
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let client = client.clone();
        let mut stop = router.stop.subscribe();
        router.connections.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let r = router.clone();
            let service = hyper::service::service_fn(move |req| {
                let (r, client) = (r.clone(), client.clone());
                async move { Ok::<_, std::convert::Infallible>(r.handle(&client, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    let retiring = router.retiring.load(Ordering::Acquire);
                    if !retiring
                        || tokio::time::timeout(Duration::from_secs(5), conn.as_mut())
                            .await
                            .is_err()
                    {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            router.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
    router.accepting.fetch_sub(1, Ordering::AcqRel);
    // Stopped: let open connections finish their current request (bounded), then end the thread.
    for _ in 0..100 {
        if router.connections.load(Ordering::Acquire) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(share: u32, users: Users) -> RouteTable {
        RouteTable {
            stable: Some(Backend::new(1, "127.0.0.1:1".parse().unwrap())),
            canary: Some(CanaryRoute {
                backend: Backend::new(2, "127.0.0.1:2".parse().unwrap()),
                share,
                users,
            }),
            fallback: None,
        }
    }

    fn by_header() -> Users {
        Users {
            header: Some("x-user".into()),
            cookie: None,
            allow: vec!["alice".into()],
        }
    }

    fn user(name: &str) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-user", name.parse().unwrap());
        h
    }

    #[test]
    fn ten_percent_of_ten_thousand_distinct_users_get_the_canary_within_one_and_a_half_points() {
        let t = table(1_000, by_header());
        let canary = (0..10_000)
            .filter(|i| t.side(&user(&format!("user-{i}")), 0) == Side::Canary)
            .count();
        assert!((850..=1_150).contains(&canary), "{canary} of 10,000");
    }

    #[test]
    fn requests_without_a_user_split_by_share() {
        let t = table(1_000, Users::default());
        let empty = hyper::HeaderMap::new();
        let canary = (0..100_000u64)
            .filter(|n| t.side(&empty, *n) == Side::Canary)
            .count();
        assert!((9_500..=10_500).contains(&canary), "{canary}");
    }

    #[test]
    fn users_stick_to_their_side_and_only_move_to_the_canary_as_the_share_grows() {
        let users: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
        let mut on_canary = vec![false; users.len()];
        for share in [0, 100, 1_000, 2_500, 5_000, 10_000] {
            let t = table(share, by_header());
            for (i, u) in users.iter().enumerate() {
                let first = t.side(&user(u), 0);
                for n in 1..100 {
                    assert_eq!(t.side(&user(u), n), first, "{u} moved at share {share}");
                }
                let now = first == Side::Canary;
                assert!(now || !on_canary[i], "{u} went back to stable at {share}");
                on_canary[i] = now;
            }
        }
        assert!(
            on_canary.iter().all(|c| *c),
            "at 100% everyone is on the canary"
        );
    }

    #[test]
    fn named_users_and_the_forcing_header_pick_their_side() {
        let t = table(0, by_header());
        assert_eq!(t.side(&user("alice"), 0), Side::Canary);
        assert_eq!(t.side(&user("bob"), 0), Side::Stable);
        let mut forced = user("bob");
        forced.insert(FORCE_HEADER, "canary".parse().unwrap());
        assert_eq!(t.side(&forced, 0), Side::Canary);
        let mut forced = user("alice");
        forced.insert(FORCE_HEADER, "stable".parse().unwrap());
        assert_eq!(t.side(&forced, 0), Side::Stable);
        // Without a canary everything is stable, forced or not.
        let plain = RouteTable::single(Backend::new(1, "127.0.0.1:1".parse().unwrap()), None);
        let mut h = hyper::HeaderMap::new();
        h.insert(FORCE_HEADER, "canary".parse().unwrap());
        assert_eq!(plain.side(&h, 0), Side::Stable);
    }

    #[test]
    fn a_cookie_can_name_the_user() {
        let users = Users {
            header: None,
            cookie: Some("uid".into()),
            allow: vec!["carol".into()],
        };
        let t = table(0, users);
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::COOKIE,
            "theme=dark; uid=carol".parse().unwrap(),
        );
        assert_eq!(t.side(&h, 0), Side::Canary);
        h.insert(hyper::header::COOKIE, "uid=dave".parse().unwrap());
        assert_eq!(t.side(&h, 0), Side::Stable);
    }
}
