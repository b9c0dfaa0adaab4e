//! Local handlers: `/server-status` (mod_status) and `/balancer-manager` (mod_proxy_balancer's
//! manager), on the paths a virtual host excludes from proxying and names in
//! `[[vhost.location]]` ([`crate::config::Location`]), to the addresses its `require_ip` allows.
//!
//! They read the balancers' live state and the server's counters ([`crate::stats`]); the manager
//! also changes members, through the balancers themselves (status flags) or through a
//! [`Reconfigure`] the runtime provides (what a configuration reload would change). Every value
//! written into a page is escaped for where it goes (HTML text and attributes, XML).

pub mod api;
pub mod manager;
pub mod status;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::http::{Method, Uri};

use crate::balancer::Balancer;
use crate::config::{Handler, LocalHandler};

/// What a local handler answers.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    /// `Vary`, `Cache-Control` and the like.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl Page {
    fn new(content_type: &'static str, body: String) -> Page {
        Page { status: StatusCode::OK, content_type, body, headers: Vec::new() }
    }

    fn with(mut self, name: &'static str, value: &'static str) -> Page {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

/// A request to a local handler, as far as it matters to one.
#[derive(Debug)]
pub struct LocalRequest<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The host the request is for, without its port (the pages name it, and the manager
    /// compares the Referer's host with it).
    pub host: &'a str,
    /// The address the client connected to, for "(via …)".
    pub local: IpAddr,
    /// `https` when the request came over TLS, else `http`: the scheme of the manager's own URLs.
    pub scheme: &'static str,
    /// A POST's body (at most [`MAX_BODY`] bytes; the manager's forms read the first
    /// [`MAX_FORM`] of them, as Apache does).
    pub form: Option<Bytes>,
}

/// How much of a POST form the manager reads (Apache reads 1024 bytes).
pub const MAX_FORM: usize = 1024;
/// How much of a POST body is read at all (the JSON API's requests).
pub const MAX_BODY: usize = 64 * 1024;

/// Changes the manager makes that rebuild a balancer (factor, set, route, redirect, lbmethod,
/// stickysession, timeout, maxattempts, nofailover, a new member): the runtime applies them as a
/// configuration reload of that balancer would.
pub trait Reconfigure: Send + Sync {
    /// Apply `change` to balancer `balancer`; `Err` says why not, for the page and the log.
    fn reconfigure(&self, balancer: &str, change: &manager::Change) -> Result<(), String>;

    /// The lbmethods a balancer may be given (built-ins and plugins).
    fn lbmethods(&self) -> Vec<String>;

    /// The balancers in force now and their paths (after a change, the rebuilt ones).
    fn current(&self) -> (Vec<Arc<Balancer>>, Vec<String>);

    /// A change was made (any, status flags included): keep it where the balancer persists.
    fn changed(&self);
}

/// What the handlers see of the proxy in force.
pub struct Context<'a> {
    /// The configured balancers (not the one-member workers of `proxy_pass_match`).
    pub balancers: &'a [Arc<Balancer>],
    /// Each balancer's path: the first `proxy_pass` prefix that routes to it (`Path` column).
    pub paths: &'a [String],
    pub reconfigure: Option<&'a dyn Reconfigure>,
}

/// Answer `request` with `location`'s handler, or 403 when `client` may not use it (the caller
/// renders that page).
pub fn serve(location: &LocalHandler, client: IpAddr, request: &LocalRequest<'_>, cx: &Context<'_>) -> Page {
    if !location.allows(client) {
        return Page {
            status: StatusCode::FORBIDDEN,
            content_type: "text/html; charset=iso-8859-1",
            body: String::new(),
            headers: Vec::new(),
        };
    }
    match location.handler {
        Handler::ServerStatus => status::page(request, cx),
        Handler::BalancerManager if request.uri.path() == format!("{}/api", location.path.trim_end_matches('/')) => {
            api::handle(location, request, cx)
        }
        Handler::BalancerManager => manager::page(request, cx),
    }
}

/// `text` with `& < > " '` as HTML character references, for anything Fulcrum writes into a page.
pub fn html(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A byte count as Apache's `apr_strfsize` prints it: `0`, `446`, `1.1K`, `12K`, `3.4M`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 973 {
        return bytes.to_string();
    }
    let mut value = bytes as f64;
    for unit in UNITS {
        value /= 1024.0;
        if value < 9.95 {
            return format!("{value:.1}{unit}");
        }
        if value < 973.0 {
            return format!("{}{unit}", value.round() as u64);
        }
    }
    format!("{}P", value.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_apache_prints_them() {
        let cases = [(0, "0"), (446, "446"), (972, "972"), (1126, "1.1K"), (12_000, "12K"), (3_565_158, "3.4M")];
        for (bytes, shown) in cases {
            assert_eq!(size(bytes), shown, "{bytes}");
        }
    }
}
