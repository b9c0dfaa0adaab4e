//! The `fulcrum` command: `run`, `check`, `demo`, `plugin inspect`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum::config::{Config, RouteTarget};
use fulcrum::demo::EchoServer;
use fulcrum::plugin::PluginRegistry;
use fulcrum::runtime::{self, Runtime};
use fulcrum::server;

/// The guide's set-up, compiled in so that `fulcrum demo` works from any folder.
const GUIDE_CONFIG: &str = include_str!("../../examples/apache-guide.toml");
const GUIDE_PATH: &str = "examples/apache-guide.toml";

#[derive(Parser)]
#[command(name = "fulcrum", version, about = "An HTTP load balancer programmable with WebAssembly")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGHUP reloads the configuration (and the plugin folder) without dropping a
    /// request; a file with problems is refused and the one in force stays.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Also reload when the configuration file changes.
        #[arg(long)]
        watch_config: bool,
    },
    /// Validate a configuration (and configure its plugins), print what it sets up, and exit:
    /// 0 when it is good, 1 with every problem and its file:line otherwise.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the proxy with the Apache guide's configuration and an echo backend for each of its
    /// members on 127.0.0.1, so `curl http://127.0.0.1:8080/` shows balancing at once.
    Demo {
        /// Another configuration to demonstrate (its 127.0.0.1 members get echo backends).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a plugin component and describe it: worlds, WIT version, imports, size, compile time.
    Inspect { file: PathBuf },
    /// Create a Rust selector plugin crate that builds out of the box (with its README).
    New {
        name: String,
        /// Where to create it (default: the current folder).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Turn a core Wasm module built with wit-bindgen into a component (like `wasm-tools component new`).
    Componentize {
        module: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write the plugin interface (the WIT package this binary speaks) into a folder, for guest
    /// tool chains that read WIT: componentize-py, componentize-js, wit-bindgen.
    Wit {
        #[arg(long, default_value = "wit")]
        out_dir: PathBuf,
    },
    /// Run the conformance kit of the default selector (sdk/conformance/byrequests.toml) against a
    /// component file, or a built-in by name: exit 0 when every case passes.
    Conform { plugin: String },
    /// Generate guest bindings for a world (`selector` or `rules`); `c` serves C and Zig.
    Bindings {
        /// The language: `c`.
        language: String,
        /// `selector` or `rules`.
        #[arg(long, default_value = "selector")]
        world: String,
        #[arg(long, default_value = "gen")]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    fulcrum::log::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, watch_config } => load(&config).and_then(|c| run(c, watch_config)),
        Command::Check { config } => check(&config),
        Command::Demo { config } => demo(config.as_deref()),
        Command::Plugin { command: PluginCommand::Inspect { file } } => inspect(&file),
        Command::Plugin { command: PluginCommand::New { name, dir } } => {
            fulcrum::plugin::template::new_selector(&name, &dir).map(|path| {
                println!("created {}; see its README.md to build and install it", path.display());
            })
        }
        Command::Plugin { command: PluginCommand::Componentize { module, output } } => {
            fulcrum::plugin::template::componentize(&module, &output)
        }
        Command::Plugin { command: PluginCommand::Conform { plugin } } => conform(&plugin),
        Command::Plugin { command: PluginCommand::Wit { out_dir } } => fulcrum::plugin::template::write_wit(&out_dir),
        Command::Plugin { command: PluginCommand::Bindings { language, world, out_dir } } => match language.as_str() {
            "c" | "zig" => fulcrum::plugin::template::bindings_c(&world, &out_dir).map(|files| {
                for f in files {
                    println!("{}", f.display());
                }
            }),
            other => Err(fulcrum::Error::msg(format!(
                "no binding generator for `{other}` here (known: c, zig); Rust uses fulcrum-sdk, Python \
                 componentize-py and JavaScript componentize-qjs or componentize-js, all reading `fulcrum plugin wit`"
            ))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulcrum: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, fulcrum::Error> {
    Ok(Config::load(path)?)
}

/// The control runtime on the main thread: signals, the admin listener, the plugin watcher. The
/// requests are served by the workers ([`server::start_workers`]), each on a runtime of its own.
fn control_runtime() -> Result<tokio::runtime::Runtime, fulcrum::Error> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run(config: Config, watch_config: bool) -> Result<(), fulcrum::Error> {
    let rt = control_runtime()?;
    let runtime = Runtime::build(config)?.into_shared();
    let listeners = runtime.bind()?;
    rt.block_on(async {
        let mut signals = StopSignals::new()?;
        if let Some(admin) = runtime.bind_admin().await? {
            if let Ok(addr) = admin.local_addr() {
                println!("fulcrum admin on http://{addr}/metrics");
            }
            tokio::spawn(server::serve_admin(admin, runtime.shared()));
        }
        runtime::watch(std::sync::Arc::clone(&runtime), watch_config)?;
        announce(&listeners, runtime.proxy().config());
        let workers = server::start_workers(listeners, &runtime.shared(), server::worker_count())?;
        runtime.serve_on(workers.listeners());
        runtime.start_checks();
        // Read when the signal comes: a configuration reload may have changed it.
        signals.stop(workers, || runtime.proxy().config().shutdown_timeout).await;
        Ok(())
    })
}

/// One line per listener on stdout: people read it, and tests learn the port from it.
fn announce(listeners: &[std::net::TcpListener], config: &Config) {
    // `bind` binds them in `listen`'s order.
    for (l, settings) in listeners.iter().zip(config.listeners.iter().map(Some).chain(std::iter::repeat(None))) {
        if let Ok(addr) = l.local_addr() {
            let (scheme, what) = match settings {
                Some(s) if s.redirect.is_some() => {
                    ("http", format!(" (redirect to {})", s.redirect.as_deref().unwrap_or_default()))
                }
                Some(s) if s.tls.is_some() => ("https", " (TLS: HTTP/2 and HTTP/1.1)".to_string()),
                Some(s) if s.h2c => ("http", " (HTTP/1.1 and h2c)".to_string()),
                _ => ("http", String::new()),
            };
            println!("fulcrum listening on {scheme}://{addr}{what}");
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C): the first stops gracefully ([`server::Workers::shutdown`]), a
/// second one at once. Made before the listeners are announced, so that a signal sent as soon as
/// Fulcrum listens is never the default one that kills the process.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<StopSignals, fulcrum::Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let watch = |kind, name| signal(kind).map_err(|e| fulcrum::Error::msg(format!("cannot watch {name}: {e}")));
            Ok(StopSignals {
                term: watch(SignalKind::terminate(), "SIGTERM")?,
                int: watch(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }

    /// Serve until a signal, then stop `workers` gracefully within `timeout()` (`shutdown_timeout`
    /// as it is then), or at once on another signal. Either way the process then exits with 0: it
    /// was asked to stop, and did.
    async fn stop(&mut self, workers: server::Workers, timeout: impl FnOnce() -> std::time::Duration) {
        let signal = self.recv().await;
        tracing::info!("{signal}: stopping (send it again to stop at once)");
        tokio::select! {
            _ = workers.shutdown(timeout()) => {}
            again = self.recv() => tracing::warn!("{again} again: exiting without waiting for the connections still open"),
        }
    }
}

fn check(path: &Path) -> Result<(), fulcrum::Error> {
    let config = load(path)?;
    let runtime = Runtime::build(config)?;
    // `run` watches the plugin folder: one that cannot be watched would fail it at start.
    if let Some(dir) = runtime.plugins.dir() {
        drop(fulcrum::plugin::watch::watcher(dir, || {})?);
    }
    let proxy = runtime.proxy();
    let c = proxy.config();
    // `fulcrum check | head` closes the pipe early: stop writing then, do not panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}: OK", c.source.display());
    for l in &c.listeners {
        match &l.tls {
            Some(tls) => {
                let _ = writeln!(
                    out,
                    "listen {} tls (h2, http/1.1) certificate {} key {}",
                    l.address,
                    tls.certificate.certificate_file.display(),
                    tls.certificate.key_file.display()
                );
            }
            None if l.h2c => {
                let _ = writeln!(out, "listen {} (http/1.1, h2c)", l.address);
            }
            None if l.redirect.is_some() => {
                let _ = writeln!(out, "listen {} redirect {}", l.address, l.redirect.as_deref().unwrap_or_default());
            }
            None => {
                let _ = writeln!(out, "listen {}", l.address);
            }
        }
    }
    if c.shutdown_timeout != fulcrum::config::DEFAULT_SHUTDOWN_TIMEOUT {
        let _ = writeln!(out, "shutdown_timeout {}s", c.shutdown_timeout.as_secs());
    }
    for v in &c.vhosts {
        let aliases =
            if v.server_alias.is_empty() { String::new() } else { format!(" (alias {})", v.server_alias.join(", ")) };
        let _ =
            writeln!(out, "vhost {}{aliases}{}", v.server_name, if v.preserve_host { ", preserve_host" } else { "" });
        if let Some(tls) = &v.tls {
            let (cert, key) = (tls.certificate_file.display(), tls.key_file.display());
            let _ = writeln!(out, "  tls certificate {cert} key {key}");
        }
        for l in &v.locations {
            let allow: Vec<String> = l.allow.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  location {} {} require_ip {}", l.path, l.handler.name(), allow.join(" "));
        }
        for r in &v.routes {
            match &r.target {
                RouteTarget::Exclude => {
                    let _ = writeln!(out, "  proxy_pass {} !", r.path);
                }
                RouteTarget::Balancer { index, path } => {
                    let _ = writeln!(out, "  proxy_pass {} balancer://{}{path}", r.path, c.balancers[*index].name);
                }
            }
        }
    }
    for b in &c.balancers {
        let _ = writeln!(out, "balancer {} lbmethod={}", b.name, b.lbmethod);
        for m in &b.members {
            let _ = writeln!(
                out,
                "  member {} route={} loadfactor={} lbset={} retry={}s{}",
                m.url,
                if m.route.is_empty() { "-" } else { &m.route },
                m.lbfactor / 100,
                m.lbset,
                m.retry.as_secs(),
                if m.status == Default::default() { String::new() } else { format!(" status=+{}", m.status) }
            );
            if let Some(hc) = &m.health {
                let target = if hc.method.http().is_some() { format!(" {}", hc.uri) } else { String::new() };
                let expect =
                    if hc.expect.name.is_empty() { String::new() } else { format!(" hcexpr={}", hc.expect.name) };
                let _ = writeln!(
                    out,
                    "    health check {}{target} every {:?}, out after {} failure(s), back after {} pass(es){expect}",
                    hc.method.name(),
                    hc.interval,
                    hc.fails,
                    hc.passes
                );
            }
        }
    }
    let _ = writeln!(out, "plugins: {}", runtime.plugins.names().join(", "));
    Ok(())
}

fn demo(path: Option<&Path>) -> Result<(), fulcrum::Error> {
    let config = match path {
        Some(p) => load(p)?,
        None if Path::new(GUIDE_PATH).is_file() => load(Path::new(GUIDE_PATH))?,
        None => Config::parse(GUIDE_CONFIG, Path::new(GUIDE_PATH))?,
    };
    let rt = control_runtime()?;
    let runtime = Runtime::build(config)?.into_shared();
    let proxy = runtime.proxy();
    rt.block_on(async {
        let mut signals = StopSignals::new()?;
        let mut backends = Vec::new();
        for b in &proxy.config().balancers {
            for m in &b.members {
                let host = m.authority.host();
                if host != "127.0.0.1" && host != "localhost" {
                    continue;
                }
                let addr = SocketAddr::from(([127, 0, 0, 1], m.authority.port_u16().unwrap_or(80)));
                let name = if m.route.is_empty() { m.url.clone() } else { m.route.clone() };
                let backend = EchoServer::start(addr, &name)
                    .await
                    .map_err(|e| fulcrum::Error::msg(format!("demo backend {name} on {addr}: {e}")))?;
                println!("demo backend {name} on http://{}", backend.addr);
                backends.push(backend);
            }
        }
        let listeners = runtime.bind()?;
        announce(&listeners, proxy.config());
        let workers = server::start_workers(listeners, &runtime.shared(), server::worker_count())?;
        runtime.start_checks();
        if let Some(addr) = proxy.config().listen.first() {
            println!("try: curl -s http://{addr}/   (repeat it: the answers alternate between the members)");
        }
        signals.stop(workers, || proxy.config().shutdown_timeout).await;
        // The backends last: the requests in flight still need them.
        drop(backends);
        Ok(())
    })
}

fn conform(plugin: &str) -> Result<(), fulcrum::Error> {
    use fulcrum::plugin::PluginLimits;
    let file = Path::new(plugin);
    // A file is loaded from a folder of its own, under a name no built-in has.
    let folder = tempfile::tempdir()?;
    let (registry, name) = if file.is_file() {
        let copy = folder.path().join("plugin-under-test.wasm");
        std::fs::copy(file, &copy).map_err(|e| fulcrum::Error::msg(format!("{}: {e}", file.display())))?;
        // Errors name the user's file, not the copy.
        let registry = PluginRegistry::load(Some(folder.path()), PluginLimits::default()).map_err(|e| {
            fulcrum::Error::msg(format!("{e:#}").replace(&copy.display().to_string(), &file.display().to_string()))
        })?;
        (registry, "plugin-under-test")
    } else {
        (PluginRegistry::load(None, PluginLimits::default())?, plugin)
    };
    let outcomes = fulcrum::conformance::run(fulcrum::conformance::BYREQUESTS_KIT, &registry, name)?;
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    for o in &outcomes {
        match &o.failure {
            None => println!("ok    {}", o.case),
            Some(why) => println!("FAIL  {}: {why}", o.case),
        }
    }
    println!("{plugin}: {} of {} cases pass", outcomes.len() - failed, outcomes.len());
    if failed == 0 { Ok(()) } else { Err(fulcrum::Error::msg(format!("{plugin} fails {failed} conformance cases"))) }
}

fn inspect(file: &Path) -> Result<(), fulcrum::Error> {
    let info = PluginRegistry::inspect(file)?;
    println!("name: {}", info.name);
    println!("worlds: {}", info.worlds);
    println!("wit: fulcrum:plugin@{}", info.wit_version);
    println!("imports: {}", if info.imports.is_empty() { "none".into() } else { info.imports.join(", ") });
    println!("size: {} bytes", info.size);
    println!("compile time: {:.1} ms", info.loaded.time().as_secs_f64() * 1000.0);
    Ok(())
}
