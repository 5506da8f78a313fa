//! HTTP/1.1 as the router speaks it, with no I/O: a parsed request head rewritten for the
//! release, a parsed response head rewritten for the client, how each body is delimited, and
//! a scanner that finds where a chunked body ends (passing its bytes through unchanged).
//!
//! Heads are parsed by `httparse` (no copy, no allocation) and written into buffers the
//! connection reuses, so a request costs no allocation here.

use super::table::{FORCE_HEADER, Fields, field};

/// Most header fields in a head.
pub const MAX_FIELDS: usize = 100;
/// The largest head accepted (431 beyond it).
pub const MAX_HEAD: usize = 64 * 1024;

/// Fields that belong to one connection, never forwarded (RFC 9110, 7.6.1).
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

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a head cannot be forwarded; the router answers it with `status` and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

fn refuse(status: u16, why: &'static str) -> Refusal {
    Refusal { status, why }
}

/// What the router keeps of a request once its head is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    pub framing: Framing,
    /// The client keeps the connection open after the answer.
    pub keep_alive: bool,
    /// HTTP/1.0 client (no chunked answers).
    pub http10: bool,
    pub head: bool,
    /// GET, HEAD or OPTIONS: may be sent again when a release died under it.
    pub idempotent: bool,
    /// The client waits for `100 Continue` before its body: the router answers it itself.
    pub expect_continue: bool,
}

impl RequestInfo {
    /// No body: the head alone can be sent again, to another connection or release.
    pub fn replayable(&self) -> bool {
        matches!(self.framing, Framing::None | Framing::Length(0))
    }

    /// An answer of the router's own ends the connection when the client asked for that, or
    /// when the request's body was left unread.
    pub fn closes_after_own_answer(&self) -> bool {
        !self.keep_alive || !self.replayable()
    }
}

fn is_token_listed(list: &[u8], name: &str) -> bool {
    list.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Whether the `Connection` fields name any field (beyond `close` and `keep-alive`, which
/// are no fields): rare, so a message's fields are checked against them only then.
fn connection_names_fields(fields: Fields<'_, '_>) -> bool {
    fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(|t| t.trim_ascii())
        .any(|t| !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether `name` is a hop-by-hop field, or (when `named` says there are such) one the
/// `Connection` fields name.
fn connection_only(name: &str, fields: Fields<'_, '_>, named: bool) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (named
            && fields
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| is_token_listed(h.value, name)))
}

fn connection_has(fields: Fields<'_, '_>, token: &str) -> bool {
    fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| is_token_listed(h.value, token))
}

/// The framing of a message from its `Transfer-Encoding` and `Content-Length` fields.
fn body_framing(fields: Fields<'_, '_>, request: bool) -> Result<Framing, Refusal> {
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in fields {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says how the message ends.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).unwrap_or_default().trim();
            let n = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| refuse(400, "Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(refuse(400, "two different Content-Length fields"));
            }
            length = Some(n);
        }
    }
    match (chunked, length) {
        // Both is how requests are smuggled past a proxy: refused, not guessed.
        (Some(_), Some(_)) if request => Err(refuse(
            400,
            "both Transfer-Encoding and Content-Length are given",
        )),
        (Some(true), _) => Ok(Framing::Chunked),
        (Some(false), _) if request => Err(refuse(
            400,
            "a Transfer-Encoding that does not end in chunked",
        )),
        (Some(false), _) => Ok(Framing::UntilClose),
        (None, Some(0)) if request => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) if request => Ok(Framing::None),
        (None, None) => Ok(Framing::UntilClose),
    }
}

/// Writes the head sent to the release for `req` into `out`: the same method, target (in
/// origin form), and fields, without the hop-by-hop ones and the forcing header, with
/// `X-Forwarded-For` extended by `peer` and a `Host` if the client sent none.
pub fn forward_request(
    req: &httparse::Request<'_, '_>,
    peer: std::net::IpAddr,
    host: &str,
    out: &mut Vec<u8>,
) -> Result<RequestInfo, Refusal> {
    use std::io::Write;
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "incomplete request line"));
    };
    if method == "CONNECT" {
        return Err(refuse(405, "the router does not tunnel (CONNECT)"));
    }
    let fields: Fields<'_, '_> = req.headers;
    let framing = body_framing(fields, true)?;
    let http10 = version == 0;
    let keep_alive = if http10 {
        connection_has(fields, "keep-alive")
    } else {
        !connection_has(fields, "close")
    };
    let expect_continue = field(fields, "expect")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
        && !matches!(framing, Framing::None);
    // An absolute target (`http://host/path`) goes on in origin form.
    let target = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut forwarded = false;
    let named = connection_names_fields(fields);
    for h in fields {
        if connection_only(h.name, fields, named)
            || h.name.eq_ignore_ascii_case(FORCE_HEADER)
            || (expect_continue && h.name.eq_ignore_ascii_case("expect"))
        {
            continue;
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            if !forwarded {
                forwarded = true;
                // Every prior value, in order, then this client.
                out.extend_from_slice(b"x-forwarded-for: ");
                let mut first = true;
                for prior in fields
                    .iter()
                    .filter(|p| p.name.eq_ignore_ascii_case("x-forwarded-for"))
                {
                    if !first {
                        out.extend_from_slice(b", ");
                    }
                    first = false;
                    out.extend_from_slice(prior.value.trim_ascii());
                }
                let _ = write!(out, ", {peer}\r\n");
            }
            continue;
        }
        has_host |= h.name.eq_ignore_ascii_case("host");
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !forwarded {
        let _ = write!(out, "x-forwarded-for: {peer}\r\n");
    }
    if !has_host {
        let _ = write!(out, "host: {host}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(RequestInfo {
        framing,
        keep_alive,
        http10,
        head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS"),
        expect_continue,
    })
}

