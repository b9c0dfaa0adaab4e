//! Wiring: configuration → plugins → balancers → proxy → listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::Error;
use crate::access_log::AccessLog;
use crate::balancer::{Balancer, BalancerSpec, SelectorFactory, SingleMember};
use crate::config::{BalancerConfig, Config};
use crate::plugin::{PluginLimits, PluginRegistry};
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
    /// Load plugins and configure one selector per balancer. Errors name the balancer and plugin.
    pub fn build(config: Config) -> Result<Runtime, Error> {
        let plugins = PluginRegistry::load(config.plugins_dir.as_deref(), PluginLimits::default())?;
        let mut balancers = Vec::with_capacity(config.balancers.len());
        for b in &config.balancers {
            let spec =
                BalancerSpec { name: &b.name, lbmethod: &b.lbmethod, members: &b.members, config: &b.lbmethod_config };
            let selector = plugins.selector(&spec)?;
            balancers.push(Arc::new(Balancer::new(b, selector)));
        }
        let mut rules = Vec::with_capacity(config.vhosts.len());
        for (i, vhost) in config.vhosts.iter().enumerate() {
            let mut sets: Vec<Arc<dyn RequestRules>> = Vec::new();
            for (j, r) in vhost.rules.iter().enumerate() {
                let set = plugins.rules(&r.plugin, &r.config).map_err(|e| {
                    let at = r.locate(e.option.as_deref(), e.line);
                    Error::msg(format!(
                        "{}:{}:{}: `vhost[{i}].rules[{j}]`: {}",
                        config.source.display(),
                        at.line,
                        at.column,
                        e.message
                    ))
                })?;
                sets.push(Arc::from(set));
            }
            rules.push(sets);
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
                    timeout: None,
                    sticky: None,
                    failonstatus: Vec::new(),
                    failontimeout: false,
                    maxattempts: 0,
                    forcerecovery: true,
                    members: vec![m.worker.clone()],
                };
                routes.push(balancers.len());
                balancers.push(Arc::new(Balancer::new(&worker, Box::new(SingleMember::default()))));
            }
            matches.push(routes);
        }
        let access_log = match &config.access_log {
            Some((target, format)) => Some(
                AccessLog::open(target, format.clone())
                    .map_err(|e| Error::msg(format!("{}: access_log {target:?}: {e}", config.source.display())))?,
            ),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(&config, balancers, rules, matches, access_log));
        Ok(Runtime { config, plugins, proxy })
    }

    /// Bind every listener; errors name the address.
    pub async fn bind(&self) -> Result<Vec<TcpListener>, Error> {
        let mut listeners = Vec::new();
        for addr in &self.config.listen {
            let l = TcpListener::bind(addr).await.map_err(|e| Error::msg(format!("cannot listen on {addr}: {e}")))?;
            listeners.push(l);
        }
        Ok(listeners)
    }
}

/// Serve `listeners` until the process is stopped.
pub async fn serve(listeners: Vec<TcpListener>, proxy: Arc<Proxy>) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, Arc::clone(&proxy)));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>) {
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    loop {
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
        tokio::spawn(async move {
            let service = service_fn(move |request| Arc::clone(&proxy).handle(request, peer, local));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(20))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(client = %peer, "connection ended: {e}");
            }
        });
    }
}
