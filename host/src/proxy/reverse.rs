//! ProxyPassReverse: rewriting member URLs in redirects back to this server (docs/apache-behaviour.md §7.2).

use std::sync::Arc;

use crate::balancer::Balancer;
use crate::config::{ReverseRule, ReverseTarget};

/// The local path (`/redirected`) that `value` maps to, when it starts with a member URL of a
/// rule's target; `None` leaves the header alone (foreign and relative URLs).
///
/// Unlike Apache (QUIRK §7.3), the member URL must end on a boundary: `http://10.0.0.1:80010/x`
/// does not match member `http://10.0.0.1:8001`.
pub fn map(value: &str, rules: &[ReverseRule], balancers: &[Arc<Balancer>]) -> Option<String> {
    for rule in rules {
        let mut prefixes: Vec<String> = Vec::new();
        match &rule.target {
            ReverseTarget::Url(url) => prefixes.push(url.clone()),
            ReverseTarget::Balancer { index, path } => {
                let part = if path == "/" { "" } else { path.as_str() };
                for m in &balancers[*index].members {
                    prefixes.push(format!("{}{part}", m.config.url.trim_end_matches('/')));
                }
            }
        }
        for prefix in prefixes {
            let prefix = prefix.trim_end_matches('/');
            let Some(head) = value.get(..prefix.len()) else { continue };
            if !head.eq_ignore_ascii_case(prefix) {
                continue;
            }
            let rest = &value[prefix.len()..];
            if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
                continue;
            }
            let local = rule.path.trim_end_matches('/');
            let rest = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
            return Some(format!("{local}{rest}"));
        }
    }
    None
}
