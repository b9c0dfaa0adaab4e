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
pub mod host;
mod member_http;
pub mod request_body;
mod reverse;
mod tunnel;
mod upstream;
mod variables;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::Uri;
use hyper::{Request, Response, StatusCode};

use self::variables::{Var, Vars};
use crate::path;
use crate::rules::{self, Clock, Env, Origin, RequestRules, ResponseInfo, RulesOutcome};
pub use body::ProxyBody;
pub use error_page::error_page;
use member_http::{ExchangeError, MemberBody, RequestFraming, ResponseError};
use request_body::{BodyTimeout, ClientFault, FaultSlot, RequestBody};
use upstream::MemberPool;
pub use upstream::bind_worker;

use crate::access_log::{self, AccessLog};
use crate::balancer::{Balancer, ChooseError, ClientAddr, Decision, Lease, RequestInfo, StickyError};
use crate::config::{Config, Limits, OnFault, RouteTarget, VirtualHost};

/// The `Server` string of Fulcrum's own responses.
pub const SERVER: &str = concat!("Fulcrum/", env!("CARGO_PKG_VERSION"));

/// A pooled connection that turned out closed hands the request back; how often a request may
/// take a fresh connection to the same member for that reason.
const STALE_RETRIES: usize = 3;

/// Everything the request path needs, built from one [`Config`]. A configuration reload builds
/// another and swaps it in whole ([`SharedProxy`]); requests in flight finish on the one they
/// started with.
pub struct Proxy {
    config: Config,
    balancers: Vec<Arc<Balancer>>,
    /// One connection pool per member, `[balancer][member]`.
    pools: Vec<Vec<Arc<MemberPool>>>,
    /// Rule sets per virtual host, in order; each swappable when its plugin is reloaded.
    rules: Vec<Vec<ArcSwap<Box<dyn RequestRules>>>>,
    /// Per virtual host, the variables its rules and the access log read: only those are set.
    vars_read: Vec<variables::Read>,
    access_log: Option<AccessLog>,
    /// Per virtual host, the balancer index of each `proxy_pass_match` worker (same order as
    /// `VirtualHost::matches`).
    matches: Vec<Vec<usize>>,
    /// Request ids, continued from the proxy this one replaced.
    next_id: Arc<AtomicU64>,
    /// What the balancer-manager changes settings through (the runtime), once it exists.
    reconfigure: std::sync::OnceLock<std::sync::Weak<dyn crate::local::Reconfigure>>,
    /// This process's part of every `UNIQUE_ID`: start second and pid, as hex.
    unique_prefix: Arc<str>,
}

/// The proxy in force, swapped whole by a configuration reload: the workers load it per request.
pub type SharedProxy = Arc<ArcSwap<Proxy>>;

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("balancers", &self.balancers).finish_non_exhaustive()
    }
}

/// How one attempt on one member ended, when it did not produce a response to relay.
enum Failed {
    /// Nothing reached the member: the request can go to another member.
    NotSent(RequestBody),
    /// The member failed before answering a request that is safe to send again (idempotent, no
    /// body): it can go to another member.
    Retry(RequestBody),
    /// The request may have reached the member: answer with this status, never resend.
    Answer(StatusCode),
    /// The client broke the exchange (its body): its status, and the member is not blamed.
    Client(ClientFault),
}

/// Why Fulcrum answers a request itself before routing it.
struct Refusal {
    status: StatusCode,
    why: std::borrow::Cow<'static, str>,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<std::borrow::Cow<'static, str>>) -> Refusal {
        Refusal { status, why: why.into() }
    }
}

/// The BALANCER_* variables for the member chosen, those in `read` (docs/apache-behaviour.md
/// §4.1–4.2).
fn set_balancer_env(decision: &Decision, env: &mut Env, balancer: &Balancer, member: usize, read: Vars) {
    let m = &balancer.members[member];
    if read.contains(Var::BalancerName) {
        env.set(Var::BalancerName.name(), &balancer.url_text);
    }
    if read.contains(Var::BalancerWorkerName) {
        env.set(Var::BalancerWorkerName.name(), &m.url_text);
    }
    if read.contains(Var::BalancerWorkerRoute) {
        if m.route_text.is_empty() {
            env.unset(Var::BalancerWorkerRoute.name());
        } else {
            env.set(Var::BalancerWorkerRoute.name(), &m.route_text);
        }
    }
    if let Some(sticky) = &balancer.sticky_text
        && read.contains(Var::BalancerSessionSticky)
    {
        env.set(Var::BalancerSessionSticky.name(), sticky);
    }
    if let Some(route) = &decision.session_route
        && read.contains(Var::BalancerSessionRoute)
    {
        env.set(Var::BalancerSessionRoute.name(), route.clone());
    }
    if read.contains(Var::BalancerRouteChanged) {
        if decision.route_changed {
            env.set(Var::BalancerRouteChanged.name(), "1");
        } else {
            env.unset(Var::BalancerRouteChanged.name());
        }
    }
}

