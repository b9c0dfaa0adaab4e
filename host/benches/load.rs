//! The load benchmark that decides: Fulcrum (with and without the guide's rules) against Debian's
//! nginx, HAProxy and Apache, each balancing round robin over the same two static backends on
//! 127.0.0.1, driven by `wrk` with keep-alive connections.
//!
//! Three protocols between client and balancer (the members stay plain HTTP/1.1):
//!
//! * **http**: HTTP/1.1 in clear, `wrk`, all five balancers;
//! * **https**: HTTP/1.1 over TLS, `wrk` with an `https://` URL (no ALPN: HTTP/1.1);
//! * **h2**: HTTP/2 over TLS (ALPN `h2`), Debian's `h2load` (nghttp2-client) with 10 streams per
//!   connection (`-m 10`).
//!
//! The TLS rows run Fulcrum (guide config), nginx and HAProxy only, all three with the same
//! certificate: one ECDSA P-256 self-signed certificate made for the run by `openssl req -x509`
//! in a temporary folder, TLS 1.2 and 1.3. h2load reports no percentiles: the h2 tables show its
//! mean and max "time for request" where the others show wrk's p50 and p99.
//!
//! `cargo bench -p fulcrum --bench load` runs two set-ups, interleaved over `LOAD_ROUNDS` rounds
//! (each round runs every balancer once per set-up, protocol and connection count, the balancer
//! order rotated from round to round):
//!
//! * **pinned**: the balancer alone on core 0 with one worker (thread or process), `wrk -t1` and the
//!   backends on core 1;
//! * **defaults**: nothing pinned, each balancer with its default worker count, `wrk -t2`.
//!
//! Per balancer and connection count it reports the medians over the rounds of requests/s, p50 and
//! p99 latency (`wrk --latency`), the balancer's CPU time per request (utime + stime of all its
//! processes and threads, from `/proc/PID/stat`, before and after the measured window, divided by
//! the requests completed in it) and the user-space part of it (utime), its RSS after the window
//! (all processes), the errors (non-2xx/3xx
//! and socket errors, summed over the rounds) and ratios to the best of nginx and HAProxy. The table
//! goes to stdout and `target/load/results.md`, a bar chart of CPU per request to
//! `target/load/cpu-per-request.svg`.
//!
//! Every balancer is a private instance started here on a free port (never a service) and stopped,
//! with all its processes, before the next case starts; a case fails if any of them outlives it.
//! Before each measurement one request goes through the balancer (over TLS: `curl -k`, with
//! `--http1.1` or `--http2`, which must get the protocol asked for), and the backends count their
//! hits: each window's hits must match the client's request count and be split between both
//! backends. The CPU of a window includes the TLS handshakes of the client's connections, opened at
//! its start (wrk also reconnects when a balancer closes a connection; h2load does not).
//!
//! Environment: `LOAD_SECONDS` (measured window, default 10), `LOAD_WARMUP` (default 2),
//! `LOAD_ROUNDS` (default 3), `LOAD_CONNECTIONS` (default `16,64,256`), `LOAD_SETUPS` (default
//! `pinned,defaults`), `LOAD_PROTOCOLS` (default `http,https,h2`), `LOAD_TLS_SETUPS` (the set-ups
//! of `LOAD_SETUPS` the https and h2 rows run in, default `pinned`), `LOAD_VERIFY=1` (also
//! measure each window's CPU with `pidstat` and print both figures). Arguments filter the
//! balancers by name (`cargo bench -p fulcrum --bench load -- nginx fulcrum`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/guide.rs"]
mod guide;

/// Set in the environment of the child process that runs the two backends.
const BACKEND_ENV: &str = "FULCRUM_LOAD_BACKEND";
/// Body length of the backends' fixed response.
const BODY_LEN: usize = 100;

fn main() {
    if std::env::var_os(BACKEND_ENV).is_some() {
        backend::serve_until_stdin_closes();
        return;
    }
    let mut plan = Plan::from_env();
    if !Path::new("/usr/bin/wrk").exists() {
        eprintln!("load benchmark: /usr/bin/wrk is missing: apt-get install -y wrk");
        return;
    }
    if plan.protocols.contains(&Protocol::H2) && !Path::new("/usr/bin/h2load").exists() {
        println!("h2: /usr/bin/h2load is missing (`apt-get install -y nghttp2-client`), skipped");
        plan.protocols.retain(|&p| p != Protocol::H2);
    }
    let tls = plan
        .protocols
        .iter()
        .any(|p| p.is_tls())
        .then(|| Tls::make().unwrap_or_else(|why| panic!("the run's certificate: {why}")));
    let balancers = plan.balancers();
    for balancer in &balancers {
        let tls = tls.as_ref().filter(|_| balancer.serves_tls());
        balancer.check(tls).unwrap_or_else(|why| panic!("{}: {why}", balancer.name()));
    }
    let machine = Machine::now();
    println!("load benchmark: {}\n{}\n", plan.describe(), machine.describe());
    if let Some(tls) = &tls {
        println!("{}\n", tls.describe());
    }
    let startup = if balancers.iter().any(|b| b.name() == Fulcrum { rules: true }.name()) {
        let startup = startup::measure().unwrap_or_else(|why| panic!("start-up measurement: {why}"));
        println!("{}", startup.markdown());
        Some(startup)
    } else {
        None
    };

    let mut samples: Vec<Sample> = Vec::new();
    for round in 0..plan.rounds {
        let setups = if round % 2 == 0 { [Setup::Pinned, Setup::Defaults] } else { [Setup::Defaults, Setup::Pinned] };
        for setup in setups.into_iter().filter(|s| plan.setups.contains(s)) {
            let backends = backend::Backends::start(setup).expect("backends");
            for &protocol in plan.protocols.iter().filter(|p| plan.setups_for(**p).contains(&setup)) {
                let mut order: Vec<&dyn Balancer> =
                    balancers.iter().map(|b| b.as_ref()).filter(|b| !protocol.is_tls() || b.serves_tls()).collect();
                let n = order.len().max(1);
                order.rotate_left(round % n);
                for balancer in order {
                    for &connections in &plan.connections {
                        let case = Case { round, setup, protocol, connections, balancer };
                        match run_case(&plan, &case, &backends, tls.as_ref()) {
                            Ok(sample) => {
                                println!("{}", sample.line());
                                samples.push(sample);
                            }
                            Err(why) => panic!("{}: {why}", case.label()),
                        }
                    }
                }
            }
        }
    }
    let machine_after = Machine::now();
    let mut report = report::markdown(&plan, &machine, &machine_after, tls.as_ref(), &balancers, &samples);
    if let Some(startup) = &startup {
        report.push_str(&startup.markdown());
    }
    println!("\n{report}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/load");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("results.md"), &report).unwrap();
    if samples.iter().any(|s| s.protocol == Protocol::Http) {
        std::fs::write(dir.join("cpu-per-request.svg"), report::svg(&plan, &balancers, &samples)).unwrap();
        println!("written: {}/results.md and cpu-per-request.svg (http rows)", dir.display());
    } else {
        println!("written: {}/results.md (no http rows: cpu-per-request.svg left as it was)", dir.display());
    }
}

// ---------------------------------------------------------------------------------------------
// What to run

struct Plan {
    seconds: u32,
    warmup: u32,
    rounds: usize,
    connections: Vec<u32>,
    filter: Vec<String>,
    verify: bool,
    setups: Vec<Setup>,
    protocols: Vec<Protocol>,
    /// The set-ups (of `setups`) in which the https and h2 rows run.
    tls_setups: Vec<Setup>,
}

