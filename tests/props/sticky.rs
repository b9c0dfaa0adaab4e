//! Sticky routes (`StickySession::route`): never a panic on any URI or Cookie header, the route is
//! always a slice of what was sent, and it agrees with two reference models: the rules as the
//! module documents them, on well-formed requests, and a line-by-line port of mod_proxy_balancer's
//! `get_path_param` / `get_cookie_param` (httpd 2.4), on anything.

use fulcrum::balancer::StickySession;
use proptest::prelude::*;

use crate::support::{config, noise, pick};

const NAME_CHARS: &[char] = &[
    'B', 'A', 'L', 'I', 'D', '=', '.', '?', '&', ';', ',', ' ', '\t', '\u{b}', '/', 'x', 'w', 'e', 'b', '1', '"', '%',
    'é', 'Ö', 'ö', '\u{fffd}',
];

/// Any settings the configuration accepts.
fn session() -> impl Strategy<Value = StickySession> {
    (
        pick(&[
            "BALANCEID",
            "BALANCEID|balanceid",
            "JSESSIONID|jsessionid",
            "B|BB",
            "AA",
            "|x",
            "x|",
            "|",
            "é",
            "ÖS|ö",
        ]),
        prop_oneof![Just('.'), Just('_'), Just('='), Just(';'), Just('é')],
        any::<bool>(),
    )
        .prop_map(|(spec, sep, nofailover)| StickySession::parse(&spec, sep, nofailover))
}

/// Settings that mean the same to httpd: both names given, a one-byte separator (httpd keeps
/// the first byte of a longer one).
fn httpd_session() -> impl Strategy<Value = StickySession> {
    (
        pick(&["BALANCEID", "BALANCEID|balanceid", "JSESSIONID|jsessionid", "B|BB", "AA", "A|AA", "I|D", "é", "ÖS|ö"]),
        prop_oneof![Just('.'), Just('_'), Just('='), Just(';'), Just('&')],
    )
        .prop_map(|(spec, sep)| StickySession::parse(&spec, sep, false))
}

/// `inner` lies inside `outer` (same memory, not just equal text).
fn is_slice_of(inner: &str, outer: &str) -> bool {
    let (start, end) = (outer.as_ptr() as usize, outer.as_ptr() as usize + outer.len());
    let p = inner.as_ptr() as usize;
    p >= start && p + inner.len() <= end
}

// ---- httpd 2.4's mod_proxy_balancer, ported byte for byte ----------------------------------

/// `strstr(haystack + from, needle)`, as an index.
fn strstr(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    if needle.is_empty() {
        return Some(from);
    }
    haystack[from..].windows(needle.len()).position(|w| w == needle).map(|i| from + i)
}

/// C's `isspace` in the C locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `get_path_param` with `;` among the delimiters (Fulcrum ends URL routes at `;`, as recorded
/// against Apache), then `apr_strtok`.
fn httpd_path_param<'a>(url: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let is_delim = |b: &u8| matches!(b, b';' | b'?' | b'&');
    let mut found = strstr(url, 0, name);
    while let Some(at) = found {
        let mut path = at + name.len();
        if url.get(path) == Some(&b'=') {
            path += 1;
            if path < url.len() {
                let rest = &url[path..];
                let start = rest.iter().position(|b| !is_delim(b))?;
                let token = &rest[start..];
                let end = token.iter().position(is_delim).unwrap_or(token.len());
                return Some(&token[..end]);
            }
        }
        found = strstr(url, path + 1, name);
    }
    None
}

/// `get_cookie_param`.
fn httpd_cookie_param<'a>(cookies: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut found = strstr(cookies, 0, name);
    while let Some(at) = found {
        let mut start = at;
        if start == 0 || matches!(cookies[start - 1], b';' | b',') || c_isspace(cookies[start - 1]) {
            start += name.len();
            while start < cookies.len() && c_isspace(cookies[start]) {
                start += 1;
            }
            let equals = cookies.get(start) == Some(&b'=');
            start += 1;
            if equals && start < cookies.len() {
                let value = &cookies[start..];
                let end = value.iter().position(|&b| b == b';' || b == b',').unwrap_or(value.len());
                return Some(&value[..end]);
            }
        }
        found = strstr(cookies, start + 1, name);
    }
    None
}

