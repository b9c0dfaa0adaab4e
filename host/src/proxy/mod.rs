//! The proxy service: one request from the client to a member and back.
//!
//! ```text
//! vhost (Host → ServerName/ServerAlias) → route (longest ProxyPass prefix) → balancer.choose
//!   → forward (pooled client, timeouts, X-Forwarded-*, hop-by-hop) → on refused connection: member
//!     in error for `retry`, next member → stream the response back
//! ```
//!
//! Requests and responses stream: nothing buffers a whole body.

mod body;
mod error_page;
mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::uri::{PathAndQuery, Uri};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use body::ProxyBody;
pub use error_page::error_page;

use crate::balancer::{Balancer, ChooseError, RequestInfo};
use crate::config::{Config, RouteTarget, VirtualHost};

/// The `Server` string of Fulcrum's own responses.
pub const SERVER: &str = concat!("Fulcrum/", env!("CARGO_PKG_VERSION"));

/// What goes upstream: the client's body, or nothing (a bodiless request, which can be retried on
/// another member because nothing of it is lost when a connection is refused).
type UpstreamBody = Either<Incoming, Empty<Bytes>>;
type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// Everything the request path needs, built once from a [`Config`].
pub struct Proxy {
    vhosts: Vec<VirtualHost>,
    balancers: Vec<Arc<Balancer>>,
    /// One pooled client per member, `[balancer][member]` (each with the member's connect timeout).
    clients: Vec<Vec<UpstreamClient>>,
    proxy_timeout: Duration,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("balancers", &self.balancers).finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(config: &Config, balancers: Vec<Arc<Balancer>>) -> Proxy {
        let clients = balancers
            .iter()
            .map(|b| {
                b.members
                    .iter()
                    .map(|m| {
                        let mut connector = HttpConnector::new();
                        connector.set_nodelay(true);
                        connector.set_connect_timeout(m.config.connection_timeout);
                        Client::builder(TokioExecutor::new())
                            .pool_idle_timeout(Duration::from_secs(60))
                            .build(connector)
                    })
                    .collect()
            })
            .collect();
        Proxy {
            vhosts: config.vhosts.clone(),
            balancers,
            clients,
            proxy_timeout: config.proxy_timeout,
            next_id: AtomicU64::new(1),
        }
    }

    pub fn balancers(&self) -> &[Arc<Balancer>] {
        &self.balancers
    }

    /// Serve one request from `client`, arriving on the listener at `local`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let host_header = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        let vhost = self.vhost(host_header.as_deref());
        let page_host = host_header.as_deref().map_or(vhost.server_name.as_str(), strip_port).to_string();
        let error = |status| Ok(error_page(status, &page_host, local.port()));

        let path = request.uri().path();
        let Some(route) = vhost.routes.iter().find(|r| path.starts_with(r.path.as_str())) else {
            return error(StatusCode::NOT_FOUND);
        };
        let (balancer_index, target_path) = match &route.target {
            RouteTarget::Exclude => return error(StatusCode::NOT_FOUND),
            RouteTarget::Balancer { index, path: target } => (*index, format!("{target}{}", &path[route.path.len()..])),
        };
        let balancer = &self.balancers[balancer_index];

        let (parts, body) = request.into_parts();
        // A bodiless request can be sent again to another member when a connection is refused.
        let mut body = if body.is_end_stream() { None } else { Some(body) };
        let retryable = body.is_none();
        let max_attempts = if retryable { balancer.members.len() } else { 1 };
        let mut tried: Vec<usize> = Vec::new();

        loop {
            let info = RequestInfo {
                id,
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                client: client.ip(),
                host: host_header.as_deref().unwrap_or(""),
            };
            let lease = match balancer.choose(&info, &tried) {
                Ok(lease) => lease,
                Err(ChooseError::NoMember { .. }) => {
                    tracing::warn!(request = id, balancer = %balancer.name, "no usable member");
                    return error(StatusCode::SERVICE_UNAVAILABLE);
                }
                Err(e) => {
                    tracing::error!(request = id, "{e}");
                    return error(StatusCode::INTERNAL_SERVER_ERROR);
                }
            };
            let index = lease.index();
            let member = &lease.member().config;

            let mut path_and_query = format!("{}{}", member.path, target_path);
            if path_and_query.is_empty() {
                path_and_query.push('/');
            }
            if let Some(q) = parts.uri.query() {
                path_and_query.push('?');
                path_and_query.push_str(q);
            }
            let uri = match PathAndQuery::try_from(path_and_query).map(|pq| {
                Uri::builder()
                    .scheme(member.scheme.clone())
                    .authority(member.authority.clone())
                    .path_and_query(pq)
                    .build()
            }) {
                Ok(Ok(uri)) => uri,
                _ => return error(StatusCode::BAD_REQUEST),
            };

            let mut upstream = Request::builder().method(parts.method.clone()).uri(uri);
            if let Some(h) = upstream.headers_mut() {
                *h = parts.headers.clone();
                headers::strip_hop_by_hop(h);
                headers::add_forwarded(h, client.ip(), host_header.as_deref(), &vhost.server_name);
                if !vhost.preserve_host {
                    if let Ok(v) = HeaderValue::from_str(member.authority.as_str()) {
                        h.insert(header::HOST, v);
                    }
                }
            }
            let upstream_body = match body.take() {
                Some(b) => Either::Left(b),
                None => Either::Right(Empty::new()),
            };
            let Ok(upstream) = upstream.body(upstream_body) else {
                return error(StatusCode::BAD_REQUEST);
            };

            let timeout = member.timeout.or(balancer.timeout).unwrap_or(self.proxy_timeout);
            let sent = tokio::time::timeout(timeout, self.clients[balancer_index][index].request(upstream)).await;
            match sent {
                Ok(Ok(response)) => {
                    let (mut head, incoming) = response.into_parts();
                    headers::strip_hop_by_hop(&mut head.headers);
                    return Ok(Response::from_parts(head, ProxyBody::Upstream { body: incoming, lease: Some(lease) }));
                }
                Ok(Err(e)) if e.is_connect() => {
                    balancer.mark_error(index);
                    tracing::warn!(request = id, balancer = %balancer.name, member = %member.url, "connection failed, member in error state: {e}");
                    tried.push(index);
                    if tried.len() >= max_attempts {
                        return error(StatusCode::SERVICE_UNAVAILABLE);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(request = id, balancer = %balancer.name, member = %member.url, "member failed: {e}");
                    return error(StatusCode::BAD_GATEWAY);
                }
                Err(_) => {
                    tracing::warn!(request = id, balancer = %balancer.name, member = %member.url, "no response within {timeout:?}");
                    return error(StatusCode::BAD_GATEWAY);
                }
            }
        }
    }

    /// The virtual host for a Host header: ServerName, then ServerAlias, else the first (Apache's
    /// default vhost for the address).
    fn vhost(&self, host: Option<&str>) -> &VirtualHost {
        if let Some(host) = host {
            let host = strip_port(host);
            let found = self.vhosts.iter().find(|v| {
                v.server_name.eq_ignore_ascii_case(host) || v.server_alias.iter().any(|a| a.eq_ignore_ascii_case(host))
            });
            if let Some(v) = found {
                return v;
            }
        }
        &self.vhosts[0]
    }
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}
