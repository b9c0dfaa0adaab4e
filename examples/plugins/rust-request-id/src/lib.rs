//! `request-id`: a rules plugin in Rust (through `fulcrum-sdk`) that gives every request an id.
//!
//! A client's own `X-Request-Id` is kept when it looks like an id (1 to 64 letters, digits, `-`,
//! `_`, `.`); otherwise the request gets Fulcrum's `UNIQUE_ID` (Apache mod_unique_id's variable).
//! The member sees the id in `X-Request-Id`, the client gets it back in the response, and the
//! env variable `REQUEST_ID` holds it for the access log (`%{REQUEST_ID}e`). The header name is
//! the option `header` (default `X-Request-Id`).

use fulcrum_sdk::rules::*;

pub struct RequestId {
    header: String,
}

const ENV: &str = "REQUEST_ID";

fn looks_like_an_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn env<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

impl Rules for RequestId {
    fn configure(config: &PluginConfig) -> Result<(Self, Needs), PluginError> {
        let mut header = "X-Request-Id".to_string();
        for (key, value) in &config.options {
            match key.as_str() {
                "header" if !value.is_empty() => header = value.clone(),
                "header" => return Err(PluginError::InvalidOption((key.clone(), "must not be empty".into()))),
                other => {
                    return Err(PluginError::InvalidOption((other.into(), "unknown option (known: header)".into())));
                }
            }
        }
        let needs = Needs { request_headers: vec![header.clone()], ..Needs::default() };
        Ok((RequestId { header }, needs))
    }

    fn on_request(&mut self, request: &RequestView, env_now: &[(String, String)]) -> Outcome {
        let sent = request.headers.iter().map(|(_, v)| v.as_str()).find(|v| looks_like_an_id(v));
        let id = sent.or_else(|| env(env_now, "UNIQUE_ID")).unwrap_or("-").to_string();
        Outcome {
            env: vec![EnvAction { name: ENV.into(), value: Some(id.clone()) }],
            headers: vec![HeaderAction { op: HeaderOp::Set, name: self.header.clone(), value: id }],
        }
    }

    fn on_response(
        &mut self,
        _request: &RequestView,
        _response: &ResponseView,
        env_now: &[(String, String)],
    ) -> Outcome {
        let headers = env(env_now, ENV)
            .map(|id| vec![HeaderAction { op: HeaderOp::Set, name: self.header.clone(), value: id.to_string() }])
            .unwrap_or_default();
        Outcome { env: Vec::new(), headers }
    }
}

fulcrum_sdk::export_rules!(RequestId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_an_id() {
        assert!(looks_like_an_id("3f2a-77.b_1"));
        assert!(!looks_like_an_id(""));
        assert!(!looks_like_an_id("has space"));
        assert!(!looks_like_an_id(&"x".repeat(65)));
    }
}
