//! Sticky sessions: the route a request asks for, found exactly as mod_proxy_balancer finds it
//! (docs/apache-behaviour.md §3.1–3.3).
//!
//! The route is looked for first in the request URI (the first `NAME=` anywhere, value up to the
//! next `?`, `&` or `;`), then in the Cookie header (the first `NAME` at the start or after `;`, `,`
//! or whitespace, optional whitespace, `=`, value up to the next `;` or `,`). The route is what
//! follows the first separator (`.`) of the value; a value without one names no route.

/// A balancer's `stickysession` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySession {
    /// The cookie name (`stickysession=BALANCEID`).
    pub cookie: String,
    /// The URL parameter name (`stickysession=COOKIE|param`; the cookie name when not given).
    pub url_param: String,
    /// `stickysessionsep`, `.` by default.
    pub separator: char,
    /// `nofailover`: a route whose member is unusable gets a 503 instead of another member.
    pub nofailover: bool,
}

impl StickySession {
    /// `BALANCEID` or `JSESSIONID|jsessionid`.
    pub fn parse(spec: &str, separator: char, nofailover: bool) -> StickySession {
        let (cookie, url_param) = spec.split_once('|').unwrap_or((spec, spec));
        StickySession { cookie: cookie.to_string(), url_param: url_param.to_string(), separator, nofailover }
    }

    /// The route requested by `uri` (path and query, as sent) or, failing that, by `cookie` (the
    /// request's Cookie header lines joined with ", "). `None` when neither carries a usable value.
    pub fn route<'a>(&self, uri: &'a str, cookie: Option<&'a str>) -> Option<&'a str> {
        let value = url_value(uri, &self.url_param).or_else(|| cookie.and_then(|c| cookie_value(c, &self.cookie)))?;
        value.split_once(self.separator).map(|(_, route)| route)
    }
}

/// Apache's `get_path_param`: the first `name=` anywhere in `uri` with a non-empty value; the value
/// is the first token delimited by `?`, `&`, `;` (leading delimiters skipped, as `apr_strtok` does).
/// As httpd's `strstr` loop, the search works on bytes and resumes one byte past a rejected name.
fn url_value<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let is_delim = |c: char| matches!(c, '?' | '&' | ';');
    let bytes = uri.as_bytes();
    let mut from = 0;
    while let Some(found) = find(bytes, from, name.as_bytes()) {
        let after = found + name.len();
        if bytes.get(after) == Some(&b'=') && after + 1 < bytes.len() {
            // Just past an ASCII `=`: a character boundary.
            let token = uri[after + 1..].trim_start_matches(is_delim);
            let token = token.split(is_delim).next().unwrap_or("");
            return if token.is_empty() { None } else { Some(token) };
        }
        from = after + 1;
    }
    None
}

/// Apache's `get_cookie_param`: `name` at the start or after `;`, `,` or white space (C's
/// `isspace`), optional white space, `=`, a value up to the next `;` or `,`. After a name at a
/// boundary but without `=`, httpd resumes two bytes past the name and its white space.
fn cookie_value<'a>(cookies: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let bytes = cookies.as_bytes();
    let mut from = 0;
    while let Some(found) = find(bytes, from, name.as_bytes()) {
        let boundary = found == 0 || matches!(bytes[found - 1], b';' | b',') || c_isspace(bytes[found - 1]);
        if !boundary {
            from = found + 1;
            continue;
        }
        let mut at = found + name.len();
        while bytes.get(at).copied().is_some_and(c_isspace) {
            at += 1;
        }
        if bytes.get(at) == Some(&b'=') && at + 1 < bytes.len() {
            // Just past an ASCII `=`: a character boundary.
            let value = &cookies[at + 1..];
            let end = value.find([';', ',']).unwrap_or(value.len());
            return Some(&value[..end]);
        }
        from = at + 2;
    }
    None
}

/// `strstr(haystack + from, needle)` as an index into `haystack`.
fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let rest = haystack.get(from..)?;
    rest.windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// C's `isspace` in the C locale (unlike `u8::is_ascii_whitespace`, it includes `\v`).
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guide() -> StickySession {
        StickySession::parse("BALANCEID", '.', false)
    }

    /// Request URI and Cookie in, route out (docs/apache-behaviour.md §3.1–3.3, one row per recorded case).
    #[test]
    fn routes_are_found_as_apache_finds_them() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("/", None, None),
            ("/", Some("BALANCEID=balancer.web2"), Some("web2")),
            ("/", Some("a=1; BALANCEID=balancer.web2; b=2"), Some("web2")),
            ("/", Some("a=1;BALANCEID=balancer.web2"), Some("web2")),
            ("/", Some("BALANCEID = x.web2"), Some("web2")),
            ("/", Some("BALANCEID=x.web2,x=1"), Some("web2")),
            ("/", Some("XBALANCEID=x.web2"), None),
            ("/", Some("balanceid=x.web2"), None),
            ("/", Some("BALANCEID=x.web1; BALANCEID=x.web2"), Some("web1")),
            ("/", Some("BALANCEID=web2"), None),
            ("/", Some("BALANCEID=.web2"), Some("web2")),
            ("/", Some("BALANCEID=anything.web2"), Some("web2")),
            ("/", Some("BALANCEID=balancer.web2.extra"), Some("web2.extra")),
            ("/", Some("BALANCEID=balancer.WEB2"), Some("WEB2")),
            ("/", Some("BALANCEID=\"balancer.web2\""), Some("web2\"")),
            ("/f?BALANCEID=x.web2", None, Some("web2")),
            ("/f;BALANCEID=x.web2", None, Some("web2")),
            ("/f?a=1&BALANCEID=x.web2&b=2", None, Some("web2")),
            ("/fBALANCEID=x.web2", None, Some("web2")),
            ("/f?BALANCEID=x.web2", Some("BALANCEID=x.web1"), Some("web2")),
            ("/f?BALANCEID=", Some("BALANCEID=x.web1"), Some("web1")),
        ];
        for (uri, cookie, expected) in cases {
            assert_eq!(guide().route(uri, *cookie), *expected, "uri {uri}, cookie {cookie:?}");
        }
    }

    #[test]
    fn a_separate_url_parameter_name() {
        let s = StickySession::parse("JSESSIONID|jsessionid", '.', false);
        assert_eq!(s.route("/a;jsessionid=abc.node1", None), Some("node1"));
        assert_eq!(s.route("/a", Some("JSESSIONID=abc.node2")), Some("node2"));
    }
}
