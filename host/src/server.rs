//! Wiring: configuration → plugins → balancers → proxy → listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Error;
use crate::access_log::{AccessLog, LogTarget};
use crate::balancer::{Balancer, BalancerSpec, ClientAddr, SelectorFactory, SingleMember};
use crate::config::{BalancerConfig, Config, OnFault, PluginSettings, Problem, os_reason};
use crate::plugin::cache::ArtifactCache;
use crate::plugin::{PluginLimits, PluginRegistry, RegistryOptions, Rescan};
use crate::proxy::Proxy;
use crate::proxy::rules::{RequestRules, RulesFactory};

/// A configuration brought to life: plugins loaded and configured, balancers built.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub plugins: PluginRegistry,
    pub proxy: Arc<Proxy>,
}

impl Runtime {
    /// Load plugins and configure one selector per balancer and the rule sets, and open the access
    /// log: everything `run` needs but its sockets. What fails is a [`crate::config::ConfigError`]
    /// listing every problem, each at the key of the file it comes from (`fulcrum check` shows them).
    pub fn build(config: Config) -> Result<Runtime, Error> {
        if config.admin_listen.is_some() {
            crate::admin::recorder()?;
        }
        let shadow: Vec<String> =
            config.plugins.iter().filter(|(_, s)| s.shadow_builtin).map(|(name, _)| name.clone()).collect();
        let overrides = config
            .plugins
            .iter()
            .map(|(name, settings)| {
                let limits = PluginLimits {
                    call_deadline: settings.call_deadline,
                    memory_bytes: settings.memory_bytes,
                    wasi: settings.wasi,
                    recycle_after: settings.recycle_after_calls,
                    ..PluginLimits::default()
                };
                (name.clone(), limits)
            })
            .collect();
        let cache =
            config.plugin_cache.dir().and_then(|dir| match ArtifactCache::open(&dir, config.plugin_cache_max_bytes) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!("plugin cache {}: {e}; compiling plugins at every start", dir.display());
                    None
                }
            });
        let options = RegistryOptions { limits: PluginLimits::default(), overrides, shadow, cache };
        let (plugins, failed_files) = PluginRegistry::load_each(config.plugins_dir.as_deref(), options)
            .map_err(|e| config.error(vec![config.problem("plugins_dir", format!("{e:#}"))]))?;
        let mut problems: Vec<Problem> =
            failed_files.iter().map(|f| config.problem("plugins_dir", f.message.clone())).collect();
        let failed = |name: &str| failed_files.iter().any(|f| f.name == name);
        // A selector error at the key it is about, without the balancer's name (the key has it).
        let at = |b: &BalancerConfig, key: &str, e: Error| {
            let message = format!("{e:#}");
            let prefix = format!("balancer `{}`: ", b.name);
            let message = message.strip_prefix(&prefix).unwrap_or(&message);
            let message = message.strip_prefix("lbmethod: ").unwrap_or(message);
            config.problem(&format!("balancer.{}.{key}", b.name), message)
        };
        let mut balancers = Vec::with_capacity(config.balancers.len());
        for b in &config.balancers {
            let selector = match plugins.selector(&BalancerSpec::lbmethod(b)) {
                Ok(selector) => Some(selector),
                // Written `fallback`: the plugin may arrive in the folder later.
                Err(_) if b.fallback_written && plugins.get(&b.lbmethod).is_err() => {
                    if !failed(&b.lbmethod) {
                        tracing::warn!(
                            balancer = %b.name,
                            "lbmethod plugin `{}` is not loaded (yet): using `{}` until it appears in the plugin folder",
                            b.lbmethod,
                            b.fallback
                        );
                    }
                    plugins.selector(&BalancerSpec::fallback(b)).map_err(|e| problems.push(at(b, "fallback", e))).ok()
                }
                // Its file failed to load: reported as such above.
                Err(_) if failed(&b.lbmethod) => None,
                Err(e) => {
                    problems.push(at(b, "lbmethod", e));
                    None
                }
            };
            let on_fault = config.plugins.get(&b.lbmethod).map_or(PluginSettings::default().on_fault, |s| s.on_fault);
            // A written `fallback` is checked now, not when the lbmethod's file goes away.
            let fault_fallback = if on_fault == OnFault::Fallback || b.fallback_written {
                match plugins.selector(&BalancerSpec::fallback(b)) {
                    Ok(fallback) => Some(fallback),
                    Err(e) => {
                        problems.push(at(b, "fallback", e));
                        continue;
                    }
                }
            } else {
                None
            };
            let Some(selector) = selector else { continue };
            let balancer = Balancer::new(b, selector);
            if on_fault == OnFault::Fallback
                && let Some(fallback) = fault_fallback
            {
                balancer.set_fault_fallback(fallback);
            }
            balancers.push(Arc::new(balancer));
        }
        let mut rules = Vec::with_capacity(config.vhosts.len());
        for (i, vhost) in config.vhosts.iter().enumerate() {
            let mut sets: Vec<Box<dyn RequestRules>> = Vec::new();
            for (j, r) in vhost.rules.iter().enumerate() {
                match plugins.rules(&r.plugin, &r.config) {
                    Ok(set) => sets.push(set),
                    // Its file failed to load: reported as such above.
                    Err(_) if failed(&r.plugin) => {}
                    Err(e) => problems.push(Problem {
                        location: Some(r.locate(e.option.as_deref(), e.line)),
                        key: Some(format!("vhost[{i}].rules[{j}]")),
                        message: e.message,
                    }),
                }
            }
            rules.push(sets);
        }
        let access_log = match &config.access_log {
            Some((target, format)) => match AccessLog::open(target, format.clone()) {
                Ok(log) => Some(log),
                Err(e) => {
                    let message = match target {
                        LogTarget::File(path) => format!(
                            "cannot open {} for appending: {}",
                            std::path::absolute(path).unwrap_or_else(|_| path.clone()).display(),
                            os_reason(&e)
                        ),
                        LogTarget::Stdout => format!("cannot write to stdout: {}", os_reason(&e)),
                    };
                    problems.push(config.problem("access_log", message));
                    None
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(config.error(problems).into());
        }
        // Each proxy_pass_match target is a worker of its own: a one-member balancer with its own
        // error state and connections (Apache keeps it apart from the balancer members too).
        let mut matches = Vec::with_capacity(config.vhosts.len());
        for vhost in &config.vhosts {
            let mut routes = Vec::new();
            for m in &vhost.matches {
                let worker = BalancerConfig {
                    name: format!("proxy_pass_match {}", m.regex.as_str()),
                    lbmethod: "single-member".into(),
                    lbmethod_config: toml::Table::new(),
                    fallback: String::new(),
                    fallback_written: false,
                    timeout: None,
                    sticky: None,
                    failonstatus: Vec::new(),
                    failontimeout: false,
                    maxattempts: 0,
                    forcerecovery: true,
                    retry_idempotent: crate::config::RetryOn::default(),
                    members: vec![m.worker.clone()],
                };
                routes.push(balancers.len());
                balancers.push(Arc::new(Balancer::new(&worker, Box::new(SingleMember::default()))));
            }
            matches.push(routes);
        }
        let proxy = Arc::new(Proxy::new(&config, balancers, rules, matches, access_log));
        Ok(Runtime { config, plugins, proxy })
    }

    /// Pick up changes in the plugin folder: every balancer and rule set whose plugin was added or
    /// replaced gets a freshly configured one, swapped in atomically (a plugin that fails to
    /// configure leaves the old one in place); a balancer whose lbmethod file was removed falls
    /// back to its `fallback` built-in. Everything is logged with the plugin's name.
    pub fn reload_plugins(&self) -> Rescan {
        tracing::debug!("plugin rescan of {}", self.plugins.dir().map_or("-".into(), |d| d.display().to_string()));
        let rescan = self.plugins.rescan();
        for e in &rescan.errors {
            tracing::error!("plugin reload: {e}; keeping the previous version");
        }
        for name in &rescan.failed {
            crate::admin::count_reload(name, "failed");
        }
        for name in &rescan.changed {
            crate::admin::count_reload(name, "loaded");
        }
        for name in &rescan.removed {
            crate::admin::count_reload(name, "removed");
        }
        if rescan.changed.is_empty() && rescan.removed.is_empty() {
            return rescan;
        }
        let balancers = self.proxy.balancers();
        for (i, b) in self.config.balancers.iter().enumerate() {
            let removed = rescan.removed.contains(&b.lbmethod);
            if !removed && !rescan.changed.contains(&b.lbmethod) {
                continue;
            }
            let spec = if removed && self.plugins.get(&b.lbmethod).is_err() {
                BalancerSpec::fallback(b)
            } else {
                BalancerSpec::lbmethod(b)
            };
            let lbmethod = spec.lbmethod;
            match self.plugins.selector(&spec) {
                Ok(selector) => {
                    balancers[i].replace_selector(selector);
                    if removed {
                        tracing::warn!(balancer = %b.name, "lbmethod plugin `{}` was removed: now using `{lbmethod}`", b.lbmethod);
                    } else {
                        tracing::info!(balancer = %b.name, "lbmethod plugin `{lbmethod}` reloaded");
                    }
                }
                Err(e) => tracing::error!("plugin reload: {e:#}; balancer `{}` keeps its previous selector", b.name),
            }
        }
        for (v, vhost) in self.config.vhosts.iter().enumerate() {
            for (k, r) in vhost.rules.iter().enumerate() {
                if !rescan.changed.contains(&r.plugin) {
                    if rescan.removed.contains(&r.plugin) {
                        tracing::warn!(
                            "rules plugin `{}` was removed; vhost `{}` keeps running the last loaded version",
                            r.plugin,
                            vhost.server_name
                        );
                    }
                    continue;
                }
                match self.plugins.rules(&r.plugin, &r.config) {
                    Ok(rules) => {
                        self.proxy.replace_rules(v, k, rules);
                        tracing::info!("rules plugin `{}` reloaded for vhost `{}`", r.plugin, vhost.server_name);
                    }
                    Err(e) => tracing::error!(
                        "plugin reload: rules plugin `{}`: {}; vhost `{}` keeps the previous rules",
                        r.plugin,
                        e.message,
                        vhost.server_name
                    ),
                }
            }
        }
        rescan
    }

    /// The admin listener, when the config has `admin_listen`.
    pub async fn bind_admin(&self) -> Result<Option<TcpListener>, Error> {
        match &self.config.admin_listen {
            None => Ok(None),
            Some(addr) => TcpListener::bind(addr)
                .await
                .map(Some)
                .map_err(|e| Error::msg(format!("cannot listen on {addr} (admin_listen): {e}"))),
        }
    }

    /// Bind every listener (the workers share them); errors name the address.
    pub fn bind(&self) -> Result<Vec<std::net::TcpListener>, Error> {
        let mut listeners = Vec::new();
        for addr in &self.config.listen {
            listeners.push(listen(addr).map_err(|e| Error::msg(format!("cannot listen on {addr}: {e}")))?);
        }
        Ok(listeners)
    }
}

