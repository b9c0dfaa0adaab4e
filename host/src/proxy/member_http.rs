//! HTTP/1.1 to members, written by hand on hyper's types.
//!
//! hyper's client drives each member connection from a task of its own and hands requests and
//! responses to it through channels: every proxied request then crossed tasks four times, and the
//! request's header map was cloned twice to build hyper's `Request`. Here the request's own task
//! writes the request head straight from the client's header map into one buffer (one `write`
//! for a request without a body), parses the member's response head with `httparse` from the
//! connection's read buffer (header values are slices of that buffer, not copies), and the
//! response body reads the member's socket itself while hyper's server side polls it
//! ([`MemberBody`]). Nothing is spawned per connection or per request.
//!
//! What it speaks is what mod_proxy_http sends and accepts: HTTP/1.1 requests with
//! `Content-Length` or chunked bodies; responses framed by `Content-Length`, chunked coding, or the
//! end of the connection (RFC 9112 §6.3); interim 1xx responses skipped.

use std::future::Future as _;
use std::io;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Version};
use smallvec::SmallVec;
use tokio::time::Sleep;

use super::upstream::{MemberConn, MemberStream};
use crate::balancer::Lease;
use tokio::io::AsyncRead as _;

/// Most header lines a member's response may have.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Largest response head accepted from a member (Apache's default `ProxyIOBufferSize` region
/// and LimitRequestFieldSize-like bounds put it well below this).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How much room a read asks for.
const READ_CHUNK: usize = 8 * 1024;

