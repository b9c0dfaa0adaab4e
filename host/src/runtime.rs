//! A configuration brought to life, and kept alive: plugins loaded, balancers built, health checks
//! running, and reloads applied while traffic flows.
//!
//! The proxy in force is one value ([`SharedProxy`]) that the workers load per request. A reload
//! (SIGHUP, or `run --watch-config` when the file changes) reads and validates the whole file as
//! `fulcrum check` does, builds a complete new proxy next to the old one, and swaps it in whole:
//! a broken file changes nothing, a request never sees half a configuration, and requests in flight
//! finish on the proxy they started with. Balancers are matched by name and members by URL and
//! route ([`Balancer::succeed`]): a member that stays keeps its counters, error state, health and
//! connection pool; one removed gets no new request once the swap is done.
//!
//! Listeners follow the file too: new `listen` addresses are bound before the new configuration
//! goes in force (an address that cannot be bound refuses the reload), and addresses no longer
//! listed stop accepting once it is (connections open on them finish).
//!
//! What is bound or loaded once per process (the admin listener, the plugin folder and cache,
//! `[limits]`, plugin sandbox limits) keeps its value until the next start; a reload that changes
//! it says so in the log.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::Error;
use crate::access_log::{AccessLog, LogTarget};
use crate::balancer::{Balancer, BalancerSpec, SelectorFactory, SingleMember};
use crate::config::{BalancerConfig, Config, ConfigError, OnFault, PluginSettings, Problem, os_reason};
use crate::health;
use crate::plugin::cache::ArtifactCache;
use crate::plugin::{PluginLimits, PluginRegistry, RegistryOptions, Rescan};
use crate::proxy::{Proxy, SharedProxy};
use crate::rules::{RequestRules, RulesFactory};
use crate::server::ListenerSet;

/// Plugins, the proxy in force, and the health checks of its members.
#[derive(Debug)]
pub struct Runtime {
    pub plugins: PluginRegistry,
    current: SharedProxy,
    checks: Mutex<Option<health::Checks>>,
    /// The workers' listening sockets, once they serve ([`Runtime::serve_on`]).
    listeners: Mutex<Option<Arc<ListenerSet>>>,
    /// Itself, for the proxies it builds to reach it ([`Runtime::into_shared`]).
    me: std::sync::OnceLock<std::sync::Weak<Runtime>>,
    /// One change at a time: a reload, or a change from the balancer-manager.
    changing: Mutex<()>,
    /// Tells the control runtime to restart the health checks ([`watch`]).
    triggers: std::sync::OnceLock<tokio::sync::mpsc::Sender<Trigger>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The new configuration is in force.
    Applied,
    /// The file has problems (each logged with its file:line); the old configuration stays.
    Refused,
}

impl Runtime {
    /// Load plugins and build the proxy: everything `run` needs but its sockets. What fails is a
    /// [`ConfigError`] listing every problem, each at the key of the file it comes from
    /// (`fulcrum check` shows them).
    pub fn build(mut config: Config) -> Result<Runtime, Error> {
        crate::stats::start();
        crate::persist::apply(&mut config);
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
        let problems: Vec<Problem> =
            failed_files.iter().map(|f| config.problem("plugins_dir", f.message.clone())).collect();
        let failed: Vec<String> = failed_files.into_iter().map(|f| f.name).collect();
        let proxy = assemble(config, &plugins, &failed, problems, None)?;
        Ok(Runtime {
            plugins,
            current: Arc::new(ArcSwap::from_pointee(proxy)),
            checks: Mutex::new(None),
            listeners: Mutex::new(None),
            me: std::sync::OnceLock::new(),
            changing: Mutex::new(()),
            triggers: std::sync::OnceLock::new(),
        })
    }

    /// Share the runtime: the proxies it builds can then reach it, for the balancer-manager's
    /// changes ([`crate::local::Reconfigure`]).
    pub fn into_shared(self) -> Arc<Runtime> {
        let runtime = Arc::new(self);
        let _ = runtime.me.set(Arc::downgrade(&runtime));
        runtime.link(&runtime.proxy());
        runtime
    }

    /// Give `proxy` the way back to this runtime.
    fn link(&self, proxy: &Proxy) {
        if let Some(me) = self.me.get() {
            let me: std::sync::Weak<dyn crate::local::Reconfigure> = me.clone();
            proxy.set_reconfigure(me);
        }
    }

