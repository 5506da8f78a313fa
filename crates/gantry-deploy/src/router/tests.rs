//! The router on real sockets on 127.0.0.1: a release written here (so each test can make it
//! answer as it needs), raw HTTP from the client side (so framing, pipelining and HTTP/1.0 are
//! exactly what is sent).

use super::http1::{Chunks, Framing};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the test release answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    /// The request's line, chosen fields and body, echoed with a Content-Length.
    Echo,
    /// The same echo, chunked, in small chunks.
    Chunked,
    /// The echo with no length, then the connection closed (HTTP/1.0 style).
    UntilClose,
    /// The echo, then the connection closed without saying so (a kept connection gone stale).
    CloseAfter,
}

/// A release on 127.0.0.1 answering every request in `style`; returns its address.
async fn release(style: Style) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, body)) = read_message(&mut s, &mut buf, true).await {
                    let mut echo = head.into_bytes();
                    echo.extend_from_slice(b"body=");
                    echo.extend_from_slice(&body);
                    let mut out = Vec::new();
                    match style {
                        Style::Echo | Style::CloseAfter => {
                            out.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n", echo.len()).as_bytes());
                            out.extend_from_slice(&echo);
                        }
                        Style::Chunked => {
                            out.extend_from_slice(
                                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                            );
                            for piece in echo.chunks(7) {
                                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                                out.extend_from_slice(piece);
                                out.extend_from_slice(b"\r\n");
                            }
                            out.extend_from_slice(b"0\r\n\r\n");
                        }
                        Style::UntilClose => {
                            out.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\n");
                            out.extend_from_slice(&echo);
                        }
                    }
                    if s.write_all(&out).await.is_err() {
                        break;
                    }
                    if matches!(style, Style::UntilClose | Style::CloseAfter) {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one message (a request when `request`, else an answer) from `s`, `buf` holding what
/// was read beyond the last one: its head, summarised as text, and its body.
async fn read_message(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: bool,
) -> Option<(String, Vec<u8>)> {
    let (summary, len, framing) = loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        if request {
            let mut r = httparse::Request::new(&mut fields);
            if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
                let mut text = format!("{} {}\n", r.method.unwrap(), r.path.unwrap());
                let framing = summarise(r.headers, &mut text, Framing::None);
                break (text, n, framing);
            }
        } else {
            let mut r = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
                let mut text = format!("{}\n", r.code.unwrap());
                let framing = summarise(r.headers, &mut text, Framing::UntilClose);
                break (text, n, framing);
            }
        }
        let mut more = [0u8; 4096];
        let n = s.read(&mut more).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&more[..n]);
    };
    buf.drain(..len);
    let mut body = Vec::new();
    let mut chunks = Chunks::default();
    loop {
        match framing {
            Framing::Length(n) if buf.len() as u64 >= n => {
                body.extend(buf.drain(..n as usize));
                break;
            }
            Framing::None => break,
            Framing::Chunked => {
                let used = chunks.feed(buf, |d| body.extend_from_slice(d)).unwrap();
                buf.drain(..used);
                if chunks.done() {
                    break;
                }
            }
            _ => {}
        }
        let mut more = [0u8; 16384];
        let n = s.read(&mut more).await.ok()?;
        if n == 0 {
            assert_eq!(framing, Framing::UntilClose, "cut short");
            body.append(buf);
            break;
        }
        buf.extend_from_slice(&more[..n]);
    }
    Some((summary, body))
}

/// Adds the fields a test looks at to `text`; returns the body's framing (`otherwise` when no
/// field says).
fn summarise(fields: &[httparse::Header<'_>], text: &mut String, otherwise: Framing) -> Framing {
    let mut framing = otherwise;
    for h in fields {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value);
        match name.as_str() {
            "content-length" => framing = Framing::Length(value.parse().unwrap()),
            "transfer-encoding" if value.contains("chunked") => framing = Framing::Chunked,
            _ => {}
        }
        let shown = [
            "host",
            "x-forwarded-for",
            "connection",
            "x-gantry-release",
            "x-secret",
            "expect",
            "transfer-encoding",
        ];
        if shown.contains(&name.as_str()) {
            text.push_str(&format!("{name}={value}\n"));
        }
    }
    framing
}

async fn router_to(table: RouteTable) -> Arc<Router> {
    let router = Router::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    router.set(table);
    router
}

async fn client(router: &Router) -> TcpStream {
    TcpStream::connect(router.addr).await.unwrap()
}