/// What the router keeps of a release's answer once its head is written for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    pub status: u16,
    /// How the body comes from the release.
    pub framing: Framing,
    /// The body is sent to the client without its chunk framing (an HTTP/1.0 client).
    pub dechunk: bool,
    /// The release's connection can carry another request once this body is read.
    pub reusable: bool,
    /// The client's connection ends after this answer.
    pub close: bool,
}

/// Writes the head sent to the client for the release's `resp` into `out`: its status and
/// fields without the hop-by-hop ones, `X-Gantry-Release: release`, and `Connection: close`
/// when the client's connection ends after it (`close`, or a body that ends only when the
/// connection does).
pub fn forward_response(
    resp: &httparse::Response<'_, '_>,
    req: &RequestInfo,
    release: i64,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<ResponseInfo, Refusal> {
    use std::io::Write;
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(refuse(502, "incomplete status line"));
    };
    let fields: Fields<'_, '_> = resp.headers;
    let framing = if req.head || code == 204 || code == 304 || (100..200).contains(&code) {
        Framing::None
    } else {
        body_framing(fields, false).map_err(|_| refuse(502, "a malformed Content-Length"))?
    };
    let dechunk = framing == Framing::Chunked && req.http10;
    let reusable = framing != Framing::UntilClose
        && if version == 0 {
            connection_has(fields, "keep-alive")
        } else {
            !connection_has(fields, "close")
        };
    let close = close || !req.keep_alive || framing == Framing::UntilClose || dechunk;
    out.clear();
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", resp.reason.unwrap_or(""));
    let named = connection_names_fields(fields);
    for h in fields {
        if connection_only(h.name, fields, named)
            || h.name.eq_ignore_ascii_case(FORCE_HEADER)
            || (dechunk && h.name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if (100..200).contains(&code) {
        out.extend_from_slice(b"\r\n");
    } else {
        let _ = write!(out, "x-gantry-release: {release}\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n\r\n");
        } else if req.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n\r\n");
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(ResponseInfo {
        status: code,
        framing,
        dechunk,
        reusable,
        close,
    })
}

/// A short answer of the router's own, with its text.
pub fn plain(status: u16, text: &str, close: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    let reason = match status {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    };
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{text}",
        text.len(),
        if close { "connection: close\r\n" } else { "" },
    );
}

/// Where a chunked body ends. Its bytes are passed through as they are; the scanner only
/// follows the chunk sizes, extensions and trailer fields to find the last byte.
#[derive(Debug, Clone, Default)]
pub struct Chunks {
    state: ChunkState,
    /// Digits of the size line so far.
    size: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: an extension or whitespace, up to the line's end.
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl Chunks {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Follows `input`; returns how many of its bytes belong to the body (all of them, unless
    /// the body ends within it). `data` is given the chunks' contents (for dechunking).
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(d);
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(BadChunk),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(BadChunk),
                    _ => {}
                },
                SizeLf => {
                    expect(b, b'\n')?;
                    self.state = if self.size == 0 {
                        TrailerStart
                    } else {
                        Data(self.size)
                    };
                    self.size = 0;
                    self.digits = 0;
                }
                Data(left) => {
                    let n = (left.min((input.len() - i) as u64)) as usize;
                    data(&input[i..i + n]);
                    i += n;
                    self.state = if left == n as u64 {
                        DataCr
                    } else {
                        Data(left - n as u64)
                    };
                    continue;
                }
                DataCr => self.state = expect(b, b'\r').map(|()| DataLf)?,
                DataLf => self.state = expect(b, b'\n').map(|()| Size)?,
                TrailerStart => {
                    self.state = if b == b'\r' { EndLf } else { TrailerLine };
                }
                TrailerLine => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    }
                }
                TrailerLf => self.state = expect(b, b'\n').map(|()| TrailerStart)?,
                EndLf => {
                    expect(b, b'\n')?;
                    self.state = Done;
                    return Ok(i + 1);
                }
                Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

/// The one byte a chunked body must have here.
fn expect(b: u8, want: u8) -> Result<(), BadChunk> {
    if b == want { Ok(()) } else { Err(BadChunk) }
}

#[cfg(test)]
mod tests;
