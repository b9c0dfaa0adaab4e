//! The apache-rules directives text: compile (lines, words, directives, expressions, formats,
//! regexes) never panics and errors name a line of the text; what compiles runs on a request.
#![no_main]

use apache_rules::testing::{PluginConfig, RequestView};
use apache_rules::{ApacheRules, DIRECTIVES, directive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match directive::compile(text) {
        Err(e) => assert!(e.line >= 1 && e.line <= text.split('\n').count(), "line {} out of range", e.line),
        Ok(_) => {
            let config = PluginConfig {
                name: "apache-rules".into(),
                options: vec![(DIRECTIVES.into(), text.into())],
                toml: String::new(),
            };
            let Ok((mut rules, _)) = ApacheRules::configure(&config) else { panic!("compiled, then refused") };
            let request = RequestView {
                method: "GET".into(),
                path: "/app/x".into(),
                query: "a=1".into(),
                client_addr: "10.0.0.7".into(),
                host: "www.example.com".into(),
                headers: vec![
                    ("x-forwarded-for".into(), "1.2.3.4".into()),
                    ("user-agent".into(), "Mozilla/5.0".into()),
                    ("cookie".into(), "BALANCEID=balancer.web1".into()),
                ],
            };
            let _ = rules.on_request(&request, &[("BALANCER_ROUTE_CHANGED".into(), "1".into())]);
        }
    }
});
