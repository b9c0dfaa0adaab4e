//! The admin listener: Fulcrum's own numbers, on an address of their own (`admin_listen`), never on
//! the proxied virtual hosts, like HAProxy's stats frontend or Envoy's admin port.
//!
//! `GET /metrics` answers Prometheus text. Counters ([`crate::counters`], through the `metrics`
//! facade; nothing is recorded in a process without an admin listener):
//! - `fulcrum_plugin_faults_total{plugin, kind}`: a plugin call trapped (`trap`), ran past its
//!   deadline (`deadline`), hit its memory cap (`memory`), called WASI it was not granted
//!   (`not-granted`), could not be set up again (`setup`), or gave an answer the host refused
//!   (`invalid-answer`);
//! - `fulcrum_plugin_reloads_total{plugin, result}`: `loaded`, `failed` (the old version stays),
//!   `removed`;
//! - `fulcrum_config_reloads_total{result}`: `applied`, `refused` (the file had problems);
//! - `fulcrum_health_checks_total{balancer, member, result}`: `pass`, `fail`;
//! - `fulcrum_health_transitions_total{balancer, member, to}`: `out`, `in`;
//!
//! and, read from the balancers when asked (Apache's balancer-manager columns):
//! - `fulcrum_member_elected_total{balancer, member}`: requests handed to the member;
//! - `fulcrum_member_busy{balancer, member}`: requests in flight;
//! - `fulcrum_member_traffic_bytes_total{balancer, member}`: bytes sent to it plus read from it;
//! - `fulcrum_member_in_error{balancer, member}`: 1 while the member is in error state;
//! - `fulcrum_member_health_failed{balancer, member}`: 1 while its health checks keep it out
//!   (status `C`).
//!
//! Anything else gets a short plain-text 404 (or 405 for a method other than GET and HEAD).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::balancer::Balancer;
use crate::proxy::Proxy;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Start recording (once per process); later calls return the same handle.
pub fn recorder() -> Result<&'static PrometheusHandle, crate::Error> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| crate::Error::msg(format!("admin: cannot start the metrics recorder: {e}")))?;
    Ok(HANDLE.get_or_init(|| handle))
}

/// A member column: metric name, type, help, and how to read it.
type Column = (&'static str, &'static str, &'static str, fn(&Balancer, usize) -> u64);

/// The member columns of every balancer, in Prometheus text.
fn member_lines(balancers: &[Arc<Balancer>]) -> String {
    let mut out = String::new();
    let metrics: [Column; 5] = [
        ("fulcrum_member_elected_total", "counter", "Requests handed to the member.", |b, i| b.members[i].elected()),
        ("fulcrum_member_busy", "gauge", "Requests in flight to the member.", |b, i| b.members[i].busy()),
        ("fulcrum_member_traffic_bytes_total", "counter", "Bytes sent to plus read from the member.", |b, i| {
            b.members[i].traffic()
        }),
        ("fulcrum_member_in_error", "gauge", "1 while the member is in error state.", |b, i| u64::from(b.in_error(i))),
        ("fulcrum_member_health_failed", "gauge", "1 while the member's health checks keep it out.", |b, i| {
            u64::from(b.members[i].status().contains(crate::balancer::MemberStatus::HC_FAILED))
        }),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in balancers {
            for (i, m) in b.members.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{balancer=\"{}\",member=\"{}\"}} {}",
                    escape(&b.config.name),
                    escape(&m.config.url),
                    value(b, i)
                );
            }
        }
    }
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Answer one admin request.
pub async fn handle<B>(request: Request<B>, proxy: Arc<Proxy>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(text(StatusCode::NOT_FOUND, "not found: the admin listener serves GET /metrics\n".into()));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let mut body = HANDLE.get().map(|h| h.render()).unwrap_or_default();
    body.push_str(&member_lines(proxy.balancers()));
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}
