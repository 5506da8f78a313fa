//! The router in front of an environment's releases: an HTTP/1.1 reverse proxy on the
//! environment's `router.listen` address. Every request goes to a backend chosen from the route
//! table; the table is swapped atomically, so a switch is one pointer store — requests already
//! in flight finish on the backend they started on, and the next request goes to the new one.
//!
//! The table holds weighted backends (one at 100% in blue/green; canary weights slot in here)
//! and a fallback: when the chosen backend refuses the connection (it crashed), a request
//! without a body is sent to the fallback (the previous release) instead of failing.

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = BoxBody<Bytes, hyper::Error>;

/// Weights are in basis points: 10_000 is everything.
pub const ALL: u32 = 10_000;

/// One release the router can send requests to.
#[derive(Debug)]
pub struct Backend {
    pub release: i64,
    pub addr: SocketAddr,
    /// Requests sent to it whose response has not ended yet.
    inflight: AtomicUsize,
    /// Requests and upstream failures, since the backend was made.
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Backend {
    pub fn new(release: i64, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            release,
            addr,
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Where requests go. Built whole and swapped in one store.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Backends with their weight (basis points, summing to [`ALL`] when not empty).
    pub backends: Vec<(Arc<Backend>, u32)>,
    /// Used when the chosen backend refuses the connection.
    pub fallback: Option<Arc<Backend>>,
}

impl RouteTable {
    /// Everything to `backend`, with `fallback` behind it.
    pub fn single(backend: Arc<Backend>, fallback: Option<Arc<Backend>>) -> Self {
        Self {
            backends: vec![(backend, ALL)],
            fallback,
        }
    }

    /// The release that gets the largest share (the live one in blue/green).
    pub fn primary(&self) -> Option<&Arc<Backend>> {
        self.backends.iter().max_by_key(|(_, w)| *w).map(|(b, _)| b)
    }

    /// The backend for the `n`-th request: weighted, spread evenly over every 10,000 requests.
    fn choose(&self, n: u64) -> Option<&Arc<Backend>> {
        if self.backends.len() <= 1 {
            return self.backends.first().map(|(b, _)| b);
        }
        // A multiplicative scramble of the counter spreads the sides evenly without a lock.
        let slot = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(ALL);
        let mut acc = 0u64;
        for (b, w) in &self.backends {
            acc += u64::from(*w);
            if slot < acc {
                return Some(b);
            }
        }
        self.backends.last().map(|(b, _)| b)
    }
}

pub struct Router {
    pub addr: SocketAddr,
    table: ArcSwap<RouteTable>,
    client: Client<HttpConnector, Body>,
    counter: AtomicU64,
    stop: watch::Sender<bool>,
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
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            anyhow::anyhow!("the router cannot listen on {listen}: {e} (is another process using it? change `router.listen`)")
        })?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let router = Arc::new(Self {
            addr,
            table: ArcSwap::from_pointee(RouteTable::default()),
            client,
            counter: AtomicU64::new(0),
            stop: watch::channel(false).0,
        });
        tokio::spawn(accept_loop(router.clone(), listener));
        Ok(router)
    }

    /// Switches traffic: the next request uses `table`.
    pub fn set(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Stops accepting connections; open ones finish their current request.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let table = self.table.load_full();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let Some(backend) = table.choose(n).cloned() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "gantry router: no release is live in this environment yet\n",
            );
        };
        let (mut parts, body) = req.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
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
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
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
        let retry_parts = replayable.then(|| parts.clone());
        let first = self.send(&backend, parts, &path, body.boxed()).await;
        match first {
            Ok(resp) => resp,
            Err((connect_failed, e)) => {
                if (connect_failed || idempotent)
                    && let (Some(parts), Some(fallback)) = (retry_parts, table.fallback.as_ref())
                    && fallback.addr != backend.addr
                {
                    let empty = Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed();
                    if let Ok(resp) = self.send(fallback, parts, &path, empty).await {
                        return resp;
                    }
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
        backend: &Arc<Backend>,
        mut parts: hyper::http::request::Parts,
        path: &str,
        body: Body,
    ) -> Result<Response<Body>, (bool, String)> {
        let uri = format!("http://{}{}", backend.addr, path);
        parts.uri = uri.parse().map_err(|e| (false, format!("{e}")))?;
        backend.requests.fetch_add(1, Ordering::Relaxed);
        backend.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = Inflight(backend.clone());
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                parts.headers.insert(
                    HeaderName::from_static("x-gantry-release"),
                    HeaderValue::from(backend.release),
                );
                // The in-flight count drops when the body has been sent (or dropped).
                let body = body
                    .map_frame(move |f| {
                        let _ = &guard;
                        f
                    })
                    .boxed();
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                backend.errors.fetch_add(1, Ordering::Relaxed);
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

struct Inflight(Arc<Backend>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn accept_loop(router: Arc<Router>, listener: TcpListener) {
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
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stop = router.stop.subscribe();
        tokio::spawn(async move {
            let r = router.clone();
            let service = hyper::service::service_fn(move |req| {
                let r = r.clone();
                async move { Ok::<_, std::convert::Infallible>(r.handle(req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_follows_the_weights() {
        let a = Backend::new(1, "127.0.0.1:1".parse().unwrap());
        let b = Backend::new(2, "127.0.0.1:2".parse().unwrap());
        let table = RouteTable {
            backends: vec![(a, 9_000), (b, 1_000)],
            fallback: None,
        };
        let to_b = (0..100_000u64)
            .filter(|n| table.choose(*n).unwrap().release == 2)
            .count();
        assert!((9_000..=11_000).contains(&to_b), "{to_b}");
    }

    #[test]
    fn a_single_backend_gets_everything() {
        let a = Backend::new(7, "127.0.0.1:1".parse().unwrap());
        let table = RouteTable::single(a, None);
        assert!((0..1000).all(|n| table.choose(n).unwrap().release == 7));
        assert!(RouteTable::default().choose(0).is_none());
    }
}
