//! `request-id`: a rules plugin in Rust (through `fulcrum-sdk`) that gives every request an id.
//!
//! A client's own `X-Request-Id` is kept when it looks like an id (1 to 64 letters, digits, `-`,
//! `_`, `.`); otherwise the request gets Fulcrum's `UNIQUE_ID` (Apache mod_unique_id's variable).
//! The member sees the id in `X-Request-Id`, the client gets it back in the response, and the
//! env variable `REQUEST_ID` holds it for the access log (`%{REQUEST_ID}e`). The header name is
//! the option `header` (default `X-Request-Id`).

use fulcrum_sdk::rules::*;

pub struct RequestId {
    /// The header, as a target of actions (declared at configure: actions name it by index).
    target: Target,
    header: String,
    unique_id: EnvVar,
    request_id: EnvVar,
}

fn looks_like_an_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Rules for RequestId {
    fn configure(config: &PluginConfig, needs: &mut Needs) -> Result<Self, PluginError> {
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
        needs.request_header(&header);
        Ok(RequestId {
            target: needs.target(&header),
            header,
            // Declaring UNIQUE_ID is what makes Fulcrum generate it for these requests.
            unique_id: needs.env("UNIQUE_ID"),
            request_id: needs.env("REQUEST_ID"),
        })
    }

    fn on_request(&mut self, call: &RequestCall<'_>) -> Outcome {
        // A header sent on several lines arrives joined by `\n`: the first line that is an id wins.
        let sent = call.header(&self.header).and_then(|v| v.split('\n').find(|v| looks_like_an_id(v)));
        let id = sent.or_else(|| call.env_at(self.unique_id)).unwrap_or("-").to_string();
        let mut outcome = Outcome::default();
        outcome.set_env(self.request_id, id.clone());
        outcome.header(HeaderOp::Set, self.target, id);
        outcome
    }

    fn on_response(&mut self, call: &ResponseCall<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        if let Some(id) = call.env_at(self.request_id) {
            outcome.header(HeaderOp::Set, self.target, id);
        }
        outcome
    }
}

fulcrum_sdk::export_rules!(RequestId);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();

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
