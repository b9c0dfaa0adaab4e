//! Response header rewriting for the hop back from a member (RFC 9110 §7.6.1, RFC 9112 §6.3).
//! (The request head a member gets is written, and the member's response head parsed with its
//! hop-by-hop lines left out, by [`super::member_http`]; [`strip_hop_by_hop`] is for the heads
//! that keep them until the end: a `101 Switching Protocols`'s.)

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::member_http::TransferCoding;

const HOP_BY_HOP_COUNT: usize = 7;
/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`). `Connection` first ([`strip_hop_by_hop`] relies on it).
/// A `static`, not a `const`: each use of a `const` array makes (and drops) a copy of it.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The place of `name` in [`HOP_BY_HOP`], found by its text (one comparison of lengths and bytes,
/// where comparing `HeaderName`s one by one against the seven costs more than the whole check).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

/// Remove hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names there are (a member's answer has a handful, usually with
    // `Connection`) instead of a lookup for each of the seven names: only those there are removed.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
        }
    }
    if present == [false; HOP_BY_HOP_COUNT] {
        return;
    }
    // `Connection` (first in the list) goes last: it names more headers to remove.
    for (name, _) in HOP_BY_HOP.iter().zip(present).skip(1).filter(|(_, there)| *there) {
        headers.remove(name);
    }
    if !present[0] {
        return;
    }
    // Tokens naming headers removed anyway (`keep-alive`, ...) and the `close` option are not
    // collected: the usual `Connection: keep-alive` then costs no allocation.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    headers.remove(header::CONNECTION);
    for name in &listed {
        headers.remove(name);
    }
}

/// Make the framing of a member's response Fulcrum's own (RFC 9112 §6.3). `headers` are the
/// member's end-to-end headers (its hop-by-hop ones were left out as its head was parsed,
/// [`super::member_http::parse_response_head`]) and `transfer` the last coding of the
/// `Transfer-Encoding` it sent. A member that sends both `Transfer-Encoding: chunked` and
/// `Content-Length` has its body read chunked, so the `Content-Length` is dropped (relayed, it
/// would cut the body short); a body of known length gets exactly one `Content-Length`, any other
/// none (hyper then frames it chunked). Responses without a body (to HEAD; 1xx, 204, 304) keep the
/// member's `Content-Length`, which describes the representation, unless it came with
/// `Transfer-Encoding`. A `Transfer-Encoding` whose last coding is not `chunked` cannot be relayed
/// faithfully: an error, answered 502.
pub fn frame_response(
    headers: &mut HeaderMap,
    method: &hyper::Method,
    status: hyper::StatusCode,
    transfer: Option<TransferCoding>,
    body: &impl hyper::body::Body,
) -> Result<(), &'static str> {
    let chunked = match transfer {
        None => false,
        Some(TransferCoding::Chunked) => true,
        Some(TransferCoding::Other) => return Err("Transfer-Encoding whose last coding is not chunked"),
    };
    let bodiless = method == hyper::Method::HEAD
        || status.is_informational()
        || status == hyper::StatusCode::NO_CONTENT
        || status == hyper::StatusCode::NOT_MODIFIED;
    if bodiless {
        if chunked {
            headers.remove(header::CONTENT_LENGTH);
        } else if let Some(first) = headers.get(header::CONTENT_LENGTH).cloned() {
            // Repeated equal values (hyper refuses unequal ones) become one.
            headers.insert(header::CONTENT_LENGTH, first);
        }
        return Ok(());
    }
    match body.size_hint().exact().filter(|_| !chunked) {
        // The member's own single `Content-Length` already says exactly this: kept as it is
        // (the usual case; a new value would cost an allocation per response).
        Some(n) if is_only_length(headers, n) => {}
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    Ok(())
}

/// Whether `headers` has exactly one `Content-Length`, all digits, whose value is `n`.
fn is_only_length(headers: &HeaderMap, n: u64) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => {
            let digits = value.as_bytes();
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u64>().ok()) == Some(n)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hop-by-hop name is found at its place in the list, and no other name is.
    #[test]
    fn hop_by_hop_names_are_found_at_their_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [header::CONTENT_LENGTH, header::HOST, HeaderName::from_static("x-connection")] {
            assert_eq!(hop_by_hop_index(&other), None, "{other}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    /// Header lines a member sends, the names relayed: with and without `Connection`, with hop-by-hop
    /// headers alone, with `Connection` naming a header that is not there.
    #[test]
    fn only_the_hop_by_hop_headers_there_are_removed() {
        /// The member's header lines, the names relayed.
        type Case = (&'static [(&'static str, &'static str)], &'static [&'static str]);
        let cases: &[Case] = &[
            (&[("content-type", "text/plain"), ("x-a", "1")], &["content-type", "x-a"]),
            (&[("upgrade", "h2c"), ("trailer", "x"), ("x-a", "1")], &["x-a"]),
            (&[("transfer-encoding", "chunked"), ("proxy-connection", "close")], &[]),
            (&[("connection", "close"), ("x-a", "1")], &["x-a"]),
            (&[("connection", "x-gone, x-b"), ("x-b", "1"), ("x-a", "1")], &["x-a"]),
            (&[("x-a", "1"), ("connection", "Upgrade"), ("upgrade", "websocket")], &["x-a"]),
        ];
        for (lines, kept) in cases {
            let mut h = HeaderMap::new();
            for (name, value) in *lines {
                h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            strip_hop_by_hop(&mut h);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, *kept, "{lines:?}");
        }
    }

    /// A body of known length leaves with exactly one `Content-Length` of that length: the
    /// member's own when it is one all-digit value of that length, a new one otherwise.
    #[test]
    fn content_length_is_the_bodys_length() {
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"0123456789"));
        let get = hyper::Method::GET;
        let ok = hyper::StatusCode::OK;
        for (sent, relayed) in [
            (&["10"][..], "10"),
            (&["010"][..], "010"),
            (&["10", "10"][..], "10"),
            (&["+10"][..], "10"),
            (&[][..], "10"),
        ] {
            let mut h = HeaderMap::new();
            for value in sent {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_static(value));
            }
            frame_response(&mut h, &get, ok, None, &body).unwrap();
            let values: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(values, [relayed], "member sent {sent:?}");
        }
    }
}