impl Plan {
    fn from_env() -> Plan {
        let number = |name: &str, default: u32| -> u32 {
            std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}"))).unwrap_or(default)
        };
        let connections = std::env::var("LOAD_CONNECTIONS").unwrap_or_else(|_| "16,64,256".into());
        Plan {
            seconds: number("LOAD_SECONDS", 10).max(1),
            warmup: number("LOAD_WARMUP", 2),
            rounds: number("LOAD_ROUNDS", 3).max(1) as usize,
            connections: connections.split(',').map(|c| c.trim().parse().expect("LOAD_CONNECTIONS")).collect(),
            // `cargo bench` passes `--bench`; other arguments pick balancers by name.
            filter: std::env::args().skip(1).filter(|a| !a.starts_with("--")).map(|a| a.to_lowercase()).collect(),
            verify: std::env::var_os("LOAD_VERIFY").is_some(),
            setups: Setup::list("LOAD_SETUPS", "pinned,defaults"),
            protocols: std::env::var("LOAD_PROTOCOLS")
                .unwrap_or_else(|_| "http,https,h2".into())
                .split(',')
                .map(|s| match s.trim() {
                    "http" => Protocol::Http,
                    "https" => Protocol::Https,
                    "h2" => Protocol::H2,
                    other => panic!("LOAD_PROTOCOLS: `{other}` is none of http, https, h2"),
                })
                .collect(),
            tls_setups: Setup::list("LOAD_TLS_SETUPS", "pinned"),
        }
    }

    /// The set-ups a protocol's rows run in.
    fn setups_for(&self, protocol: Protocol) -> Vec<Setup> {
        let setups = self.setups.iter().copied();
        if protocol.is_tls() { setups.filter(|s| self.tls_setups.contains(s)).collect() } else { setups.collect() }
    }

    fn balancers(&self) -> Vec<Box<dyn Balancer>> {
        let all: Vec<Box<dyn Balancer>> = vec![
            Box::new(Fulcrum { rules: true }),
            Box::new(Fulcrum { rules: false }),
            Box::new(Nginx),
            Box::new(HaProxy),
            Box::new(Apache),
        ];
        all.into_iter()
            .filter(|b| self.filter.is_empty() || self.filter.iter().any(|f| b.name().to_lowercase().contains(f)))
            .filter(|b| match b.program() {
                Some((program, package)) if !Path::new(program).exists() => {
                    println!("{}: {program} is missing (`apt-get install -y {package}`), skipped", b.name());
                    false
                }
                _ => true,
            })
            .collect()
    }

    fn describe(&self) -> String {
        let protocols: Vec<String> = self
            .protocols
            .iter()
            .map(|&p| {
                let setups: Vec<&str> = self.setups_for(p).iter().map(|s| s.name()).collect();
                format!("{} ({})", p.name(), setups.join(", "))
            })
            .collect();
        format!(
            "{} rounds, {} s measured after {} s warm-up per case, connections {:?}, protocols {}, two static \
             backends ({BODY_LEN}-byte body)",
            self.rounds,
            self.seconds,
            self.warmup,
            self.connections,
            protocols.join(", ")
        )
    }
}

/// What the client speaks to the balancer. Members are always spoken to in plain HTTP/1.1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Protocol {
    /// HTTP/1.1 in clear: wrk.
    Http,
    /// HTTP/1.1 over TLS: wrk with an https:// URL (it offers no ALPN).
    Https,
    /// HTTP/2 over TLS, ALPN h2: h2load.
    H2,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Https, Protocol::H2];
    /// h2load's concurrent streams per connection (`-m`).
    const H2_STREAMS: u32 = 10;

    fn is_tls(self) -> bool {
        self != Protocol::Http
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::H2 => "h2",
        }
    }

    fn scheme(self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// Requests one client connection keeps in flight.
    fn in_flight_per_connection(self) -> u32 {
        if self == Protocol::H2 { Self::H2_STREAMS } else { 1 }
    }

    /// The two latency columns: wrk's percentiles, h2load's mean and max "time for request".
    fn latency_labels(self) -> [&'static str; 2] {
        if self == Protocol::H2 { ["mean", "max"] } else { ["p50", "p99"] }
    }

    fn title(self, setup: Setup) -> String {
        match (self, setup) {
            (Protocol::Http, _) => setup.title().to_string(),
            (Protocol::Https, Setup::Pinned) => "HTTPS (HTTP/1.1 over TLS), pinned: the balancer alone on core 0 \
                with one worker; wrk -t1 and the backends on core 1"
                .into(),
            (Protocol::Https, Setup::Defaults) => "HTTPS (HTTP/1.1 over TLS), defaults: nothing pinned, each \
                balancer's default workers; wrk -t2; all on both cores"
                .into(),
            (Protocol::H2, Setup::Pinned) => format!(
                "HTTP/2 over TLS, pinned: the balancer alone on core 0 with one worker; h2load -t1 -m {} and \
                 the backends on core 1",
                Self::H2_STREAMS
            ),
            (Protocol::H2, Setup::Defaults) => format!(
                "HTTP/2 over TLS, defaults: nothing pinned, each balancer's default workers; h2load -t2 -m {}; \
                 all on both cores",
                Self::H2_STREAMS
            ),
        }
    }
}

/// The run's certificate, shared by every TLS listener: ECDSA P-256, self-signed for localhost and
/// 127.0.0.1, made by `openssl req -x509` in a temporary folder removed at the end of the run.
struct Tls {
    _dir: tempfile::TempDir,
    certificate: PathBuf,
    key: PathBuf,
    /// Certificate then key in one file, as HAProxy's `crt` wants it.
    combined: PathBuf,
}

impl Tls {
    /// The TLS 1.3 suite the clients end up with (h2load is told to offer only this one).
    const SUITE: &'static str = "TLS_AES_256_GCM_SHA384";

    fn make() -> Result<Tls, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let (certificate, key, combined) =
            (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("combined.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!("openssl req -x509 failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
        std::fs::write(&combined, read(&certificate)? + &read(&key)?).map_err(|e| e.to_string())?;
        Ok(Tls { _dir: dir, certificate, key, combined })
    }

    fn describe(&self) -> String {
        "TLS: one ECDSA P-256 certificate, self-signed for localhost and 127.0.0.1 (`openssl req -x509`, \
         made for this run), for every balancer; TLS 1.2 and 1.3"
            .into()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Setup {
    /// The balancer alone on core 0 with one worker; wrk (one thread) and the backends on core 1.
    Pinned,
    /// No pinning; each balancer's default worker count; wrk with two threads.
    Defaults,
}

impl Setup {
    /// The set-ups named in the environment variable `name` (comma-separated).
    fn list(name: &str, default: &str) -> Vec<Setup> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| match s.trim() {
                "pinned" => Setup::Pinned,
                "defaults" => Setup::Defaults,
                other => panic!("{name}: `{other}` is neither pinned nor defaults"),
            })
            .collect()
    }

    fn balancer_cpus(self) -> Option<&'static str> {
        match self {
            Setup::Pinned => Some("0"),
            Setup::Defaults => None,
        }
    }

    fn client_cpus(self) -> Option<&'static str> {
        match self {
            Setup::Pinned => Some("1"),
            Setup::Defaults => None,
        }
    }

    /// wrk's or h2load's threads.
    fn client_threads(self) -> u32 {
        match self {
            Setup::Pinned => 1,
            Setup::Defaults => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Setup::Pinned => "pinned",
            Setup::Defaults => "defaults",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Setup::Pinned => "Pinned: the balancer alone on core 0 with one worker; wrk -t1 and the backends on core 1",
            Setup::Defaults => "Defaults: nothing pinned, each balancer's default workers; wrk -t2; all on both cores",
        }
    }
}

/// The machine and its load, for the report.
struct Machine {
    cores: usize,
    model: String,
    load_average: String,
}

impl Machine {
    fn now() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Machine { cores: std::thread::available_parallelism().map_or(0, |n| n.get()), model, load_average }
    }

    fn describe(&self) -> String {
        format!("machine: {} cores, {}; load average {}", self.cores, self.model, self.load_average)
    }
}

// ---------------------------------------------------------------------------------------------
// The balancers

/// Where one instance runs: its folder, port, the backends, the set-up.
struct Site<'a> {
    dir: &'a Path,
    port: u16,
    backends: [SocketAddr; 2],
    setup: Setup,
    protocol: Protocol,
    /// The certificate, for the https and h2 cases.
    tls: Option<&'a Tls>,
}

/// A program to start in the foreground (wrapped in `taskset` by the caller when pinned).
struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
}

