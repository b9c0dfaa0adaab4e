//! The balancer-manager's JSON API, beyond Apache: what scripts and dashboards want instead of
//! scraping the page. `GET PATH/api` answers every balancer with its settings and members (the
//! manager's columns); `POST PATH/api` with a JSON object makes the changes the manager's forms
//! make, and answers the state after them.
//!
//! Guarded by the location's `require_ip`, like the page, and by a bearer token
//! (`Authorization: Bearer TOKEN`, the location's `api_token`); a location without a token has
//! no API (404). There is no nonce or Referer to check: a browser cannot add the header to a
//! cross-site request, so the token is the proof of intent.
//!
//! ```json
//! {"balancer": "default", "member": "http://10.0.0.2:8080", "disabled": true}
//! {"balancer": "default", "member": "http://10.0.0.2:8080", "loadfactor": 3, "route": "web2"}
//! {"balancer": "default", "lbmethod": "bytraffic", "add_member": "http://10.0.0.9:8080"}
//! ```

use std::collections::BTreeMap;

use hyper::header::AUTHORIZATION;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::status::worker_status;
use super::{Context, LocalRequest, Page};
use crate::config::LocalHandler;

pub fn handle(location: &LocalHandler, request: &LocalRequest<'_>, cx: &Context<'_>) -> Page {
    let Some(token) = &location.api_token else {
        return answer(StatusCode::NOT_FOUND, json!({"error": "this balancer-manager has no API (no api_token)"}));
    };
    let given = request
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        tracing::warn!("balancer-manager API: a request without the right bearer token");
        let mut page = answer(StatusCode::UNAUTHORIZED, json!({"error": "a bearer token is required"}));
        page.headers.push(("www-authenticate", hyper::header::HeaderValue::from_static("Bearer")));
        return page;
    }
    match *request.method {
        Method::GET | Method::HEAD => answer(StatusCode::OK, state(cx)),
        Method::POST => {
            let body = request.form.as_deref().unwrap_or(b"");
            let change: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return answer(StatusCode::BAD_REQUEST, json!({"error": format!("not JSON: {e}")})),
            };
            match apply(&change, cx) {
                Ok(()) => {
                    if let Some(r) = cx.reconfigure {
                        r.changed();
                    }
                    answer(StatusCode::OK, state_in_force(cx))
                }
                Err(why) => {
                    tracing::warn!("balancer-manager API: change refused: {why}");
                    answer(StatusCode::BAD_REQUEST, json!({"error": why}))
                }
            }
        }
        _ => {
            let mut page = answer(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "GET or POST"}));
            page.headers.push(("allow", hyper::header::HeaderValue::from_static("GET, HEAD, POST")));
            page
        }
    }
}

/// Byte strings compared in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer(status: StatusCode, body: Value) -> Page {
    let mut page = Page::new("application/json", format!("{body:#}\n"));
    page.status = status;
    page.with("cache-control", "no-cache")
}

/// The state of the balancers in force now (a change that rebuilt one replaced it).
fn state_in_force(cx: &Context<'_>) -> Value {
    match cx.reconfigure.map(|r| r.current()) {
        Some((balancers, paths)) => {
            state(&Context { balancers: &balancers, paths: &paths, reconfigure: cx.reconfigure })
        }
        None => state(cx),
    }
}

fn state(cx: &Context<'_>) -> Value {
    let balancers: Vec<Value> = cx
        .balancers
        .iter()
        .map(|b| {
            let c = &b.config;
            let lbstatus = b.lbstatus();
            let members: Vec<Value> = b
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let w = &m.config;
                    json!({
                        "url": w.url,
                        "route": w.route,
                        "redirect": w.redirect,
                        "loadfactor": w.lbfactor / 100,
                        "lbset": w.lbset,
                        "status": worker_status(b, i).trim_end(),
                        "flags": m.status().to_string(),
                        "usable": b.is_usable(i),
                        "in_error": b.in_error(i),
                        "elected": m.elected(),
                        "busy": m.busy(),
                        "load": lbstatus.get(i).copied().unwrap_or(0),
                        "sent": m.sent(),
                        "read": m.read(),
                    })
                })
                .collect();
            json!({
                "name": c.name,
                "lbmethod": b.selector_name(),
                "stickysession": c.sticky.as_ref().map(|s| s.cookie.clone()),
                "nofailover": c.sticky.as_ref().is_some_and(|s| s.nofailover),
                "timeout": c.timeout.map_or(0, |t| t.as_secs()),
                "maxattempts": c.maxattempts,
                "members": members,
            })
        })
        .collect();
    json!({ "balancers": balancers })
}

/// A JSON change → the manager's form parameters, applied as the forms are.
fn apply(change: &Value, cx: &Context<'_>) -> Result<(), String> {
    let object = change.as_object().ok_or("the body must be a JSON object")?;
    let name = object.get("balancer").and_then(Value::as_str).ok_or("`balancer` (a name) is required")?;
    let b = cx.balancers.iter().find(|b| b.config.name == name).ok_or_else(|| format!("no balancer `{name}`"))?;
    let mut params = BTreeMap::new();
    let text = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(on) => Ok(if *on { "1" } else { "0" }.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("`{other}` is not a value for a setting")),
    };
    let (keys, member): (&[(&str, &str)], Option<usize>) = match object.get("member") {
        Some(url) => {
            let url = url.as_str().ok_or("`member` must be a member's URL")?;
            let i = b
                .members
                .iter()
                .position(|m| m.config.url == url)
                .ok_or_else(|| format!("no member {url} in balancer `{name}`"))?;
            (MEMBER_KEYS, Some(i))
        }
        None => (BALANCER_KEYS, None),
    };
    for (key, value) in object {
        if key == "balancer" || key == "member" {
            continue;
        }
        let param = keys.iter().find(|(k, _)| k == key).map(|(_, p)| *p).ok_or_else(|| {
            let known: Vec<_> = keys.iter().map(|(k, _)| *k).collect();
            format!("unknown setting `{key}` (known: {})", known.join(", "))
        })?;
        params.insert(param.to_string(), text(value)?);
    }
    if params.contains_key("b_nwrkr") {
        params.insert("b_wyes".into(), "1".into());
    }
    match member {
        Some(i) => super::manager::change_member(b, i, &params, cx),
        None => super::manager::change_balancer(b, &params, cx),
    }
}

/// JSON names of a member's settings → the manager form's parameters.
const MEMBER_KEYS: &[(&str, &str)] = &[
    ("disabled", "w_status_D"),
    ("stopped", "w_status_S"),
    ("ignore_errors", "w_status_I"),
    ("draining", "w_status_N"),
    ("hot_standby", "w_status_H"),
    ("spare", "w_status_R"),
    ("health_failed", "w_status_C"),
    ("loadfactor", "w_lf"),
    ("lbset", "w_ls"),
    ("route", "w_wr"),
    ("redirect", "w_rr"),
];

/// JSON names of a balancer's settings → the manager form's parameters.
const BALANCER_KEYS: &[(&str, &str)] = &[
    ("lbmethod", "b_lbm"),
    ("stickysession", "b_ss"),
    ("timeout", "b_tmo"),
    ("maxattempts", "b_max"),
    ("nofailover", "b_sforce"),
    ("add_member", "b_nwrkr"),
];
