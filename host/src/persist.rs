//! `persist = true` (Apache's `BalancerPersist On`): the balancer-manager's changes to a balancer
//! outlive restarts and reloads. After every change the settings of each persisting balancer, as
//! they are in force, are written to the configuration's `state_file` (JSON, written aside and
//! renamed over, so a crash leaves the old file or the new one, never half of one); at start and
//! at every reload they are laid over the file's configuration.
//!
//! Kept: the balancer's lbmethod, sticky session, timeout, failover attempts and nofailover; each
//! member's status flags as an administrator set them (not the health checks' `C`), factor, set,
//! route and route redirect; members the manager added. A member removed from the configuration
//! file is gone even if the state names it, except one the manager added.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::balancer::{Balancer, MemberStatus, StickySession};
use crate::config::{Config, MemberConfig};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub balancers: BTreeMap<String, BalancerState>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BalancerState {
    pub lbmethod: String,
    pub stickysession: Option<String>,
    pub nofailover: bool,
    pub timeout: u64,
    pub maxattempts: usize,
    pub members: Vec<MemberState>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MemberState {
    pub url: String,
    pub route: String,
    pub redirect: Option<String>,
    pub loadfactor: u32,
    pub lbset: u32,
    /// Status flags in Apache's letters (`D`, `S`, `I`, `N`, `H`, `R`).
    pub status: String,
    /// Added by the manager, not in the configuration file.
    pub added: bool,
}

/// Lay the saved state over `config`'s persisting balancers. A missing file is no state; a file
/// that cannot be read or parsed is logged and ignored (the configuration as written applies).
pub fn apply(config: &mut Config) {
    if !config.balancers.iter().any(|b| b.persist) {
        return;
    }
    let path = config.state_file.clone();
    let state: State = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(
                    "{}: not a Fulcrum state file ({e}); the configuration applies as written",
                    path.display()
                );
                return;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!("{}: {e}; the configuration applies as written", path.display());
            return;
        }
    };
    for b in config.balancers.iter_mut().filter(|b| b.persist) {
        let Some(saved) = state.balancers.get(&b.name) else { continue };
        b.lbmethod.clone_from(&saved.lbmethod);
        let separator = b.sticky.as_ref().map_or('.', |s| s.separator);
        b.sticky = saved.stickysession.as_deref().map(|s| StickySession::parse(s, separator, saved.nofailover));
        b.timeout = (saved.timeout > 0).then(|| Duration::from_secs(saved.timeout));
        b.maxattempts = saved.maxattempts;
        for m in &saved.members {
            let member = match b.members.iter_mut().find(|c| c.url == m.url) {
                Some(member) => member,
                None if m.added => match MemberConfig::with_url(&m.url).and_then(|mut member| {
                    b.attach_tls(&mut member)?;
                    Ok(member)
                }) {
                    Ok(member) => {
                        b.members.push(member);
                        b.members.last_mut().expect("just pushed")
                    }
                    Err(why) => {
                        tracing::warn!(balancer = %b.name, "state file: {why}");
                        continue;
                    }
                },
                None => continue,
            };
            member.route.clone_from(&m.route);
            member.redirect.clone_from(&m.redirect);
            member.lbfactor = m.loadfactor.clamp(1, 100) * 100;
            member.lbset = m.lbset.min(99);
            member.status = MemberStatus::parse(&m.status).unwrap_or_default();
        }
        tracing::info!(balancer = %b.name, "balancer-manager changes restored from {}", path.display());
    }
}

/// Save the persisting balancers of `balancers` (in force, with their live status flags) to
/// `config`'s state file. `file_config` is the configuration as the file has it, to tell added
/// members apart.
pub fn save(config: &Config, balancers: &[std::sync::Arc<Balancer>], file_config: &Config) -> std::io::Result<()> {
    if !balancers.iter().any(|b| b.config.persist) {
        return Ok(());
    }
    let mut state = State::default();
    for b in balancers.iter().filter(|b| b.config.persist) {
        let c = &b.config;
        let in_file = |url: &str| {
            file_config.balancers.iter().any(|fb| fb.name == c.name && fb.members.iter().any(|m| m.url == url))
        };
        let members = b
            .members
            .iter()
            .map(|m| MemberState {
                url: m.config.url.clone(),
                route: m.config.route.clone(),
                redirect: m.config.redirect.clone(),
                loadfactor: m.config.lbfactor / 100,
                lbset: m.config.lbset,
                status: m.status().with(MemberStatus::HC_FAILED, false).to_string(),
                added: !in_file(&m.config.url),
            })
            .collect();
        state.balancers.insert(
            c.name.clone(),
            BalancerState {
                lbmethod: c.lbmethod.clone(),
                stickysession: c.sticky.as_ref().map(|s| s.cookie.clone()),
                nofailover: c.sticky.as_ref().is_some_and(|s| s.nofailover),
                timeout: c.timeout.map_or(0, |t| t.as_secs()),
                maxattempts: c.maxattempts,
                members,
            },
        );
    }
    write_atomically(&config.state_file, &serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let aside = path.with_extension("json.new");
    std::fs::write(&aside, bytes)?;
    std::fs::File::open(&aside)?.sync_all()?;
    std::fs::rename(&aside, path)
}
