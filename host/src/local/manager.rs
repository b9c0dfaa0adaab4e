//! `/balancer-manager`, as mod_proxy_balancer's manager behaves (docs/apache-behaviour.md
//! §9.5–9.9): the overview of every balancer and member, the member and balancer edit forms,
//! `?xml=1`, and changes.
//!
//! **Changes only as Apache accepts them** (§9.6): a `POST` with an
//! `application/x-www-form-urlencoded` body (the query string of a POST is ignored), a `Referer`
//! whose host name is the request's host, and the balancer's nonce, a random UUID made at every
//! start and shown in the page's links. Anything else changes nothing and gets the page (200), as
//! in Apache; the attempt is logged. A GET never changes anything; with the nonce and a same-host
//! Referer it shows a member's edit form or the XML.
//!
//! Effects (§9.7): status flags apply at once, each alone; re-enabling a member brings it back
//! with its counters (and byrequests' lbstatus) as they were, as Apache 2.4 does. Factor, set,
//! route, redirect and the balancer's settings rebuild the balancer as a configuration reload
//! would ([`super::Reconfigure`]), keeping the members' state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use hyper::Method;
use hyper::header::REFERER;

use super::status::worker_status;
use super::{Context, LocalRequest, Page, html};
use crate::balancer::{Balancer, MemberStatus};

/// A change the manager asks the runtime to make ([`super::Reconfigure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The member with URL `member`: its loadfactor (1-100), lbset, route, route redirect.
    Member {
        member: String,
        loadfactor: Option<u32>,
        lbset: Option<u32>,
        route: Option<String>,
        redirect: Option<String>,
    },
    /// The balancer's lbmethod, stickysession, timeout (seconds, 0 = none), maxattempts,
    /// nofailover, and a member to add (by URL).
    Balancer {
        lbmethod: Option<String>,
        sticky: Option<String>,
        timeout: Option<u64>,
        maxattempts: Option<usize>,
        nofailover: Option<bool>,
        add_member: Option<String>,
    },
}

/// The member status flags the forms switch, in Apache's order, with their form letter.
const FLAGS: [(char, MemberStatus, &str); 7] = [
    ('I', MemberStatus::IGNORE_ERRORS, "Ignore Errors"),
    ('N', MemberStatus::DRAINING, "Draining Mode"),
    ('D', MemberStatus::DISABLED, "Disabled"),
    ('H', MemberStatus::HOT_STANDBY, "Hot Standby"),
    ('R', MemberStatus::SPARE, "Hot Spare"),
    ('S', MemberStatus::STOPPED, "Stopped"),
    ('C', MemberStatus::HC_FAILED, "HC Fail"),
];

/// The balancer's nonce: a random UUID made the first time the process shows the balancer, the
/// same for its life (reloads included), new at every start.
pub fn nonce(balancer: &str) -> String {
    static NONCES: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let mut nonces = NONCES.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    nonces.entry(balancer.to_string()).or_insert_with(uuid).clone()
}

/// A random (version 4) UUID.
fn uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No system randomness: a nonce nobody can read from the page is still one nobody guesses
        // from the outside only if it is random; refuse every change instead (an empty nonce
        // never matches, see `trusted`).
        return String::new();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The form or query parameters, first value of each name.
