//! The guide's rules per request, natively (no Wasm): one `on-request` and one `on-response` over
//! inputs built once as the host builds them, so only the guest's own work is timed. Two requests:
//! without X-Forwarded-For (the SetEnvIf regex does not run) and with it.
//!
//! `cargo bench -p apache-rules --bench guide` (in `plugins/`). Prints the median of several runs
//! and the heap allocations per request (in the component, each is a call into the plugins' allocator
//! and a free).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use apache_rules::ApacheRules;
use apache_rules::testing::{PluginConfig, RequestView, ResponseOrigin, ResponseView};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn guide() -> String {
    let example = include_str!("../../../examples/apache-guide.toml");
    let start = example.find("directives = '''").expect("the example has directives") + "directives = '''".len();
    let end = start + example[start..].find("'''").expect("closed");
    example[start..end].to_string()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn bench(name: &str, rules: &mut ApacheRules, x_forwarded_for: Option<&str>) {
    let mut headers = pairs(&[
        ("host", "www.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("cookie", "session=abc123; theme=dark"),
    ]);
    if let Some(xff) = x_forwarded_for {
        headers.push(("x-forwarded-for".into(), xff.into()));
    }
    let request = RequestView {
        method: "GET".into(),
        path: "/index.html".into(),
        query: String::new(),
        client_addr: "127.0.0.1".into(),
        host: "www.example.com".into(),
        headers,
    };
    let clock = [("FULCRUM_REQUEST_START_US", "1700000000000000"), ("FULCRUM_NOW_US", "1700000000000100")];
    let request_env = pairs(&clock);
    // The request phase's results, as the host would pass them to the response phase.
    let first = rules.on_request(&request, &request_env);
    let mut response_env = request_env.clone();
    for action in &first.env {
        if let Some(value) = &action.value {
            response_env.push((action.name.clone(), value.clone()));
        }
    }
    response_env.push(("BALANCER_WORKER_ROUTE".into(), "web1".into()));
    response_env.push(("BALANCER_ROUTE_CHANGED".into(), "1".into()));
    let mut sent = request.clone();
    sent.headers.retain(|(n, _)| n != "x-forwarded-for");
    for action in &first.headers {
        sent.headers.push((action.name.to_ascii_lowercase(), action.value.clone()));
    }
    let response =
        ResponseView { status: 200, origin: ResponseOrigin::Proxied, headers: pairs(&[("content-type", "text/html")]) };
    let on_request = rules.prepare(&request, None, &request_env);
    let on_response = rules.prepare(&sent, Some(&response), &response_env);
    let mut spans = Vec::new();
    let mut once = |rules: &mut ApacheRules| {
        black_box(rules.run_prepared(black_box(&on_request), &mut spans));
        black_box(rules.run_prepared(black_box(&on_response), &mut spans));
    };
    for _ in 0..10_000 {
        once(rules);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    once(rules);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let iterations = 200_000;
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                once(rules);
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!(
        "{name:<28} {:>7.0} ns/request (median of 7; min {:.0}, max {:.0}), {allocations} allocations/request",
        runs[3], runs[0], runs[6]
    );
}

fn main() {
    let config = PluginConfig {
        name: "apache-rules".into(),
        options: vec![("directives".into(), guide())],
        toml: String::new(),
    };
    let (mut rules, _) = ApacheRules::configure(&config).expect("the guide configures");
    bench("guide, no X-Forwarded-For", &mut rules, None);
    bench("guide, X-Forwarded-For", &mut rules, Some("203.0.113.7, 10.0.0.1"));
}
