//! The head rewriting, framing and chunk scanning of [`super`], as tables: what goes in, what
//! the router writes, and what it keeps of each message.

use super::*;

const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

/// The head forwarded for `raw` (as text) and what the router keeps of it.
fn forwarded(raw: &str) -> Result<(String, RequestInfo), Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    assert!(req.parse(raw.as_bytes()).unwrap().is_complete(), "{raw}");
    let mut out = Vec::new();
    let info = forward_request(&req, PEER, "127.0.0.1:9", &mut out)?;
    Ok((String::from_utf8(out).unwrap(), info))
}

fn answered(raw: &str, req: RequestInfo, close: bool) -> Result<(String, ResponseInfo), Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    assert!(resp.parse(raw.as_bytes()).unwrap().is_complete(), "{raw}");
    let mut out = Vec::new();
    let info = forward_response(&resp, &req, 42, close, &mut out)?;
    Ok((String::from_utf8(out).unwrap(), info))
}

fn get() -> RequestInfo {
    forwarded("GET / HTTP/1.1\r\nhost: a\r\n\r\n").unwrap().1
}

#[test]
fn requests_are_forwarded_without_hop_by_hop_fields_and_with_the_client_named() {
    let cases = [
        (
            "GET /a?b=1 HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Gantry-Release: canary\r\nAccept: */*\r\n\r\n",
            "GET /a?b=1 HTTP/1.1\r\nHost: app\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.7\r\n\r\n",
        ),
        (
            "GET http://example.com/x HTTP/1.1\r\nhost: example.com\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\r\n",
            "GET /x HTTP/1.1\r\nhost: example.com\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\n\r\n",
        ),
        (
            "GET http://example.com HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.7\r\nhost: 127.0.0.1:9\r\n\r\n",
        ),
        (
            "POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nx-forwarded-for: 10.0.0.7\r\n\r\n",
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(forwarded(raw).unwrap().0, want, "{raw}");
    }
}

#[test]
fn request_framing_keep_alive_and_replay_follow_the_head() {
    // (head, framing, keep_alive, replayable, idempotent, expect_continue)
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Framing::None,
            true,
            true,
            true,
            false,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            Framing::None,
            false,
            true,
            true,
            false,
        ),
        (
            "GET / HTTP/1.0\r\n\r\n",
            Framing::None,
            false,
            true,
            true,
            false,
        ),
        (
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            Framing::None,
            true,
            true,
            true,
            false,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            Framing::None,
            true,
            true,
            false,
            false,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
            Framing::Length(12),
            true,
            false,
            false,
            false,
        ),
        (
            "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Framing::Chunked,
            true,
            false,
            false,
            false,
        ),
        (
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            Framing::Length(3),
            true,
            false,
            false,
            true,
        ),
        // Nothing to wait for: no 100 of the router's own.
        (
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            Framing::None,
            true,
            true,
            false,
            false,
        ),
        (
            "HEAD / HTTP/1.1\r\n\r\n",
            Framing::None,
            true,
            true,
            true,
            false,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n",
            Framing::Length(7),
            true,
            false,
            false,
            false,
        ),
    ];
    for (raw, framing, keep_alive, replayable, idempotent, expect) in cases {
        let info = forwarded(raw).unwrap().1;
        assert_eq!(
            (
                info.framing,
                info.keep_alive,
                info.replayable(),
                info.idempotent,
                info.expect_continue
            ),
            (framing, keep_alive, replayable, idempotent, expect),
            "{raw}"
        );
    }
}

#[test]
fn heads_that_could_smuggle_or_tunnel_are_refused_with_the_reason() {
    let cases = [
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Transfer-Encoding",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
            "two different",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            400,
            "not a number",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n",
            400,
            "not a number",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400,
            "not a number",
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
            "does not end in chunked",
        ),
        (
            "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
            405,
            "CONNECT",
        ),
    ];
    for (raw, status, why) in cases {
        let refused = forwarded(raw).unwrap_err();
        assert_eq!(refused.status, status, "{raw}");
        assert!(refused.why.contains(why), "{raw}: {}", refused.why);
    }
}