impl Launch {
    fn new(program: impl Into<PathBuf>) -> Launch {
        Launch { program: program.into(), args: Vec::new(), env: Vec::new() }
    }

    fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    fn env(mut self, name: &'static str, value: impl Into<OsString>) -> Launch {
        self.env.push((name, value.into()));
        self
    }

    fn command(&self, cpus: Option<&str>) -> Command {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpus]).arg(&self.program);
                cmd
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

trait Balancer {
    fn name(&self) -> &'static str;
    /// The Debian program and package it needs, if any.
    fn program(&self) -> Option<(&'static str, &'static str)>;
    /// nginx and HAProxy: the peers the ratios compare with.
    fn is_peer(&self) -> bool {
        false
    }
    /// Fulcrum (guide config), nginx and HAProxy: also runs the https and h2 rows.
    fn serves_tls(&self) -> bool {
        false
    }
    /// Validates what can be validated before the first run (`tls`: also its TLS configuration).
    fn check(&self, _tls: Option<&Tls>) -> Result<(), String> {
        Ok(())
    }
    /// Writes the configuration into the site's folder and says how to start it.
    fn launch(&self, site: &Site<'_>) -> Result<Launch, String>;
}

/// Fulcrum (release build) with `examples/apache-guide.toml` on loopback, with or without its
/// `[[vhost.rules]]` (the apache-rules Wasm plugin); the access log off. Over TLS the guide's
/// `listen` entry becomes a TLS listener (`examples/tls.toml`): ALPN h2 and http/1.1.
struct Fulcrum {
    rules: bool,
}

impl Fulcrum {
    fn config(&self, port: u16, backends: [SocketAddr; 2], tls: Option<&Tls>) -> String {
        let config = guide::guide_config(port, backends, self.rules);
        let Some(tls) = tls else { return config };
        let plain = format!("listen = [\"127.0.0.1:{port}\"]");
        assert!(config.contains(&plain), "examples/apache-guide.toml changed: no `{plain}`");
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        config.replacen(
            &plain,
            &format!(
                "listen = [{{ address = \"127.0.0.1:{port}\", tls_certificate = {}, tls_key = {} }}]",
                path(&tls.certificate),
                path(&tls.key)
            ),
            1,
        )
    }
}

impl Balancer for Fulcrum {
    fn name(&self) -> &'static str {
        if self.rules { "Fulcrum (guide config)" } else { "Fulcrum without rules" }
    }

    fn program(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    fn serves_tls(&self) -> bool {
        self.rules
    }

    fn check(&self, tls: Option<&Tls>) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("fulcrum.toml");
        let any: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // The plain config, and the TLS one if the run has TLS rows.
        for tls in std::iter::once(None).chain(tls.map(Some)) {
            std::fs::write(&path, self.config(free_port(), [any, any], tls)).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("fulcrum check refused the config: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        Ok(())
    }

    fn launch(&self, site: &Site<'_>) -> Result<Launch, String> {
        let path = site.dir.join("fulcrum.toml");
        std::fs::write(&path, self.config(site.port, site.backends, site.tls)).map_err(|e| e.to_string())?;
        let launch =
            Launch::new(env!("CARGO_BIN_EXE_fulcrum")).arg("run").arg("--config").arg(path).env("FULCRUM_LOG", "warn");
        Ok(match site.setup {
            Setup::Pinned => launch.env("TOKIO_WORKER_THREADS", "1"),
            Setup::Defaults => launch,
        })
    }
}

/// Debian's nginx: one upstream of the two backends with keep-alive connections to them. Over TLS
/// (1.22's syntax) `listen ... ssl http2` with the run's certificate; for the h2 rows also
/// `keepalive_requests` raised from its 1,000, which in 1.22 also ends an HTTP/2 connection (GOAWAY)
/// after 1,000 streams: h2load does not reconnect, so each client would stop there (wrk does
/// reconnect, so the http and https rows keep the default), and `worker_connections` 4096 instead
/// of Debian's 768: each of the 10 streams of a client connection may hold an upstream
/// connection, and at 256 client connections 768 failed streams ("worker_connections are not
/// enough").
struct Nginx;

impl Balancer for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn program(&self) -> Option<(&'static str, &'static str)> {
        Some(("/usr/sbin/nginx", "nginx"))
    }

    fn is_peer(&self) -> bool {
        true
    }

    fn serves_tls(&self) -> bool {
        true
    }

    fn launch(&self, site: &Site<'_>) -> Result<Launch, String> {
        let d = site.dir.display();
        let [web1, web2] = site.backends;
        let (port, workers) = (site.port, if site.setup == Setup::Pinned { "1" } else { "auto" });
        let h2 = site.protocol == Protocol::H2;
        let worker_connections = if h2 { 4096 } else { 768 };
        let listen = match site.tls {
            None => format!("listen 127.0.0.1:{port};"),
            Some(tls) => format!(
                "listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 ssl_protocols TLSv1.2 TLSv1.3;{}",
                tls.certificate.display(),
                tls.key.display(),
                if h2 { "\n    keepalive_requests 1000000000;" } else { "" }
            ),
        };
        // Debian's nginx.conf values (user, worker_connections), its access log off.
        let config = format!(
            "user www-data;\nworker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections {worker_connections}; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream backends {{ server {web1}; server {web2}; keepalive 256; }}\n\
             server {{\n    {listen}\n    location / {{\n      proxy_pass http://backends;\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        std::fs::write(site.dir.join("nginx.conf"), config).map_err(|e| e.to_string())?;
        Ok(Launch::new("/usr/sbin/nginx").arg("-p").arg(site.dir).arg("-c").arg(site.dir.join("nginx.conf")))
    }
}

/// Debian's HAProxy: a frontend and a round-robin backend (HTTP keep-alive and server connection
/// reuse are its defaults). Over TLS the frontend binds `ssl crt` (certificate and key in one PEM)
/// with ALPN h2 and http/1.1.
struct HaProxy;

impl Balancer for HaProxy {
    fn name(&self) -> &'static str {
        "HAProxy"
    }

    fn program(&self) -> Option<(&'static str, &'static str)> {
        Some(("/usr/sbin/haproxy", "haproxy"))
    }

    fn is_peer(&self) -> bool {
        true
    }

    fn serves_tls(&self) -> bool {
        true
    }

    fn launch(&self, site: &Site<'_>) -> Result<Launch, String> {
        let [web1, web2] = site.backends;
        let threads = if site.setup == Setup::Pinned { "  nbthread 1\n" } else { "" };
        let tls = site.tls.map_or(String::new(), |tls| {
            format!(" ssl crt {} alpn h2,http/1.1 ssl-min-ver TLSv1.2", tls.combined.display())
        });
        let config = format!(
            "global\n{threads}  pidfile {d}/haproxy.pid\n\ndefaults\n  mode http\n  timeout connect 5s\n\
             timeout client 60s\n  timeout server 60s\n\n\
             frontend proxy\n  bind 127.0.0.1:{port}{tls}\n  default_backend backends\n\n\
             backend backends\n  balance roundrobin\n  server web1 {web1}\n  server web2 {web2}\n",
            d = site.dir.display(),
            port = site.port,
        );
        std::fs::write(site.dir.join("haproxy.cfg"), config).map_err(|e| e.to_string())?;
        Ok(Launch::new("/usr/sbin/haproxy").arg("-db").arg("-f").arg(site.dir.join("haproxy.cfg")))
    }
}

/// Debian's Apache 2.4 with the guide's configuration, set up as `tests/e2e/apache.rs` does: a
/// ServerRoot of our own with Debian's apache2.conf and default modules plus headers, proxy,
/// proxy_http, proxy_balancer, lbmethod_byrequests and slotmem_shm, and the guide's two files
/// (`tests/apache/*.conf.in`) rendered, minus the access logs. Pinned: one child process of 256
/// threads (`StartServers 1`, `ServerLimit 1`, `ThreadsPerChild 256`) besides the parent.
struct Apache;

impl Apache {
    const DEBIAN: &'static str = "/etc/apache2";
    const EXTRA_MODULES: [&'static str; 8] = [
        "headers.load",
        "proxy.load",
        "proxy.conf",
        "proxy_http.load",
        "proxy_balancer.load",
        "proxy_balancer.conf",
        "lbmethod_byrequests.load",
        "slotmem_shm.load",
    ];
    const PINNED_MPM: &'static str = "<IfModule mpm_event_module>\n  StartServers 1\n  ServerLimit 1\n  \
        MinSpareThreads 1\n  MaxSpareThreads 512\n  ThreadLimit 256\n  ThreadsPerChild 256\n  \
        MaxRequestWorkers 256\n  MaxConnectionsPerChild 0\n</IfModule>\n";