fn params(request: &LocalRequest<'_>) -> BTreeMap<String, String> {
    let source: &[u8] = if request.method == Method::POST {
        let form = request.form.as_deref().unwrap_or(b"");
        &form[..form.len().min(super::MAX_FORM)]
    } else {
        request.uri.query().unwrap_or("").as_bytes()
    };
    let mut out = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(source) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Whether the `Referer`'s host name is the request's host (scheme, port and path are not
/// compared, as in Apache).
fn same_host_referer(request: &LocalRequest<'_>) -> bool {
    let Some(referer) = request.headers.get(REFERER).and_then(|v| v.to_str().ok()) else { return false };
    let Some((_, rest)) = referer.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        authority.split(':').next().unwrap_or("")
    };
    !host.is_empty() && host.eq_ignore_ascii_case(request.host)
}

pub fn page(request: &LocalRequest<'_>, cx: &Context<'_>) -> Page {
    let params = params(request);
    let balancer = params.get("b").and_then(|name| cx.balancers.iter().find(|b| b.config.name == *name));
    let trusted = balancer.is_some_and(|b| {
        let expected = nonce(&b.config.name);
        !expected.is_empty() && params.get("nonce") == Some(&expected)
    }) && same_host_referer(request);
    let member = balancer.and_then(|b| {
        let w = params.get("w")?;
        b.members.iter().position(|m| m.config.url == *w)
    });
    let wants_change = params.keys().any(|k| k.starts_with("w_") || k.starts_with("b_"));
    let mut notice = None;
    match (balancer, trusted && request.method == Method::POST) {
        (Some(b), true) => {
            let result = match member {
                Some(i) => change_member(b, i, &params, cx),
                None if params.contains_key("w") => {
                    Err(format!("no member {} in balancer {}", params["w"], b.config.name))
                }
                None => change_balancer(b, &params, cx),
            };
            match result {
                Ok(()) => {
                    tracing::info!(balancer = %b.config.name, "balancer-manager: settings changed");
                    if let Some(r) = cx.reconfigure {
                        r.changed();
                    }
                }
                Err(why) => {
                    tracing::warn!(balancer = %b.config.name, "balancer-manager: change refused: {why}");
                    notice = Some(why);
                }
            }
        }
        _ if wants_change || request.method == Method::POST => {
            tracing::warn!(
                "balancer-manager: ignoring parameters of a request without POST, the balancer's nonce and a \
                 same-host Referer (cross-site protection)"
            );
        }
        _ => {}
    }
    // After a change the balancer may have been rebuilt: show the ones in force.
    let in_force = cx.reconfigure.map(|r| r.current());
    let rebuilt;
    let cx = match &in_force {
        Some((balancers, paths)) => {
            rebuilt = Context { balancers, paths, reconfigure: cx.reconfigure };
            &rebuilt
        }
        None => cx,
    };
    if trusted && params.get("xml").is_some_and(|x| x == "1") {
        return Page::new("text/xml; charset=ISO-8859-1", xml(cx)).with("cache-control", "no-cache");
    }
    let mut out = overview(request, cx, notice.as_deref());
    if trusted && let Some(b) = balancer {
        let b = cx.balancers.iter().find(|x| x.config.name == b.config.name).unwrap_or(b);
        match params.get("w").and_then(|w| b.members.iter().position(|m| m.config.url == *w)) {
            Some(i) => member_form(&mut out, request, b, i),
            None => balancer_form(&mut out, request, b, cx),
        }
    }
    out.push_str("</body></html>\n");
    Page::new("text/html; charset=ISO-8859-1", out).with("vary", "Accept-Encoding").with("cache-control", "no-cache")
}

/// Apply a member's settings as the edit form names them (`w_status_D`, `w_lf`, …).
pub(super) fn change_member(
    b: &Balancer,
    i: usize,
    params: &BTreeMap<String, String>,
    cx: &Context<'_>,
) -> Result<(), String> {
    let m = &b.members[i];
    for (letter, flag, _) in FLAGS {
        match params.get(&format!("w_status_{letter}")).map(String::as_str) {
            Some("1") => {
                m.set_flag(flag, true);
            }
            Some("0") => {
                m.set_flag(flag, false);
            }
            Some(other) => return Err(format!("w_status_{letter} must be 0 or 1, not `{other}`")),
            None => {}
        }
    }
    // As Apache 2.4: a flag changes only itself. Re-enabling a member brings it back at once (being
    // disabled is not an error state) with its counters as they were: lbstatus is not reset
    // (measured against Apache 2.4.67 by `apache_diff::balancer_manager_and_server_status`).
    let number = |key: &str, range: std::ops::RangeInclusive<u32>| -> Result<Option<u32>, String> {
        match params.get(key).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<f64>() {
                // Apache's factor field shows `1.00`.
                Ok(n) if n.fract() == 0.0 && range.contains(&(n as u32)) => Ok(Some(n as u32)),
                _ => Err(format!("{key} must be a whole number in {}..={}, not `{v}`", range.start(), range.end())),
            },
        }
    };
    let loadfactor = number("w_lf", 1..=100)?.filter(|&lf| lf * 100 != m.config.lbfactor);
    let lbset = number("w_ls", 0..=99)?.filter(|&ls| ls != m.config.lbset);
    let route = params.get("w_wr").map(|r| r.trim().to_string()).filter(|r| *r != m.config.route);
    let redirect = params
        .get("w_rr")
        .map(|r| r.trim().to_string())
        .filter(|r| Some(r.as_str()) != m.config.redirect.as_deref() && !(r.is_empty() && m.config.redirect.is_none()));
    if loadfactor.is_none() && lbset.is_none() && route.is_none() && redirect.is_none() {
        return Ok(());
    }
    let change = Change::Member { member: m.config.url.clone(), loadfactor, lbset, route, redirect };
    let reconfigure = cx.reconfigure.ok_or("this Fulcrum cannot change members' settings (no runtime)")?;
    reconfigure.reconfigure(&b.config.name, &change)
}