    /// Put `proxy` in force.
    fn install(&self, proxy: Proxy) {
        self.link(&proxy);
        self.current.store(Arc::new(proxy));
    }

    /// The proxy in force now.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.current.load_full()
    }

    /// The handle the workers load the proxy in force from.
    pub fn shared(&self) -> SharedProxy {
        Arc::clone(&self.current)
    }

    /// The workers serve on `listeners`: a reload may change them from now on.
    pub fn serve_on(&self, listeners: Arc<ListenerSet>) {
        *self.listeners.lock().unwrap_or_else(PoisonError::into_inner) = Some(listeners);
    }

    /// (Re)start the health checks of the proxy in force (call from within the control runtime);
    /// the previous checks stop. Members that stayed through a reload keep their health.
    pub fn start_checks(&self) {
        let checks = health::spawn(self.proxy().balancers());
        *self.checks.lock().unwrap_or_else(PoisonError::into_inner) = Some(checks);
    }

    /// Read the configuration file again and, when it is good, put it in force (see the module
    /// docs). Every problem is logged with its file:line; one summary line says what changed.
    /// Plugins are rescanned first, so a reload also picks up new plugin files.
    pub fn reload_config(&self) -> Reloaded {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.proxy();
        let old = current.config();
        let path = old.source.clone();
        let mut config = match Config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                log_refused(&e);
                crate::counters::config_reload("refused");
                return Reloaded::Refused;
            }
        };
        let listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        keep_process_settings(old, &mut config, listeners.is_some());
        crate::persist::apply(&mut config);
        // New addresses are bound first: one that cannot be refuses the whole reload.
        let bound = match listeners.as_ref().map(|l| l.bind(&config.listen)).transpose() {
            Ok(bound) => bound,
            Err(e) => {
                tracing::error!(
                    "configuration reload of {} refused: {e:#}; keeping the configuration in force",
                    path.display()
                );
                crate::counters::config_reload("refused");
                return Reloaded::Refused;
            }
        };
        let rescan = self.rescan_plugins();
        let problems: Vec<Problem> = rescan.errors.iter().map(|e| config.problem("plugins_dir", e.clone())).collect();
        let proxy = match assemble(config, &self.plugins, &rescan.failed, problems, Some(&current)) {
            Ok(proxy) => proxy,
            Err(e) => {
                match e.downcast_ref::<ConfigError>() {
                    Some(config_error) => log_refused(config_error),
                    None => tracing::error!(
                        "configuration reload of {}: {e:#}; keeping the configuration in force",
                        path.display()
                    ),
                }
                return Reloaded::Refused;
            }
        };
        let summary = summary(&current, &proxy);
        let listen = proxy.config().listen.clone();
        self.install(proxy);
        if let (Some(listeners), Some(bound)) = (listeners, bound) {
            for addr in bound.local_addrs() {
                tracing::info!("listening on http://{addr}");
            }
            listeners.apply(bound, &listen);
        }
        tracing::info!("configuration reloaded from {}: {summary}", path.display());
        crate::counters::config_reload("applied");
        Reloaded::Applied
    }

    /// Rescan the plugin folder, logging and counting what changed.
    fn rescan_plugins(&self) -> Rescan {
        tracing::debug!("plugin rescan of {}", self.plugins.dir().map_or("-".into(), |d| d.display().to_string()));
        let rescan = self.plugins.rescan();
        for e in &rescan.errors {
            tracing::error!("plugin reload: {e}; keeping the previous version");
        }
        for name in &rescan.failed {
            crate::counters::plugin_reload(name, "failed");
        }
        for name in &rescan.changed {
            crate::counters::plugin_reload(name, "loaded");
        }
        for name in &rescan.removed {
            crate::counters::plugin_reload(name, "removed");
        }
        rescan
    }

    /// Pick up changes in the plugin folder: every balancer and rule set whose plugin was added or
    /// replaced gets a freshly configured one, swapped in atomically (a plugin that fails to
    /// configure leaves the old one in place); a balancer whose lbmethod file was removed falls
    /// back to its `fallback` built-in. Everything is logged with the plugin's name.
    pub fn reload_plugins(&self) -> Rescan {
        let rescan = self.rescan_plugins();
        if rescan.changed.is_empty() && rescan.removed.is_empty() {
            return rescan;
        }
        let proxy = self.proxy();
        let config = proxy.config();
        let balancers = proxy.balancers();
        for (i, b) in config.balancers.iter().enumerate() {
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
        for (v, vhost) in config.vhosts.iter().enumerate() {
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
                        proxy.replace_rules(v, k, rules);
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
        match &self.proxy().config().admin_listen {
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
        for addr in &self.proxy().config().listen {
            listeners
                .push(crate::server::listen(addr).map_err(|e| Error::msg(format!("cannot listen on {addr}: {e}")))?);
        }
        Ok(listeners)
    }
}

fn log_refused(error: &ConfigError) {
    // One line per problem, each with its file:line:column, as `fulcrum check` prints them.
    for line in error.to_string().lines() {
        tracing::error!("configuration reload refused: {line}");
    }
    tracing::error!(
        "configuration reload of {} refused ({} problem(s)); keeping the configuration in force",
        error.file.display(),
        error.problems.len()
    );
}

/// Settings bound or loaded once per process keep their values; a change is logged as waiting
/// for the next start.
fn keep_process_settings(old: &Config, new: &mut Config, listeners_follow: bool) {
    let mut waiting = Vec::new();
    if new.listen != old.listen && !listeners_follow {
        waiting.push("listen");
        new.listen.clone_from(&old.listen);
        new.listeners.clone_from(&old.listeners);
    }
    if new.admin_listen != old.admin_listen {
        waiting.push("admin_listen");
        new.admin_listen = old.admin_listen;
    }
    if new.plugins_dir != old.plugins_dir {
        waiting.push("plugins_dir");
        new.plugins_dir.clone_from(&old.plugins_dir);
    }
    if new.plugin_cache != old.plugin_cache || new.plugin_cache_max_bytes != old.plugin_cache_max_bytes {
        waiting.push("plugin_cache_dir / plugin_cache_max_mib");
        new.plugin_cache = old.plugin_cache.clone();
        new.plugin_cache_max_bytes = old.plugin_cache_max_bytes;
    }
    if new.limits != old.limits {
        waiting.push("[limits]");
        new.limits = old.limits;
    }
    let sandbox =
        |s: &PluginSettings| (s.call_deadline, s.memory_bytes, s.wasi, s.recycle_after_calls, s.shadow_builtin);
    let sandboxes_differ = new.plugins.len() != old.plugins.len()
        || new.plugins.iter().any(|(name, s)| old.plugins.get(name).is_none_or(|o| sandbox(o) != sandbox(s)));
    if sandboxes_differ {
        waiting.push("[plugins.*] sandbox limits (on_fault and fault_status apply now)");
    }
    if !waiting.is_empty() {
        tracing::warn!(
            "configuration reload: {} changed; that takes effect at the next start, the rest now",
            waiting.join(", ")
        );
    }
}

/// One line on what a reload changes: balancers and members added, removed, kept.
fn summary(old: &Proxy, new: &Proxy) -> String {
    let (old_c, new_c) = (old.config(), new.config());
    let names = |c: &Config| c.balancers.iter().map(|b| b.name.clone()).collect::<std::collections::BTreeSet<_>>();
    let (before, after) = (names(old_c), names(new_c));
    let mut parts = Vec::new();
    let added: Vec<_> = after.difference(&before).cloned().collect();
    let removed: Vec<_> = before.difference(&after).cloned().collect();
    if !added.is_empty() {
        parts.push(format!("balancers added: {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("balancers removed: {}", removed.join(", ")));
    }
    let (mut kept, mut new_members, mut gone) = (0, 0, 0);
    for b in new.balancers().iter().take(new_c.balancers.len()) {
        let Some(o) = old.balancers().iter().take(old_c.balancers.len()).find(|o| o.config.name == b.config.name)
        else {
            continue;
        };
        let stayed = (0..b.members.len()).filter(|&i| (0..o.members.len()).any(|j| b.same_member(i, o, j))).count();
        kept += stayed;
        new_members += b.members.len() - stayed;
        gone += o.members.len() - stayed;
    }
    parts.push(format!("members kept {kept}, added {new_members}, removed {gone}"));
    parts.push(format!("{} vhost(s) (were {})", new_c.vhosts.len(), old_c.vhosts.len()));
    parts.join("; ")
}

/// Build the proxy for `config` with `plugins`: one selector per balancer (succeeding `previous`'s
/// balancer of the same name, if any), the rule sets, the access log. `failed` names plugins whose
/// files did not load (already reported in `problems`, so not again as unknown lbmethods).
fn assemble(
    config: Config,
    plugins: &PluginRegistry,
    failed: &[String],
    mut problems: Vec<Problem>,
    previous: Option<&Proxy>,
) -> Result<Proxy, Error> {
    let failed = |name: &str| failed.iter().any(|f| f == name);
    // A selector error at the key it is about, without the balancer's name (the key has it).
    let at = |b: &BalancerConfig, key: &str, e: Error| {
        let message = format!("{e:#}");
        let prefix = format!("balancer `{}`: ", b.name);
        let message = message.strip_prefix(&prefix).unwrap_or(&message);
        let message = message.strip_prefix("lbmethod: ").unwrap_or(message);
        config.problem(&format!("balancer.{}.{key}", b.name), message)
    };
    // The balancer of the same name in the proxy this one replaces.
    let predecessor =
        |name: &str| previous.and_then(|p| p.balancers().iter().find(|b| b.config.name == name).map(Arc::clone));
    let build = |b: &BalancerConfig, selector| match predecessor(&b.name) {
        Some(old) => Balancer::succeed(&old, b, selector),
        None => Balancer::new(b, selector),
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
        let balancer = build(b, selector);
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
                persist: false,
                upgrade: crate::config::Upgrade::Off,
                tunnel_lifetime: None,
                tls_client: None,
                members: vec![m.worker.clone()],
            };
            routes.push(balancers.len());
            balancers.push(Arc::new(build(&worker, Box::<SingleMember>::default())));
        }
        matches.push(routes);
    }
    Ok(Proxy::new(config, balancers, rules, matches, access_log, previous))
}

/// What starts a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The plugin folder changed: plugins only.
    Plugins,
    /// SIGHUP or the configuration file changed: the whole configuration (plugins included).
    Config,
    /// The balancer-manager rebuilt a balancer: its members' health checks start again.
    Checks,
}

/// Reload on SIGHUP (the configuration, plugins included), when the plugin folder changes (the
/// plugins), and with `watch_config` when the configuration file changes. Events are coalesced:
/// a burst of writes gives one reload, after the writes settle. Reloads run one at a time.
pub fn watch(runtime: Arc<Runtime>, watch_config: bool) -> Result<(), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Trigger>(16);
    let _ = runtime.triggers.set(tx.clone());
    let mut watchers = Vec::new();
    if let Some(dir) = runtime.plugins.dir() {
        let events = tx.clone();
        watchers.push(crate::plugin::watch::watcher(dir, move || {
            let _ = events.try_send(Trigger::Plugins);
        })?);
    }
    if watch_config {
        let file = runtime.proxy().config().source.clone();
        let events = tx.clone();
        watchers.push(crate::plugin::watch::file_watcher(&file, move || {
            let _ = events.try_send(Trigger::Config);
        })?);
    }
    #[cfg(unix)]
    {
        // Registered before this returns (that is, before the listeners are announced): a SIGHUP
        // that arrived before the handler would end the process.
        let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| Error::msg(format!("cannot handle SIGHUP: {e}")))?;
        let hup = tx.clone();
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = hup.send(Trigger::Config).await;
            }
        });
    }
    tokio::spawn(async move {
        let _watchers = watchers;
        while let Some(first) = rx.recv().await {
            if first == Trigger::Checks {
                runtime.start_checks();
                continue;
            }
            // Let a copy in progress finish, then take every event that came meanwhile as one.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut trigger = first;
            while let Ok(more) = rx.try_recv() {
                match more {
                    Trigger::Config => trigger = Trigger::Config,
                    Trigger::Checks => runtime.start_checks(),
                    Trigger::Plugins => {}
                }
            }
            let worker = Arc::clone(&runtime);
            // Compiling is CPU work: keep it off the request threads' scheduler.
            let applied = tokio::task::spawn_blocking(move || match trigger {
                Trigger::Plugins => {
                    worker.reload_plugins();
                    false
                }
                Trigger::Config => worker.reload_config() == Reloaded::Applied,
                Trigger::Checks => true,
            })
            .await;
            // The new proxy's members get their checks (those that stayed keep their health).
            if let Ok(true) = applied {
                runtime.start_checks();
            }
        }
    });
    Ok(())
}

