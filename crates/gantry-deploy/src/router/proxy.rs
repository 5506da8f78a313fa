//! One client connection through the router: read a request head, choose a release, send the
//! head and body on a kept-alive connection to it, and pass its answer back — head rewritten,
//! body as it comes — then the next request.
//!
//! Each router thread keeps its own idle connections to releases (no lock, no task per
//! upstream connection, no channel between tasks): the request, its upstream connection and its
//! answer stay in the client connection's task. A head goes out with whatever body bytes came
//! with it in one write, and an answer's head with the first bytes of its body in another.

use super::http1::{self, Chunks, Framing, MAX_FIELDS, MAX_HEAD, RequestInfo, ResponseInfo};
use super::table::Backend;
use super::{Inflight, Router};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const BUF: usize = 16 * 1024;
/// An idle connection to a release is closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections a router thread keeps, all releases together.
const POOL_MAX: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retiring router waits for an idle connection's next request.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

struct Idle {
    addr: SocketAddr,
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    /// This router thread's idle connections to releases: a request takes one, and its
    /// answer, once read whole, gives it back.
    static POOL: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
    /// Requests this thread has routed (spreads requests without a user between the sides).
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

fn take(addr: SocketAddr) -> Option<TcpStream> {
    POOL.with_borrow_mut(|pool| {
        let now = Instant::now();
        while let Some(i) = pool.iter().rposition(|c| c.addr == addr) {
            let idle = pool.swap_remove(i);
            if now.duration_since(idle.since) < POOL_IDLE {
                return Some(idle.stream);
            }
        }
        None
    })
}

fn give(addr: SocketAddr, stream: TcpStream) {
    POOL.with_borrow_mut(|pool| {
        let now = Instant::now();
        if pool.len() >= 64 {
            pool.retain(|c| now.duration_since(c.since) < POOL_IDLE);
        }
        if pool.len() < POOL_MAX {
            pool.push(Idle {
                addr,
                stream,
                since: now,
            });
        }
    });
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads what the peer sent into the spare room of `buf`: 0 when it closed.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(BUF);
    }
    stream.read_buf(buf).await
}

/// Why a release gave no answer.
enum Failed {
    /// It refused the connection (it never saw the request).
    Connect(String),
    /// It took the request and gave no answer (or one the router cannot read).
    NoAnswer(String),
    /// The client went away while its body was being sent.
    Client,
}

/// What the connection does after an exchange.
enum Next {
    Again,
    Close,
}

/// One client connection's buffers, reused by all its requests.
struct Conn {
    /// From the client: the request head, then body bytes and any pipelined request.
    cbuf: Vec<u8>,
    /// From the release: the answer's head and body.
    ubuf: Vec<u8>,
    /// The head being written (to the release, then to the client).
    out: Vec<u8>,
    peer: SocketAddr,
}

