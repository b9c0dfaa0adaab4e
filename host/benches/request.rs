//! The whole request path in one process: a client sends a GET over a keep-alive connection to
//! Fulcrum (one worker, the guide's configuration `examples/apache-guide.toml` with its two
//! members on loopback, access log off), which balances it to one of two echo backends and relays
//! the answer. Measured with and without the guide's `[[vhost.rules]]`, so the difference is what
//! the rules plugin costs a request (its two calls, the host's side of them, and the headers it
//! adds), next to the `rules` benchmark's in-isolation figure.
//!
//! Wall time per request, client, proxy and backends each on a thread of their own: a latency
//! figure for one request at a time, not the proxy's CPU per request under load (the `load`
//! benchmark measures that).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::config::Config;
use fulcrum::demo::EchoServer;
use fulcrum::runtime::Runtime;
use fulcrum::server::start_workers;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[path = "support/guide.rs"]
mod guide;

fn bench(c: &mut Criterion) {
    // The backends on a runtime of their own.
    let backends_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (web1, web2) = backends_rt.block_on(async {
        (EchoServer::start(any, "web1").await.unwrap(), EchoServer::start(any, "web2").await.unwrap())
    });
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut group = c.benchmark_group("request path (GET through Fulcrum, one worker)");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for (name, rules) in [("guide config without rules", false), ("guide config with its rules", true)] {
        let text = guide::guide_config(0, [web1.addr, web2.addr], rules);
        let config = Config::parse(&text, std::path::Path::new("guide.toml")).expect("the guide's config");
        let runtime = Arc::new(Runtime::build(config).expect("runtime"));
        let listeners = runtime.bind().expect("bind");
        let addr = listeners[0].local_addr().unwrap();
        let _workers = start_workers(listeners, &runtime.shared(), 1).expect("worker");
        let mut send = client_rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            send
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                client_rt.block_on(async {
                    let request = Request::get("/")
                        .header("host", "www.example.com")
                        .header("user-agent", "criterion")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let response = send.send_request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
        });
    }
    group.finish();
    drop((web1, web2));
}

criterion_group!(benches, bench);
criterion_main!(benches);