/// `find_session_route` up to the route text: an empty cookie name is no stickiness; an empty URL
/// parameter name matches at the URI's first `=`.
fn httpd_route<'a>(s: &StickySession, uri: &'a str, cookie: Option<&'a str>) -> Option<&'a [u8]> {
    if s.cookie.is_empty() {
        return None;
    }
    let value = httpd_path_param(uri.as_bytes(), s.url_param.as_bytes())
        .or_else(|| cookie.and_then(|c| httpd_cookie_param(c.as_bytes(), s.cookie.as_bytes())))?;
    let mut sep = [0; 4];
    let sep = s.separator.encode_utf8(&mut sep).as_bytes();
    let at = value.windows(sep.len()).position(|w| w == sep)?;
    Some(&value[at + sep.len()..])
}

// ---- the documented rules, on well-formed requests -----------------------------------------

/// `NAME=value` pairs, as generated: the name, the value.
type Pairs = Vec<(String, String)>;

/// What the module's docs say, for a query string and a Cookie header that are lists of pairs:
/// the first URL parameter whose name ends in the URL name (the first `NAME=` anywhere) with a
/// non-empty value, else the first cookie of exactly the cookie name; the route follows the first
/// separator of the value.
fn documented_route(s: &StickySession, params: &Pairs, cookies: &Pairs) -> Option<String> {
    let value = params
        .iter()
        .find(|(n, v)| n.ends_with(&s.url_param) && !v.is_empty())
        .map(|(_, v)| v.clone())
        .or_else(|| cookies.iter().find(|(n, _)| n.trim_end() == s.cookie).map(|(_, v)| v.clone()))?;
    value.split_once(s.separator).map(|(_, r)| r.to_string())
}