/// Serves one client connection until it closes, a request asks to close, or the router stops.
pub(super) async fn serve(
    router: Arc<Router>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Conn {
        cbuf: Vec::with_capacity(BUF),
        ubuf: Vec::with_capacity(BUF),
        out: Vec::with_capacity(1024),
        peer,
    };
    // Once the router stops: close when idle, or (retiring) wait a while for one more request.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if conn.cbuf.is_empty() {
            if deadline.is_none() && *stop.borrow() {
                if !router.retiring.load(Ordering::Acquire) {
                    break;
                }
                deadline = Some(tokio::time::Instant::now() + RETIRE_WAIT);
            }
            let read = match deadline {
                Some(at) => {
                    match tokio::time::timeout_at(at, fill(&mut client, &mut conn.cbuf)).await {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                }
                None => tokio::select! {
                    biased;
                    r = fill(&mut client, &mut conn.cbuf) => r,
                    _ = stop.changed() => continue,
                },
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        match conn.request(&router, &mut client).await {
            Next::Again => {}
            Next::Close => break,
        }
    }
    let _ = client.shutdown().await;
}

impl Conn {
    /// Reads the rest of a request head (some of it is in `cbuf`), routes it and answers it.
    async fn request(&mut self, router: &Router, client: &mut TcpStream) -> Next {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut req = httparse::Request::new(&mut fields);
            match req.parse(&self.cbuf) {
                Ok(httparse::Status::Complete(len)) => {
                    let routed = route(router, &req, self.peer, &mut self.out);
                    self.cbuf.drain(..len);
                    return match routed {
                        Ok((info, Some(to))) => self.exchange(router, client, to, info).await,
                        Ok((info, None)) => {
                            let text = "no release is live in this environment yet";
                            self.answer(client, 503, text, info.closes_after_own_answer())
                                .await
                        }
                        Err(refused) => {
                            self.answer(client, refused.status, refused.why, true).await
                        }
                    };
                }
                Ok(httparse::Status::Partial) if self.cbuf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return self
                        .answer(client, 431, "the request head is over 64 KiB", true)
                        .await;
                }
                Err(e) => {
                    let why = match e {
                        httparse::Error::TooManyHeaders => "over 100 header fields",
                        _ => "a malformed request head",
                    };
                    return self.answer(client, 400, why, true).await;
                }
            }
            match fill(client, &mut self.cbuf).await {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        }
    }

    /// A short answer of the router's own: `text`, named as the router's.
    async fn answer(
        &mut self,
        client: &mut TcpStream,
        status: u16,
        text: &str,
        close: bool,
    ) -> Next {
        http1::plain(
            status,
            &format!("gantry router: {text}\n"),
            close,
            &mut self.out,
        );
        match client.write_all(&self.out).await {
            Ok(()) if !close => Next::Again,
            _ => Next::Close,
        }
    }

    /// Sends the request (its head is in `out`) to its release — or, when that release is
    /// down and the request can be sent again, to the fallback — and passes the answer back.
    async fn exchange(
        &mut self,
        router: &Router,
        client: &mut TcpStream,
        to: Target,
        info: RequestInfo,
    ) -> Next {
        if info.expect_continue
            && client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Next::Close;
        }
        // Counted in flight from before it is sent (a release is not stopped under it).
        let guard = Inflight::new(to.backend);
        let (connect_failed, why) = match self.send(router, client, guard.backend(), &info).await {
            Ok(sent) => return self.pass_answer(client, guard, sent).await,
            Err(Failed::Client) => return Next::Close,
            Err(Failed::Connect(why)) => (true, why),
            Err(Failed::NoAnswer(why)) => (false, why),
        };
        let release = guard.backend().release;
        drop(guard);
        // A request without a body goes to the previous release instead: any such request if
        // the connection was refused (the release never saw it), and an idempotent one if no
        // answer came (the release died under it).
        if let Some(fallback) = to.fallback
            && (connect_failed || info.idempotent)
        {
            let guard = Inflight::new(fallback);
            match self.send(router, client, guard.backend(), &info).await {
                Ok(sent) => return self.pass_answer(client, guard, sent).await,
                Err(Failed::Client) => return Next::Close,
                Err(_) => {}
            }
        }
        let text = format!("release {release} did not answer: {why}");
        self.answer(client, 502, &text, info.closes_after_own_answer())
            .await
    }

    /// Sends the request to one release and reads its answer's head, which is left in `ubuf`
    /// (its first `head` bytes) and written for the client into `out`.
    async fn send(
        &mut self,
        router: &Router,
        client: &mut TcpStream,
        backend: &Backend,
        info: &RequestInfo,
    ) -> Result<Sent, Failed> {
        let started = Instant::now();
        let result = self.try_send(router, client, backend, info).await;
        if !router.measure {
            return result;
        }
        match &result {
            Ok(sent) => {
                let error = sent.head.info.status >= 500;
                backend.stats.record_at(started, sent.head.at, error);
            }
            Err(Failed::Client) => {}
            Err(_) => backend.stats.record_at(started, Instant::now(), true),
        }
        result
    }

    async fn try_send(
        &mut self,
        router: &Router,
        client: &mut TcpStream,
        backend: &Backend,
        info: &RequestInfo,
    ) -> Result<Sent, Failed> {
        let replayable = info.replayable();
        // A kept connection may have been closed by the release meanwhile: a request without a
        // body is sent again on a new one; one with a body is only sent on a kept connection
        // that shows no sign of having been closed.
        let mut kept = take(backend.addr);
        if !replayable && let Some(s) = &kept {
            let mut probe = [0u8; 1];
            if !matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                kept = None;
            }
        }
        let mut body_sent = true;
        for attempt in 0..2 {
            let (mut up, reused) = match kept.take() {
                Some(s) => (s, true),
                None => match connect(backend.addr).await {
                    Ok(s) => (s, false),
                    Err(e) => return Err(Failed::Connect(e.to_string())),
                },
            };
            let head_len = self.out.len();
            let mut left = BodyLeft::new(info.framing);
            let mut body_done = true;
            if !replayable {
                // The body bytes that came with the head go out in the same write.
                let (ready, done) = body_part(&self.cbuf, &mut left, |_| {});
                body_done = done.map_err(|()| Failed::Client)?;
                self.out.extend_from_slice(&self.cbuf[..ready]);
                self.cbuf.drain(..ready);
            }
            let written = up.write_all(&self.out).await;
            self.out.truncate(head_len);
            if written.is_err() && reused && replayable && attempt == 0 {
                continue;
            }
            if let Err(e) = written {
                return Err(Failed::NoAnswer(e.to_string()));
            }
            if !body_done {
                body_sent = self.send_body(client, &mut up, left).await?;
            }
            match self
                .read_head(router, client, &mut up, info, backend.release, !body_sent)
                .await
            {
                Ok(head) => {
                    return Ok(Sent {
                        head,
                        up,
                        body_sent,
                    });
                }
                // Nothing came back on a kept connection: it was closed under us; again on a
                // new one.
                Err(ReadHead::Nothing(_)) if reused && replayable && attempt == 0 => continue,
                Err(ReadHead::Nothing(why) | ReadHead::Bad(why)) => {
                    return Err(Failed::NoAnswer(why));
                }
                Err(ReadHead::Client) => return Err(Failed::Client),
            }
        }
        Err(Failed::NoAnswer("the connection closed".into()))
    }

    /// Sends the rest of the request body as the client sends it (what came with the head has
    /// gone out with it). `Ok(false)` when the release stopped taking it.
    async fn send_body(
        &mut self,
        client: &mut TcpStream,
        up: &mut TcpStream,
        mut left: BodyLeft,
    ) -> Result<bool, Failed> {
        loop {
            match fill(client, &mut self.cbuf).await {
                Ok(0) | Err(_) => return Err(Failed::Client),
                Ok(_) => {}
            }
            let (n, done) = body_part(&self.cbuf, &mut left, |_| {});
            let done = done.map_err(|()| Failed::Client)?;
            if up.write_all(&self.cbuf[..n]).await.is_err() {
                return Ok(false);
            }
            self.cbuf.drain(..n);
            if done {
                return Ok(true);
            }
        }
    }

    /// Reads the answer's head from the release (passing `1xx` heads on to the client) and
    /// writes the client's head into `out`.
    async fn read_head(
        &mut self,
        router: &Router,
        client: &mut TcpStream,
        up: &mut TcpStream,
        info: &RequestInfo,
        release: i64,
        body_incomplete: bool,
    ) -> Result<Head, ReadHead> {
        self.ubuf.clear();
        loop {
            if !self.ubuf.is_empty() {
                let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
                let mut resp = httparse::Response::new(&mut fields);
                match resp.parse(&self.ubuf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let code = resp.code.unwrap_or(0);
                        if code == 101 {
                            return Err(ReadHead::Bad(
                                "it switched protocols, which the router does not pass on".into(),
                            ));
                        }
                        let close = router.retiring.load(Ordering::Relaxed) || body_incomplete;
                        let out =
                            http1::forward_response(&resp, info, release, close, &mut self.out)
                                .map_err(|r| ReadHead::Bad(r.why.into()));
                        let at = Instant::now();
                        if (100..200).contains(&code) {
                            // An interim answer: passed on (not to HTTP/1.0 clients, nor a
                            // second 100 after the router's own), then the real one.
                            out?;
                            let ours = code == 100 && info.expect_continue;
                            if !info.http10 && !ours && client.write_all(&self.out).await.is_err() {
                                return Err(ReadHead::Client);
                            }
                            self.ubuf.drain(..len);
                            continue;
                        }
                        return Ok(Head {
                            info: out?,
                            len,
                            at,
                        });
                    }
                    Ok(httparse::Status::Partial) if self.ubuf.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(ReadHead::Bad("its answer's head is over 64 KiB".into()));
                    }
                    Err(e) => return Err(ReadHead::Bad(format!("a malformed answer ({e})"))),
                }
            }
            let empty = self.ubuf.is_empty();
            match fill(up, &mut self.ubuf).await {
                Ok(0) if empty => return Err(ReadHead::Nothing("the connection closed".into())),
                Ok(0) => return Err(ReadHead::Bad("the connection closed mid-head".into())),
                Err(e) if empty => return Err(ReadHead::Nothing(e.to_string())),
                Err(e) => return Err(ReadHead::Bad(e.to_string())),
                Ok(_) => {}
            }
        }
    }

    /// Passes the answer on: its head (in `out`, with the release named) and body, as the
    /// release sends it. Keeps the release's connection when the answer ended cleanly; the
    /// release is counted in flight (`guard`) until then.
    async fn pass_answer(&mut self, client: &mut TcpStream, guard: Inflight, sent: Sent) -> Next {
        let Sent {
            head,
            mut up,
            body_sent,
        } = sent;
        let resp = head.info;
        let mut left = BodyLeft::new(resp.framing);
        let mut start = head.len;
        let mut first = true;
        loop {
            let avail = &self.ubuf[start..];
            let out = &mut self.out;
            // An HTTP/1.0 client gets the chunks' contents only.
            let (used, finished) = match body_part(avail, &mut left, |data| {
                if resp.dechunk {
                    out.extend_from_slice(data);
                }
            }) {
                (n, Ok(done)) => (n, done),
                (_, Err(())) => return Next::Close,
            };
            let written = if resp.dechunk {
                client.write_all(&self.out).await
            } else if first {
                self.out.extend_from_slice(&avail[..used]);
                client.write_all(&self.out).await
            } else {
                client.write_all(&avail[..used]).await
            };
            self.out.clear();
            first = false;
            if written.is_err() {
                return Next::Close;
            }
            if finished {
                // The connection can carry another request if nothing more came on it.
                if resp.reusable && body_sent && start + used == self.ubuf.len() {
                    give(guard.backend().addr, up);
                }
                break;
            }
            self.ubuf.clear();
            start = 0;
            match fill(&mut up, &mut self.ubuf).await {
                Ok(0) if resp.framing == Framing::UntilClose => break,
                // Cut short: the client cannot be told but by closing.
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        }
        if resp.close { Next::Close } else { Next::Again }
    }
}