/// Header lines a response map has room for beyond the member's: with the member's usual
/// five or so, http's map then starts at the size it would otherwise grow to.
const RESPONSE_HEADROOM: usize = 4;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and `Proxy-Connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// How the request body goes to the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no `Content-Length` (a GET as clients send it).
    None,
    /// `Content-Length: n` (also 0, when the client declared it).
    Length(u64),
    /// `Transfer-Encoding: chunked`: a body whose length is not known in advance.
    Chunked,
}

impl RequestFraming {
    /// The framing mod_proxy uses for a body with this size hint: a known length as
    /// `Content-Length` (0 only when the client sent `Content-Length: 0`), else chunked.
    pub fn for_body(body: &impl Body, client_declared_length: bool) -> RequestFraming {
        match body.size_hint().exact() {
            Some(n) if n > 0 || client_declared_length => RequestFraming::Length(n),
            Some(_) => RequestFraming::None,
            None => RequestFraming::Chunked,
        }
    }
}

/// What the request head says besides the client's headers.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Path and query as sent to the member, in pieces written one after the other.
    pub target: &'a [&'a str],
    /// The client's headers (after the rules): hop-by-hop ones are dropped here.
    pub headers: &'a HeaderMap,
    /// The `Host` the member gets.
    pub host: &'a str,
    /// The values appended to `X-Forwarded-For`, `-Host` (when there is one) and `-Server`.
    pub forwarded_for: &'a str,
    pub forwarded_host: Option<&'a str>,
    pub forwarded_server: &'a str,
    /// `X-Forwarded-Proto` (`https` on TLS connections): replaces the client's, when set.
    pub forwarded_proto: Option<&'a str>,
    pub framing: RequestFraming,
    /// The protocol the member is asked to switch to (`Connection: upgrade`, `Upgrade: ...`).
    pub upgrade: Option<&'a str>,
}

/// Write the request head into `out`: request line, `Host`, the client's end-to-end headers in
/// their order (each header named by `Connection` dropped too), the `X-Forwarded-*` headers with
/// the client appended as mod_proxy does (`existing, value`; a header sent on several lines keeps
/// its first), then the framing header.
pub fn write_request_head(out: &mut Vec<u8>, head: &RequestHead<'_>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    for piece in head.target {
        out.extend_from_slice(piece.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection_listed = |name: &HeaderName| {
        head.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
    };
    let has_connection = head.headers.contains_key(header::CONNECTION);
    let mut wrote_host = false;
    let forwarded: [(&str, Option<&str>); 3] = [
        ("x-forwarded-for", Some(head.forwarded_for)),
        ("x-forwarded-host", head.forwarded_host),
        ("x-forwarded-server", Some(head.forwarded_server)),
    ];
    let mut wrote_forwarded = [false; 3];
    let mut last: Option<&HeaderName> = None;
    for (name, value) in head.headers {
        // Repeated lines of one header come one after the other: decide once per name.
        let repeat = last == Some(name);
        last = Some(name);
        if is_hop_by_hop(name) || name == header::CONTENT_LENGTH || (has_connection && connection_listed(name)) {
            continue;
        }
        if head.forwarded_proto.is_some() && name.as_str() == "x-forwarded-proto" {
            continue;
        }
        if name == header::HOST {
            if !repeat {
                line(out, "host", head.host.as_bytes());
                wrote_host = true;
            }
            continue;
        }
        if let Some(i) = forwarded.iter().position(|(n, _)| *n == name.as_str()) {
            if !repeat {
                match forwarded[i].1 {
                    Some(add) if !value.is_empty() => {
                        out.extend_from_slice(name.as_str().as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b", ");
                        out.extend_from_slice(add.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    Some(add) => line(out, name.as_str(), add.as_bytes()),
                    None => line(out, name.as_str(), value.as_bytes()),
                }
                wrote_forwarded[i] = true;
            }
            continue;
        }
        line(out, name.as_str(), value.as_bytes());
    }
    for (i, (name, add)) in forwarded.iter().enumerate() {
        if let (false, Some(add)) = (wrote_forwarded[i], add) {
            line(out, name, add.as_bytes());
        }
    }
    if let Some(proto) = head.forwarded_proto {
        line(out, "x-forwarded-proto", proto.as_bytes());
    }
    if !wrote_host {
        line(out, "host", head.host.as_bytes());
    }
    if let Some(protocol) = head.upgrade {
        line(out, "connection", b"upgrade");
        line(out, "upgrade", protocol.as_bytes());
    }
    match head.framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => line(out, "transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a member's response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: a response to HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the member closes the connection.
    Close,
}

/// The last coding of a member's `Transfer-Encoding` (RFC 9112 §6.1), when it sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferCoding {
    Chunked,
    /// Any other: a body so coded cannot be relayed faithfully.
    Other,
}

/// A member's response head, parsed.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The member's end-to-end header lines: the hop-by-hop ones (RFC 9110 §7.6.1, `Keep-Alive`,
    /// `Proxy-Connection`, and every header its `Connection` names) are left out as the head is
    /// parsed, except in a `101 Switching Protocols`, whose `Upgrade` and `Connection` the tunnel
    /// needs.
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The member's `Transfer-Encoding`, when it sent one (it is not in `headers`).
    pub transfer: Option<TransferCoding>,
    /// The connection may carry another request once this response's body is read.
    pub keep_alive: bool,
}

/// Why a member's response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the member sent a malformed response head ({0})")]
    Malformed(&'static str),
    #[error("the member's response head is larger than {MAX_RESPONSE_HEAD} bytes")]
    TooLarge,
    #[error("the member sent a response with a Transfer-Encoding whose last coding is not chunked")]
    Coding,
    #[error("the member sent a response with an invalid Content-Length")]
    Length,
    #[error("the member answered 101 Switching Protocols to a request that did not ask for it")]
    Switching,
}

/// What one parse of the read buffer gave.
#[derive(Debug)]
pub enum Parsed {
    /// A final response head; its bytes have been taken from the buffer.
    Final(ResponseHead),
    /// An interim 1xx response, taken from the buffer and dropped: read on.
    Interim,
    /// The head is not complete yet.
    Partial,
}

/// Parse a response head at the start of `buf` (the answer to a `method` request). The head's
/// bytes are split off the buffer; what follows (the body's start) stays in it.
///
/// A `101 Switching Protocols` is a final head when the request asked to `upgrade` (the bytes
/// after it belong to the new protocol), and an error otherwise.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method, upgrade: bool) -> Result<Parsed, ResponseError> {
    // Left uninitialised, as hyper does for requests: zeroing 128 headers per response (4 KB)
    // cost more than the parse.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut storage) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if buf.len() > MAX_RESPONSE_HEAD { Err(ResponseError::TooLarge) } else { Ok(Parsed::Partial) };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
            Err(_) => return Err(ResponseError::Malformed("not an HTTP/1.x status line and headers")),
        };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| ResponseError::Malformed("status code"))?;
    let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // Where each header's name and value sit in the buffer, to slice them out of it once frozen
    // (inline for the usual few headers: nothing to zero, nothing to allocate).
    let base = buf.as_ptr() as usize;
    let spans: SmallVec<[(usize, usize, usize, usize); 16]> = response
        .headers
        .iter()
        .map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            (name, name + h.name.len(), value, value + h.value.len())
        })
        .collect();
    let count = spans.len();
    let head = buf.split_to(len).freeze();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS && upgrade;
    if status.is_informational() && !switching {
        return if status == StatusCode::SWITCHING_PROTOCOLS {
            Err(ResponseError::Switching)
        } else {
            Ok(Parsed::Interim)
        };
    }
    // Room for what the response rules add (the guide's `Set-Cookie` and `X-Balance`), so that
    // adding them does not grow (reallocate and rehash) the map on every response.
    let mut headers = HeaderMap::with_capacity(count + RESPONSE_HEADROOM);
    // What decides the framing, noted as the lines go into the map (not looked up in it after):
    // the `Connection` tokens, the last `Transfer-Encoding` line, and the one length every
    // `Content-Length` line agrees on (`Some(Err)`: they do not, or one is not a length).
    let mut keep_alive = version == Version::HTTP_11;
    let mut last_coding: Option<(usize, usize)> = None;
    let mut length: Option<Result<u64, ()>> = None;
    // Headers the `Connection` lines name besides the hop-by-hop ones (rare): removed at the end.
    let mut listed: SmallVec<[HeaderName; 2]> = SmallVec::new();
    for &(n0, n1, v0, v1) in &spans {
        let name = HeaderName::from_bytes(&head[n0..n1]).map_err(|_| ResponseError::Malformed("header name"))?;
        let value = &head[v0..v1];
        let hop_by_hop = if name == header::CONNECTION {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive |= version == Version::HTTP_10;
                } else if let Ok(other) = HeaderName::from_bytes(token)
                    && !is_hop_by_hop(&other)
                {
                    listed.push(other);
                }
            }
            true
        } else if name == header::TRANSFER_ENCODING {
            last_coding = Some((v0, v1));
            true
        } else {
            if name == header::CONTENT_LENGTH {
                length = Some(match length {
                    Some(Err(())) => Err(()),
                    agreed => content_length(agreed.and_then(Result::ok), value),
                });
            }
            is_hop_by_hop(&name)
        };
        // Hop-by-hop lines describe this connection, not the response: never relayed, so not
        // kept (but a switch's `Upgrade` and `Connection` are what the tunnel answers with).
        if !hop_by_hop || switching {
            // SAFETY: httparse accepted these bytes as a header value: tab, 0x20-0x7E and 0x80-0xFF,
            // the bytes `HeaderValue` allows (hyper builds its request headers the same way).
            headers.append(name, unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(v0..v1)) });
        }
    }
    if !switching {
        for name in &listed {
            headers.remove(name);
        }
    }
    let transfer =
        last_coding.map(|(v0, v1)| match head[v0..v1].rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii) {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => TransferCoding::Chunked,
            _ => TransferCoding::Other,
        });
    if switching {
        return Ok(Parsed::Final(ResponseHead {
            status,
            version,
            headers,
            framing: ResponseFraming::Empty,
            transfer,
            keep_alive: false,
        }));
    }
    let bodiless = method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Empty
    } else if let Some(coding) = transfer {
        if coding != TransferCoding::Chunked {
            return Err(ResponseError::Coding);
        }
        ResponseFraming::Chunked
    } else if let Some(length) = length {
        ResponseFraming::Length(length.map_err(|()| ResponseError::Length)?)
    } else {
        ResponseFraming::Close
    };
    if framing == ResponseFraming::Close {
        keep_alive = false;
    }
    Ok(Parsed::Final(ResponseHead { status, version, headers, framing, transfer, keep_alive }))
}

/// One more `Content-Length` line: the one length its list elements and the lines before it
/// (`agreed`) agree on (RFC 9110 §8.6), or `Err` when an element is not a length or they differ.
fn content_length(agreed: Option<u64>, value: &[u8]) -> Result<u64, ()> {
    let mut length = agreed;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(part).map_err(|_| ())?.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    length.ok_or(())
}

/// Decoding of a chunked body (RFC 9112 §7.1), resumable at any byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading a chunk-size line; `size` so far, `digits` seen, in the extension after `;`.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// Expecting the LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data, `left` bytes to go.
    Data {
        left: u64,
    },
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// Trailer section: at the start of a line (`empty` = this line would end the body).
    Trailer {
        at_line_start: bool,
        cr: bool,
    },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size { size: 0, digits: 0, ext: false }
    }
}

impl Chunked {
    /// Consume framing bytes from the start of `buf` until data is available (returned, split off
    /// the buffer), the body ends (`Ok(None)` with `self` = `Done`), or the buffer runs out
    /// (`Ok(None)`, still not `Done`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
        self.skip_framing(buf)?;
        Ok(self.take_data(buf))
    }

    /// The chunk data at the start of `buf`, when the decoder is inside a chunk.
    pub fn take_data(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        let Chunked::Data { left } = *self else { return None };
        if buf.is_empty() {
            return None;
        }
        let n = (buf.len() as u64).min(left) as usize;
        *self = if left == n as u64 { Chunked::DataCr } else { Chunked::Data { left: left - n as u64 } };
        Some(buf.split_to(n).freeze())
    }

    /// Consume framing bytes (size lines, CRLFs, trailers) from the start of `buf`, stopping at
    /// chunk data, at the end of the body, or when the buffer runs out.
    pub fn skip_framing(&mut self, buf: &mut BytesMut) -> Result<(), &'static str> {
        loop {
            if matches!(*self, Chunked::Data { .. } | Chunked::Done) {
                return Ok(());
            }
            let Some(&b) = buf.first() else { return Ok(()) };
            buf.advance(1);
            *self = match *self {
                Chunked::Size { size, digits, ext: false } if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err("chunk size too large");
                    }
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    Chunked::Size { size: size * 16 + d, digits: digits + 1, ext: false }
                }
                Chunked::Size { size, digits, .. } if b == b'\r' && digits > 0 => Chunked::SizeLf { size },
                Chunked::Size { size, digits, .. } if b == b'\n' && digits > 0 => Self::after_size(size),
                Chunked::Size { size, digits, .. } if digits > 0 && (b == b';' || b == b' ' || b == b'\t') => {
                    Chunked::Size { size, digits, ext: true }
                }
                Chunked::Size { size, digits, ext: true } if b != b'\r' && b != b'\n' => {
                    Chunked::Size { size, digits, ext: true }
                }
                Chunked::Size { .. } => return Err("invalid chunk size line"),
                Chunked::SizeLf { size } if b == b'\n' => Self::after_size(size),
                Chunked::SizeLf { .. } => return Err("chunk size line without LF"),
                Chunked::DataCr if b == b'\r' => Chunked::DataLf,
                Chunked::DataCr | Chunked::DataLf if b == b'\n' => Chunked::default(),
                Chunked::DataCr | Chunked::DataLf => return Err("chunk data not followed by CRLF"),
                Chunked::Trailer { at_line_start: true, .. } if b == b'\r' => {
                    Chunked::Trailer { at_line_start: true, cr: true }
                }
                Chunked::Trailer { at_line_start: true, .. } if b == b'\n' => Chunked::Done,
                Chunked::Trailer { cr: true, .. } => return Err("bare CR in trailer section"),
                Chunked::Trailer { .. } if b == b'\n' => Chunked::Trailer { at_line_start: true, cr: false },
                Chunked::Trailer { .. } => Chunked::Trailer { at_line_start: false, cr: false },
                Chunked::Data { .. } | Chunked::Done => return Ok(()),
            };
        }
    }

    fn after_size(size: u64) -> Chunked {
        if size == 0 { Chunked::Trailer { at_line_start: true, cr: false } } else { Chunked::Data { left: size } }
    }
}

/// A member's response body, read from the member's socket by whoever polls it (hyper's server
/// side). It holds the member's [`Lease`] (the member counts as busy) until the body ends or is
/// dropped, counts the bytes as the member's traffic, and hands the connection back to its pool
/// when the body has been read whole and the connection may be reused.
#[derive(Debug)]
pub struct MemberBody {
    conn: Option<MemberConn>,
    state: Decoding,
    keep_alive: bool,
    lease: Option<Lease>,
    /// `ProxyTimeout` for each wait on the member.
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// What one look at the buffer decided.
enum Step {
    /// Data to relay; `true` when it is the last.
    Data(Bytes, bool),
    End,
    Fail(BodyError),
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// Why relaying a member's body failed: the response is cut off (hyper closes the client's
/// connection, as Apache does when a member breaks mid-body).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the member closed the connection before the body was complete")]
    Truncated,
    #[error("the member's chunked body is malformed: {0}")]
    Chunked(&'static str),
    #[error("reading the member's body: {0}")]
    Io(#[from] io::Error),
    #[error("the member sent nothing for {0:?} in the middle of a body")]
    Timeout(Duration),
}

impl MemberBody {
    pub fn new(conn: MemberConn, head: &ResponseHead, lease: Lease, timeout: Duration) -> MemberBody {
        let state = match head.framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => Decoding::Done,
            ResponseFraming::Length(n) => Decoding::Length(n),
            ResponseFraming::Chunked => Decoding::Chunked(Chunked::default()),
            ResponseFraming::Close => Decoding::Close,
        };
        let mut body = MemberBody {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
            lease: Some(lease),
            timeout,
            sleep: None,
        };
        if body.state == Decoding::Done {
            body.finish();
        }
        body
    }

    /// The body has been read whole: the member is no longer busy, and a clean connection goes
    /// back to the pool (one with bytes past the response would answer the next request wrongly).
    fn finish(&mut self) {
        self.state = Decoding::Done;
        self.lease.take();
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            conn.release();
        }
    }

    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.state = Decoding::Done;
        self.conn.take();
        self.lease.take();
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for MemberBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            // First what the buffer already holds.
            let step = match &mut this.state {
                Decoding::Done => Step::End,
                Decoding::Length(left) if !conn.buf.is_empty() => {
                    let n = (conn.buf.len() as u64).min(*left) as usize;
                    *left -= n as u64;
                    // hyper stops polling once the body says it has ended: finish with the data.
                    Step::Data(conn.buf.split_to(n).freeze(), *left == 0)
                }
                Decoding::Chunked(chunked) if !conn.buf.is_empty() => match chunked.decode(&mut conn.buf) {
                    // Step over the framing that follows, so the end is seen with the last data.
                    Ok(Some(data)) => match chunked.skip_framing(&mut conn.buf) {
                        Ok(()) => Step::Data(data, *chunked == Chunked::Done),
                        Err(why) => Step::Fail(BodyError::Chunked(why)),
                    },
                    Ok(None) if *chunked == Chunked::Done => Step::End,
                    Ok(None) => Step::Read,
                    Err(why) => Step::Fail(BodyError::Chunked(why)),
                },
                Decoding::Close if !conn.buf.is_empty() => Step::Data(conn.buf.split().freeze(), false),
                _ => Step::Read,
            };
            match step {
                Step::Data(data, last) => {
                    if let Some(lease) = &this.lease {
                        lease.member().add_read(data.len() as u64);
                    }
                    this.sleep = None;
                    if last {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Step::Fail(error) => return this.fail(error),
                Step::Read => {}
            }
            match poll_read_buf(conn, cx) {
                Poll::Ready(Ok(0)) if this.state == Decoding::Close => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(BodyError::Truncated),
                Poll::Ready(Ok(_)) => this.sleep = None,
                Poll::Ready(Err(e)) => return this.fail(BodyError::Io(e)),
                Poll::Pending => {
                    let timeout = this.timeout;
                    let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    ready!(sleep.as_mut().poll(cx));
                    return this.fail(BodyError::Timeout(timeout));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Decoding::Done => SizeHint::with_exact(0),
            Decoding::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// How sending a request and reading its response head failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Writing the request head failed: no complete request reached the member, and the body has
    /// not been touched.
    #[error("sending the request head: {0}")]
    Head(io::Error),
    /// The client's body broke (its fault is in the request's fault slot).
    #[error("the client's request body failed")]
    ClientBody,
    /// Writing the body to the member failed.
    #[error("sending the request body: {0}")]
    Body(io::Error),
    /// The member closed the connection or failed before a whole response head came.
    #[error("the member closed the connection without answering")]
    Closed,
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error(transparent)]
    Response(ResponseError),
}

impl ExchangeError {
    /// The TLS alert an `https://` member sent (a refused client certificate, say), if that is
    /// what broke the exchange.
    pub fn tls_alert(&self) -> Option<String> {
        let io = match self {
            ExchangeError::Head(e) | ExchangeError::Body(e) | ExchangeError::Read(e) => e,
            _ => return None,
        };
        match io.get_ref()?.downcast_ref::<rustls::Error>()? {
            e @ rustls::Error::AlertReceived(_) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// Write the request: `conn.head` (already encoded), then the body in `framing`.
///
/// A request with a body waits for the body's first bytes (or its end) before anything is written,
/// and sends them with the head: a client whose body breaks at once (a malformed first chunk) has
/// nothing of its request reach the member, as with Apache, and a small body costs one write.
pub async fn send_request(
    conn: &mut MemberConn,
    body: &mut (impl Body<Data = Bytes> + Unpin),
    framing: RequestFraming,
) -> Result<(), ExchangeError> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    if framing == RequestFraming::None {
        conn.stream.write_all(&conn.head).await.map_err(ExchangeError::Head)?;
        // A no-op for TCP; TLS may hold records back until flushed.
        return conn.stream.flush().await.map_err(ExchangeError::Head);
    }
    let mut head_sent = false;
    loop {
        let data = match body.frame().await {
            None => None,
            Some(Err(_)) => return Err(ExchangeError::ClientBody),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => Some(data),
                _ => continue,
            },
        };
        // Framing and data after the head in one buffer while the head is unsent; the head's
        // failure is `Head` (nothing whole reached the member), later ones `Body`.
        if !head_sent {
            conn.head.reserve(data.as_ref().map_or(0, Bytes::len) + 32);
        } else {
            conn.head.clear();
        }
        match (&data, framing) {
            (Some(data), RequestFraming::Chunked) => {
                let _ = write!(conn.head, "{:x}\r\n", data.len());
                conn.head.extend_from_slice(data);
                conn.head.extend_from_slice(b"\r\n");
            }
            (Some(data), _) => conn.head.extend_from_slice(data),
            (None, RequestFraming::Chunked) => conn.head.extend_from_slice(b"0\r\n\r\n"),
            (None, _) => {}
        }
        // Written through, not at the end of the round: whether the head reached the member
        // decides whether a failure may send the request again.
        let written = match conn.stream.write_all(&conn.head).await {
            Ok(()) => conn.stream.write_through().await,
            Err(e) => Err(e),
        };
        match written {
            Err(e) if !head_sent => return Err(ExchangeError::Head(e)),
            Err(e) => return Err(ExchangeError::Body(e)),
            Ok(()) => head_sent = true,
        }
        if data.is_none() {
            return Ok(());
        }
    }
}