/// Apply a balancer's settings as its edit form names them (`b_lbm`, `b_ss`, …).
pub(super) fn change_balancer(b: &Balancer, params: &BTreeMap<String, String>, cx: &Context<'_>) -> Result<(), String> {
    let get = |k: &str| params.get(k).map(|v| v.trim().to_string());
    let lbmethod = get("b_lbm").filter(|m| !m.is_empty() && *m != b.config.lbmethod);
    let sticky = get("b_ss").filter(|s| Some(s.as_str()) != b.config.sticky.as_ref().map(|s| s.cookie.as_str()));
    let timeout = match get("b_tmo") {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| format!("b_tmo must be seconds, not `{t}`"))?),
    }
    .filter(|&t| Some(t) != b.config.timeout.map(|d| d.as_secs()) && !(t == 0 && b.config.timeout.is_none()));
    let maxattempts = match get("b_max") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| format!("b_max must be a number, not `{n}`"))?),
    }
    .filter(|&n| n != b.config.maxattempts);
    let nofailover = match get("b_sforce").as_deref() {
        None => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(other) => return Err(format!("b_sforce must be 0 or 1, not `{other}`")),
    }
    .filter(|&on| Some(on) != b.config.sticky.as_ref().map(|s| s.nofailover));
    // Apache adds a member only with the confirmation box ticked.
    let add_member = get("b_nwrkr").filter(|w| !w.is_empty() && params.get("b_wyes").is_some_and(|y| y == "1"));
    if lbmethod.is_none()
        && sticky.is_none()
        && timeout.is_none()
        && maxattempts.is_none()
        && nofailover.is_none()
        && add_member.is_none()
    {
        return Ok(());
    }
    let change = Change::Balancer { lbmethod, sticky, timeout, maxattempts, nofailover, add_member };
    let reconfigure = cx.reconfigure.ok_or("this Fulcrum cannot change balancers' settings (no runtime)")?;
    reconfigure.reconfigure(&b.config.name, &change)
}

/// The manager's own URL, absolute (the forms post there, as Apache's do).
fn action(request: &LocalRequest<'_>) -> String {
    let host = request.headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(request.host);
    format!("{}://{}{}", request.scheme, host, request.uri.path())
}

