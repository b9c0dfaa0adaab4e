//! `apache-rules`: Apache's mod_setenvif and mod_headers (with `<If>`/`<ElseIf>`/`<Else>` and a
//! subset of ap_expr) as a Fulcrum rules plugin.
//!
//! The user writes Apache directives verbatim, in a TOML multi-line string under the key
//! `directives`, so a working Apache set-up carries over unchanged; the guide's rules are:
//!
//! ```text
//! SetEnvIf X-Forwarded-For "(([\d]{1,3}\.?){4})" FORWARD_IP=$1
//! <If "-z env('FORWARD_IP')">
//!   RequestHeader set X-Forwarded-For %{REMOTE_ADDR}s
//! </If>
//! <Else>
//!   RequestHeader set X-Forwarded-For "%{FORWARD_IP}e"
//! </Else>
//! Header add Set-Cookie "BALANCEID=balancer.%{BALANCER_WORKER_ROUTE}e; path=/;" env=BALANCER_ROUTE_CHANGED
//! ```
//!
//! Everything is parsed, checked and compiled once in `configure` (a mistake is an error naming
//! its line: `line 3: Header: ...`); per request the plugin only evaluates, and never panics.
//!
//! Modules, in the order the text flows through them:
//! - [`parse`]: lines, comments, continuations and quoting, as httpd reads its files;
//! - [`directive`]: the directives and sections, checked and compiled into rules;
//! - [`expr`]: the ap_expr subset of `<If>` and `expr=`;
//! - [`format`](mod@format): mod_headers' `%{VAR}e`-style value formats;
//! - [`pattern`]: regexes with PCRE's byte semantics, and `$1` substitution;
//! - [`needs`]: which request fields, headers and variables the rules read, and what they change;
//! - [`context`]: the environment and header tables rules read at run time;
//! - [`engine`]: the two phases, `on_request` and `on_response`;
//! - [`testing`]: the plugin driven natively with owned requests and named actions (tests, fuzzing).

pub mod context;
pub mod directive;
pub mod engine;
pub mod expr;
pub mod format;
pub mod needs;
pub mod parse;
pub mod pattern;
pub mod testing;

use fulcrum_sdk::rules::*;

/// The only option: the Apache directives, as text.
pub const DIRECTIVES: &str = "directives";

pub struct ApacheRules {
    engine: engine::Engine,
    /// What configure declared, for [`testing`] to build inputs as the host does.
    layout: Layout,
}

impl Rules for ApacheRules {
    fn configure(config: &PluginConfig, needs: &mut Needs) -> Result<Self, PluginError> {
        let mut text = "";
        for (key, value) in &config.options {
            if key == DIRECTIVES {
                text = value;
            } else {
                return Err(PluginError::InvalidOption((
                    key.clone(),
                    format!("unknown option: apache-rules takes only `{DIRECTIVES}` (the Apache directives, as text)"),
                )));
            }
        }
        let (engine, declared) = directive::compile(text)
            .map_err(|e| PluginError::InvalidOption((DIRECTIVES.to_string(), e.to_string())))?;
        *needs = declared;
        Ok(ApacheRules { engine, layout: Layout::new(needs.clone()) })
    }

    fn on_request(&mut self, call: &RequestCall<'_>) -> Outcome {
        self.engine.on_request(call)
    }

    fn on_response(&mut self, call: &ResponseCall<'_>) -> Outcome {
        self.engine.on_response(call)
    }
}

fulcrum_sdk::export_rules!(ApacheRules);

/// Small blocks from size-class free lists instead of dlmalloc: every call allocates its inputs and
/// answer, and frees them (`fulcrum_sdk::allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: fulcrum_sdk::allocator::PluginAllocator = fulcrum_sdk::allocator::PluginAllocator::new();