/// The balancer-manager's changes of settings: the configuration in force with the change, built
/// and put in force as a reload would (members keep their state), in memory only (the file is
/// not written; a reload from the file undoes it, as a restart undoes Apache's).
impl crate::local::Reconfigure for Runtime {
    fn reconfigure(&self, balancer: &str, change: &crate::local::manager::Change) -> Result<(), String> {
        use crate::local::manager::Change;
        let _one_at_a_time = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.proxy();
        let mut config = current.config().clone();
        let b = config
            .balancers
            .iter_mut()
            .find(|b| b.name == balancer)
            .ok_or_else(|| format!("no balancer `{balancer}`"))?;
        match change {
            Change::Member { member, loadfactor, lbset, route, redirect } => {
                let others: Vec<String> =
                    b.members.iter().filter(|m| m.url != *member).map(|m| m.route.clone()).collect();
                let m = b.members.iter_mut().find(|m| m.url == *member).ok_or_else(|| format!("no member {member}"))?;
                if let Some(lf) = loadfactor {
                    m.lbfactor = lf * 100;
                }
                if let Some(ls) = lbset {
                    m.lbset = *ls;
                }
                if let Some(r) = route {
                    if !r.is_empty() && others.contains(r) {
                        return Err(format!("route `{r}` is already another member's"));
                    }
                    m.route.clone_from(r);
                }
                if let Some(r) = redirect {
                    m.redirect = (!r.is_empty()).then(|| r.clone());
                }
                let routes: Vec<String> = b.members.iter().map(|m| m.route.clone()).collect();
                if let Some(to) = b.members.iter().filter_map(|m| m.redirect.as_ref()).find(|to| !routes.contains(to)) {
                    return Err(format!("no member has route `{to}` (a route redirect must name one)"));
                }
            }
            Change::Balancer { lbmethod, sticky, timeout, maxattempts, nofailover, add_member } => {
                if let Some(method) = lbmethod {
                    // The old lbmethod's options are not the new one's.
                    b.lbmethod.clone_from(method);
                    b.lbmethod_config = toml::Table::new();
                }
                if let Some(name) = sticky {
                    let (separator, keep) = b.sticky.as_ref().map_or(('.', false), |s| (s.separator, s.nofailover));
                    b.sticky = (!name.is_empty()).then(|| crate::balancer::StickySession::parse(name, separator, keep));
                }
                if let Some(seconds) = timeout {
                    b.timeout = (*seconds > 0).then(|| Duration::from_secs(*seconds));
                }
                if let Some(n) = maxattempts {
                    b.maxattempts = *n;
                }
                if let (Some(on), Some(s)) = (nofailover, b.sticky.as_mut()) {
                    s.nofailover = *on;
                }
                if let Some(url) = add_member {
                    if b.members.iter().any(|m| m.url == *url) {
                        return Err(format!("{url} is already a member"));
                    }
                    let mut member = crate::config::MemberConfig::with_url(url)?;
                    b.attach_tls(&mut member)?;
                    b.members.push(member);
                }
            }
        }
        let proxy = assemble(config, &self.plugins, &[], Vec::new(), Some(&current)).map_err(|e| {
            let text = format!("{e:#}");
            // A problem located in the file means nothing here: keep its message.
            text.rsplit_once(": ").map_or(text.clone(), |(_, why)| why.to_string())
        })?;
        self.install(proxy);
        if let Some(triggers) = self.triggers.get() {
            let _ = triggers.try_send(Trigger::Checks);
        }
        tracing::info!(balancer, "balancer-manager: {change:?} in force");
        Ok(())
    }

    fn current(&self) -> (Vec<Arc<Balancer>>, Vec<String>) {
        self.proxy().handler_view()
    }

    fn changed(&self) {
        let proxy = self.proxy();
        let config = proxy.config();
        if !config.balancers.iter().any(|b| b.persist) {
            return;
        }
        // What the file itself says, to tell the members the manager added.
        let file = Config::load(&config.source).unwrap_or_else(|_| config.clone());
        let (balancers, _) = proxy.handler_view();
        match crate::persist::save(config, &balancers, &file) {
            Ok(()) => tracing::debug!("balancer-manager changes saved to {}", config.state_file.display()),
            Err(e) => {
                tracing::error!("cannot save the balancer-manager's changes to {}: {e}", config.state_file.display())
            }
        }
    }

    fn lbmethods(&self) -> Vec<String> {
        self.plugins
            .names()
            .into_iter()
            .filter(|name| self.plugins.get(name).is_ok_and(|p| p.selector.is_some()))
            .collect()
    }
}
