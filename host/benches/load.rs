//! The load benchmark: Fulcrum against nginx, HAProxy and Apache, each balancing round robin over
//! the same two echo backends on 127.0.0.1, driven by `wrk` with keep-alive connections.
//!
//! `cargo bench -p fulcrum --bench load` prints a table: requests per second, latency percentiles,
//! and the proxy's resident memory (all its processes) after the run. Each proxy runs from
//! Debian's package with a config written here (defaults as a user would keep them, access logs
//! off everywhere), as a private instance on a free port; none is started as a service.
//! Missing programs are named with the `apt-get install` that brings them, and skipped.
//!
//! Everything shares one machine: `wrk`, the proxy and the backends compete for the same cores,
//! so read the numbers against each other, not as absolute capacities. Each run is bounded
//! (`LOAD_SECONDS`, plus a short warm-up).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulcrum::demo::EchoServer;

/// How long each measured run lasts (seconds), and the connections `wrk` keeps open.
const LOAD_SECONDS: u32 = 10;
const CONNECTIONS: u32 = 32;

struct Proxy {
    name: &'static str,
    /// The program, to say what is missing.
    program: &'static str,
    package: &'static str,
    /// Writes the config into the folder and returns the command that runs it in the foreground.
    command: fn(dir: &Path, port: u16, backends: [SocketAddr; 2]) -> Command,
}

const PROXIES: &[Proxy] = &[
    Proxy { name: "Fulcrum (byrequests, Wasm)", program: "", package: "", command: fulcrum },
    Proxy { name: "nginx", program: "/usr/sbin/nginx", package: "nginx", command: nginx },
    Proxy { name: "HAProxy", program: "/usr/sbin/haproxy", package: "haproxy", command: haproxy },
    Proxy { name: "Apache (mod_proxy_balancer)", program: "/usr/sbin/apache2", package: "apache2", command: apache },
];

fn fulcrum(dir: &Path, port: u16, [web1, web2]: [SocketAddr; 2]) -> Command {
    let config = format!(
        "listen = [\"127.0.0.1:{port}\"]\n\n[[vhost]]\nserver_name = \"localhost\"\n\
         proxy_pass = [{{ path = \"/\", to = \"balancer://default/\" }}]\n\n\
         [balancer.default]\nlbmethod = \"byrequests\"\n\n\
         [[balancer.default.member]]\nurl = \"http://{web1}\"\n\n[[balancer.default.member]]\nurl = \"http://{web2}\"\n"
    );
    let path = dir.join("fulcrum.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    cmd.args(["run", "--config"]).arg(path).env("FULCRUM_LOG", "warn");
    cmd
}

fn nginx(dir: &Path, port: u16, [web1, web2]: [SocketAddr; 2]) -> Command {
    let d = dir.display();
    let config = format!(
        "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream backends {{ server {web1}; server {web2}; keepalive 32; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://backends;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf"));
    cmd
}

