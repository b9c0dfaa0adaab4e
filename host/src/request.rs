//! What a plugin may see of a request, in native terms: the leaf that the balancer, the rules and
//! the plugin runtime all use (none of them owns it).

use std::net::IpAddr;

use hyper::http::{HeaderMap, Method, Uri};

/// Request fields a plugin declared it reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestFields {
    pub method: bool,
    pub path: bool,
    pub query: bool,
    pub client_addr: bool,
    pub host: bool,
}

/// A client's address, with its text made once per connection: the rules, the selector views and
/// the `X-Forwarded-For` of every request on the connection use it. On a TLS connection, also
/// what the handshake agreed (`X-Forwarded-Proto`, mod_ssl's variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    ip: IpAddr,
    text: Box<str>,
    tls: Option<Box<crate::tls::TlsInfo>>,
}

impl ClientAddr {
    pub fn new(ip: IpAddr) -> ClientAddr {
        ClientAddr { ip, text: ip.to_string().into_boxed_str(), tls: None }
    }

    /// The same client, over a TLS connection that agreed `tls`.
    pub fn with_tls(self, tls: crate::tls::TlsInfo) -> ClientAddr {
        ClientAddr { tls: Some(Box::new(tls)), ..self }
    }

    /// What the TLS handshake agreed, on a TLS connection.
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.tls.as_deref()
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// `127.0.0.1`, `::1`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<T: Into<IpAddr>> From<T> for ClientAddr {
    fn from(ip: T) -> ClientAddr {
        ClientAddr::new(ip.into())
    }
}

/// The request, as far as a selector may see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Fulcrum's id for the request (logs tag plugin output with it).
    pub id: u64,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub client: &'a ClientAddr,
    pub host: &'a str,
}

/// Every value of header `name`, joined with ", " (how Apache merges repeated request headers).
pub fn joined(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    let mut out = first.to_string();
    for v in values {
        out.push_str(", ");
        out.push_str(v);
    }
    Some(out)
}
