//! `/server-status`, as mod_status shows it with `ProxyStatus On` (docs/apache-behaviour.md §9.3,
//! §9.4): the HTML page, and `?auto` for scripts (`Key: value` lines, then one block per balancer
//! member, `ProxyBalancer[i]Worker[j]…`, in Apache's spelling).
//!
//! Apache's keys are kept where Fulcrum has the same figure: uptime, total accesses and kBytes,
//! requests and bytes per second, busy workers (requests being served), connections. Keys about
//! Apache's processes, scoreboard and CPU accounting have no Fulcrum counterpart and are left out.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{Context, LocalRequest, Page, html, size};
use crate::balancer::{Balancer, MemberStatus};
use crate::stats;

/// Apache's worker status string (`ap_proxy_parse_wstatus`): `Init `, then the flags set (`Ign `,
/// `Drn `, `Dis `, `Stop `, `Err `, `Stby `, `Spar `, `HcFl `), then `Ok ` when the member is usable.
pub fn worker_status(balancer: &Balancer, index: usize) -> String {
    let status = balancer.members[index].status();
    let mut out = String::from("Init ");
    let flags = [
        (MemberStatus::IGNORE_ERRORS, "Ign "),
        (MemberStatus::DRAINING, "Drn "),
        (MemberStatus::DISABLED, "Dis "),
        (MemberStatus::STOPPED, "Stop "),
    ];
    for (flag, name) in flags {
        if status.contains(flag) {
            out.push_str(name);
        }
    }
    if balancer.in_error(index) {
        out.push_str("Err ");
    }
    for (flag, name) in
        [(MemberStatus::HOT_STANDBY, "Stby "), (MemberStatus::SPARE, "Spar "), (MemberStatus::HC_FAILED, "HcFl ")]
    {
        if status.contains(flag) {
            out.push_str(name);
        }
    }
    if balancer.is_usable(index) {
        out.push_str("Ok ");
    }
    out
}

pub fn page(request: &LocalRequest<'_>, cx: &Context<'_>) -> Page {
    let now = stats::snapshot();
    if request.uri.query().is_some_and(|q| q.split('&').any(|p| p == "auto")) {
        return Page::new("text/plain; charset=ISO-8859-1", auto(request.host, &now, cx))
            .with("vary", "Accept-Encoding");
    }
    Page::new("text/html; charset=ISO-8859-1", html_page(request, &now, cx)).with("vary", "Accept-Encoding")
}

fn auto(host: &str, s: &stats::Snapshot, cx: &Context<'_>) -> String {
    let mut out = String::new();
    let uptime = s.uptime.as_secs();
    let _ = writeln!(out, "{host}");
    let _ = writeln!(out, "ServerVersion: {}", crate::proxy::SERVER);
    let _ = writeln!(out, "CurrentTime: {}", httpdate::fmt_http_date(SystemTime::now()));
    let _ = writeln!(out, "RestartTime: {}", httpdate::fmt_http_date(s.started));
    let _ = writeln!(out, "ServerUptimeSeconds: {uptime}");
    let _ = writeln!(out, "ServerUptime: {}", words(uptime));
    let _ = writeln!(out, "Total Accesses: {}", s.requests);
    let _ = writeln!(out, "Total kBytes: {}", s.bytes / 1024);
    let _ = writeln!(out, "Uptime: {uptime}");
    // Apache leaves the rates out while the uptime is 0 s.
    if uptime > 0 {
        let _ = writeln!(out, "ReqPerSec: {}", s.requests as f64 / uptime as f64);
        let _ = writeln!(out, "BytesPerSec: {}", s.bytes as f64 / uptime as f64);
    }
    if s.requests > 0 {
        let _ = writeln!(out, "BytesPerReq: {}", s.bytes as f64 / s.requests as f64);
    }
    let _ = writeln!(out, "BusyWorkers: {}", s.busy);
    let _ = writeln!(out, "ConnsTotal: {}", s.connections);
    for (i, b) in cx.balancers.iter().enumerate() {
        let _ = writeln!(out, "ProxyBalancer[{i}]Name: balancer://{}", b.config.name);
        for (j, m) in b.members.iter().enumerate() {
            let w = format!("ProxyBalancer[{i}]Worker[{j}]");
            let _ = writeln!(out, "{w}Name: {}", m.config.url);
            let _ = writeln!(out, "{w}Status: {}", worker_status(b, j));
            let _ = writeln!(out, "{w}Elected: {}", m.elected());
            let _ = writeln!(out, "{w}Busy: {}", m.busy());
            let _ = writeln!(out, "{w}Sent: {}K", m.sent() / 1024);
            let _ = writeln!(out, "{w}Rcvd: {}K", m.read() / 1024);
        }
    }
    out
}

