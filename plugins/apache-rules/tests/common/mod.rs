//! Helpers for the end-to-end tests: build the plugin from directives, requests and responses
//! from literals, and outcomes as plain tuples that compare with `assert_eq!`.
#![allow(dead_code)] // each test binary uses its own part

use apache_rules::ApacheRules;
use apache_rules::testing::*;

pub fn plugin(directives: &str) -> (ApacheRules, Needs) {
    let config = PluginConfig {
        name: "apache-rules".into(),
        options: vec![("directives".into(), directives.into())],
        toml: String::new(),
    };
    match ApacheRules::configure(&config) {
        Ok(configured) => configured,
        Err(e) => panic!("configure failed: {e:?}\n{directives}"),
    }
}

/// The configure error's key and message.
pub fn configure_error(options: &[(&str, &str)]) -> (String, String) {
    let config = PluginConfig {
        name: "apache-rules".into(),
        options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        toml: String::new(),
    };
    match ApacheRules::configure(&config) {
        Ok(_) => panic!("configure accepted {options:?}"),
        Err(PluginError::InvalidOption((key, message))) => (key, message),
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

/// A GET for `/` from `client` with these header lines (names lower-cased, as the host sends them).
pub fn request(client: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView {
        method: "GET".into(),
        path: "/".into(),
        query: String::new(),
        client_addr: client.into(),
        host: "www.example.com".into(),
        headers: headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect(),
    }
}

pub fn response(status: u16, origin: ResponseOrigin, headers: &[(&str, &str)]) -> ResponseView {
    ResponseView {
        status,
        origin,
        headers: headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect(),
    }
}

pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

pub type Header = (&'static str, String, String);

/// `(name, value)` per env action (`None`: unset).
pub type EnvActions = Vec<(String, Option<String>)>;

/// Environment entries or header lines as literals.
pub type Pairs = Vec<(&'static str, &'static str)>;

/// `(op, name, value)` per header action, in order.
pub fn headers(outcome: &Outcome) -> Vec<Header> {
    outcome
        .headers
        .iter()
        .map(|a| {
            let op = match a.op {
                HeaderOp::Set => "set",
                HeaderOp::Append => "append",
                HeaderOp::Add => "add",
                HeaderOp::Unset => "unset",
                HeaderOp::Merge => "merge",
                HeaderOp::SetIfEmpty => "set-if-empty",
            };
            (op, a.name.clone(), a.value.clone())
        })
        .collect()
}

/// `(name, value)` per env action, in order (`None`: unset).
pub fn env_actions(outcome: &Outcome) -> EnvActions {
    outcome.env.iter().map(|a| (a.name.clone(), a.value.clone())).collect()
}

/// Shorthand for an expected header action.
pub fn h(op: &'static str, name: &str, value: &str) -> Header {
    (op, name.to_string(), value.to_string())
}