    fn server_root(site: &Site<'_>) -> std::io::Result<()> {
        let root = site.dir;
        for sub in ["mods-enabled", "conf-available", "conf-enabled", "sites-enabled", "run", "lock", "log"] {
            std::fs::create_dir(root.join(sub))?;
        }
        for sub in ["run", "lock", "log"] {
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o777))?;
        }
        let debian = Path::new(Self::DEBIAN);
        std::fs::copy(debian.join("apache2.conf"), root.join("apache2.conf"))?;
        symlink(debian.join("mods-available"), root.join("mods-available"))?;
        let enabled = std::fs::read_dir(debian.join("mods-enabled"))?.flatten().map(|e| e.file_name());
        let modules: Vec<OsString> = enabled.chain(Self::EXTRA_MODULES.iter().map(OsString::from)).collect();
        for name in modules {
            let link = root.join("mods-enabled").join(&name);
            if name == "mpm_event.conf" && site.setup == Setup::Pinned {
                std::fs::write(&link, Self::PINNED_MPM)?;
            } else if !link.exists() {
                symlink(debian.join("mods-available").join(&name), link)?;
            }
        }
        for entry in std::fs::read_dir(debian.join("conf-available"))?.flatten() {
            symlink(entry.path(), root.join("conf-available").join(entry.file_name()))?;
        }
        for entry in std::fs::read_dir(debian.join("conf-enabled"))?.flatten() {
            let name = entry.file_name();
            // Logs every vhost without a CustomLog of its own: the access log stays off.
            if name != "other-vhosts-access-log.conf" {
                symlink(debian.join("conf-available").join(&name), root.join("conf-enabled").join(&name))?;
            }
        }
        std::fs::write(root.join("ports.conf"), format!("Listen 127.0.0.1:{}\n", site.port))?;
        std::fs::write(root.join("conf-available/main-balancer.conf"), Self::render(site, "main-balancer.conf.in")?)?;
        std::fs::write(root.join("sites-enabled/000-default.conf"), Self::render(site, "000-default.conf.in")?)
    }

    fn render(site: &Site<'_>, template: &str) -> std::io::Result<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/apache").join(template);
        let [web1, web2] = site.backends;
        let params = "retry=60 timeout=300 connectiontimeout=25";
        let text = std::fs::read_to_string(path)?
            .replace("@PORT@", &site.port.to_string())
            .replace("@WEB1_URL@", &format!("http://{web1}"))
            .replace("@WEB2_URL@", &format!("http://{web2}"))
            .replace("@WEB1_PARAMS@", params)
            .replace("@WEB2_PARAMS@", params)
            .replace("@ALLOW_IP@", "127.0.0.1")
            .replace("@SSL@", "");
        // The access log off, as for the others.
        Ok(text
            .lines()
            .map(
                |l| if l.trim_start().starts_with("CustomLog") { format!("# (bench: off) {l}") } else { l.to_string() },
            )
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

impl Balancer for Apache {
    fn name(&self) -> &'static str {
        "Apache (guide config)"
    }

    fn program(&self) -> Option<(&'static str, &'static str)> {
        Some(("/usr/sbin/apache2", "apache2"))
    }

    fn launch(&self, site: &Site<'_>) -> Result<Launch, String> {
        Self::server_root(site).map_err(|e| format!("ServerRoot: {e}"))?;
        let root = site.dir;
        Ok(Launch::new("/usr/sbin/apache2")
            .arg("-d")
            .arg(root)
            .arg("-f")
            .arg(root.join("apache2.conf"))
            .arg("-DFOREGROUND")
            .env("APACHE_RUN_USER", "www-data")
            .env("APACHE_RUN_GROUP", "www-data")
            .env("APACHE_PID_FILE", root.join("run/apache2.pid"))
            .env("APACHE_RUN_DIR", root.join("run"))
            .env("APACHE_LOCK_DIR", root.join("lock"))
            .env("APACHE_LOG_DIR", root.join("log"))
            .env("LANG", "C"))
    }
}

// ---------------------------------------------------------------------------------------------
// One case: a balancer, a set-up, a connection count, a round

struct Case<'a> {
    round: usize,
    setup: Setup,
    protocol: Protocol,
    connections: u32,
    balancer: &'a dyn Balancer,
}

impl Case<'_> {
    fn label(&self) -> String {
        let protocol = if self.protocol.is_tls() { format!(" {}", self.protocol.name()) } else { String::new() };
        format!(
            "round {} {}{protocol} {} c={}",
            self.round + 1,
            self.setup.name(),
            self.balancer.name(),
            self.connections
        )
    }
}

/// One measured window.
struct Sample {
    label: String,
    setup: Setup,
    protocol: Protocol,
    balancer: &'static str,
    connections: u32,
    /// wrk's or h2load's figures.
    wrk: ClientFigures,
    /// The TLS version, cipher and application protocol negotiated (h2load's, or the probe's).
    negotiated: Option<String>,
    cpu_seconds: f64,
    /// The user-space part of `cpu_seconds` (utime + cutime); the rest is the kernel's.
    user_seconds: f64,
    rss_mib: f64,
    hits: [u64; 2],
}

impl Sample {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.wrk.requests.max(1) as f64
    }

    fn user_us_per_request(&self) -> f64 {
        self.user_seconds * 1e6 / self.wrk.requests.max(1) as f64
    }

    fn line(&self) -> String {
        let total = (self.hits[0] + self.hits[1]).max(1);
        let [mid, high] = self.protocol.latency_labels();
        format!(
            "{}: {:.0} req/s, {mid} {}, {high} {}, errors {} {}, CPU {:.2} s = {:.1} µs/request ({:.1} user), \
             RSS {:.1} MiB, backend hits {} ({:.0} % web1){}",
            self.label,
            self.wrk.requests_per_second,
            report::latency(self.wrk.mid_us),
            report::latency(self.wrk.high_us),
            self.wrk.errors,
            self.wrk.error_detail,
            self.cpu_seconds,
            self.cpu_us_per_request(),
            self.user_us_per_request(),
            self.rss_mib,
            total,
            100.0 * self.hits[0] as f64 / total as f64,
            self.negotiated.as_ref().map_or(String::new(), |n| format!(", {n}"))
        )
    }
}

fn run_case(plan: &Plan, case: &Case<'_>, backends: &backend::Backends, tls: Option<&Tls>) -> Result<Sample, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The workers of nginx and Apache drop root; they need to read their folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let tls = if case.protocol.is_tls() { Some(tls.ok_or("no certificate for a TLS case")?) } else { None };
    let site = Site {
        dir: dir.path(),
        port: free_port(),
        backends: backends.addrs,
        setup: case.setup,
        protocol: case.protocol,
        tls,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], site.port));
    let launch = case.balancer.launch(&site)?;
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    let mut command = launch.command(case.setup.balancer_cpus());
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    let mut balancer = Running::spawn(command)?;
    let sample =
        measure(plan, case, &mut balancer, addr, backends).map_err(|why| format!("{why}\n{}", logs(dir.path())));
    let pids = balancer.tree();
    drop(balancer);
    if let Some(pid) = pids.iter().find(|&&pid| proc::is_alive(pid)) {
        return Err(format!("process {pid} of {} still runs after the case", case.balancer.name()));
    }
    sample
}

