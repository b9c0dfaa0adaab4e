//! Local handlers, the guide's way: a path excluded from proxying (`ProxyPass /server-status !`)
//! and answered by Fulcrum itself (`<LocalHandler /server-status> SetHandler server-status`), to the
//! addresses its access rule allows (`Require ip 127.0.0.1 10.0.0.0/8`).
//!
//! ```toml
//! [[vhost]]
//! proxy_pass = [
//!     { path = "/balancer-manager", to = "!" },
//!     { path = "/", to = "balancer://default/" },
//! ]
//! [[vhost.location]]
//! path = "/balancer-manager"
//! handler = "balancer-manager"
//! require_ip = ["127.0.0.1", "::1", "10.0.0.0/8"]
//! ```
//!
//! As in Apache, a `proxy_pass` wins over a handler: the path must be excluded with `to = "!"`
//! (a location that a `proxy_pass` would proxy is a configuration error here, where Apache would
//! silently proxy it). `require_ip` must be written: Apache grants a `<LocalHandler>` to everyone
//! without a `Require`, which for the balancer-manager means anyone may take members out.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// What a local handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// mod_proxy_balancer's `balancer-manager`: the members' state, and changes to it.
    BalancerManager,
    /// mod_status's `server-status`: the server's counters, and the balancers' members.
    ServerStatus,
}

impl Handler {
    const NAMES: [(&'static str, Handler); 2] =
        [("balancer-manager", Handler::BalancerManager), ("server-status", Handler::ServerStatus)];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, h)| *h == self).map_or("?", |(n, _)| n)
    }
}

/// A validated `[[vhost.location]]`.
#[derive(Debug, Clone)]
pub struct LocalHandler {
    /// The path prefix it answers, on segment boundaries (`/server-status`, `/server-status/x`,
    /// not `/server-statusx`).
    pub path: String,
    pub handler: Handler,
    /// `Require ip`: the addresses and networks allowed; everyone else gets a 403.
    pub allow: Vec<IpNet>,
    /// The balancer-manager's JSON API (`PATH/api`) takes requests with this bearer token (from
    /// an allowed address); without one the API is off.
    pub api_token: Option<String>,
}

impl LocalHandler {
    /// Whether `client` may use it (an IPv4 client seen through an IPv6 socket counts as IPv4).
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow.iter().any(|net| net.contains(&client))
    }
}

/// `[[vhost.location]]` as written.
#[derive(Debug, Deserialize)]
pub struct RawLocation {
    /// `<LocalHandler PATH>`.
    pub path: Spanned<String>,
    /// `SetHandler`: `balancer-manager` or `server-status`.
    pub handler: Spanned<String>,
    /// `Require ip`: addresses (`127.0.0.1`, `::1`) and networks (`10.0.0.0/8`).
    pub require_ip: Option<Spanned<Vec<Spanned<String>>>>,
    /// balancer-manager only: the bearer token of its JSON API (at least 16 characters).
    pub api_token: Option<Spanned<String>>,
}

/// Where a problem is: a span of the file, the key's path, the message.
type Report<'a> = &'a mut dyn FnMut(std::ops::Range<usize>, String, String);

/// Validate one `[[vhost.location]]` (`key`: `vhost[0].location[1]`; `span`: the table's).
pub fn validate(
    raw: &RawLocation,
    key: &str,
    span: std::ops::Range<usize>,
    report: Report<'_>,
) -> Option<LocalHandler> {
    let mut ok = true;
    let path = raw.path.get_ref().trim().to_string();
    if !path.starts_with('/') {
        report(raw.path.span(), format!("{key}.path"), format!("`{path}` must start with `/`"));
        ok = false;
    }
    let handler = Handler::NAMES.iter().find(|(n, _)| *n == raw.handler.get_ref().trim()).map(|(_, h)| *h);
    if handler.is_none() {
        let known: Vec<_> = Handler::NAMES.iter().map(|(n, _)| *n).collect();
        report(
            raw.handler.span(),
            format!("{key}.handler"),
            format!("`{}` is not a handler Fulcrum has (known: {})", raw.handler.get_ref(), known.join(", ")),
        );
    }
    let mut allow = Vec::new();
    match &raw.require_ip {
        None => {
            report(
                span,
                key.to_string(),
                "no `require_ip`: say who may use it (Apache's `Require ip`), e.g. require_ip = [\"127.0.0.1\", \"::1\"]; \
                 [\"0.0.0.0/0\", \"::/0\"] allows everyone"
                    .to_string(),
            );
            ok = false;
        }
        Some(list) => {
            for entry in list.get_ref() {
                let text = entry.get_ref().trim();
                let parsed = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{text}` is neither an IP address nor a network (like 10.0.0.0/8)"));
                match parsed {
                    Ok(net) => allow.push(net.trunc()),
                    Err(why) => {
                        report(entry.span(), format!("{key}.require_ip"), why);
                        ok = false;
                    }
                }
            }
        }
    }
    let api_token = match &raw.api_token {
        None => None,
        Some(t) if handler != Some(Handler::BalancerManager) => {
            report(t.span(), format!("{key}.api_token"), "only the balancer-manager has an API".into());
            ok = false;
            None
        }
        Some(t) if t.get_ref().trim().chars().count() < 16 || t.get_ref().trim().contains(char::is_whitespace) => {
            report(
                t.span(),
                format!("{key}.api_token"),
                "a token needs at least 16 characters and no white space (a guessable token lets anyone in                  require_ip change members)"
                    .into(),
            );
            ok = false;
            None
        }
        Some(t) => Some(t.get_ref().trim().to_string()),
    };
    let handler = handler?;
    ok.then_some(LocalHandler { path, handler, allow, api_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(allow: &[&str]) -> LocalHandler {
        LocalHandler {
            path: "/server-status".into(),
            handler: Handler::ServerStatus,
            allow: allow
                .iter()
                .map(|a| a.parse::<IpNet>().or_else(|_| a.parse::<IpAddr>().map(IpNet::from)).unwrap())
                .collect(),
            api_token: None,
        }
    }

    /// Allowed list, client → allowed.
    #[test]
    fn require_ip_matches_addresses_and_networks() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["127.0.0.1"], "127.0.0.1", true),
            (&["127.0.0.1"], "127.0.0.2", false),
            (&["10.0.0.0/8"], "10.200.3.4", true),
            (&["10.0.0.0/8"], "11.0.0.1", false),
            (&["::1"], "::1", true),
            (&["127.0.0.1"], "::ffff:127.0.0.1", true),
            (&["2001:db8::/32"], "2001:db8:1::5", true),
            (&["2001:db8::/32"], "2001:db9::5", false),
            (&[], "127.0.0.1", false),
        ];
        for (allow, client, expected) in cases {
            assert_eq!(location(allow).allows(client.parse().unwrap()), *expected, "{allow:?} {client}");
        }
    }
}