fn haproxy(dir: &Path, port: u16, [web1, web2]: [SocketAddr; 2]) -> Command {
    let config = format!(
        "global\n  pidfile {d}/haproxy.pid\n\ndefaults\n  mode http\n  timeout connect 5s\n\
         timeout client 60s\n  timeout server 60s\n\n\
         frontend proxy\n  bind 127.0.0.1:{port}\n  default_backend backends\n\n\
         backend backends\n  balance roundrobin\n  server web1 {web1}\n  server web2 {web2}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let mut cmd = Command::new("/usr/sbin/haproxy");
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    cmd
}

fn apache(dir: &Path, port: u16, [web1, web2]: [SocketAddr; 2]) -> Command {
    let modules = "/usr/lib/apache2/modules";
    let load: String = [
        ("mpm_event", "mod_mpm_event"),
        ("authz_core", "mod_authz_core"),
        ("proxy", "mod_proxy"),
        ("proxy_http", "mod_proxy_http"),
        ("proxy_balancer", "mod_proxy_balancer"),
        ("slotmem_shm", "mod_slotmem_shm"),
        ("lbmethod_byrequests", "mod_lbmethod_byrequests"),
    ]
    .iter()
    .map(|(module, file)| format!("LoadModule {module}_module {modules}/{file}.so\n"))
    .collect();
    // Debian's mpm_event.conf values.
    let config = format!(
        "{load}ServerName localhost\nListen 127.0.0.1:{port}\nUser www-data\nGroup www-data\n\
         PidFile {d}/apache2.pid\nErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex file:{d} default\n\
         StartServers 2\nMinSpareThreads 25\nMaxSpareThreads 75\nThreadLimit 64\nThreadsPerChild 25\n\
         MaxRequestWorkers 150\nMaxConnectionsPerChild 0\n\
         <Proxy balancer://default>\n  BalancerMember http://{web1}\n  BalancerMember http://{web2}\n</Proxy>\n\
         ProxyPass / balancer://default/\n",
        d = dir.display()
    );
    std::fs::write(dir.join("apache2.conf"), config).unwrap();
    let mut cmd = Command::new("/usr/sbin/apache2");
    cmd.arg("-d").arg(dir).arg("-f").arg(dir.join("apache2.conf")).arg("-DFOREGROUND");
    cmd
}

/// One run's figures, as `wrk --latency` prints them.
struct Figures {
    requests_per_second: f64,
    p50: String,
    p99: String,
    errors: String,
    rss_mib: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks proxies by name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !Path::new("/usr/bin/wrk").exists() {
        eprintln!("load benchmark: /usr/bin/wrk is missing: apt-get install -y wrk");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (web1, web2) = runtime.block_on(async {
        (EchoServer::start(any, "web1").await.unwrap(), EchoServer::start(any, "web2").await.unwrap())
    });
    let backends = [web1.addr, web2.addr];

    println!(
        "load benchmark: {CONNECTIONS} keep-alive connections from wrk (1 thread), {LOAD_SECONDS} s per proxy, \
         two echo backends\n"
    );
    println!("| proxy | requests/s | latency p50 | latency p99 | errors | RSS after |");
    println!("|---|---:|---:|---:|---:|---:|");
    for proxy in PROXIES {
        if !filter.is_empty() && !filter.iter().any(|f| proxy.name.to_lowercase().contains(&f.to_lowercase())) {
            continue;
        }
        if !proxy.program.is_empty() && !Path::new(proxy.program).exists() {
            println!("| {} | missing: `apt-get install -y {}` | | | | |", proxy.name, proxy.package);
            continue;
        }
        match run(proxy, backends) {
            Ok(f) => println!(
                "| {} | {:.0} | {} | {} | {} | {:.1} MiB |",
                proxy.name, f.requests_per_second, f.p50, f.p99, f.errors, f.rss_mib
            ),
            Err(why) => println!("| {} | failed: {why} | | | | |", proxy.name),
        }
    }
    drop((web1, web2));
}

fn run(proxy: &Proxy, backends: [SocketAddr; 2]) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The workers of nginx and Apache drop root; they need to read their folder.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = free_port();
    let mut child = Running(
        (proxy.command)(dir.path(), port, backends)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?,
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(30) || child.0.try_wait().ok().flatten().is_some() {
            return Err(format!("did not listen on {addr}: {}", logs(dir.path())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{addr}/");
    wrk(&url, 2)?; // warm-up: connection pools, Apache's children, lazy compilation
    let out = wrk(&url, LOAD_SECONDS)?;
    let rss_mib = tree_rss_kib(child.0.id()) as f64 / 1024.0;
    let field = |prefix: &str| {
        out.lines().find_map(|l| l.trim_start().strip_prefix(prefix).map(|v| v.trim().to_string())).unwrap_or_default()
    };
    let requests_per_second = field("Requests/sec:").parse::<f64>().map_err(|_| format!("wrk said:\n{out}"))?;
    let errors = {
        let non_2xx = field("Non-2xx or 3xx responses:");
        let socket = field("Socket errors:");
        match (non_2xx.is_empty(), socket.is_empty()) {
            (true, true) => "0".to_string(),
            _ => format!("{non_2xx} {socket}").trim().to_string(),
        }
    };
    Ok(Figures { requests_per_second, p50: field("50%"), p99: field("99%"), errors, rss_mib })
}

/// A proxy process, stopped (and its workers with it) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM: each of these proxies stops its workers on it.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wrk(url: &str, seconds: u32) -> Result<String, String> {
    let out = Command::new("/usr/bin/wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    if !out.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Resident memory of `pid` and all its descendants, KiB.
fn tree_rss_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        total += status_field(p, "VmRSS:").unwrap_or(0);
        frontier.extend(children(p));
    }
    total
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| status_field(p, "PPid:") == Some(pid as u64))
        .collect()
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let mut text = String::new();
    std::fs::File::open(PathBuf::from(format!("/proc/{pid}/status"))).ok()?.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn logs(dir: &Path) -> String {
    ["stderr.log", "error.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