/// mod_ssl's variables of a TLS connection, those in `read` (mod_ssl sets `HTTPS` for every
/// request; `%{SSL_PROTOCOL}s` and `%{SSL_CIPHER}s` are read through them too).
fn set_tls_env(env: &mut Env, tls: &crate::tls::TlsInfo, read: Vars) {
    if read.contains(Var::Https) {
        env.set(Var::Https.name(), "on");
    }
    if read.contains(Var::SslProtocol) {
        env.set(Var::SslProtocol.name(), tls.protocol);
    }
    if read.contains(Var::SslCipher) {
        env.set(Var::SslCipher.name(), tls.cipher);
    }
    if let Some(sni) = &tls.sni
        && read.contains(Var::SslTlsSni)
    {
        env.set(Var::SslTlsSni.name(), sni.to_string());
    }
}

/// The variables a virtual host's rule sets and the access log read.
fn vars_read(rules: &[ArcSwap<Box<dyn RequestRules>>], access_log: Option<&AccessLog>) -> Vars {
    let by_rules =
        rules.iter().fold(Vars::default(), |vars, r| vars.union(Vars::read_by(|n| r.load().needs().reads_env(n))));
    access_log.map_or(by_rules, |log| by_rules.union(Vars::read_by(|n| log.reads_env(n))))
}

/// Apache mod_unique_id's env variable, set for every request that runs rules that read it (or
/// whose access log prints it).
pub const UNIQUE_ID_VAR: &str = "UNIQUE_ID";

fn unix_micros() -> u64 {
    micros_since_epoch(std::time::SystemTime::now())
}

fn micros_since_epoch(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn request_info<'a>(id: u64, parts: &'a Parts, client: &'a ClientAddr, host: Option<&'a str>) -> RequestInfo<'a> {
    RequestInfo {
        id,
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        client,
        host: host.unwrap_or(""),
    }
}

impl Proxy {
    /// Build the proxy for `config`. With `previous` (a reload), members that stay keep their
    /// connection pools and request ids continue.
    pub fn new(
        config: Config,
        balancers: Vec<Arc<Balancer>>,
        rules: Vec<Vec<Box<dyn RequestRules>>>,
        matches: Vec<Vec<usize>>,
        access_log: Option<AccessLog>,
        previous: Option<&Proxy>,
    ) -> Proxy {
        let pools = balancers
            .iter()
            .map(|b| {
                (0..b.members.len())
                    .map(|i| {
                        previous.and_then(|p| p.pool_of(b, i)).unwrap_or_else(|| {
                            let m = &b.members[i].config;
                            Arc::new(MemberPool::new(m.socket_address(), m.connection_timeout, m.tls.clone()))
                        })
                    })
                    .collect()
            })
            .collect();
        let rules: Vec<Vec<_>> =
            rules.into_iter().map(|sets| sets.into_iter().map(ArcSwap::from_pointee).collect()).collect();
        let vars_read = rules.iter().map(|sets| variables::Read::new(vars_read(sets, access_log.as_ref()))).collect();
        let unique_prefix = match previous {
            Some(p) => Arc::clone(&p.unique_prefix),
            None => Arc::from(format!(
                "{:08x}{:06x}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32),
                std::process::id() & 0xff_ffff
            )),
        };
        Proxy {
            config,
            balancers,
            pools,
            rules,
            vars_read,
            matches,
            access_log,
            next_id: previous.map_or_else(|| Arc::new(AtomicU64::new(1)), |p| Arc::clone(&p.next_id)),
            unique_prefix,
            reconfigure: std::sync::OnceLock::new(),
        }
    }

    /// Let the balancer-manager change settings through `reconfigure` (the runtime).
    pub fn set_reconfigure(&self, reconfigure: std::sync::Weak<dyn crate::local::Reconfigure>) {
        let _ = self.reconfigure.set(reconfigure);
    }

    /// The pool of this proxy's member that is `balancer`'s member `index` (the same member, kept
    /// through a reload, at the same address).
    fn pool_of(&self, balancer: &Balancer, index: usize) -> Option<Arc<MemberPool>> {
        let b = self.balancers.iter().position(|old| old.config.name == balancer.config.name)?;
        let old = &self.balancers[b];
        let j = (0..old.members.len()).find(|&j| balancer.same_member(index, old, j))?;
        let (was, is) = (&old.members[j].config, &balancer.members[index].config);
        // An https:// member's pool is made again: a reload re-reads its CA and client files.
        (was.socket_address() == is.socket_address()
            && was.connection_timeout == is.connection_timeout
            && was.tls.is_none()
            && is.tls.is_none())
        .then(|| Arc::clone(&self.pools[b][j]))
    }