/// A listening socket as tokio binds one (`SO_REUSEADDR`, a backlog of 1024), made before any
/// runtime exists so that every worker can watch it.
fn listen(addr: &SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&(*addr).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Reload plugins when the plugin folder changes or the process gets SIGHUP. Events are coalesced:
/// a burst of file writes gives one reload, after the writes settle. Only events that can change
/// the plugins count ([`crate::plugin::watch`]): a quiet folder costs nothing, and the reload's own
/// reading of the folder does not start another.
pub fn watch_plugins(runtime: Arc<Runtime>) -> Result<(), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = None;
    if let Some(dir) = runtime.plugins.dir() {
        let events = tx.clone();
        watcher = Some(crate::plugin::watch::watcher(dir, move || {
            let _ = events.try_send(());
        })?);
    }
    #[cfg(unix)]
    {
        let hup = tx.clone();
        tokio::spawn(async move {
            let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while signal.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading plugins");
                let _ = hup.try_send(());
            }
        });
    }
    tokio::spawn(async move {
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Let a copy in progress finish, then take every event that came meanwhile as one.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let runtime = Arc::clone(&runtime);
            // Compiling is CPU work: keep it off the request threads' scheduler.
            let _ = tokio::task::spawn_blocking(move || runtime.reload_plugins()).await;
        }
    });
    Ok(())
}

