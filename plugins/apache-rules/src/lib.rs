//! `apache-rules`: Apache's mod_setenvif and mod_headers as a Fulcrum rules plugin.
//! (Skeleton: the engine is being written.)

use fulcrum_sdk::rules::*;

pub struct ApacheRules;

impl Rules for ApacheRules {
    fn configure(_config: &PluginConfig) -> Result<(Self, Needs), PluginError> {
        Ok((ApacheRules, Needs::default()))
    }

    fn on_request(&mut self, _request: &RequestView, _env: &[(String, String)]) -> Outcome {
        Outcome::default()
    }

    fn on_response(&mut self, _request: &RequestView, _response: &ResponseView, _env: &[(String, String)]) -> Outcome {
        Outcome::default()
    }
}

fulcrum_sdk::export_rules!(ApacheRules);