fn overview(request: &LocalRequest<'_>, cx: &Context<'_>, notice: Option<&str>) -> String {
    let path = html(request.uri.path()).into_owned();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html><head>\n<title>Balancer Manager</title>\n\
         <style type='text/css'>\ntable {{ border-width: 1px; border-spacing: 3px; border-style: solid; \
         border-color: gray; border-collapse: collapse; background-color: white; text-align: center; }}\n\
         th {{ border-width: 1px; padding: 2px; border-style: dotted; border-color: gray; background-color: lightgray; }}\n\
         td {{ border-width: 1px; padding: 2px; border-style: dotted; border-color: gray; background-color: white; }}\n\
         </style>\n</head>\n<body><h1>Load Balancer Manager for {}</h1>\n\n\
         <dl><dt>Server Version: {}</dt>\n<dt>Balancer changes will {}be persisted on restart.</dt>\n</dl>\n",
        html(request.host),
        crate::proxy::SERVER,
        if cx.balancers.iter().any(|b| b.config.persist) { "" } else { "NOT " }
    );
    if let Some(why) = notice {
        let _ = writeln!(out, "<p><strong>Not changed: {}</strong></p>", html(why));
    }
    for (index, b) in cx.balancers.iter().enumerate() {
        let name = &b.config.name;
        let n = nonce(name);
        let link = format!("{path}?b={}&amp;nonce={}", html(&urlenc(name)), html(&n));
        let _ = write!(
            out,
            "<hr />\n<h3>LoadBalancer Status for <a href=\"{link}\">{}</a> [{}]</h3>\n\n\n\
             <table><tr><th>MaxMembers</th><th>StickySession</th><th>DisableFailover</th><th>Timeout</th>\
             <th>FailoverAttempts</th><th>Method</th><th>Path</th><th>Active</th></tr>\n\
             <tr><td>{} [{} Used]</td>\n<td>{}</td><td>{}</td>\n<td>{}</td><td>{}</td>\n<td>{}</td>\n<td>{}</td>\n<td>Yes</td>\n</tr>\n</table>\n<br />\n\n",
            html(&b.url_text),
            html(name),
            b.members.len(),
            b.members.len(),
            b.config.sticky.as_ref().map_or("(None)".into(), |s| html(&s.cookie).into_owned()),
            if b.config.sticky.as_ref().is_some_and(|s| s.nofailover) { "On" } else { "Off" },
            b.config.timeout.map_or(0, |t| t.as_secs()),
            b.config.maxattempts,
            html(&b.selector_name()),
            html(cx.paths.get(index).map_or("/", String::as_str)),
        );
        out.push_str(
            "<table><tr><th>Worker URL</th><th>Route</th><th>RouteRedir</th><th>Factor</th><th>Set</th>\
             <th>Status</th><th>Elected</th><th>Busy</th><th>Load</th><th>To</th><th>From</th></tr>\n",
        );
        let lbstatus = b.lbstatus();
        for (i, m) in b.members.iter().enumerate() {
            let c = &m.config;
            let edit =
                format!("{path}?b={}&amp;w={}&amp;nonce={}", html(&urlenc(name)), html(&urlenc(&c.url)), html(&n));
            let _ = writeln!(
                out,
                "<tr>\n<td><a href=\"{edit}\">{}</a></td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html(&c.url),
                html(&c.route),
                html(c.redirect.as_deref().unwrap_or("")),
                f64::from(c.lbfactor) / 100.0,
                c.lbset,
                html(&worker_status(b, i)),
                m.elected(),
                m.busy(),
                lbstatus.get(i).copied().unwrap_or(0),
                super::size(m.sent()),
                super::size(m.read()),
            );
        }
        out.push_str("</table>\n<br />\n");
    }
    out
}

fn member_form(out: &mut String, request: &LocalRequest<'_>, b: &Arc<Balancer>, i: usize) {
    let m = &b.members[i];
    let c = &m.config;
    let status = m.status();
    let _ = write!(
        out,
        "<hr />\n<h3>Edit worker settings for {}</h3>\n\
         <form method=\"POST\" enctype=\"application/x-www-form-urlencoded\" action=\"{}\">\n<table>\n\
         <tr><td>Load factor:</td><td><input name='w_lf' id='w_lf' type=text value='{}'></td></tr>\n\
         <tr><td>LB Set:</td><td><input name='w_ls' id='w_ls' type=text value='{}'></td></tr>\n\
         <tr><td>Route:</td><td><input name='w_wr' id='w_wr' type=text value='{}'></td></tr>\n\
         <tr><td>Route Redirect:</td><td><input name='w_rr' id='w_rr' type=text value='{}'></td></tr>\n\
         <tr><td>Status:</td><td><table><tr>",
        html(&c.url),
        html(&action(request)),
        c.lbfactor / 100,
        c.lbset,
        html(&c.route),
        html(c.redirect.as_deref().unwrap_or("")),
    );
    for (_, _, label) in FLAGS {
        let _ = write!(out, "<th>{label}</th>");
    }
    out.push_str("</tr>\n<tr>");
    for (letter, flag, _) in FLAGS {
        let on = status.contains(flag);
        let _ = write!(
            out,
            "<td><input name='w_status_{letter}' id='w_status_{letter}_1' value=1 type=radio{}> On \
             <input name='w_status_{letter}' id='w_status_{letter}_0' value=0 type=radio{}> Off</td>",
            if on { " checked" } else { "" },
            if on { "" } else { " checked" }
        );
    }
    let _ = write!(
        out,
        "</tr>\n</table></td></tr>\n<tr><td colspan=2><input type=submit value='Submit'></td></tr>\n</table>\n\
         <input type=hidden name='w' id='w' value='{}'>\n<input type=hidden name='b' id='b' value='{}'>\n\
         <input type=hidden name='nonce' id='nonce' value='{}'>\n</form>\n",
        html(&c.url),
        html(&b.config.name),
        html(&nonce(&b.config.name)),
    );
}

