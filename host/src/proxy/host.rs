//! The host a request is for, validated before anything uses it.
//!
//! The Host header picks the virtual host, is forwarded to the member (`preserve_host`), goes into
//! X-Forwarded-Host, the access log and Fulcrum's own error pages. A value that is not an
//! authority (`a b/c@d`, `<script>`) is refused with a 400, as Apache's strict host check does.
//! An absolute-form request (`GET http://abs.example:9999/h`) is for the target's authority,
//! whatever its Host header says (RFC 9112 §3.2.2; docs/apache-behaviour.md §6.5): the Host
//! header is replaced by it, so the member, the rules and the logs all see one host.

use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;

/// The request's host (`None` when it names none: HTTP/1.0 without Host, or an empty Host), after
/// making the Host header agree with an absolute-form target; `Err` says why it is refused.
pub fn request_host(parts: &mut Parts) -> Result<Option<Host>, &'static str> {
    if let Some(authority) = parts.uri.authority() {
        let authority = authority.as_str();
        if !is_authority(authority) {
            return Err("the request target's authority is not a valid host[:port]");
        }
        let value =
            HeaderValue::from_str(authority).map_err(|_| "the request target's authority is not a valid host")?;
        parts.headers.insert(header::HOST, value.clone());
        return Ok(Some(Host(value)));
    }
    let Some(value) = parts.headers.get(header::HOST) else { return Ok(None) };
    let Ok(host) = value.to_str() else { return Err("the Host header is not ASCII") };
    if host.is_empty() {
        return Ok(None);
    }
    if !is_authority(host) {
        return Err("the Host header is not a valid host[:port]");
    }
    Ok(Some(Host(value.clone())))
}

/// A validated host (see [`request_host`]): the header value it was read from, shared with the
/// request's header map rather than copied (a clone of a parsed header value is a reference
/// count, where a `String` was an allocation per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(HeaderValue);

impl std::ops::Deref for Host {
    type Target = str;

    fn deref(&self) -> &str {
        // Checked by `request_host`: visible ASCII, an authority.
        self.0.to_str().unwrap_or_default()
    }
}

/// `host[:port]`: a DNS name or IPv4 address (letters, digits, `-`, `.`, `_`), or an IPv6
/// literal in brackets; the port, when present, digits only (at most 5).
pub fn is_authority(value: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else { return false };
        if literal.is_empty() || !literal.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match after {
            "" => (true, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (true, Some(port)),
                None => return false,
            },
        }
    } else {
        // One pass over the name (every request's Host comes here): up to the first `:`, each
        // byte looked up in a table.
        let bytes = value.as_bytes();
        let end = bytes.iter().position(|&b| !NAME_BYTE[usize::from(b)]).unwrap_or(bytes.len());
        match bytes.get(end) {
            None => (end > 0, None),
            Some(b':') => (end > 0, Some(&value[end + 1..])),
            Some(_) => return false,
        }
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// The bytes of a host name or IPv4 address: letters, digits, `-`, `.`, `_`.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_accepted_and_refused() {
        let cases = [
            ("www.example.com", true),
            ("WWW.Example.COM:8080", true),
            ("127.0.0.1:18080", true),
            ("[::1]", true),
            ("[::1]:8080", true),
            ("[2001:db8::1]:80", true),
            ("under_score.test", true),
            ("host:", true),
            ("a b/c@d", false),
            ("<script>alert(1)</script>", false),
            ("user@host", false),
            ("host/path", false),
            ("host:80:80", false),
            ("host:8o", false),
            ("host:123456", false),
            ("[::1", false),
            ("[::1]x", false),
            ("[]", false),
            ("[zz::1]", false),
            (":80", false),
            ("a\"b", false),
            ("a%41", false),
        ];
        for (host, ok) in cases {
            assert_eq!(is_authority(host), ok, "{host:?}");
        }
    }

    #[test]
    fn absolute_form_target_is_the_host() {
        let request =
            hyper::Request::get("http://abs.example:9999/h?q=1").header("host", "other.test").body(()).unwrap();
        let (mut parts, ()) = request.into_parts();
        assert_eq!(request_host(&mut parts).unwrap().as_deref(), Some("abs.example:9999"));
        assert_eq!(parts.headers[header::HOST], "abs.example:9999");
    }
}