    /// The configuration this proxy was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `[limits]`, for the listeners.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn balancers(&self) -> &[Arc<Balancer>] {
        &self.balancers
    }

    /// The status a request gets when plugin `name` faults (its `on_fault = "fail"` policy).
    fn fault_status(&self, plugin: &str) -> StatusCode {
        match self.config.plugins.get(plugin).map(|s| s.on_fault) {
            Some(OnFault::Fail(status)) => StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Put a rebuilt rule set in place of rule set `set` of virtual host `vhost`; requests already
    /// running finish with the one they started with.
    pub fn replace_rules(&self, vhost: usize, set: usize, rules: Box<dyn RequestRules>) {
        if let Some(slot) = self.rules.get(vhost).and_then(|sets| sets.get(set)) {
            slot.store(Arc::new(rules));
            self.vars_read[vhost].set(vars_read(&self.rules[vhost], self.access_log.as_ref()));
        }
    }

    /// Serve one request from `client`, arriving on the listener at `local`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: Arc<ClientAddr>,
        local: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let response = self.answer(request, client, local).await;
        crate::stats::request_finished(
            response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0),
        );
        Ok(response)
    }

    /// [`Proxy::handle`], counted in [`crate::stats`] by the caller.
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: Arc<ClientAddr>,
        local: SocketAddr,
    ) -> Response<ProxyBody> {
        crate::stats::request_started();
        let client = &*client;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The clock is read for the access log only when there is one.
        let arrival = self.access_log.is_some().then(|| Arrival {
            client: client.ip(),
            received: std::time::SystemTime::now(),
            started: std::time::Instant::now(),
        });
        let (mut parts, body) = request.into_parts();
        // The host the request is for: an absolute-form target's authority, else the Host header
        // (RFC 9112 §3.2.2); what the member, the rules and the logs see as Host from here on.
        let (host_header, bad_host) = match host::request_host(&mut parts) {
            Ok(host) => (host, None),
            Err(why) => (None, Some(why)),
        };
        let vhost_index = self.vhost(host_header.as_deref());
        let vhost = &self.config.vhosts[vhost_index];
        // One canonical path for every routing decision and for what is forwarded.
        let uri = parts.uri.clone();
        let checked = bad_host
            .map_or(Ok(()), |why| Err(Refusal::new(StatusCode::BAD_REQUEST, why)))
            .and_then(|()| check_request(&parts, &self.config.limits))
            .and_then(|()| self.canonical_path(&parts, &uri));
        let path = match checked {
            Ok(Some(path)) => path,
            Ok(None) => {
                // `OPTIONS *`: about the server itself, answered here (as Apache does).
                let mut response = Response::new(ProxyBody::empty());
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET,HEAD,POST,OPTIONS"));
                return response;
            }
            Err(refusal) => {
                // Debug, not info: anyone can send these, as fast as they like (Apache logs them
                // below its default LogLevel too).
                tracing::debug!(request = id, client = %client.ip(), status = refusal.status.as_u16(), "request refused: {}", refusal.why);
                // A request that could not be parsed as meant is answered as the default server
                // (Apache's parse-level errors do not use the Host header either).
                let page_host =
                    if refusal.status == StatusCode::NOT_FOUND || refusal.status == StatusCode::METHOD_NOT_ALLOWED {
                        host_header.as_deref().map_or(vhost.server_name.as_str(), strip_port)
                    } else {
                        vhost.server_name.as_str()
                    };
                // Closes the connection after 400, 413, 414 and 501, as Apache does (§7.5).
                let response = error_page(refusal.status, page_host, local.port());
                self.log_access(arrival.as_ref(), &parts, &response, &Env::default(), vhost);
                return response;
            }
        };
        let body_timeout = self.config.limits.body_timeout.map(|initial| BodyTimeout {
            initial,
            max: self.config.limits.body_timeout_max,
            min_rate: self.config.limits.body_min_rate,
        });
        let (body, fault) = RequestBody::new(body, self.config.limits.request_body, body_timeout);
        let rules = &self.rules[vhost_index];
        // Room for the BALANCER_* variables and what the rules set, in one allocation.
        let mut env =
            if rules.is_empty() && self.access_log.is_none() { Env::default() } else { Env::with_capacity(12) };
        let started_us = match &arrival {
            _ if rules.is_empty() => 0,
            Some(arrival) => micros_since_epoch(arrival.received),
            None => micros_since_epoch(std::time::SystemTime::now()),
        };
        let read = self.vars_read[vhost_index].get();
        if !rules.is_empty() && read.contains(Var::UniqueId) {
            // mod_unique_id's variable: 24 hex digits, unique across requests, processes and restarts.
            env.set(UNIQUE_ID_VAR, format!("{}{:010x}", self.unique_prefix, id & 0xff_ffff_ffff));
        }
        if let Some(tls) = client.tls()
            && !rules.is_empty()
        {
            set_tls_env(&mut env, tls, read);
        }

        // Request phase of the rules (Apache: SetEnvIf at post-read-request, RequestHeader at
        // fixups): env changes, and header changes to what the member will receive.
        for r in rules {
            let r = r.load();
            let clock = Clock { request_start_us: started_us, now_us: unix_micros() };
            let info = request_info(id, &parts, client, host_header.as_deref());
            let mut outcome = RulesOutcome::default();
            match r.on_request_into(&info, &env, clock, &mut outcome) {
                Ok(()) => {
                    for why in outcome.refused {
                        tracing::warn!(request = id, plugin = r.name(), "request action refused: {why}");
                    }
                    env.apply(outcome.env);
                    rules::apply_headers(&mut parts.headers, outcome.headers.drain(..));
                }
                Err(fault) => tracing::error!(request = id, "{fault}"),
            }
        }

        // A request to switch protocols (WebSocket): hyper's handle on the connection is kept
        // for the member that accepts ([`tunnel`]).
        let offer = tunnel::Offer::take(&mut parts);
        let exchange = Exchange {
            id,
            offer: offer.as_ref(),
            vhost_index,
            vhost,
            parts: &parts,
            client,
            host: host_header.as_deref(),
            path: &path,
            fault: &fault,
            local: local.ip(),
        };
        let (mut response, origin) = match self.forward(&exchange, &mut env, body).await {
            Ok(response) => (response, Origin::Proxied),
            Err(status) => {
                let page_host = host_header.as_deref().map_or(vhost.server_name.as_str(), strip_port);
                (error_page(status, page_host, local.port()), Origin::Generated)
            }
        };

        // Response phase (Apache: mod_headers' Header, "onsuccess" for relayed responses of any
        // status, "always" also for Fulcrum's own error pages).
        for r in rules {
            let r = r.load();
            let clock = Clock { request_start_us: started_us, now_us: unix_micros() };
            let info = request_info(id, &parts, client, host_header.as_deref());
            let view = ResponseInfo { status: response.status().as_u16(), origin, headers: response.headers() };
            let mut outcome = RulesOutcome::default();
            match r.on_response_into(&info, &view, &env, clock, &mut outcome) {
                Ok(()) => {
                    for why in outcome.refused {
                        tracing::warn!(request = id, plugin = r.name(), "response action refused: {why}");
                    }
                    env.apply(outcome.env);
                    rules::apply_headers(response.headers_mut(), outcome.headers.drain(..));
                }
                Err(fault) => tracing::error!(request = id, "{fault}"),
            }
        }
        self.log_access(arrival.as_ref(), &parts, &response, &env, vhost);
        response
    }

    fn log_access(
        &self,
        arrival: Option<&Arrival>,
        parts: &Parts,
        response: &Response<ProxyBody>,
        env: &Env,
        vhost: &VirtualHost,
    ) {
        if let (Some(log), Some(arrival)) = (&self.access_log, arrival) {
            log.log(&access_log::Entry {
                client: arrival.client,
                received: arrival.received,
                elapsed: arrival.started.elapsed(),
                request: parts,
                status: response.status().as_u16(),
                response_headers: response.headers(),
                env,
                server_name: &vhost.server_name,
            });
        }
    }

    /// The canonical path of the request ([`path::canonical`]); `None` for `OPTIONS *`.
    fn canonical_path<'u>(&self, parts: &Parts, uri: &'u Uri) -> Result<Option<std::borrow::Cow<'u, str>>, Refusal> {
        let raw = uri.path();
        if raw == "*" && parts.method == hyper::Method::OPTIONS {
            return Ok(None);
        }
        path::canonical(raw).map(Some).map_err(|refused| Refusal::new(refused.status(), refused.reason()))
    }

    /// Where a request for `path` on virtual host `vhost_index` goes: `proxy_pass_match` rules
    /// first (in order), then the `proxy_pass` prefixes (longest first); a path excluded with `!`
    /// goes to its local handler if it has one; 404 for no match, or `!` without a handler.
    fn route<'p>(&self, vhost_index: usize, path: &'p str) -> Result<Routed<'_, 'p>, StatusCode> {
        let vhost = &self.config.vhosts[vhost_index];
        let matched = vhost.matches.iter().zip(&self.matches[vhost_index]).find_map(|(m, &balancer)| {
            m.regex.captures(path).map(|caps| {
                let mut target = String::new();
                caps.expand(&m.to, &mut target);
                Target { balancer, path: Cow::Owned(target), balanced: false }
            })
        });
        if let Some(target) = matched {
            return Ok(Routed::Member(target));
        }
        let route = vhost.routes.iter().find(|r| path::prefix_matches(path, &r.path)).ok_or(StatusCode::NOT_FOUND)?;
        match &route.target {
            RouteTarget::Exclude => vhost
                .locations
                .iter()
                .find(|l| path::prefix_matches(path, &l.path))
                .map(Routed::Local)
                .ok_or(StatusCode::NOT_FOUND),
            RouteTarget::Balancer { index, path: target } => Ok(Routed::Member(Target {
                balancer: *index,
                // `ProxyPass / balancer://x/` maps a path onto itself: borrowed, not copied.
                path: if *target == route.path {
                    Cow::Borrowed(path)
                } else {
                    Cow::Owned(format!("{target}{}", &path[route.path.len()..]))
                },
                balanced: true,
            })),
        }
    }

    /// What the local handlers show: the configured balancers (not the `proxy_pass_match`
    /// workers) and each one's path (the first `proxy_pass` prefix routed to it).
    pub fn handler_view(&self) -> (Vec<Arc<Balancer>>, Vec<String>) {
        let configured = self.config.balancers.len().min(self.balancers.len());
        let balancers = self.balancers[..configured].to_vec();
        let paths = (0..configured)
            .map(|i| {
                self.config
                    .vhosts
                    .iter()
                    .flat_map(|v| &v.routes)
                    .find(|r| matches!(r.target, RouteTarget::Balancer { index, .. } if index == i))
                    .map_or_else(|| "/".to_string(), |r| r.path.clone())
            })
            .collect();
        (balancers, paths)
    }

    /// Answer a request with a local handler ([`crate::local`]).
    async fn serve_local(
        &self,
        ex: &Exchange<'_>,
        location: &crate::config::LocalHandler,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        if !location.allows(ex.client.ip()) {
            tracing::info!(request = ex.id, client = %ex.client.ip(), "{} refused to a client require_ip does not allow", location.handler.name());
            return Err(StatusCode::FORBIDDEN);
        }
        let form = if ex.parts.method == hyper::Method::POST { Some(read_form(body).await) } else { None };
        let (balancers, paths) = self.handler_view();
        let reconfigure = self.reconfigure.get().and_then(std::sync::Weak::upgrade);
        let cx = crate::local::Context { balancers: &balancers, paths: &paths, reconfigure: reconfigure.as_deref() };
        let host = ex.host.map_or(ex.vhost.server_name.as_str(), strip_port);
        let request = crate::local::LocalRequest {
            method: &ex.parts.method,
            uri: &ex.parts.uri,
            headers: &ex.parts.headers,
            host,
            local: ex.local,
            scheme: if ex.client.tls().is_some() { "https" } else { "http" },
            form,
        };
        let page = crate::local::serve(location, ex.client.ip(), &request, &cx);
        let mut response = Response::new(ProxyBody::text(page.body));
        *response.status_mut() = page.status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(page.content_type));
        for (name, value) in page.headers {
            response.headers_mut().insert(name, value);
        }
        Ok(response)
    }

    /// Route the request and relay a member's response, or say which status Fulcrum must answer.
    async fn forward(
        &self,
        ex: &Exchange<'_>,
        env: &mut Env,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        let (id, vhost_index, vhost, parts, path) = (ex.id, ex.vhost_index, ex.vhost, ex.parts, ex.path);
        let target = match self.route(vhost_index, path)? {
            Routed::Member(target) => target,
            Routed::Local(location) => return self.serve_local(ex, location, body).await,
        };
        let balancer = &self.balancers[target.balancer];
        let info = request_info(id, parts, ex.client, ex.host);

        // Sticky route first, then its redirect, then the lbmethod (docs/apache-behaviour.md §3).
        let (mut decision, mut sticky_lease) = match balancer.sticky_choice(&info) {
            Ok(decided) => decided,
            Err(e @ StickyError::NoFailover { .. }) => {
                tracing::warn!(request = id, "{e}");
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
            Err(StickyError::Choose(e)) => {
                tracing::error!(request = id, "{e}");
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };

        let mut body = Some(body);
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let lease = match sticky_lease.take() {
                Some(lease) => lease,
                None => match balancer.choose(&info, &tried) {
                    Ok(lease) => lease,
                    Err(ChooseError::NoMember { .. }) => {
                        tracing::warn!(request = id, balancer = %balancer.config.name, "no usable member");
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                    Err(e) => {
                        tracing::error!(request = id, "{e}");
                        return Err(self.fault_status(&balancer.config.lbmethod));
                    }
                },
            };
            let index = lease.index();
            // The BALANCER_* variables are for the rules and the access log; skip the work when
            // neither is there to read them.
            if target.balanced {
                set_balancer_env(&decision, env, balancer, index, self.vars_read[vhost_index].get());
            }
            let Some(request_body) = body.take() else {
                unreachable!("the body is given back by every retryable failure")
            };
            match self.attempt(ex, &target, lease, request_body).await {
                Ok(mut response) => {
                    let scheme = if ex.client.tls().is_some() { "https" } else { "http" };
                    self.reverse_map(vhost, scheme, ex.host, response.headers_mut());
                    tracing::debug!(
                        request = id,
                        balancer = %balancer.config.name,
                        member = %balancer.members[index].config.url,
                        session_route = ?decision.session_route,
                        route_changed = decision.route_changed,
                        "proxied"
                    );
                    return Ok(response);
                }
                Err(Failed::Answer(status)) => return Err(status),
                Err(Failed::Client(fault)) => {
                    tracing::info!(
                        request = id,
                        client = %ex.client.ip(),
                        balancer = %balancer.config.name,
                        member = %balancer.members[index].config.url,
                        "client fault: {fault}; answered {}, the member is not blamed",
                        fault.status().as_u16()
                    );
                    return Err(fault.status());
                }
                Err(Failed::NotSent(returned) | Failed::Retry(returned)) => {
                    body = Some(returned);
                    tried.push(index);
                    if balancer.config.sticky.is_some() {
                        decision.route_changed = true;
                    }
                    if tried.len() > balancer.config.maxattempts {
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                }
            }
        }
    }

    /// Send the request to the leased member and relay its response.
    async fn attempt(
        &self,
        ex: &Exchange<'_>,
        to: &Target<'_>,
        lease: Lease,
        mut body: RequestBody,
    ) -> Result<Response<ProxyBody>, Failed> {
        let (id, parts, vhost, target_path) = (ex.id, ex.parts, ex.vhost, &*to.path);
        let balancer = Arc::clone(lease.balancer());
        let index = lease.index();
        let member = &balancer.members[index].config;
        let pool = &self.pools[to.balancer][index];

        // The request target, in the pieces it is written from: the member's path, the routed
        // path ("/" when both are empty), then the query.
        let mut target = [member.path.as_str(), target_path, "", ""];
        if target[0].is_empty() && target[1].is_empty() {
            target[1] = "/";
        }
        if let Some(q) = parts.uri.query() {
            target[2..].copy_from_slice(&["?", q]);
        }
        // What goes on the request line must be visible ASCII (a `proxy_pass_match` template
        // could put anything there); anything else is refused, never written.
        if !target.iter().all(|piece| piece.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(Failed::Answer(StatusCode::BAD_REQUEST));
        }
        let host = if vhost.preserve_host { ex.host.unwrap_or(&vhost.server_name) } else { member.authority.as_str() };
        let framing = RequestFraming::for_body(&body, parts.headers.contains_key(header::CONTENT_LENGTH));
        let timeout = member.timeout.or(balancer.config.timeout).unwrap_or(self.config.proxy_timeout);
        // Safe to send again when the member fails before answering: an idempotent method
        // (RFC 9110 §9.2.2) and no body (a body, once read, is gone).
        // The protocol the member is asked to switch to, when the client offered one this
        // balancer lets through; otherwise `Upgrade` is dropped as hop-by-hop.
        let upgrade = ex.offer.and_then(|offer| balancer.config.upgrade.allowed(&offer.protocols));
        let resendable = parts.method.is_idempotent() && body.is_end_stream();
        let retry = balancer.config.retry_idempotent;
        body.charge_to(&balancer, index);

        for _ in 0..=STALE_RETRIES {
            let mut conn = match pool.checkout().await {
                Ok(conn) => conn,
                // As Apache's failed SSL handshake with a backend: a 502, the member stays in
                // (its connection was accepted; its certificate is a configuration matter).
                Err(e @ upstream::ConnectError::Tls(..)) => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "{e}");
                    return Err(Failed::Answer(StatusCode::BAD_GATEWAY));
                }
                Err(e) => {
                    balancer.mark_error(index);
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "{e}; member in error state for {:?}", member.retry);
                    return Err(Failed::NotSent(body));
                }
            };
            conn.head.clear();
            member_http::write_request_head(
                &mut conn.head,
                &member_http::RequestHead {
                    method: &parts.method,
                    target: &target,
                    headers: &parts.headers,
                    host,
                    forwarded_for: ex.client.as_str(),
                    forwarded_host: ex.host,
                    forwarded_server: &vhost.server_name,
                    forwarded_proto: ex.client.tls().map(|_| "https"),
                    framing,
                    upgrade,
                },
            );
            // The member's `timeout`, on the connection's own timer (kept from request to request).
            let mut timer = conn.timer(tokio::time::Instant::now() + timeout);
            let exchange = async {
                member_http::send_request(&mut conn, &mut body, framing).await?;
                member_http::read_response_head(&mut conn, &parts.method, upgrade.is_some()).await
            };
            let answered = tokio::select! {
                biased;
                answered = exchange => Some(answered),
                () = timer.as_mut() => None,
            };
            conn.keep_timer(timer);
            let error = match answered {
                Some(Ok(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return self.switch(ex, lease, conn, head, timeout).map_err(Failed::Answer);
                }
                Some(Ok(head)) => {
                    return self.relay(ex, &balancer, lease, conn, head, timeout).map_err(Failed::Answer);
                }
                Some(Err(e)) => e,
                None => {
                    if balancer.config.failontimeout {
                        balancer.mark_error(index);
                    }
                    if let Some(fault) = ex.fault.get() {
                        return Err(Failed::Client(*fault));
                    }
                    if resendable && retry.timeout {
                        tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "no response within {timeout:?}; the {} request is idempotent and has no body: trying another member", parts.method);
                        return Err(Failed::Retry(RequestBody::empty()));
                    }
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "no response within {timeout:?}");
                    return Err(Failed::Answer(StatusCode::BAD_GATEWAY));
                }
            };
            if let Some(fault) = ex.fault.get() {
                return Err(Failed::Client(*fault));
            }
            match error {
                // No whole request reached the member, and the body is untouched: a pooled
                // connection the member had closed takes a fresh one; a new one that fails
                // gives the request to another member.
                // The member's TLS refused us after the handshake (TLS 1.3 tells a client that
                // its certificate was refused only then): as a failed handshake, a 502.
                e if e.tls_alert().is_some() => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "TLS with the member failed: {}", e.tls_alert().unwrap_or_default());
                    return Err(Failed::Answer(StatusCode::BAD_GATEWAY));
                }
                ExchangeError::Head(_) if conn.reused => continue,
                ExchangeError::Head(e) => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "member failed: {e}");
                    return Err(Failed::NotSent(body));
                }
                ExchangeError::Response(why @ (ResponseError::Coding | ResponseError::Switching)) => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "member sent an invalid response: {why}");
                    return Err(Failed::Answer(StatusCode::BAD_GATEWAY));
                }
                e if resendable && retry.error => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "member failed before answering: {e}; the {} request is idempotent and has no body: trying another member", parts.method);
                    return Err(Failed::Retry(RequestBody::empty()));
                }
                e => {
                    tracing::warn!(request = id, balancer = %balancer.config.name, member = %member.url, "member failed: {e}");
                    return Err(Failed::Answer(StatusCode::BAD_GATEWAY));
                }
            }
        }
        Err(Failed::Answer(StatusCode::BAD_GATEWAY))
    }

    /// The member's response head has come: check and frame it, and relay it with a body that
    /// reads the rest from the member's connection.
    fn relay(
        &self,
        ex: &Exchange<'_>,
        balancer: &Balancer,
        lease: Lease,
        conn: upstream::MemberConn,
        head: member_http::ResponseHead,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        let (index, method) = (lease.index(), &ex.parts.method);
        let member = &balancer.members[index].config;
        let status = head.status;
        if balancer.config.failonstatus.contains(&status.as_u16()) {
            balancer.mark_error(index);
            tracing::warn!(request = ex.id, balancer = %balancer.config.name, member = %member.url, "status {status} is in failonstatus: member in error state for {:?}", member.retry);
        }
        let body = MemberBody::new(conn, &head, lease, timeout);
        let mut headers = head.headers;
        if let Err(why) = headers::frame_response(&mut headers, method, status, head.transfer, &body) {
            tracing::warn!(request = ex.id, balancer = %balancer.config.name, member = %member.url, "member sent an invalid response: {why}");
            return Err(StatusCode::BAD_GATEWAY);
        }
        if error_page::drops_connection(status) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let mut response = Response::new(ProxyBody::Member(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// The member switched protocols (it was asked to only when the client offered one the
    /// balancer allows): answer the client's 101 and hand both connections to a tunnel task,
    /// which holds the member's lease (busy) until the tunnel ends.
    fn switch(
        &self,
        ex: &Exchange<'_>,
        lease: Lease,
        conn: upstream::MemberConn,
        head: member_http::ResponseHead,
        timeout: Duration,
    ) -> Result<Response<ProxyBody>, StatusCode> {
        let balancer = lease.balancer();
        let member = &lease.member().config;
        let asked = ex.offer.and_then(|offer| balancer.config.upgrade.allowed(&offer.protocols));
        let switched = crate::request::joined(&head.headers, header::UPGRADE);
        let name = |p: &str| p.split('/').next().unwrap_or_default().trim().to_ascii_lowercase();
        if asked.map(name) != switched.as_deref().map(name) {
            tracing::warn!(request = ex.id, balancer = %balancer.config.name, member = %member.url, "the member switched to {:?}, not the {:?} asked for", switched.unwrap_or_default(), asked.unwrap_or_default());
            return Err(StatusCode::BAD_GATEWAY);
        }
        let Some(upgrade) = ex.offer.and_then(|offer| offer.upgrade.lock().ok()?.take()) else {
            return Err(StatusCode::BAD_GATEWAY);
        };
        let mut headers = head.headers;
        headers::strip_hop_by_hop(&mut headers);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(v) = switched.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(header::UPGRADE, v);
        }
        tracing::debug!(request = ex.id, balancer = %balancer.config.name, member = %member.url, "switched protocols: tunnel open");
        let lifetime = balancer.config.tunnel_lifetime;
        tokio::spawn(tunnel::run(upgrade, tunnel::Tunnel { request: ex.id, conn, lease, idle: timeout, lifetime }));
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// ProxyPassReverse: a Location or Content-Location naming a member becomes this server's URL
    /// (built from the client's scheme and Host, as Apache does with UseCanonicalName Off).
    fn reverse_map(&self, vhost: &VirtualHost, scheme: &str, host: Option<&str>, headers: &mut hyper::HeaderMap) {
        if vhost.reverse.is_empty() {
            return;
        }
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else { continue };
            let Some(local) = reverse::map(value, &vhost.reverse, &self.balancers) else { continue };
            let url = format!("{scheme}://{}{local}", host.unwrap_or(&vhost.server_name));
            if let Ok(v) = HeaderValue::from_str(&url) {
                headers.insert(name, v);
            }
        }
    }

    /// The virtual host for a Host header: ServerName, then ServerAlias, else the first (Apache's
    /// default vhost for the address).
    fn vhost(&self, host: Option<&str>) -> usize {
        let Some(host) = host.map(strip_port) else { return 0 };
        self.config
            .vhosts
            .iter()
            .position(|v| {
                // Byte for byte first: hosts usually come as configured.
                v.server_name == host
                    || v.server_name.eq_ignore_ascii_case(host)
                    || v.server_alias.iter().any(|a| a.eq_ignore_ascii_case(host))
            })
            .unwrap_or(0)
    }
}

/// One request on its way to a member: what routing, every attempt and the relay need to know
/// about it (the request's context from routing on).
struct Exchange<'a> {
    id: u64,
    /// The client's offer to switch protocols, if it made one.
    offer: Option<&'a tunnel::Offer>,
    vhost_index: usize,
    vhost: &'a VirtualHost,
    /// The request as it goes to the member (after the request phase of the rules).
    parts: &'a Parts,
    client: &'a ClientAddr,
    /// The host the request is for (see [`host::request_host`]).
    host: Option<&'a str>,
    /// The canonical path ([`path::canonical`]): routing and the member see this one.
    path: &'a str,
    /// Where the request body reports a fault of the client's.
    fault: &'a FaultSlot,
    /// The address the client connected to.
    local: IpAddr,
}