/// Read the member's final response head (interim 1xx responses are skipped).
pub async fn read_response_head(
    conn: &mut MemberConn,
    method: &Method,
    upgrade: bool,
) -> Result<ResponseHead, ExchangeError> {
    loop {
        if !conn.buf.is_empty() {
            match parse_response_head(&mut conn.buf, method, upgrade).map_err(ExchangeError::Response)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
        }
        // A request head left for the end of the round that did not go out (its write failed,
        // or the connection broke before it was written: then it is taken back, never to be
        // written) reached nothing: the failure is the head's, as when it is written at once.
        let unsent = |conn: &MemberConn, e: ExchangeError| match conn.stream.take_write_error() {
            Some(write) => ExchangeError::Head(write),
            None if conn.stream.withdraw_unsent() => {
                ExchangeError::Head(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))
            }
            None => e,
        };
        let read = std::future::poll_fn(|cx| {
            if let Some(e) = conn.stream.take_write_error() {
                return Poll::Ready(Err(ExchangeError::Head(e)));
            }
            poll_read_buf(conn, cx).map_err(ExchangeError::Read)
        })
        .await;
        match read {
            Ok(0) => return Err(unsent(conn, ExchangeError::Closed)),
            Ok(_) => {}
            Err(e) => return Err(unsent(conn, e)),
        }
    }
}