/// Serve the admin listener ([`crate::admin`]) until the process ends.
pub async fn serve_admin(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = service_fn(move |request| crate::admin::handle(request, Arc::clone(&proxy)));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(20))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How many workers serve requests: `FULCRUM_WORKERS` (or tokio's own `TOKIO_WORKER_THREADS`)
/// when set, else one per core.
pub fn worker_count() -> usize {
    ["FULCRUM_WORKERS", "TOKIO_WORKER_THREADS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
}

/// Serve `listeners` on `workers` threads, each with a runtime of its own (one worker thread, so
/// that a long plugin call can still hand its other tasks on with `block_in_place`).
///
/// A connection lives on the worker that accepted it from start to end, and that worker also
/// drives the member connections its requests use ([`crate::proxy::bind_worker`]): no request
/// crosses threads, as in nginx's and HAProxy's one event loop per core. Every worker watches the
/// same listening sockets (no `SO_REUSEPORT`, so a second Fulcrum on the same port still fails to
/// start instead of sharing it); the one that wakes first takes the connection.
pub fn start_workers(listeners: &[std::net::TcpListener], proxy: &Arc<Proxy>, workers: usize) -> Result<(), Error> {
    // One bound on client connections for all listeners and workers: past it, connections wait
    // in the kernel's listen backlog instead of costing sockets, memory and members' connections.
    let permits = Arc::new(Semaphore::new(proxy.limits().max_connections));
    for worker in 0..workers.max(1) {
        let sockets = listeners
            .iter()
            .map(|l| l.try_clone().and_then(|s| s.set_nonblocking(true).map(|()| s)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::msg(format!("cannot share the listening sockets with worker {worker}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("fulcrum-w{worker}"))
            .on_thread_start(move || crate::proxy::bind_worker(worker))
            .enable_all()
            .build()
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
        let (proxy, permits) = (Arc::clone(proxy), Arc::clone(&permits));
        std::thread::Builder::new()
            .name(format!("fulcrum-w{worker}-main"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for socket in sockets {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => {
                                tasks.spawn(accept_loop(listener, Arc::clone(&proxy), Arc::clone(&permits)));
                            }
                            Err(e) => tracing::error!("worker {worker}: cannot watch a listening socket: {e}"),
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
            .map_err(|e| Error::msg(format!("cannot start worker {worker}: {e}")))?;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, permits: Arc<Semaphore>) {
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let limits = *proxy.limits();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // mod_reqtimeout's header timeout; hyper also closes a keep-alive connection idle for as long.
        .header_read_timeout(limits.header_timeout)
        // Room for what `[limits]` allows, so that Fulcrum answers each limit with Apache's
        // status; hyper answers 431 only past twice the field count.
        .max_headers(limits.request_fields.saturating_mul(2).max(limits.request_fields + 1))
        .max_buf_size(limits.head_buffer())
        .keep_alive(true);
    let mut saturated = false;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                saturated = false;
                permit
            }
            Err(_) => {
                if !saturated {
                    tracing::warn!(
                        "{} client connections open (limits.max_connections): new ones wait",
                        limits.max_connections
                    );
                    saturated = true;
                }
                match Arc::clone(&permits).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {local} failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let http = http.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let client = Arc::new(ClientAddr::new(peer.ip()));
            let service = service_fn(move |request| Arc::clone(&proxy).handle(request, Arc::clone(&client), local));
            let served = http.serve_connection(TokioIo::new(stream), service).await;
            if let Err(e) = served {
                tracing::debug!(client = %peer, "connection ended: {e}");
            }
        });
    }
}