/// Where a routed request goes.
struct Target {
    backend: Arc<Backend>,
    /// Where it goes instead when the release is down (only for a request without a body).
    fallback: Option<Arc<Backend>>,
}

/// An answer's head, read: it is the first `len` bytes of `ubuf`, and `out` holds the head
/// written for the client.
struct Head {
    info: ResponseInfo,
    len: usize,
    /// When it was read.
    at: Instant,
}

/// A request sent, and its answer's head read.
struct Sent {
    head: Head,
    /// The connection to the release, its body still to come.
    up: TcpStream,
    /// The whole request body reached the release.
    body_sent: bool,
}

enum ReadHead {
    /// Nothing came back.
    Nothing(String),
    /// Something came back that is not an answer.
    Bad(String),
    Client,
}

/// What is left of a body delimited by length or chunks.
enum BodyLeft {
    Length(u64),
    Chunks(Chunks),
    Rest,
}

impl BodyLeft {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::None => BodyLeft::Length(0),
            Framing::Length(n) => BodyLeft::Length(n),
            Framing::Chunked => BodyLeft::Chunks(Chunks::default()),
            Framing::UntilClose => BodyLeft::Rest,
        }
    }
}

/// How many bytes of `avail` belong to the body, and whether it ends with them (`Err` for a
/// chunked body that cannot be followed); `data` is given a chunked body's contents.
fn body_part(
    avail: &[u8],
    left: &mut BodyLeft,
    data: impl FnMut(&[u8]),
) -> (usize, Result<bool, ()>) {
    match left {
        BodyLeft::Length(n) => {
            let k = (*n).min(avail.len() as u64);
            *n -= k;
            (k as usize, Ok(*n == 0))
        }
        BodyLeft::Chunks(c) => match c.feed(avail, data) {
            Ok(k) => (k, Ok(c.done())),
            Err(_) => (0, Err(())),
        },
        BodyLeft::Rest => (avail.len(), Ok(false)),
    }
}

/// Parses what the router needs of a request, writes the head for the release into `out`,
/// and picks the release (and the one to fall back to).
fn route(
    router: &Router,
    req: &httparse::Request<'_, '_>,
    peer: SocketAddr,
    out: &mut Vec<u8>,
) -> Result<(RequestInfo, Option<Target>), http1::Refusal> {
    let table = router.table.load();
    let n = COUNTER.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        n
    });
    let Some(backend) = table.choose(req.headers, n) else {
        let info = http1::forward_request(req, peer.ip(), "", out)?;
        return Ok((info, None));
    };
    let info = http1::forward_request(req, peer.ip(), &backend.authority, out)?;
    let fallback = table
        .fallback
        .as_ref()
        .filter(|f| info.replayable() && f.addr != backend.addr)
        .cloned();
    let backend = backend.clone();
    Ok((info, Some(Target { backend, fallback })))
}