fn balancer_form(out: &mut String, request: &LocalRequest<'_>, b: &Arc<Balancer>, cx: &Context<'_>) {
    let c = &b.config;
    let current = b.selector_name();
    let methods = cx.reconfigure.map(|r| r.lbmethods()).unwrap_or_else(|| vec![current.clone()]);
    let _ = write!(
        out,
        "<hr />\n<h3>Edit balancer settings for {}</h3>\n\
         <form method=\"POST\" enctype=\"application/x-www-form-urlencoded\" action=\"{}\">\n<table>\n\
         <tr><td>LBmethod:</td><td>\n<select name='b_lbm' id='b_lbm'>\n",
        html(&b.url_text),
        html(&action(request)),
    );
    for method in &methods {
        let _ = writeln!(
            out,
            "<option value='{}'{}>{}</option>",
            html(method),
            if *method == c.lbmethod { " selected" } else { "" },
            html(method)
        );
    }
    let nofailover = c.sticky.as_ref().is_some_and(|s| s.nofailover);
    let _ = write!(
        out,
        "</select>\n</td></tr>\n\
         <tr><td>Timeout:</td><td><input name='b_tmo' id='b_tmo' type=text value='{}'></td></tr>\n\
         <tr><td>Failover Attempts:</td><td><input name='b_max' id='b_max' type=text value='{}'></td></tr>\n\
         <tr><td>Disable Failover:</td><td><input name='b_sforce' id='b_sforce_1' value=1 type=radio{}> On \
         <input name='b_sforce' id='b_sforce_0' value=0 type=radio{}> Off</td></tr>\n\
         <tr><td>Sticky Session:</td><td><input name='b_ss' id='b_ss' size=64 type=text value='{}'></td></tr>\n\
         <tr><td>Add New Worker:</td><td><input name='b_nwrkr' id='b_nwrkr' size=32 type=text> \
         Are you sure? <input name='b_wyes' id='b_wyes' type=checkbox value='1'></td></tr>\n\
         <tr><td colspan=2><input type=submit value='Submit'></td></tr>\n</table>\n\
         <input type=hidden name='b' id='b' value='{}'>\n<input type=hidden name='nonce' id='nonce' value='{}'>\n</form>\n",
        c.timeout.map_or(0, |t| t.as_secs()),
        c.maxattempts,
        if nofailover { " checked" } else { "" },
        if nofailover { "" } else { " checked" },
        html(c.sticky.as_ref().map_or("", |s| s.cookie.as_str())),
        html(&c.name),
        html(&nonce(&c.name)),
    );
}