fn measure(
    plan: &Plan,
    case: &Case<'_>,
    balancer: &mut Running,
    addr: SocketAddr,
    backends: &backend::Backends,
) -> Result<Sample, String> {
    wait_listening(balancer, addr)?;
    let before_probe = backends.hits()?;
    let probed = match case.protocol {
        Protocol::Http => probe(addr).map(|()| None)?,
        protocol => Some(probe_tls(addr, protocol)?),
    };
    if backends.hits()?.iter().sum::<u64>() != before_probe.iter().sum::<u64>() + 1 {
        return Err("the probe request did not reach exactly one backend".into());
    }
    let url = format!("{}://{addr}/", case.protocol.scheme());
    if plan.warmup > 0 {
        client(case, &url, plan.warmup)?;
    }
    let hits_before = backends.hits()?;
    let (cpu_before, user_before) = proc::tree_cpu_seconds(balancer.pid());
    let pidstat = plan.verify.then(|| Pidstat::start(&balancer.tree(), plan.seconds)).transpose()?;
    let figures = client(case, &url, plan.seconds)?;
    let (cpu_after, user_after) = proc::tree_cpu_seconds(balancer.pid());
    let (cpu_seconds, user_seconds) = (cpu_after - cpu_before, user_after - user_before);
    let hits_after = backends.hits()?;
    let rss_mib = proc::tree_rss_kib(balancer.pid()) as f64 / 1024.0;
    let hits = [hits_after[0] - hits_before[0], hits_after[1] - hits_before[1]];
    if let Some(pidstat) = pidstat {
        let pids = balancer.tree();
        let threads: u64 = pids.iter().map(|&pid| proc::threads(pid)).sum();
        println!(
            "  verify: /proc says {cpu_seconds:.2} s CPU in the window, pidstat {:.2} s; {} processes, {threads} threads",
            pidstat.finish()?,
            pids.len()
        );
    }
    check_hits(hits, &figures, case.connections * case.protocol.in_flight_per_connection())?;
    Ok(Sample {
        label: case.label(),
        setup: case.setup,
        protocol: case.protocol,
        balancer: case.balancer.name(),
        connections: case.connections,
        negotiated: figures.negotiated.clone().or(probed),
        wrk: figures,
        cpu_seconds,
        user_seconds,
        rss_mib,
        hits,
    })
}

/// The backends must have answered every request the client counted (plus at most those in flight
/// when it stopped: `in_flight`, one per connection for wrk, `-m` per connection for h2load), and
/// both of them a share of it.
fn check_hits(hits: [u64; 2], wrk: &ClientFigures, in_flight: u32) -> Result<(), String> {
    let total = hits[0] + hits[1];
    let answered = wrk.answered;
    // The warm-up run and a balancer's retries aside, hits lie in [answered, requests + in flight].
    let upper = wrk.requests + 2 * u64::from(in_flight) + 16;
    if total < answered || total > upper {
        return Err(format!("backend hits {total} do not match the client's {} requests", wrk.requests));
    }
    if hits[0].min(hits[1]) * 4 < total {
        return Err(format!("round robin? backend hits {hits:?}"));
    }
    Ok(())
}