/// When and from whom a request came: what its access-log line needs besides the exchange.
struct Arrival {
    client: IpAddr,
    received: std::time::SystemTime,
    started: std::time::Instant,
}

/// Where routing sends a request.
enum Routed<'a, 'p> {
    Member(Target<'p>),
    /// A local handler on an excluded path.
    Local(&'a crate::config::LocalHandler),
}

/// A POST's body, at most [`crate::local::MAX_BODY`] bytes (the rest is not read).
async fn read_form(mut body: RequestBody) -> bytes::Bytes {
    use http_body_util::BodyExt as _;
    let mut form = bytes::BytesMut::new();
    while form.len() < crate::local::MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    form.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    form.truncate(crate::local::MAX_BODY);
    form.freeze()
}

/// Where a routed request goes: the balancer (an index into the proxy's) and the path that
/// replaces the matched prefix (or the `proxy_pass_match` template's expansion).
struct Target<'p> {
    balancer: usize,
    path: Cow<'p, str>,
    /// A `proxy_pass` balancer (BALANCER_* variables are set), not a `proxy_pass_match` worker.
    balanced: bool,
}

/// What Apache refuses before routing (docs/apache-behaviour.md §6.9, §10, §12): TRACE (405);
/// an HTTP/1.1 request without exactly one Host (400); a transfer coding other than chunked
/// (501: it would be forwarded without its coding); a request line, header line or header count
/// past `[limits]` (414, 400, 400); a declared body past `request_body` (413).
fn check_request(parts: &Parts, limits: &Limits) -> Result<(), Refusal> {
    // TraceEnable Off, Debian's default.
    if parts.method == hyper::Method::TRACE {
        return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "TRACE is disabled (TraceEnable Off)"));
    }
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    if hosts == 0 && parts.version == hyper::Version::HTTP_11 && parts.uri.authority().is_none() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "an HTTP/1.1 request without Host"));
    }
    // hyper accepts a chunked body whatever codings precede `chunked`; Fulcrum decodes only
    // `chunked` and would forward the rest undeclared.
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        let codings = crate::request::joined(&parts.headers, header::TRANSFER_ENCODING).unwrap_or_else(|| "?".into());
        let mut codings_iter = codings.split(',').map(str::trim).filter(|c| !c.is_empty());
        let only_chunked =
            codings_iter.next().is_some_and(|c| c.eq_ignore_ascii_case("chunked")) && codings_iter.next().is_none();
        if !only_chunked {
            return Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("Transfer-Encoding `{codings}`: only `chunked` alone is supported"),
            ));
        }
    }
    // Apache accepts a line one byte over the limit (its buffer holds limit + 2 bytes with the
    // line end), and refuses from limit + 2 on (docs/apache-behaviour.md §10).
    let target = parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len() + parts.uri.scheme_str().map_or(0, str::len) + 3);
    let line = parts.method.as_str().len() + 1 + target + " HTTP/1.1".len();
    if line > limits.request_line + 1 {
        return Err(Refusal::new(
            StatusCode::URI_TOO_LONG,
            format!("request line of {line} bytes (limit_request_line {})", limits.request_line),
        ));
    }
    if parts.headers.len() > limits.request_fields {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{} header fields (limits.request_fields {})", parts.headers.len(), limits.request_fields),
        ));
    }
    for (name, value) in &parts.headers {
        let size = name.as_str().len() + 2 + value.len();
        if size > limits.request_field_size + 1 {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "header `{name}` line of {size} bytes (limits.request_field_size {})",
                    limits.request_field_size
                ),
            ));
        }
    }
    if let Some(length) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limits.request_body
    {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of {length} bytes (limits.request_body {})", limits.request_body),
        ));
    }
    Ok(())
}

/// `host:port` → `host` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    // By bytes: a `char` search costs more than the name is long.
    let bytes = host.as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    /// A Host without its port, as virtual hosts and error pages compare it.
    #[test]
    fn the_port_is_stripped_from_a_host() {
        let cases = [
            ("www.example.com", "www.example.com"),
            ("www.example.com:8080", "www.example.com"),
            ("www.example.com:", "www.example.com"),
            ("host:80:80", "host:80"),
            ("host:8o", "host:8o"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("", ""),
        ];
        for (host, want) in cases {
            assert_eq!(super::strip_port(host), want, "{host:?}");
        }
    }
}
