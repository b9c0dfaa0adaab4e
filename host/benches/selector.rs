//! The cost of one member selection through a Wasm selector plugin (the built-in `byrequests`):
//! the host copying the candidate list and lbstatus counters in, the component call, and the new
//! counters coming back. Also the whole `Balancer::choose` step (lock, candidates, call, checks).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balancer::{Balancer, BalancerSpec, RequestInfo, SelectState, SelectorFactory};
use fulcrum::config::{BalancerConfig, Config};
use fulcrum::plugin::{PluginLimits, PluginRegistry};
use hyper::http::{HeaderMap, Method, Uri};

const SIZES: [usize; 4] = [2, 16, 256, 1000];

fn balancer_config(n: usize) -> BalancerConfig {
    let mut text = String::from(
        "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\nproxy_pass = [{ path = \"/\", to = \"balancer://b/\" }]\n[balancer.b]\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[balancer.b.member]]\nurl = \"http://10.0.{}.{}:8080\"\nroute = \"m{i}\"\nloadfactor = {}\n",
            i / 250,
            i % 250,
            1 + i % 3
        ));
    }
    Config::parse(&text, std::path::Path::new("bench.toml")).expect("bench config").balancers.remove(0)
}

fn bench(c: &mut Criterion) {
    let registry = PluginRegistry::load(None, PluginLimits::default()).expect("built-in plugins");
    let (method, uri, headers) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
    let request =
        RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &[127, 0, 0, 1].into(), host: "b" };

    let mut group = c.benchmark_group("byrequests select (Wasm call)");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for n in SIZES {
        let config = balancer_config(n);
        let spec = BalancerSpec {
            name: "b",
            lbmethod: "byrequests",
            members: &config.members,
            config: &config.lbmethod_config,
        };
        let mut selector = registry.selector(&spec).expect("byrequests");
        let candidates: Vec<u32> = (0..n as u32).collect();
        let mut lbstatus = vec![0i64; n];
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let state =
                    SelectState { candidates: &candidates, lbstatus: &lbstatus, busy: &[], traffic: &[], load: &[] };
                let selection = selector.select(black_box(&request), &state).expect("select");
                lbstatus = selection.lbstatus;
                black_box(selection.member)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("Balancer::choose (lock + candidates + Wasm call + checks)");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for n in SIZES {
        let config = balancer_config(n);
        let spec = BalancerSpec {
            name: "b",
            lbmethod: "byrequests",
            members: &config.members,
            config: &config.lbmethod_config,
        };
        let balancer = Arc::new(Balancer::new(&config, registry.selector(&spec).expect("byrequests")));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(balancer.choose(black_box(&request), &[]).expect("choose").index()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