/// Read what the member's socket has into the connection's buffer.
pub fn poll_read_buf(conn: &mut MemberConn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    match &mut conn.stream {
        // Straight into the buffer's spare room, with one system call. Through `poll_read`, not
        // `try_read_buf`: tokio takes a read that leaves room in the buffer as proof that the
        // socket is drained and forgets its readiness, so the pool's liveness check
        // (`MemberConn::is_alive`) costs no `recv` that would only say `EAGAIN`.
        MemberStream::Plain(stream) => {
            conn.buf.reserve(READ_CHUNK);
            tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut conn.buf)
        }
        MemberStream::Batched(stream) => {
            conn.buf.reserve(READ_CHUNK);
            tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut conn.buf)
        }
        // Decrypted by rustls into a chunk, then appended.
        MemberStream::Tls(stream) => {
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = tokio::io::ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut **stream).poll_read(cx, &mut read))?;
            conn.buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(bytes: &[u8], method: &Method) -> Result<(ResponseHead, BytesMut), ResponseError> {
        let mut buf = BytesMut::from(bytes);
        loop {
            match parse_response_head(&mut buf, method, false)? {
                Parsed::Final(head) => return Ok((head, buf)),
                Parsed::Interim => continue,
                Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            }
        }
    }

    /// Member sends this head; Fulcrum reads this framing, keep-alive, and what stays buffered.
    #[test]
    fn response_framing_follows_rfc_9112() {
        use ResponseFraming::*;
        let get = Method::GET;
        /// Response bytes, request method, framing and keep-alive (or the error).
        type Case<'a> = (&'a str, &'a Method, Result<(ResponseFraming, bool), ResponseError>);
        let cases: &[Case] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", &get, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", &get, Ok((Length(5), true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &get, Err(ResponseError::Length)),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", &get, Err(ResponseError::Length)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", &get, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &get, Err(ResponseError::Coding)),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &get, Ok((Chunked, true))),
            ("HTTP/1.1 200 OK\r\n\r\nuntil close", &get, Ok((Close, false))),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", &get, Ok((Length(0), false))),
            ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &get, Ok((Length(0), false))),
            ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", &get, Ok((Length(0), true))),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", &get, Ok((Empty, true))),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", &get, Ok((Empty, true))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", &Method::HEAD, Ok((Empty, true))),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                &get,
                Ok((Length(0), true)),
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", &get, Err(ResponseError::Switching)),
        ];
        for (bytes, method, expected) in cases {
            let got = head_of(bytes.as_bytes(), method).map(|(h, _)| (h.framing, h.keep_alive));
            assert_eq!(got, *expected, "{bytes:?}");
        }
        let (head, rest) =
            head_of(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello", &get).unwrap();
        assert_eq!(&rest[..], b"hello");
        let xa: Vec<_> = head.headers.get_all("x-a").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(xa, ["1", "2"]);
    }

    /// Member sends these header lines; the head keeps these names (the hop-by-hop ones and those
    /// its `Connection` names are left out), and this last transfer coding.
    #[test]
    fn hop_by_hop_lines_are_left_out_as_the_head_is_parsed() {
        use TransferCoding::*;
        type Case = (&'static str, &'static [&'static str], Option<TransferCoding>);
        let cases: &[Case] = &[
            (
                "Content-Type: text/plain\r\nX-A: 1\r\nContent-Length: 0",
                &["content-type", "x-a", "content-length"],
                None,
            ),
            ("Connection: keep-alive\r\nContent-Length: 0\r\nKeep-Alive: timeout=5", &["content-length"], None),
            ("Upgrade: h2c\r\nTrailer: x\r\nX-A: 1\r\nContent-Length: 0", &["x-a", "content-length"], None),
            ("Transfer-Encoding: chunked\r\nProxy-Connection: close\r\nTE: trailers", &[], Some(Chunked)),
            ("Connection: close\r\nX-A: 1\r\nContent-Length: 0", &["x-a", "content-length"], None),
            (
                "Connection: x-gone, X-B\r\nX-B: 1\r\nX-A: 1\r\nx-b: 2\r\nContent-Length: 0",
                &["x-a", "content-length"],
                None,
            ),
            (
                "X-A: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0",
                &["x-a", "content-length"],
                None,
            ),
            ("Connection: keep-alive, close, te\r\nX-A: 1\r\nContent-Length: 0", &["x-a", "content-length"], None),
        ];
        for (lines, kept, transfer) in cases {
            let bytes = format!("HTTP/1.1 200 OK\r\n{lines}\r\n\r\n");
            let (head, _) = head_of(bytes.as_bytes(), &Method::GET).unwrap();
            // (Removing a name the `Connection` line lists may reorder the others: no matter.)
            let mut names: Vec<_> = head.headers.keys().map(HeaderName::as_str).collect();
            names.sort_unstable();
            let mut kept = kept.to_vec();
            kept.sort_unstable();
            assert_eq!(names, kept, "{lines:?}");
            assert_eq!(head.transfer, *transfer, "{lines:?}");
        }
        // Not framed by it, a HEAD response's coding is still told, for the relay to refuse.
        let (head, _) = head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &Method::HEAD).unwrap();
        assert_eq!((head.framing, head.transfer), (ResponseFraming::Empty, Some(Other)));
        // A switch keeps its `Upgrade` and `Connection`: they are what the tunnel answers with.
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..],
        );
        let Ok(Parsed::Final(head)) = parse_response_head(&mut buf, &Method::GET, true) else {
            panic!("not a final head")
        };
        let names: Vec<_> = head.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["upgrade", "connection"]);
    }

    #[test]
    fn malformed_heads_are_errors_and_partial_heads_wait() {
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(parse_response_head(&mut partial, &Method::GET, false), Ok(Parsed::Partial)));
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad.as_bytes());
            assert!(parse_response_head(&mut buf, &Method::GET, false).is_err(), "{bad:?}");
        }
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        huge.extend_from_slice(&vec![b'a'; MAX_RESPONSE_HEAD + 1]);
        assert_eq!(parse_response_head(&mut huge, &Method::GET, false).unwrap_err(), ResponseError::TooLarge);
    }

    /// Chunked bodies, fed whole and one byte at a time: the same data, the same end.
    #[test]
    fn chunked_decoding_at_any_split() {
        /// Wire bytes, and the body they carry (`Err`: malformed).
        type Case<'a> = (&'a [u8], Result<&'a [u8], ()>);
        let cases: &[Case] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", Ok(b"hello")),
            (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok(b"hello world")),
            (b"A\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n", Ok(b"0123456789")),
            (b"5\nhello\n0\n\n", Ok(b"hello")),
            (b"0\r\n\r\n", Ok(b"")),
            (b"x\r\n", Err(())),
            (b"5\r\nhelloXX0\r\n\r\n", Err(())),
            (b"11111111111111111\r\n", Err(())),
        ];
        for (wire, expected) in cases {
            for step in [wire.len(), 1] {
                let mut decoder = Chunked::default();
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let mut result = Ok(());
                'feed: for piece in wire.chunks(step) {
                    buf.extend_from_slice(piece);
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(data)) => out.extend_from_slice(&data),
                            Ok(None) => break,
                            Err(_) => {
                                result = Err(());
                                break 'feed;
                            }
                        }
                    }
                }
                match expected {
                    Ok(data) => {
                        assert_eq!(result, Ok(()), "{wire:?} step {step}");
                        assert_eq!(decoder, Chunked::Done, "{wire:?} step {step}");
                        assert_eq!(&out, data, "{wire:?} step {step}");
                    }
                    Err(()) => assert_eq!(result, Err(()), "{wire:?} step {step}"),
                }
            }
        }
    }

    /// Client headers in, request head out: hop-by-hop and Connection-listed headers dropped,
    /// Host replaced in place, X-Forwarded-* appended, framing last.
    #[test]
    fn request_head_is_written_as_mod_proxy_sends_it() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "www.example.com"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("accept", "*/*"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("te", "trailers"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &RequestHead {
                method: &Method::POST,
                target: &["/a?b"],
                headers: &h,
                host: "www.example.com",
                forwarded_for: "127.0.0.1",
                forwarded_host: Some("www.example.com"),
                forwarded_server: "www.example.com",
                forwarded_proto: None,
                framing: RequestFraming::Length(3),
                upgrade: None,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b HTTP/1.1\r\nhost: www.example.com\r\naccept: */*\r\nx-forwarded-for: 1.2.3.4, 127.0.0.1\r\n\
             cookie: a=1\r\ncookie: b=2\r\nx-forwarded-host: www.example.com\r\nx-forwarded-server: www.example.com\r\n\
             content-length: 3\r\n\r\n"
        );
    }

    /// Over TLS the member is told `X-Forwarded-Proto: https`, whatever the client sent.
    #[test]
    fn forwarded_proto_replaces_the_clients() {
        let mut h = HeaderMap::new();
        h.append(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
        h.append(HeaderName::from_static("accept"), HeaderValue::from_static("*/*"));
        let mut out = Vec::new();
        let mut head = RequestHead {
            method: &Method::GET,
            target: &["/"],
            headers: &h,
            host: "a",
            forwarded_for: "127.0.0.1",
            forwarded_host: None,
            forwarded_server: "a",
            forwarded_proto: Some("https"),
            framing: RequestFraming::None,
            upgrade: None,
        };
        write_request_head(&mut out, &head);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\naccept: */*\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-server: a\r\n\
             x-forwarded-proto: https\r\nhost: a\r\n\r\n"
        );
        // Without TLS the client's header passes, as Apache passes it.
        head.forwarded_proto = None;
        let mut out = Vec::new();
        write_request_head(&mut out, &head);
        assert!(String::from_utf8(out).unwrap().contains("x-forwarded-proto: http\r\n"));
    }
}
