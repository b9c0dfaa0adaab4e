//! One selector plugin per guest language, measured the same way: component size, compile time,
//! load time from the plugin cache, instantiate + configure, and (with criterion) the cost of one
//! `select` call through Fulcrum's own `MemberSelector` path with three members.
//!
//! The examples are built by their own `examples/plugins/*/build.sh` with the tool chains
//! `tests/run` installs; a language whose tool chain is missing is skipped with the reason. Rust
//! is the built-in `byrequests` (made with the SDK).
//!
//! `cargo bench -p fulcrum --bench languages` prints the load table, an endurance table (faults in
//! 1,000,000 calls: a guest that leaks reaches its memory cap and is replaced), then criterion's
//! call times.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::balancer::{BalancerSpec, RequestInfo, SelectState, SelectorFactory};
use fulcrum::config::{Config, WasiGrants};
use fulcrum::plugin::builtin::BUILTIN_PLUGINS;
use fulcrum::plugin::cache::{ArtifactCache, Loaded};
use fulcrum::plugin::{PluginLimits, PluginRegistry, RegistryOptions};
use hyper::http::{HeaderMap, HeaderValue, Method, Uri};

/// (row label, example folder or `None` for the built-in, plugin name, WASI grants, lbmethod_config)
const LANGUAGES: &[(&str, Option<&str>, &str, &str, &str)] = &[
    ("Rust (SDK), byrequests", None, "byrequests", "", "{}"),
    ("C (clang + wasi-libc), netroute", Some("c-netroute"), "netroute", "", r#"{ "10.0.0.0/8" = "web2" }"#),
    ("Zig, A/B by cookie", Some("zig-ab"), "ab", "", r#"{ a = "web1", b = "web2 web3" }"#),
    ("JavaScript (QuickJS), consistent hash", Some("js-hash"), "hash", "", "{}"),
    ("Python, header canary", Some("python-canary"), "canary", "cli random", r#"{ canary_route = "web2" }"#),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Build one example into `dir/NAME.wasm`; the reason when it cannot be built here.
fn build(example: &str, name: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join(format!("{name}.wasm"));
    let root = root();
    let built = Command::new(root.join("examples/plugins").join(example).join("build.sh"))
        .arg(&out)
        .env("FULCRUM", env!("CARGO_BIN_EXE_fulcrum"))
        .output()
        .map_err(|e| e.to_string())?;
    if !built.status.success() {
        return Err(String::from_utf8_lossy(&built.stderr).lines().last().unwrap_or("build failed").to_string());
    }
    Ok(out)
}

fn members_config(lbmethod: &str, lbmethod_config: &str) -> fulcrum::config::BalancerConfig {
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\nproxy_pass = [{{ path = \"/\", to = \"balancer://b/\" }}]\n\
         [balancer.b]\nlbmethod = {lbmethod:?}\nlbmethod_config = {lbmethod_config}\n\
         [[balancer.b.member]]\nurl = \"http://10.0.0.1:80\"\nroute = \"web1\"\n\
         [[balancer.b.member]]\nurl = \"http://10.0.0.2:80\"\nroute = \"web2\"\n\
         [[balancer.b.member]]\nurl = \"http://10.0.0.3:80\"\nroute = \"web3\"\n"
    );
    Config::parse(&text, Path::new("bench.toml")).expect("bench config").balancers.remove(0)
}

fn registry(dir: Option<&Path>, name: &str, grants: &str, cache: Option<ArtifactCache>) -> PluginRegistry {
    let mut wasi = WasiGrants::default();
    for g in grants.split_whitespace() {
        assert!(wasi.grant(g), "no WASI grant `{g}`");
    }
    // Python's runtime leaks about 180 bytes per call (componentize-py 0.25.1): recycled as
    // examples/plugins/python-canary says, it never reaches its memory cap.
    let recycle_after = (name == "canary").then_some(100_000);
    let limits =
        PluginLimits { wasi, recycle_after, configure_deadline: Duration::from_secs(60), ..PluginLimits::default() };
    let options = RegistryOptions {
        limits: PluginLimits::default(),
        overrides: [(name.to_string(), limits)].into(),
        shadow: Vec::new(),
        cache,
    };
    PluginRegistry::load_configured(dir, options).expect("registry")
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn bench(c: &mut Criterion) {
    let work = tempfile::tempdir().expect("temp dir");
    let (method, uri) = (Method::GET, Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for (k, v) in
        [("accept", "*/*"), ("user-agent", "bench"), ("x-user", "alice"), ("cookie", "ab=b"), ("x-canary", "1")]
    {
        headers.insert(k, HeaderValue::from_static(v));
    }
    let request =
        RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &[10, 1, 2, 3].into(), host: "b" };
    let candidates = [0u32, 1, 2];
    let lbstatus = [0i64; 3];

    println!("\n| language, example | component bytes | compile ms | cached load ms | instantiate + configure ms |");
    println!("|---|---|---|---|---|");
    let mut ready = Vec::new();
    for &(label, example, name, grants, lbmethod_config) in LANGUAGES {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let (size, plugin_dir) = match example {
            None => (BUILTIN_PLUGINS.iter().find(|(n, ..)| *n == name).map_or(0, |(_, b, _)| b.len()), None),
            Some(example) => match build(example, name, &dir) {
                Ok(file) => (std::fs::metadata(&file).map_or(0, |m| m.len() as usize), Some(dir.clone())),
                Err(why) => {
                    println!("| {label} | skipped: {why} | | | |");
                    continue;
                }
            },
        };
        let cache_dir = work.path().join(format!("{name}-cache"));
        let uncached = registry(plugin_dir.as_deref(), name, grants, None);
        let compiled = uncached.get(name).expect("plugin").info.loaded;
        let cache = ArtifactCache::open(&cache_dir, u64::MAX).expect("cache");
        registry(plugin_dir.as_deref(), name, grants, Some(cache.clone())).get(name).expect("plugin");
        let plugins = registry(plugin_dir.as_deref(), name, grants, Some(cache));
        let cached = plugins.get(name).expect("plugin").info.loaded;
        assert!(matches!(compiled, Loaded::Compiled(_)) && matches!(cached, Loaded::Cached(_)));
        let config = members_config(name, lbmethod_config);
        let spec = BalancerSpec::lbmethod(&config);
        let started = Instant::now();
        let selector = plugins.selector(&spec).expect("configure");
        let instantiate = started.elapsed();
        println!("| {label} | {size} | {} | {} | {} |", ms(compiled.time()), ms(cached.time()), ms(instantiate));
        ready.push((label, selector));
    }
    println!();

    // Endurance: a plugin that leaks reaches its memory cap and is replaced (a fault, counted).
    const CALLS: u32 = 1_000_000;
    println!("| language, example | faults in {CALLS} calls | first fault at call |");
    println!("|---|---|---|");
    for (label, selector) in &mut ready {
        let (mut faults, mut first) = (0u32, None);
        for i in 0..CALLS {
            let state =
                SelectState { candidates: &candidates, lbstatus: &lbstatus, busy: &[], traffic: &[], load: &[] };
            if let Err(fault) = selector.select(&request, &state) {
                faults += 1;
                first.get_or_insert((i + 1, fault.kind));
            }
        }
        let first = first.map_or("-".to_string(), |(i, kind)| format!("{i} ({kind:?})"));
        println!("| {label} | {faults} | {first} |");
    }
    println!();

    let mut group = c.benchmark_group("select call by language (3 members, 5 request headers)");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (label, selector) in &mut ready {
        group.bench_function(*label, |b| {
            b.iter(|| {
                let state =
                    SelectState { candidates: &candidates, lbstatus: &lbstatus, busy: &[], traffic: &[], load: &[] };
                // A fault (see the endurance table) is part of the cost: the instance is replaced.
                black_box(selector.select(black_box(&request), &state).map(|s| s.member).ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