/// `1 hour 2 minutes 3 seconds`, as mod_status writes an uptime.
fn words(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    let mut add = |n: u64, unit: &str| {
        if n > 0 || (unit == "second" && parts.is_empty()) {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    };
    add(days, "day");
    add(hours, "hour");
    add(minutes, "minute");
    add(seconds, "second");
    parts.join(" ")
}

fn html_page(request: &LocalRequest<'_>, s: &stats::Snapshot, cx: &Context<'_>) -> String {
    let host = html(request.host);
    let uptime = s.uptime.as_secs();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html><head>\n<title>Fulcrum Status</title>\n\
         </head><body>\n<h1>Fulcrum Server Status for {host} (via {})</h1>\n\n\
         <dl><dt>Server Version: {}</dt>\n</dl><hr /><dl>\n\
         <dt>Current Time: {}</dt>\n<dt>Restart Time: {}</dt>\n<dt>Server uptime: {}</dt>\n\
         <dt>Total accesses: {} - Total Traffic: {}B</dt>\n",
        request.local,
        crate::proxy::SERVER,
        httpdate::fmt_http_date(SystemTime::now()),
        httpdate::fmt_http_date(s.started),
        words(uptime),
        s.requests,
        size(s.bytes),
    );
    if uptime > 0 && s.requests > 0 {
        let _ = writeln!(
            out,
            "<dt>{:.3} requests/sec - {}B/second - {}B/request</dt>",
            s.requests as f64 / uptime as f64,
            size(s.bytes / uptime),
            size(s.bytes / s.requests)
        );
    }
    let _ = writeln!(
        out,
        "<dt>{} requests currently being processed, {} connections open</dt>\n</dl>",
        s.busy, s.connections
    );
    for b in cx.balancers {
        let sticky = b.config.sticky.as_ref().map_or(String::from("(None)"), |s| html(&s.cookie).into_owned());
        let _ = write!(
            out,
            "<hr />\n<h1>Proxy LoadBalancer Status for {}</h1>\n\n\n<table><tr><th>SSes</th><th>Timeout</th>\
             <th>Method</th></tr>\n<tr><td>{sticky}</td><td>{}</td><td>{}</td>\n</table>\n<br />\n\n\
             <table>\n<tr><th>Sch</th><th>Host</th><th>Stat</th><th>Route</th><th>Redir</th><th>F</th>\
             <th>Set</th><th>Acc</th><th>Busy</th><th>Wr</th><th>Rd</th></tr>\n",
            html(&b.url_text),
            b.config.timeout.map_or(0, |t| t.as_secs()),
            html(&b.selector_name()),
        );
        for (j, m) in b.members.iter().enumerate() {
            let c = &m.config;
            let _ = writeln!(
                out,
                "<tr>\n<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td>\n</tr>",
                c.scheme.as_str(),
                html(c.authority.as_str()),
                html(&worker_status(b, j)),
                html(&c.route),
                html(c.redirect.as_deref().unwrap_or("")),
                f64::from(c.lbfactor) / 100.0,
                c.lbset,
                m.elected(),
                m.busy(),
                size(m.sent()),
                size(m.read()),
            );
        }
        let _ = writeln!(out, "</table>");
    }
    let _ = writeln!(out, "<hr />\n<address>{} Server at {host}</address>\n</body></html>", crate::proxy::SERVER);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_in_words() {
        assert_eq!(words(0), "0 seconds");
        assert_eq!(words(1), "1 second");
        assert_eq!(words(3723), "1 hour 2 minutes 3 seconds");
        assert_eq!(words(86_400 + 60), "1 day 1 minute");
    }
}