fn well_formed() -> impl Strategy<Value = (String, Pairs, String, Pairs, bool)> {
    let path = "(/[a-z0-9]{0,6}){1,3}";
    let param =
        (pick(&["BALANCEID", "a", "b", "XBALANCEID", "BALANCE", "ID"]), "[a-z0-9]{1,3}(\\.[a-zA-Z0-9]{0,5}){0,2}");
    let cookie = (
        pick(&["BALANCEID", "BALANCEID ", "a", "XBALANCEID", "BALANCEIDX", "balanceid"]),
        "[a-z0-9]{0,3}(\\.[a-zA-Z0-9_-]{0,5}){0,2}",
    );
    (
        path,
        proptest::collection::vec(param, 0..4),
        pick(&["; ", ";", ", ", ","]),
        proptest::collection::vec(cookie, 0..4),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn any_uri_and_cookie_never_panic_and_route_is_a_slice(
        s in session(),
        uri in noise(NAME_CHARS, 40),
        cookie in proptest::option::of(noise(NAME_CHARS, 40)),
    ) {
        if let Some(route) = s.route(&uri, cookie.as_deref()) {
            let in_uri = is_slice_of(route, &uri);
            let in_cookie = cookie.as_deref().is_some_and(|c| is_slice_of(route, c));
            prop_assert!(in_uri || in_cookie, "{route:?} is not a slice of {uri:?} / {cookie:?}");
            if in_uri {
                prop_assert!(!route.contains(['?', '&', ';']), "{route:?} from {uri:?}");
            } else {
                prop_assert!(!route.contains([';', ',']), "{route:?} from {cookie:?}");
            }
        }
    }

    #[test]
    fn well_formed_requests_follow_the_documented_rules(
        (path, params, cookie_sep, cookies, question) in well_formed(),
    ) {
        let s = StickySession::parse("BALANCEID", '.', false);
        let query: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let uri = if params.is_empty() && !question { path } else { format!("{path}?{}", query.join("&")) };
        let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let header = header.join(&cookie_sep);
        let cookie = (!cookies.is_empty()).then_some(header.as_str());
        let expected = documented_route(&s, &params, &cookies);
        prop_assert_eq!(s.route(&uri, cookie).map(str::to_string), expected, "uri {:?}, cookie {:?}", uri, cookie);
    }

    /// Byte for byte what httpd 2.4 finds, on inputs made of the characters that matter.
    #[test]
    fn routes_agree_with_httpd_source(
        s in httpd_session(),
        uri in noise(NAME_CHARS, 30),
        cookie in proptest::option::of(noise(NAME_CHARS, 30)),
    ) {
        // C strings end at a NUL, which no URI or header value holds.
        let uri = uri.replace('\0', "");
        let cookie = cookie.map(|c| c.replace('\0', ""));
        let ours = s.route(&uri, cookie.as_deref()).map(str::as_bytes);
        let httpd = httpd_route(&s, &uri, cookie.as_deref());
        prop_assert_eq!(ours, httpd, "spec {:?}, uri {:?}, cookie {:?}", s, uri, cookie);
    }
}

/// Cases where a search restarts: httpd resumes after the name it rejected, not one byte later.
#[test]
fn a_rejected_name_is_skipped_as_httpd_skips_it() {
    let s = StickySession::parse("BALANCEID", '.', false);
    let cases: &[(&str, Option<&str>)] = &[
        // httpd: strstr finds the first BALANCEID, sees no `=`, resumes one byte after it.
        ("/BALANCEIDBALANCEID=x.web2", None),
        ("/BALANCEID?BALANCEID=x.web2", Some("web2")),
        ("/BALANCEID?xBALANCEID=x.web2", Some("web2")),
    ];
    for (uri, expected) in cases {
        assert_eq!(s.route(uri, None), *expected, "uri {uri}");
        assert_eq!(httpd_route(&s, uri, None).map(|r| std::str::from_utf8(r).unwrap()), *expected, "model, uri {uri}");
    }
    let cookies: &[(&str, Option<&str>)] = &[
        // httpd: after a boundary name without `=`, it resumes two bytes past the name.
        ("BALANCEID;BALANCEID=x.web2", None),
        ("BALANCEID BALANCEID=x.web2", None),
        ("BALANCEID; BALANCEID=x.web2", Some("web2")),
        ("a=BALANCEID;BALANCEID=x.web2", Some("web2")),
    ];
    for (cookie, expected) in cookies {
        assert_eq!(s.route("/", Some(cookie)), *expected, "cookie {cookie}");
        let model = httpd_route(&s, "/", Some(cookie)).map(|r| std::str::from_utf8(r).unwrap());
        assert_eq!(model, *expected, "model, cookie {cookie}");
    }
}

/// Found by `cargo fuzz run sticky`: a session name that starts with a multi-byte character made
/// the search resume inside that character (`start byte index 1 is not a char boundary`).
#[test]
fn a_multi_byte_session_name_does_not_panic() {
    let s = StickySession::parse("\u{fffd}", '\0', false);
    assert_eq!(s.route("\u{fffd}", None), None);
    let s = StickySession::parse("é", '.', false);
    assert_eq!(s.route("/é", Some("xé=1; éé; é=a.web2")), Some("web2"));
    let s = StickySession::parse("ÖS|ö", '.', false);
    assert_eq!(s.route("/ö=x.web1", Some("ÖS=x.web2")), Some("web1"));
    assert_eq!(s.route("/ö", Some("ÖS=x.web2")), Some("web2"));
    // httpd resumes one byte past a rejected name, so a name right after it is not seen.
    assert_eq!(s.route("/öö=x.web1", Some("ÖSÖS=x.web2")), None);
}