fn wait_listening(balancer: &mut Running, addr: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("did not listen on {addr} within 30 s"));
        }
        if balancer.exited() {
            return Err("exited before listening".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One request through the balancer, as wrk sends it: it must be a backend's 200 and body.
fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("probe: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    if response.starts_with("HTTP/1.1 200") && response.contains(backend::BODY_START) {
        Ok(())
    } else {
        Err(format!("probe through the balancer got:\n{response}"))
    }
}

/// One request through a TLS listener with curl (`-k`: the certificate is self-signed), HTTP/1.1
/// or HTTP/2 as the protocol says: it must be a backend's 200 and body, in that HTTP version.
/// Returns what was negotiated ("TLSv1.3 / TLS_AES_256_GCM_SHA384, ALPN http/1.1").
fn probe_tls(addr: SocketAddr, protocol: Protocol) -> Result<String, String> {
    let (flag, version) = if protocol == Protocol::H2 { ("--http2", "2") } else { ("--http1.1", "1.1") };
    let out = Command::new("curl")
        .args(["-sS", "-k", "-v", "--max-time", "10", flag, "-w", "\n%{http_code} %{http_version}\n"])
        .arg(format!("https://{addr}/"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = stdout.lines().last().unwrap_or_default();
    if !out.status.success() || status != format!("200 {version}") || !stdout.contains(backend::BODY_START) {
        return Err(format!("probe through the balancer (curl {flag}) got:\n{stdout}\n{stderr}"));
    }
    let tls = stderr.lines().find_map(|l| l.strip_prefix("* SSL connection using ")).unwrap_or("TLS ?");
    let alpn = stderr.lines().find_map(|l| l.strip_prefix("* ALPN: server accepted ")).unwrap_or("none");
    Ok(format!("{} (curl), ALPN {}", tls.trim(), alpn.trim()))
}

fn logs(dir: &Path) -> String {
    ["stderr.log", "error.log", "log/error.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Start-up and idle memory: Fulcrum with the guide's config, from process start to the first
/// proxied response, with an empty plugin cache and then a warm one, and its RSS once idle.
mod startup {
    use super::*;

    pub struct Startup {
        /// (label, milliseconds to the first proxied response, idle RSS in MiB)
        pub runs: Vec<(&'static str, f64, f64)>,
    }

    impl Startup {
        pub fn markdown(&self) -> String {
            let mut out = String::from(
                "\n#### Start-up: `fulcrum run` with the guide's config, process start to the first proxied response\n\n\
                 | plugin cache | to first response | RSS idle after it |\n|---|---:|---:|\n",
            );
            for (label, ms, rss) in &self.runs {
                writeln!(out, "| {label} | {ms:.0} ms | {rss:.1} MiB |").unwrap();
            }
            out
        }
    }

    pub fn measure() -> Result<Startup, String> {
        let backends = backend::Backends::start(Setup::Defaults)?;
        let cache = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, Fulcrum { rules: true }.config(port, backends.addrs, None)).map_err(|e| e.to_string())?;
        let mut runs = Vec::new();
        for label in ["empty", "warm", "warm"] {
            let started = Instant::now();
            let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                .arg("run")
                .arg("--config")
                .arg(&path)
                .env("FULCRUM_LOG", "warn")
                .env("XDG_CACHE_HOME", cache.path())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            let answered = loop {
                if started.elapsed() > Duration::from_secs(30) {
                    break None;
                }
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n");
                    let mut head = [0u8; 12];
                    if stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200" {
                        break Some(started.elapsed());
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            std::thread::sleep(Duration::from_millis(500));
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
            let rss_kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(f64::NAN);
            let _ = child.kill();
            let _ = child.wait();
            let took = answered.ok_or("no proxied response within 30 s")?;
            runs.push((label, took.as_secs_f64() * 1e3, rss_kib / 1024.0));
        }
        Ok(Startup { runs })
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A started process tree, stopped when dropped (also on panic): SIGTERM to the parent, then
/// SIGKILL to whatever of the tree is left after 10 s.
struct Running {
    child: Child,
}

impl Running {
    fn spawn(mut command: Command) -> Result<Running, String> {
        let child = command.spawn().map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        Ok(Running { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and all its descendants.
    fn tree(&self) -> Vec<u32> {
        proc::tree(self.pid())
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits for the process to exit by itself, at most `limit`.
    fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut pids = self.tree();
        if !self.exited() {
            signal("TERM", &[self.pid()]);
            self.wait(Duration::from_secs(10));
        }
        pids.extend(proc::tree(self.pid()));
        pids.retain(|&pid| pid != self.pid() && proc::is_alive(pid));
        let _ = self.child.kill();
        let _ = self.child.wait();
        signal("KILL", &pids);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&pid| proc::is_alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn signal(name: &str, pids: &[u32]) {
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}

/// What `/proc` says about a process tree.
mod proc {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    /// The process and all its descendants (threads are part of their process's figures).
    pub fn tree(root: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(fields) = stat(pid)
                && let Some(ppid) = fields.get(1).and_then(|p| p.parse::<u32>().ok())
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
        let mut tree = vec![root];
        let mut next = 0;
        while next < tree.len() {
            tree.extend(children.get(&tree[next]).into_iter().flatten());
            next += 1;
        }
        tree
    }

    /// utime + stime of every process in the tree, all threads included, plus cutime + cstime
    /// (its children that exited and were reaped), in seconds; and the user part of it (utime +
    /// cutime).
    pub fn tree_cpu_seconds(root: u32) -> (f64, f64) {
        let field = |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (mut all, mut user) = (0u64, 0u64);
        for f in tree(root).into_iter().filter_map(stat) {
            all += (11..=14).map(|i| field(&f, i)).sum::<u64>();
            user += field(&f, 11) + field(&f, 13);
        }
        let ticks = clock_ticks() as f64;
        (all as f64 / ticks, user as f64 / ticks)
    }

    pub fn tree_rss_kib(root: u32) -> u64 {
        tree(root).into_iter().filter_map(|pid| status_field(pid, "VmRSS:")).sum()
    }

    pub fn threads(pid: u32) -> u64 {
        status_field(pid, "Threads:").unwrap_or(0)
    }

    /// Exists and is not a zombie.
    pub fn is_alive(pid: u32) -> bool {
        stat(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z" && state != "X"))
    }

    /// The fields of /proc/PID/stat after the command name: [0] state (field 3), [1] ppid,
    /// [11] utime (field 14), [12] stime, [13] cutime, [14] cstime.
    fn stat(pid: u32) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        Some(rest.split_whitespace().map(str::to_string).collect())
    }

    fn status_field(pid: u32, name: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    fn clock_ticks() -> u64 {
        static TICKS: OnceLock<u64> = OnceLock::new();
        *TICKS.get_or_init(|| {
            let out = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK")
        })
    }
}

/// `pidstat` over the measured window, as an independent look at the same CPU time.
struct Pidstat {
    running: Running,
    out: tempfile::NamedTempFile,
    seconds: u32,
}

impl Pidstat {
    fn start(pids: &[u32], seconds: u32) -> Result<Pidstat, String> {
        let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut cmd = Command::new("pidstat");
        cmd.args(["-u", "-h", "-p", &list, &seconds.to_string(), "1"])
            .env("LC_ALL", "C")
            .stdout(out.reopen().map_err(|e| e.to_string())?);
        Ok(Pidstat { running: Running::spawn(cmd)?, out, seconds })
    }

    /// CPU seconds: the sum of the processes' %CPU times the interval.
    fn finish(mut self) -> Result<f64, String> {
        self.running.wait(Duration::from_secs(15));
        let text = std::fs::read_to_string(self.out.path()).map_err(|e| e.to_string())?;
        let header = text.lines().find(|l| l.starts_with('#')).ok_or("pidstat: no output")?;
        let column = header.split_whitespace().skip(1).position(|c| c == "%CPU").ok_or("pidstat: no %CPU")?;
        let percent: f64 = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with("Linux"))
            .filter_map(|l| l.split_whitespace().nth(column)?.parse::<f64>().ok())
            .sum();
        // One report over the whole window: %CPU is its average.
        Ok(percent / 100.0 * f64::from(self.seconds))
    }
}

// ---------------------------------------------------------------------------------------------
// The clients: wrk (http, https) and h2load (h2)

struct ClientFigures {
    /// Responses received in the window.
    requests: u64,
    requests_per_second: f64,
    /// wrk: the 50th percentile latency; h2load: the mean "time for request".
    mid_us: f64,
    /// wrk: the 99th percentile latency; h2load: the maximum "time for request".
    high_us: f64,
    /// Responses that are 2xx or 3xx: each of them reached a backend.
    answered: u64,
    /// wrk: non-2xx/3xx responses plus socket errors (connect, read, write, timeout); h2load: its
    /// failed (non-2xx/3xx, stream errors) and timed-out requests.
    errors: u64,
    /// The client's own words for them, if any.
    error_detail: String,
    /// h2load: TLS version, cipher and application protocol.
    negotiated: Option<String>,
}

/// The protocol's client, for `seconds`, its connections opened at the start.
fn client(case: &Case<'_>, url: &str, seconds: u32) -> Result<ClientFigures, String> {
    match case.protocol {
        Protocol::Http | Protocol::Https => wrk(case, url, seconds),
        Protocol::H2 => h2load(case, url, seconds),
    }
}

fn wrk(case: &Case<'_>, url: &str, seconds: u32) -> Result<ClientFigures, String> {
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let threads = case.setup.client_threads();
    let launch = Launch::new("/usr/bin/wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", case.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url);
    let mut command = launch.command(case.setup.client_cpus());
    command.stdin(Stdio::null()).stdout(out.reopen().map_err(|e| e.to_string())?).stderr(Stdio::piped());
    let mut running = Running::spawn(command)?;
    if !running.wait(Duration::from_secs(u64::from(seconds) + 30)) {
        return Err("wrk did not finish in time".into());
    }
    let text = std::fs::read_to_string(out.path()).map_err(|e| e.to_string())?;
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<ClientFigures> {
    let field = |prefix: &str| text.lines().find_map(|l| l.trim_start().strip_prefix(prefix).map(str::trim));
    let requests = text.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0"
    let socket: u64 = field("Socket errors:")
        .map_or(0, |v| v.split(',').filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok()).sum());
    Some(ClientFigures {
        requests,
        answered: requests.saturating_sub(non_2xx),
        requests_per_second: field("Requests/sec:")?.parse().ok()?,
        mid_us: duration_us(field("50%")?)?,
        high_us: duration_us(field("99%")?)?,
        errors: non_2xx + socket,
        error_detail: ["Non-2xx or 3xx responses:", "Socket errors:"]
            .iter()
            .filter_map(|p| field(p).map(|v| format!("{p} {v}")))
            .collect::<Vec<_>>()
            .join("; "),
        negotiated: None,
    })
}

/// `h2load -c CONNS -m 10 -t THREADS -D SECONDS https://...`: a timing-based run (its own warm-up
/// is not used; the warm-up is a run of its own, as with wrk). It must have spoken h2. It offers
/// TLS 1.3's TLS_AES_256_GCM_SHA384 only: what wrk (OpenSSL's default order) gets from all three;
/// with h2load's own order (AES-128 first) HAProxy picks AES-256 by its preference and the others
/// AES-128.
fn h2load(case: &Case<'_>, url: &str, seconds: u32) -> Result<ClientFigures, String> {
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let launch = Launch::new("/usr/bin/h2load")
        .arg(format!("-c{}", case.connections))
        .arg(format!("-m{}", Protocol::H2_STREAMS))
        .arg(format!("-t{}", case.setup.client_threads()))
        .arg(format!("--tls13-ciphers={}", Tls::SUITE))
        .arg("-D")
        .arg(seconds.to_string())
        .arg(url);
    let mut command = launch.command(case.setup.client_cpus());
    command.stdin(Stdio::null()).stdout(out.reopen().map_err(|e| e.to_string())?).stderr(Stdio::piped());
    let mut running = Running::spawn(command)?;
    if !running.wait(Duration::from_secs(u64::from(seconds) + 30)) {
        return Err("h2load did not finish in time".into());
    }
    let text = std::fs::read_to_string(out.path()).map_err(|e| e.to_string())?;
    let figures = parse_h2load(&text).ok_or_else(|| format!("cannot read h2load's output:\n{text}"))?;
    match &figures.negotiated {
        Some(n) if n.ends_with("ALPN h2") => Ok(figures),
        _ => Err(format!("h2load did not speak h2:\n{text}")),
    }
}

/// h2load's summary:
///
/// ```text
/// TLS Protocol: TLSv1.3
/// Cipher: TLS_AES_128_GCM_SHA256
/// Application protocol: h2
/// finished in 2.00s, 2000.00 req/s, 140.75KB/s
/// requests: 4032 total, 4036 started, 4032 done, 4000 succeeded, 32 failed, 32 errored, 0 timeout
///                      min         max         mean         sd        +/- sd
/// time for request:       30us      1.06ms       309us       127us    75.28%
/// ```
fn parse_h2load(text: &str) -> Option<ClientFigures> {
    let field = |prefix: &str| text.lines().find_map(|l| l.trim_start().strip_prefix(prefix).map(str::trim));
    // "N word, N word, ...": the number before each word.
    let counts = |line: &str| -> BTreeMap<String, u64> {
        line.split(',')
            .filter_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.parse().ok()?;
                Some((words.next()?.to_string(), n))
            })
            .collect()
    };
    let finished = field("finished in ")?;
    let requests_per_second = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let requests = counts(field("requests:")?);
    let count = |map: &BTreeMap<String, u64>, key: &str| map.get(key).copied();
    let done = count(&requests, "done")?;
    let (failed, timeout) = (count(&requests, "failed")?, count(&requests, "timeout").unwrap_or(0));
    // min, max, mean, sd, +/- sd
    let times: Vec<&str> = field("time for request:")?.split_whitespace().collect();
    let negotiated = format!(
        "{} / {} (h2load), ALPN {}",
        field("TLS Protocol:").unwrap_or("?"),
        field("Cipher:").unwrap_or("?"),
        field("Application protocol:").unwrap_or("none")
    );
    Some(ClientFigures {
        requests: done,
        requests_per_second,
        mid_us: duration_us(times.get(2)?)?,
        high_us: duration_us(times.get(1)?)?,
        answered: count(&requests, "succeeded")?,
        errors: failed + timeout,
        error_detail: if failed + timeout > 0 { format!("requests: {}", field("requests:")?) } else { String::new() },
        negotiated: Some(negotiated),
    })
}

/// wrk's and h2load's "812.00us", "1.23ms", "2.01s".
fn duration_us(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else {
        (text.strip_suffix('s')?, 1e6)
    };
    Some(number.parse::<f64>().ok()? * factor)
}

// ---------------------------------------------------------------------------------------------
// The backends: a child process (so it can be pinned) serving a fixed response on two ports

mod backend {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub const BODY_START: &str = "static response from web";

    /// The backend process, its two addresses and its hit counters.
    pub struct Backends {
        pub addrs: [SocketAddr; 2],
        control: SocketAddr,
        // Dropped first: closing its stdin ends the process even if the guard could not.
        _stdin: ChildStdin,
        _running: Running,
    }

    impl Backends {
        pub fn start(setup: Setup) -> Result<Backends, String> {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut command = Launch::new(exe).env(BACKEND_ENV, "1").command(setup.client_cpus());
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
            let mut running = Running::spawn(command)?;
            let stdin = running.child.stdin.take().unwrap();
            let mut line = String::new();
            BufReader::new(running.child.stdout.take().unwrap()).read_line(&mut line).map_err(|e| e.to_string())?;
            let ports: Vec<u16> = line.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            let [web1, web2, control] = ports[..] else { return Err(format!("backends said {line:?}")) };
            let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
            Ok(Backends { addrs: [addr(web1), addr(web2)], control: addr(control), _stdin: stdin, _running: running })
        }

        /// Requests answered so far by web1 and web2.
        pub fn hits(&self) -> Result<[u64; 2], String> {
            let mut text = String::new();
            TcpStream::connect(self.control)
                .and_then(|mut s| s.read_to_string(&mut text))
                .map_err(|e| format!("backend counters: {e}"))?;
            let counts: Vec<u64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            match counts[..] {
                [web1, web2] => Ok([web1, web2]),
                _ => Err(format!("backend counters: {text:?}")),
            }
        }
    }

    static HITS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    /// The child process: tokio's default runtime (one worker per allowed core), two listeners and
    /// a control port that answers "HITS1 HITS2"; exits when its stdin closes.
    pub fn serve_until_stdin_closes() {
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
            let (web1, web2, control) = (bind().await.unwrap(), bind().await.unwrap(), bind().await.unwrap());
            let port = |l: &tokio::net::TcpListener| l.local_addr().unwrap().port();
            println!("{} {} {}", port(&web1), port(&web2), port(&control));
            std::io::stdout().flush().unwrap();
            tokio::spawn(accept(web1, 0));
            tokio::spawn(accept(web2, 1));
            loop {
                let Ok((mut stream, _)) = control.accept().await else { continue };
                let text = format!("{} {}\n", HITS[0].load(Ordering::SeqCst), HITS[1].load(Ordering::SeqCst));
                let _ = stream.write_all(text.as_bytes()).await;
            }
        });
    }

    fn response(index: usize) -> &'static [u8] {
        let body = format!("{:.<width$}\n", format!("{BODY_START}{} ", index + 1), width = BODY_LEN - 1);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
        Box::leak(format!("{head}{body}").into_bytes().into_boxed_slice())
    }

    async fn accept(listener: tokio::net::TcpListener, index: usize) {
        let response = response(index);
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, response, &HITS[index]));
            }
        }
    }

    /// Answers each request head (and skips its Content-Length body) with the fixed response,
    /// keeping the connection open unless the request says otherwise.
    async fn serve(mut stream: tokio::net::TcpStream, response: &'static [u8], hits: &'static AtomicU64) {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let (answered, close) = take_requests(&mut buf);
            if answered > 0 {
                hits.fetch_add(answered as u64, Ordering::SeqCst);
                let out = response.repeat(answered);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            if close {
                return;
            }
        }
    }

    /// Removes the complete requests from `buf`: how many, and whether one asked to close.
    fn take_requests(buf: &mut Vec<u8>) -> (usize, bool) {
        let (mut answered, mut close) = (0, false);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + body {
                break;
            }
            close |= head.contains("\nconnection: close")
                || (head.lines().next().is_some_and(|l| l.ends_with("http/1.0"))
                    && !head.contains("\nconnection: keep-alive"));
            buf.drain(..end + 4 + body);
            answered += 1;
        }
        (answered, close)
    }
}

// ---------------------------------------------------------------------------------------------
// The report

mod report {
    use super::*;

    /// Medians over the rounds of one balancer, set-up and connection count.
    pub struct Row {
        pub balancer: &'static str,
        pub peer: bool,
        pub setup: Setup,
        pub protocol: Protocol,
        pub connections: u32,
        pub requests_per_second: f64,
        /// p50 (wrk) or mean (h2load).
        pub mid_us: f64,
        /// p99 (wrk) or max (h2load).
        pub high_us: f64,
        pub errors: u64,
        pub cpu_us: f64,
        /// The user-space part of `cpu_us`.
        pub user_us: f64,
        pub rss_mib: f64,
        pub rounds: usize,
    }

    pub fn rows(balancers: &[Box<dyn Balancer>], samples: &[Sample]) -> Vec<Row> {
        let mut groups: BTreeMap<(Protocol, Setup, u32, usize), Vec<&Sample>> = BTreeMap::new();
        for s in samples {
            let index = balancers.iter().position(|b| b.name() == s.balancer).unwrap();
            groups.entry((s.protocol, s.setup, s.connections, index)).or_default().push(s);
        }
        groups
            .into_iter()
            .map(|((protocol, setup, connections, index), group)| {
                let med = |f: &dyn Fn(&Sample) -> f64| median(group.iter().map(|s| f(s)).collect());
                Row {
                    balancer: balancers[index].name(),
                    peer: balancers[index].is_peer(),
                    setup,
                    protocol,
                    connections,
                    requests_per_second: med(&|s| s.wrk.requests_per_second),
                    mid_us: med(&|s| s.wrk.mid_us),
                    high_us: med(&|s| s.wrk.high_us),
                    errors: group.iter().map(|s| s.wrk.errors).sum(),
                    cpu_us: med(&|s| s.cpu_us_per_request()),
                    user_us: med(&|s| s.user_us_per_request()),
                    rss_mib: med(&|s| s.rss_mib),
                    rounds: group.len(),
                }
            })
            .collect()
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
    }

    pub fn latency(us: f64) -> String {
        if us < 1000.0 { format!("{us:.0} µs") } else { format!("{:.2} ms", us / 1000.0) }
    }

    pub fn markdown(
        plan: &Plan,
        before: &Machine,
        after: &Machine,
        tls: Option<&Tls>,
        balancers: &[Box<dyn Balancer>],
        samples: &[Sample],
    ) -> String {
        let rows = rows(balancers, samples);
        let mut out = String::new();
        writeln!(out, "Load benchmark: {}.", plan.describe()).unwrap();
        writeln!(out, "{}; load average after: {}.", before.describe(), after.load_average).unwrap();
        writeln!(
            out,
            "Medians over the rounds; errors summed over them. CPU per request: the balancer's utime + stime \
             (all processes and threads) in the window / requests completed; of which user: the utime part \
             (the rest is the kernel's). Ratios: to the best of nginx and HAProxy at the same connection count \
             (req/s: the highest; CPU: the lowest)."
        )
        .unwrap();
        if let Some(tls) = tls {
            writeln!(
                out,
                "\n{}. Members stay plain HTTP/1.1. https: wrk with an https:// URL (HTTP/1.1, no ALPN). h2: \
                 h2load -m {} --tls13-ciphers={} (HTTP/2 by ALPN); h2load gives no percentiles, so its \
                 tables show the mean and the max of its \"time for request\" where wrk's show p50 and p99. \
                 nginx gets `keepalive_requests 1000000000` and `worker_connections 4096` in the h2 rows only \
                 (its default 1,000 requests end an HTTP/2 connection, which h2load does not reopen; each \
                 stream may hold an upstream connection). The CPU of a window includes the TLS handshakes \
                 of the client's connections.",
                tls.describe(),
                Protocol::H2_STREAMS,
                Tls::SUITE
            )
            .unwrap();
        }
        for (protocol, setup) in Protocol::ALL.into_iter().flat_map(|p| [(p, Setup::Pinned), (p, Setup::Defaults)]) {
            let table: Vec<&Row> = rows.iter().filter(|r| r.protocol == protocol && r.setup == setup).collect();
            if table.is_empty() {
                continue;
            }
            let [mid, high] = protocol.latency_labels();
            writeln!(out, "\n#### {}\n", protocol.title(setup)).unwrap();
            writeln!(
                out,
                "| balancer | conns | requests/s | {mid} | {high} | errors | CPU µs/request | of which user | RSS after | req/s vs best peer | CPU vs best peer |"
            )
            .unwrap();
            writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
            for row in table {
                let peers: Vec<&Row> = rows
                    .iter()
                    .filter(|p| {
                        p.peer && p.protocol == protocol && p.setup == setup && p.connections == row.connections
                    })
                    .collect();
                let best_rps = peers.iter().map(|p| p.requests_per_second).fold(f64::NAN, f64::max);
                let best_cpu = peers.iter().map(|p| p.cpu_us).fold(f64::NAN, f64::min);
                writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} MiB | {} | {} |",
                    row.balancer,
                    row.connections,
                    row.requests_per_second,
                    latency(row.mid_us),
                    latency(row.high_us),
                    row.errors,
                    row.cpu_us,
                    row.user_us,
                    row.rss_mib,
                    ratio(row.requests_per_second / best_rps),
                    ratio(row.cpu_us / best_cpu),
                )
                .unwrap();
            }
            if protocol.is_tls() {
                // What each balancer negotiated, as the client saw it (once per balancer).
                let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
                for s in samples.iter().filter(|s| s.protocol == protocol && s.setup == setup) {
                    seen.entry(s.balancer).or_insert_with(|| s.negotiated.as_deref().unwrap_or("?"));
                }
                let same = seen.values().all(|n| n.contains(Tls::SUITE));
                let seen: Vec<String> = seen.iter().map(|(b, n)| format!("{b}: {n}")).collect();
                writeln!(out, "\nNegotiated: {}.", seen.join("; ")).unwrap();
                if !same {
                    writeln!(out, "\n**Not all balancers negotiated {}: the rows are not like for like.**", Tls::SUITE)
                        .unwrap();
                }
            }
        }
        let rounds: Vec<usize> = rows.iter().map(|r| r.rounds).collect();
        if rounds.iter().any(|&r| r != plan.rounds) {
            writeln!(out, "\n(some cases have fewer than {} rounds: {rounds:?})", plan.rounds).unwrap();
        }
        out
    }

    fn ratio(value: f64) -> String {
        if value.is_finite() { format!("{value:.2}") } else { "–".into() }
    }

    const COLORS: [&str; 5] = ["#d95f02", "#fdb863", "#1b9e77", "#7570b3", "#e7298a"];

    /// Bars of CPU µs per request over plain HTTP (the https and h2 rows are in the tables only): a
    /// panel per set-up, a group per connection count, a bar per balancer.
    pub fn svg(plan: &Plan, balancers: &[Box<dyn Balancer>], samples: &[Sample]) -> String {
        let rows: Vec<Row> = rows(balancers, samples).into_iter().filter(|r| r.protocol == Protocol::Http).collect();
        let (panel_w, height, top, bottom, left) = (440.0, 380.0, 50.0, 60.0, 50.0);
        let width = left + 2.0 * panel_w + 20.0;
        let max = rows.iter().map(|r| r.cpu_us).fold(0.0, f64::max).max(1.0) * 1.15;
        let plot_h = height - top - bottom;
        let y = |v: f64| top + plot_h * (1.0 - v / max);
        let mut s = String::new();
        writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="12">"#,
            h = height + 20.0 * balancers.len().div_ceil(3) as f64
        )
        .unwrap();
        writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
        writeln!(
            s,
            r#"<text x="{}" y="20" text-anchor="middle" font-size="15">Balancer CPU time per request over HTTP/1.1 (µs, median of {} rounds; lower is better)</text>"#,
            width / 2.0,
            plan.rounds
        )
        .unwrap();
        // The axis: gridlines every `step` µs.
        let step = nice_step(max);
        let mut tick = 0.0;
        while tick <= max {
            writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{tick}</text>"##,
                width - 20.0,
                left - 4.0,
                y(tick) + 4.0,
                y = y(tick)
            )
            .unwrap();
            tick += step;
        }
        for (p, setup) in [Setup::Pinned, Setup::Defaults].into_iter().enumerate() {
            let x0 = left + p as f64 * panel_w;
            let title = match setup {
                Setup::Pinned => "pinned: balancer alone on 1 core, 1 worker",
                Setup::Defaults => "defaults: both cores shared",
            };
            writeln!(s, r#"<text x="{}" y="40" text-anchor="middle">{title}</text>"#, x0 + panel_w / 2.0).unwrap();
            let group_w = panel_w / plan.connections.len() as f64;
            let bar_w = (group_w - 20.0) / balancers.len() as f64;
            for (g, &connections) in plan.connections.iter().enumerate() {
                let gx = x0 + g as f64 * group_w + 10.0;
                for (b, balancer) in balancers.iter().enumerate() {
                    let Some(row) = rows
                        .iter()
                        .find(|r| r.setup == setup && r.connections == connections && r.balancer == balancer.name())
                    else {
                        continue;
                    };
                    let x = gx + b as f64 * bar_w;
                    writeln!(
                        s,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}, {} connections: {:.1} µs</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{:.0}</text>"#,
                        y(row.cpu_us),
                        bar_w - 2.0,
                        plot_h + top - y(row.cpu_us),
                        COLORS[b % COLORS.len()],
                        balancer.name(),
                        connections,
                        row.cpu_us,
                        x + (bar_w - 2.0) / 2.0,
                        y(row.cpu_us) - 3.0,
                        row.cpu_us
                    )
                    .unwrap();
                }
                writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{connections} conns</text>"#,
                    gx + (group_w - 20.0) / 2.0,
                    top + plot_h + 16.0
                )
                .unwrap();
            }
        }
        for (b, balancer) in balancers.iter().enumerate() {
            let (x, ly) = (left + (b % 3) as f64 * 280.0, height - 20.0 + 20.0 * (b / 3) as f64);
            writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 10.0,
                COLORS[b % COLORS.len()],
                x + 16.0,
                balancer.name()
            )
            .unwrap();
        }
        s.push_str("</svg>\n");
        s
    }

    fn nice_step(max: f64) -> f64 {
        let raw = max / 6.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(magnitude * 10.0)
    }
}