/// Sends `raw` and reads one answer: its head summarised, and its body as text.
async fn ask(s: &mut TcpStream, buf: &mut Vec<u8>, raw: &[u8]) -> (String, String) {
    s.write_all(raw).await.unwrap();
    let (head, body) = read_message(s, buf, false).await.expect("an answer");
    (head, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn bodies_of_every_framing_pass_through_in_both_directions() {
    for style in [Style::Echo, Style::Chunked, Style::UntilClose] {
        let backend = Backend::new(7, release(style).await);
        let router = router_to(RouteTable::single(backend.clone(), None)).await;
        let mut s = client(&router).await;
        let mut buf = Vec::new();
        // A body by length (bigger than the router's buffers), then a chunked one.
        let big = "x".repeat(200_000);
        let raw = format!(
            "POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        );
        let (head, body) = ask(&mut s, &mut buf, raw.as_bytes()).await;
        assert!(
            head.starts_with("200\n") && head.contains("x-gantry-release=7"),
            "{head}"
        );
        assert!(
            body.starts_with("POST /up\nhost=app\nx-forwarded-for=127.0.0.1\n"),
            "{body:.80}"
        );
        assert!(body.ends_with(&format!("body={big}")), "{style:?}");
        if style == Style::UntilClose {
            // An answer that ends with its connection ends the client's too.
            assert!(head.contains("connection=close"), "{head}");
            assert_eq!(s.read(&mut [0u8; 1]).await.unwrap(), 0);
            router.stop();
            continue;
        }
        let raw = b"PUT /c HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (head, body) = ask(&mut s, &mut buf, raw).await;
        assert!(head.starts_with("200\n"), "{head}");
        assert!(body.contains("transfer-encoding=chunked\n"), "{body}");
        assert!(body.ends_with("body=hello world"), "{style:?}: {body}");
        // An HTTP/1.0 client: a chunked answer comes to it without chunks, then the close.
        let mut s = client(&router).await;
        let mut buf = Vec::new();
        let (head, body) = ask(&mut s, &mut buf, b"GET /old HTTP/1.0\r\n\r\n").await;
        // It sent no Host: the release's address is given.
        assert!(
            body.starts_with("GET /old\n") && body.contains("\nhost=127.0.0.1:"),
            "{body}"
        );
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(s.read(&mut [0u8; 1]).await.unwrap(), 0, "{style:?}");
        router.stop();
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_hop_by_hop_fields_stay_behind() {
    let backend = Backend::new(3, release(Style::Echo).await);
    let router = router_to(RouteTable::single(backend, None)).await;
    let mut s = client(&router).await;
    let mut buf = Vec::new();
    let raw = b"GET /one HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: s\r\nX-Forwarded-For: 10.1.1.1\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n";
    let (_, first) = ask(&mut s, &mut buf, raw).await;
    assert_eq!(
        first,
        "GET /one\nhost=a\nx-forwarded-for=10.1.1.1, 127.0.0.1\nbody="
    );
    let (_, second) = read_message(&mut s, &mut buf, false).await.unwrap();
    assert!(String::from_utf8(second).unwrap().starts_with("GET /two\n"));
    router.stop();
}

#[tokio::test]
async fn a_kept_connection_the_release_closed_is_not_an_error() {
    let backend = Backend::new(1, release(Style::CloseAfter).await);
    let router = router_to(RouteTable::single(backend.clone(), None)).await;
    let mut s = client(&router).await;
    let mut buf = Vec::new();
    for i in 0..20 {
        let (head, body) = ask(
            &mut s,
            &mut buf,
            format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(head.starts_with("200\n"), "request {i}: {head} {body}");
        // Give the release's close time to arrive, so the next request meets a stale connection.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(backend.stats.totals(), (20, 0));
    router.stop();
}

#[tokio::test]
async fn a_refused_release_falls_back_or_answers_502_and_no_table_answers_503() {
    let refused: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let good = Backend::new(1, release(Style::Echo).await);
    let dead = Backend::new(2, refused);
    let router = router_to(RouteTable::default()).await;
    let mut s = client(&router).await;
    let mut buf = Vec::new();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (head, body) = ask(&mut s, &mut buf, get).await;
    assert!(
        head.starts_with("503\n") && body.contains("no release is live"),
        "{head}{body}"
    );
    router.set(RouteTable::single(dead.clone(), Some(good.clone())));
    let (head, _) = ask(&mut s, &mut buf, get).await;
    assert!(
        head.starts_with("200\n") && head.contains("x-gantry-release=1"),
        "{head}"
    );
    // A body cannot be sent again: 502, and the connection closes (its body may be unread).
    let (head, body) = ask(
        &mut s,
        &mut buf,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert!(
        head.starts_with("502\n") && body.contains("release 2 did not answer"),
        "{head}{body}"
    );
    router.set(RouteTable::single(dead.clone(), None));
    let mut s = client(&router).await;
    let (head, _) = ask(&mut s, &mut buf, get).await;
    assert!(head.starts_with("502\n"), "{head}");
    assert_eq!(
        dead.stats.totals().1,
        3,
        "every refused request is counted an error"
    );
    router.stop();
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_router_and_hostile_heads_are_refused() {
    let backend = Backend::new(1, release(Style::Echo).await);
    let router = router_to(RouteTable::single(backend, None)).await;
    let mut s = client(&router).await;
    s.write_all(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let mut buf = Vec::new();
    let (_, body) = ask(&mut s, &mut buf, b"abc").await;
    assert_eq!(
        body, "PUT /f\nhost=a\nx-forwarded-for=127.0.0.1\nbody=abc",
        "Expect is not sent on"
    );
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    for (raw, status) in [
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), "400"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "400",
        ),
        (huge.into_bytes(), "431"),
    ] {
        let mut s = client(&router).await;
        let mut buf = Vec::new();
        let (head, body) = ask(&mut s, &mut buf, &raw).await;
        assert!(
            head.starts_with(&format!("{status}\n")) && head.contains("connection=close"),
            "{head}{body}"
        );
        assert_eq!(
            s.read(&mut [0u8; 1]).await.unwrap_or(0),
            0,
            "closed after {status}"
        );
    }
    router.stop();
}
