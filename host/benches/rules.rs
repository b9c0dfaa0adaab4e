//! The cost of the guide's header rules per request: one `on-request` and one `on-response` call
//! of the built-in `apache-rules` component, with 10 request headers, including the host building
//! the request view and applying the answers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::balancer::RequestInfo;
use fulcrum::plugin::{PluginLimits, PluginRegistry};
use fulcrum::rules::{Clock, Env, Origin, ResponseInfo, RulesFactory, apply_headers};
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

fn guide_directives() -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/apache-guide.toml")).unwrap();
    let start = example.find("directives = '''").expect("the guide example has directives") + "directives = '''".len();
    let end = start + example[start..].find("'''").unwrap();
    example[start..end].trim_start_matches('\n').to_string()
}

fn bench(c: &mut Criterion) {
    let registry = PluginRegistry::load(None, PluginLimits::default()).expect("built-in plugins");
    let mut table = toml::Table::new();
    table.insert("directives".into(), toml::Value::String(guide_directives()));
    let rules = registry.rules("apache-rules", &table).unwrap_or_else(|e| panic!("{}", e.message));

    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "www.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ("cookie", "session=abc123; theme=dark"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("cache-control", "max-age=0"),
    ] {
        headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let (method, uri) = (Method::GET, Uri::from_static("/index.html"));
    let request = RequestInfo {
        id: 1,
        method: &method,
        uri: &uri,
        headers: &headers,
        client: &[127, 0, 0, 1].into(),
        host: "www.example.com",
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert("content-type", HeaderValue::from_static("text/html"));

    let mut group = c.benchmark_group("guide rules");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.bench_function("on-request + on-response, 10 request headers", |b| {
        b.iter(|| {
            let mut env = Env::default();
            let mut upstream = headers.clone();
            let clock = Clock { request_start_us: 1_700_000_000_000_000, now_us: 1_700_000_000_000_100 };
            let outcome = rules.on_request(black_box(&request), &env, clock).expect("on-request");
            env.apply(outcome.env);
            apply_headers(&mut upstream, outcome.headers);
            env.set("BALANCER_WORKER_ROUTE", "web1");
            env.set("BALANCER_ROUTE_CHANGED", "1");
            let mut out = response_headers.clone();
            let view = ResponseInfo { status: 200, origin: Origin::Proxied, headers: &out.clone() };
            let outcome = rules.on_response(&request, &view, &env, clock).expect("on-response");
            apply_headers(&mut out, outcome.headers);
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
