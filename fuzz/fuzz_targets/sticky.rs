//! Sticky routes on any URI and Cookie header: no panic, and the route is a slice of the input.
//! Input: `spec \n separator-char uri \n cookie` (the cookie line is optional).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/balancer/sticky.rs"]
mod sticky;

fn within(inner: &str, outer: &str) -> bool {
    let (start, p) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    p >= start && p + inner.len() <= start + outer.len()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let spec = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let cookie = parts.next();
    let mut chars = rest.chars();
    let separator = chars.next().unwrap_or('.');
    let uri = chars.as_str();
    let session = sticky::StickySession::parse(spec, separator, false);
    if let Some(route) = session.route(uri, cookie) {
        assert!(within(route, uri) || cookie.is_some_and(|c| within(route, c)), "{route:?} not from the input");
    }
});
