//! The request path as routing sees it: one canonical form, computed once per request.
//!
//! Every decision that looks at the path (a `proxy_pass` prefix, a `to = "!"` exclusion, a
//! `proxy_pass_match` regex) and the path forwarded to the member are taken from the same
//! canonical form, so no spelling of a path can be matched as one thing and forwarded as another
//! (`//balancer-manager`, `/./balancer-manager`, `/%62alancer-manager` and
//! `/x/../balancer-manager` are all `/balancer-manager`). The steps and their order are Apache's
//! (`ap_normalize_path` with MergeSlashes On, then `ap_unescape_url`; docs/apache-behaviour.md
//! §6.9 and §12):
//!
//! 1. a `%` not followed by two hex digits is refused (400), as are `%2F` (an encoded slash: 404,
//!    AllowEncodedSlashes Off) and `%00` (404);
//! 2. escapes of unreserved characters are decoded (`%41` → `A`, `%7E` → `~`); every other escape
//!    is kept as written (`%20` stays `%20`);
//! 3. runs of slashes are merged (`//a///b` → `/a/b`);
//! 4. `.` and `..` segments are resolved (`/a/b/../c` → `/a/c`, `/a/.` → `/a/`); a `..` that
//!    would climb above the root is refused (400).
//!
//! The query string is not part of the path and is never touched.

use std::borrow::Cow;

/// Why a path cannot be routed; each maps to the status Apache answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `%` not followed by two hex digits: 400.
    BadEscape,
    /// `%2F` or `%00`: 404 (AllowEncodedSlashes Off).
    EncodedSlashOrNul,
    /// A `..` segment above the root: 400.
    AboveRoot,
    /// Not an origin-form path (does not start with `/`): 400. (`OPTIONS *` is answered before.)
    NotAPath,
}

impl Refused {
    pub fn status(self) -> hyper::StatusCode {
        match self {
            Refused::EncodedSlashOrNul => hyper::StatusCode::NOT_FOUND,
            Refused::BadEscape | Refused::AboveRoot | Refused::NotAPath => hyper::StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refused::BadEscape => "a `%` in the path is not followed by two hex digits",
            Refused::EncodedSlashOrNul => "the path has an encoded slash or NUL (%2F, %00)",
            Refused::AboveRoot => "the path climbs above the root with `..`",
            Refused::NotAPath => "the request target is not a path",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of `raw` (a request's path, without the query). Borrowed when `raw` is
/// already canonical, which is the common case and costs one scan.
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, Refused> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Refused::NotAPath);
    }
    // Fast path: no escapes, no doubled slash, no dot segment.
    let mut clean = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => {
                clean = false;
                break;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                clean = false;
                break;
            }
            b'.' if bytes[i - 1] == b'/' => {
                let rest = &bytes[i + 1..];
                if rest.is_empty() || rest[0] == b'/' || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/')) {
                    clean = false;
                    break;
                }
            }
            _ => {}
        }
    }
    if clean {
        return Ok(Cow::Borrowed(raw));
    }

    // 1 and 2: check and decode escapes.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|&h| hex(h)), bytes.get(i + 2).and_then(|&l| hex(l)))
            else {
                return Err(Refused::BadEscape);
            };
            let c = hi << 4 | lo;
            if c == b'/' || c == 0 {
                return Err(Refused::EncodedSlashOrNul);
            }
            if unreserved(c) {
                decoded.push(c);
            } else {
                decoded.extend_from_slice(&bytes[i..i + 3]);
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }

    // 3 and 4: merge slashes and resolve dot segments, segment by segment.
    let mut out: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            b"" if n != last => {} // a doubled slash
            b"." => {
                if n == last {
                    out.push(b"");
                }
            }
            b".." => {
                if out.pop().is_none() {
                    return Err(Refused::AboveRoot);
                }
                if n == last {
                    out.push(b"");
                }
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len());
    for segment in &out {
        path.push(b'/');
        path.extend_from_slice(segment);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    // Only ASCII bytes were decoded, and every other byte came from a `str`: still UTF-8.
    Ok(Cow::Owned(String::from_utf8(path).map_err(|_| Refused::NotAPath)?))
}

/// Whether `path` is under `prefix` on a segment boundary (Apache's alias_match): `/app` covers
/// `/app` and `/app/x`, not `/apple`; a prefix ending in `/` covers everything below it.
pub fn prefix_matches(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sends_path_routing_sees() {
        let cases: &[(&str, Result<&str, Refused>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            // MergeSlashes On: the exclusion bypass of `//balancer-manager`.
            ("//balancer-manager", Ok("/balancer-manager")),
            ("///server-status", Ok("/server-status")),
            ("/a//b///c//", Ok("/a/b/c/")),
            // Dot segments.
            ("/a/b/../c", Ok("/a/c")),
            ("/a/./b", Ok("/a/b")),
            ("/a/.", Ok("/a/")),
            ("/a/..", Ok("/")),
            ("/./balancer-manager", Ok("/balancer-manager")),
            ("/x/../balancer-manager", Ok("/balancer-manager")),
            ("/.hidden/..x/...", Ok("/.hidden/..x/...")),
            // Unreserved escapes decoded, others kept.
            ("/a%20b%41", Ok("/a%20bA")),
            ("/%62alancer-manager", Ok("/balancer-manager")),
            ("/%7e%2D%2e%5F", Ok("/~-._")),
            ("/a%2e%2e/x", Ok("/a../x")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/%2e/%2E%2e", Err(Refused::AboveRoot)),
            ("/%3F%23", Ok("/%3F%23")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("/café", Ok("/café")),
            // Refused.
            ("/a%2Fb", Err(Refused::EncodedSlashOrNul)),
            ("/a%2fb", Err(Refused::EncodedSlashOrNul)),
            ("/a%00", Err(Refused::EncodedSlashOrNul)),
            ("/a%zz", Err(Refused::BadEscape)),
            ("/a%4", Err(Refused::BadEscape)),
            ("/a%", Err(Refused::BadEscape)),
            ("/a/../../etc/passwd", Err(Refused::AboveRoot)),
            ("/..", Err(Refused::AboveRoot)),
            ("/%2e%2e/x", Err(Refused::AboveRoot)),
            ("//..//x", Err(Refused::AboveRoot)),
            ("*", Err(Refused::NotAPath)),
            ("", Err(Refused::NotAPath)),
        ];
        for (raw, expected) in cases {
            let got = canonical(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), expected.as_ref().map(|s| *s).map_err(|e| *e), "path {raw:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in ["/", "/a/b", "/a.b/c..d/.e", "/a/b/"] {
            assert!(matches!(canonical(raw), Ok(Cow::Borrowed(_))), "{raw}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let cases = [
            ("/server-status", "/server-status", true),
            ("/server-status/x", "/server-status", true),
            ("/server-statusx", "/server-status", false),
            ("/anything", "/", true),
            ("/app/", "/app/", true),
            ("/app", "/app/", false),
        ];
        for (path, prefix, expected) in cases {
            assert_eq!(prefix_matches(path, prefix), expected, "{path} under {prefix}");
        }
    }
}