#[test]
fn answers_name_the_release_and_say_when_the_connection_closes() {
    let http10 = forwarded("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .1;
    let head = forwarded("HEAD / HTTP/1.1\r\n\r\n").unwrap().1;
    let closing = forwarded("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap()
        .1;
    // (answer, request, retiring, head for the client, framing, reusable, close)
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-Gantry-Release: 1\r\n\r\n",
            get(),
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-gantry-release: 42\r\n\r\n",
            Framing::Length(2),
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            get(),
            true,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-gantry-release: 42\r\nconnection: close\r\n\r\n",
            Framing::Length(2),
            true,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            get(),
            false,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-gantry-release: 42\r\n\r\n",
            Framing::Chunked,
            true,
            false,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            http10,
            false,
            "HTTP/1.1 200 OK\r\nx-gantry-release: 42\r\nconnection: close\r\n\r\n",
            Framing::Chunked,
            true,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            http10,
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-gantry-release: 42\r\nconnection: keep-alive\r\n\r\n",
            Framing::Length(2),
            true,
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\n\r\n",
            get(),
            false,
            "HTTP/1.1 200 OK\r\nx-gantry-release: 42\r\nconnection: close\r\n\r\n",
            Framing::UntilClose,
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            closing,
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-gantry-release: 42\r\nconnection: close\r\n\r\n",
            Framing::Length(2),
            false,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            head,
            false,
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nx-gantry-release: 42\r\n\r\n",
            Framing::None,
            true,
            false,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            get(),
            false,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nx-gantry-release: 42\r\n\r\n",
            Framing::None,
            true,
            false,
        ),
        (
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            get(),
            false,
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            Framing::None,
            true,
            false,
        ),
    ];
    for (raw, req, retiring, want, framing, reusable, close) in cases {
        let (head, info) = answered(raw, req, retiring).unwrap();
        assert_eq!(head, want, "{raw}");
        assert_eq!(
            (info.framing, info.reusable, info.close),
            (framing, reusable, close),
            "{raw}"
        );
    }
    let bad = answered(
        "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        get(),
        false,
    );
    assert_eq!(bad.unwrap_err().status, 502);
}

/// Feeds `body` to a scanner in pieces of `step` bytes; returns the bytes taken and the data.
fn scan(body: &[u8], step: usize) -> Result<(usize, Vec<u8>, bool), BadChunk> {
    let mut c = Chunks::default();
    let (mut taken, mut data) = (0, Vec::new());
    for piece in body.chunks(step) {
        let n = c.feed(piece, |d| data.extend_from_slice(d))?;
        taken += n;
        if n < piece.len() {
            break;
        }
    }
    Ok((taken, data, c.done()))
}

#[test]
fn the_end_of_a_chunked_body_is_found_however_it_is_cut() {
    let body =
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n";
    let mut with_next = body.to_vec();
    with_next.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    for step in [1, 2, 3, 7, 1000] {
        let (taken, data, done) = scan(body, step).unwrap();
        assert_eq!((taken, done), (body.len(), true), "step {step}");
        assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
        // What follows the body (a pipelined request) is not taken.
        let (taken, _, done) = scan(&with_next, step).unwrap();
        assert_eq!((taken, done), (body.len(), true), "step {step}");
    }
    // Unfinished: everything taken, not done.
    let (taken, _, done) = scan(b"5\r\nhel", 2).unwrap();
    assert_eq!((taken, done), (6, false));
    for bad in [
        &b"x\r\n"[..],
        b"5\r\nhelloX\r\n",
        b"\r\n",
        b"1234567890abcdef0\r\n",
        b"5\n",
    ] {
        assert!(scan(bad, 1).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn the_routers_own_answers_are_whole_http() {
    let mut out = Vec::new();
    plain(503, "none\n", false, &mut out);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n\r\nnone\n"
    );
    plain(400, "bad\n", true, &mut out);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("connection: close\r\n\r\nbad\n")
    );
}