/// `?xml=1` (§9.8): `<httpd:manager>` with each balancer and its workers.
fn xml(cx: &Context<'_>) -> String {
    let mut out = String::from(
        "<?xml version='1.0' encoding='UTF-8' ?>\n<httpd:manager xmlns:httpd='http://httpd.apache.org'>\n  <httpd:balancers>\n",
    );
    for b in cx.balancers {
        let c = &b.config;
        let sticky = c.sticky.as_ref();
        let _ = write!(
            out,
            "    <httpd:balancer>\n      <httpd:name>{}</httpd:name>\n      <httpd:nonce>{}</httpd:nonce>\n\
             {}      <httpd:nofailover>{}</httpd:nofailover>\n      <httpd:timeout>{}</httpd:timeout>\n\
             <httpd:maxattempts>{}</httpd:maxattempts>\n      <httpd:lbmethod>{}</httpd:lbmethod>\n\
             <httpd:scolonpathdelim>Off</httpd:scolonpathdelim>\n      <httpd:workers>\n",
            html(&b.url_text),
            html(&nonce(&c.name)),
            sticky.map_or(String::new(), |s| format!(
                "      <httpd:stickysession>{}</httpd:stickysession>\n",
                html(&s.cookie)
            )),
            if sticky.is_some_and(|s| s.nofailover) { "On" } else { "Off" },
            c.timeout.map_or(0, |t| t.as_secs()),
            c.maxattempts,
            html(&b.selector_name()),
        );
        let lbstatus = b.lbstatus();
        for (i, m) in b.members.iter().enumerate() {
            let w = &m.config;
            let _ = write!(
                out,
                "        <httpd:worker>\n          <httpd:name>{}</httpd:name>\n          <httpd:scheme>{}</httpd:scheme>\n\
                 <httpd:hostname>{}</httpd:hostname>\n          <httpd:loadfactor>{:.2}</httpd:loadfactor>\n\
                 <httpd:port>{}</httpd:port>\n          <httpd:retry>{}</httpd:retry>\n\
                 <httpd:lbstatus>{}</httpd:lbstatus>\n          <httpd:elected>{}</httpd:elected>\n\
                 <httpd:busy>{}</httpd:busy>\n          <httpd:lbset>{}</httpd:lbset>\n\
                 <httpd:route>{}</httpd:route>\n          <httpd:redirect>{}</httpd:redirect>\n\
                 <httpd:status>{}</httpd:status>\n          <httpd:transferred>{}</httpd:transferred>\n\
                 <httpd:read>{}</httpd:read>\n        </httpd:worker>\n",
                html(&w.url),
                w.scheme.as_str(),
                html(w.authority.host()),
                f64::from(w.lbfactor) / 100.0,
                w.authority.port_u16().unwrap_or(80),
                w.retry.as_secs(),
                lbstatus.get(i).copied().unwrap_or(0),
                m.elected(),
                m.busy(),
                w.lbset,
                html(&w.route),
                html(w.redirect.as_deref().unwrap_or("")),
                html(worker_status(b, i).trim_end()),
                m.sent(),
                m.read(),
            );
        }
        out.push_str("      </httpd:workers>\n    </httpd:balancer>\n");
    }
    out.push_str("  </httpd:balancers>\n</httpd:manager>\n");
    out
}

/// Percent-encoding for a query parameter value.
fn urlenc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(method: &'a Method, uri: &'a hyper::Uri, headers: &'a hyper::HeaderMap) -> LocalRequest<'a> {
        LocalRequest {
            method,
            uri,
            headers,
            host: "127.0.0.1",
            local: [127, 0, 0, 1].into(),
            scheme: "http",
            form: None,
        }
    }

    /// Referer → whether it is the request's host (127.0.0.1).
    #[test]
    fn referer_host_must_be_the_requests() {
        let cases = [
            (Some("http://127.0.0.1:18080/balancer-manager"), true),
            (Some("http://127.0.0.1/"), true),
            (Some("https://127.0.0.1:9/x?y"), true),
            (Some("http://user@127.0.0.1/"), true),
            (Some("http://evil.example/balancer-manager"), false),
            (Some("http://127.0.0.1.evil.example/"), false),
            (Some("/balancer-manager"), false),
            (None, false),
        ];
        let (method, uri) = (Method::GET, hyper::Uri::from_static("/balancer-manager"));
        for (referer, expected) in cases {
            let mut headers = hyper::HeaderMap::new();
            if let Some(r) = referer {
                headers.insert(REFERER, r.parse().unwrap());
            }
            assert_eq!(same_host_referer(&request(&method, &uri, &headers)), expected, "{referer:?}");
        }
    }

    #[test]
    fn nonces_are_uuids_kept_for_the_process() {
        let a = nonce("a");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(nonce("a"), a);
        assert_ne!(nonce("b"), a);
    }
}
