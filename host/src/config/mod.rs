//! Configuration: the TOML file (`raw`), validated into typed, ready-to-use values.
//!
//! Loading never stops at the first mistake: every unknown key, bad value and missing piece is
//! collected with its line, so `fulcrum check` shows them all at once.

mod error;
pub mod health;
mod limits;
pub mod location;
mod raw;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::http::uri::{Authority, Scheme, Uri};
use toml::Spanned;

use crate::access_log::{LogFormat, LogTarget};
use crate::balancer::status::MemberStatus;
use crate::balancer::sticky::StickySession;

pub use error::{ConfigError, Location, Problem};
pub use health::{HcCondition, HcMethod, HealthCheck, LoadSource};
pub use limits::{DEFAULT_MAX_CONNECTIONS, Limits};
pub use location::{Handler, LocalHandler};

/// Apache's default `retry` for a member in error state.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(60);
/// Apache's default `ProxyTimeout`: the server's `Timeout`, which Debian's apache2.conf sets to 300 s.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long SIGTERM or SIGINT lets requests in flight finish (`shutdown_timeout`): systemd's
/// default `TimeoutStopSec` is 90 s, Kubernetes' grace period 30 s; 30 s stops within both.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    pub listen: Vec<SocketAddr>,
    /// How each `listen` address is spoken to (plain HTTP/1.1, h2c, TLS), in the same order.
    pub listeners: Vec<Listener>,
    /// Where the admin listener (`GET /metrics`) listens, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    pub plugins_dir: Option<PathBuf>,
    pub plugin_cache: PluginCache,
    /// The size the plugin cache is kept under, in bytes (`plugin_cache_max_mib`).
    pub plugin_cache_max_bytes: u64,
    /// The access log and its format, when configured.
    pub access_log: Option<(LogTarget, LogFormat)>,
    pub proxy_timeout: Duration,
    /// How long a SIGTERM or SIGINT waits for requests in flight; zero waits for none.
    pub shutdown_timeout: Duration,
    /// Where the balancer-manager's changes to `persist` balancers are kept.
    pub state_file: PathBuf,
    /// `[limits]`: request limits, read timeouts, connections.
    pub limits: Limits,
    pub vhosts: Vec<VirtualHost>,
    pub balancers: Vec<BalancerConfig>,
    /// `[plugins.NAME]` settings; plugins not named here get the defaults.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Where each key is written, for problems found after loading ([`Config::problem`]).
    pub locations: Locations,
}

/// One `listen` entry: its address and what it speaks.
#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    /// Cleartext HTTP/2 with prior knowledge beside HTTP/1.1 (`h2c = true`).
    pub h2c: bool,
    /// TLS (with ALPN `h2` and `http/1.1`), when the entry has a certificate.
    pub tls: Option<TlsListener>,
    /// A redirect listener: every request gets a 301 to this URL (no trailing `/`) followed by
    /// the request's path and query.
    pub redirect: Option<String>,
}

/// A TLS listener's certificate and its rustls settings (with the virtual hosts' certificates).
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub certificate: crate::tls::Certificate,
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

impl Config {
    /// The settings of listening socket `address` as configured; `slot` tells apart entries of
    /// the same address (only port 0 can repeat): the first such entry is slot 0.
    pub fn listener(&self, address: SocketAddr, slot: usize) -> Option<&Listener> {
        self.listeners.iter().filter(|l| l.address == address).nth(slot)
    }
}

/// A `listen` entry's certificate, h2c and redirect, as validated.
type ListenerSettings = (Option<crate::tls::Certificate>, bool, Option<String>);

/// A redirect listener's target: an absolute `http://` or `https://` URL with a host, without
/// query or fragment; returned without its trailing `/` (the request's path follows it).
fn redirect_target(url: &str) -> Result<String, String> {
    let url = url.trim();
    let parsed: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("https" | "http")) || parsed.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` is not an https:// (or http://) URL with a host"));
    }
    if parsed.query().is_some() || url.contains('#') {
        return Err(format!("`{url}` has a query or fragment: the request's path and query follow the URL"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Where each value of the file is: `balancer.default.lbmethod` → its line and column. Problems
/// found after loading (a plugin that is not there, an access log that cannot be opened) point
/// into the file with it, like the loader's own.
#[derive(Debug, Clone, Default)]
pub struct Locations(BTreeMap<String, Location>);

impl Locations {
    /// Where the value of `key` is written, if it is.
    pub fn get(&self, key: &str) -> Option<Location> {
        self.0.get(key).copied()
    }
}

/// `plugin_cache_max_mib` when not written: room for about thirty compiled Python plugins.
pub const DEFAULT_PLUGIN_CACHE_MAX_MIB: u64 = 1024;

/// Where compiled plugins are kept between runs (`plugin_cache_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginCache {
    /// Not written: `$XDG_CACHE_HOME/fulcrum`, else `$HOME/.cache/fulcrum`, else no cache.
    Default,
    /// This folder (relative paths are relative to the config file).
    At(PathBuf),
    /// `plugin_cache_dir = ""`: compile at every start.
    Off,
}

impl PluginCache {
    /// The folder to use, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        match self {
            PluginCache::At(dir) => Some(dir.clone()),
            PluginCache::Off => None,
            PluginCache::Default => std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| Path::new(&h).join(".cache")))
                .map(|d| d.join("fulcrum")),
        }
    }
}

/// What a request gets when its plugin faults (traps, overruns its deadline or memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFault {
    /// Answer with this status (an Apache-style error page).
    Fail(u16),
    /// Choose with the balancer's `fallback` built-in instead (selectors).
    Fallback,
}

/// The WASI capabilities a plugin is granted (`[plugins.NAME] wasi = [...]`); none by default. A
/// plugin may import any WASI interface (language runtimes import many they never call), but a
/// call into one that is not granted traps, which is a fault like any other. Files and network
/// cannot be granted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WasiGrants {
    /// `wasi:clocks`: wall clock and monotonic clock.
    pub clocks: bool,
    /// `wasi:random`: random bytes (a plugin doing weighted-random choice wants it).
    pub random: bool,
    /// `wasi:cli`: an empty environment and arguments, stdin at end of file, stdout and stderr
    /// discarded, `exit`. Runtimes such as Python's call these at start.
    pub cli: bool,
}

impl WasiGrants {
    /// The names `wasi = [...]` accepts.
    pub const NAMES: [&str; 3] = ["clocks", "random", "cli"];

    /// Grant `name` (one of [`WasiGrants::NAMES`]); false when there is no such grant.
    pub fn grant(&mut self, name: &str) -> bool {
        match name {
            "clocks" => self.clocks = true,
            "random" => self.random = true,
            "cli" => self.cli = true,
            _ => return false,
        }
        true
    }
}

/// One plugin's sandbox and failure policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginSettings {
    pub call_deadline: Duration,
    pub memory_bytes: usize,
    pub wasi: WasiGrants,
    /// Replace an instance after this many calls (none: keep it while it works).
    pub recycle_after_calls: Option<u64>,
    pub on_fault: OnFault,
    /// A plugin file may replace the built-in of the same name.
    pub shadow_builtin: bool,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            // Wall-clock, so it must survive a busy machine descheduling the thread; it still
            // stops a runaway plugin within a tenth of a second.
            call_deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            wasi: WasiGrants::default(),
            recycle_after_calls: None,
            on_fault: OnFault::Fail(500),
            shadow_builtin: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub server_name: String,
    pub server_alias: Vec<String>,
    pub preserve_host: bool,
    /// Longest path first, so the first match wins.
    pub routes: Vec<Route>,
    /// Rule sets (mod_setenvif / mod_headers), run in order.
    pub rules: Vec<RulesConfig>,
    /// `ProxyPassReverse` rules, in order.
    pub reverse: Vec<ReverseRule>,
    /// `ProxyPassMatch` rules, tried in order before the prefix routes.
    pub matches: Vec<MatchRoute>,
    /// Local handlers (`<Location> SetHandler`) on paths excluded from proxying.
    pub locations: Vec<LocalHandler>,
    /// Its own certificate on TLS listeners (chosen by SNI), if it has one.
    pub tls: Option<crate::tls::Certificate>,
}

/// `ProxyPassReverse PATH URL`.
#[derive(Debug, Clone)]
pub struct ReverseRule {
    /// The local path prefix (`/`).
    pub path: String,
    pub target: ReverseTarget,
}

#[derive(Debug, Clone)]
pub enum ReverseTarget {
    /// `balancer://NAME/PATH`: any member URL of the balancer, plus PATH.
    Balancer { index: usize, path: String },
    /// A plain URL prefix.
    Url(String),
}

/// `ProxyPassMatch REGEX URL`: one unbalanced worker.
#[derive(Debug, Clone)]
pub struct MatchRoute {
    pub regex: regex::Regex,
    /// The URL template with `$N` references.
    pub to: String,
    /// The worker, as a one-member configuration (its own error state and connections).
    pub worker: MemberConfig,
}

/// The rules plugin used when a `[[vhost.rules]]` table names none.
pub const DEFAULT_RULES_PLUGIN: &str = "apache-rules";

/// One `[[vhost.rules]]` table.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub plugin: String,
    /// The plugin's own keys (everything but `plugin`).
    pub config: toml::Table,
    /// Where the table is.
    pub location: Location,
    /// For each option, the file line on which its value's text starts (for a multi-line string,
    /// the line after the opening quotes): a plugin's "line N" maps to `start + N - 1`.
    pub option_lines: BTreeMap<String, usize>,
}

impl RulesConfig {
    /// The file location of line `line` (1-based) inside option `option`, or of the table.
    pub fn locate(&self, option: Option<&str>, line: Option<usize>) -> Location {
        match (option.and_then(|o| self.option_lines.get(o)), line) {
            (Some(start), Some(n)) => Location { line: start + n.max(1) - 1, column: 1 },
            (Some(start), None) => Location { line: *start, column: 1 },
            _ => self.location,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The URL-path prefix.
    pub path: String,
    pub target: RouteTarget,
}

#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// `ProxyPass PATH !`: not proxied.
    Exclude,
    /// `ProxyPass PATH balancer://NAME/PATH`: the balancer's index in [`Config::balancers`] and
    /// the path that replaces the matched prefix.
    Balancer { index: usize, path: String },
}

#[derive(Debug, Clone)]
pub struct BalancerConfig {
    pub name: String,
    pub lbmethod: String,
    /// The lbmethod plugin's own table, as written.
    pub lbmethod_config: toml::Table,
    /// The built-in lbmethod used when the lbmethod plugin's file goes away (and for faults, when
    /// the plugin's `on_fault` is `fallback`).
    pub fallback: String,
    /// `fallback` was written in the config: the lbmethod plugin may then be absent at start (the
    /// balancer uses `fallback` until the file appears); otherwise a missing plugin is a load error.
    pub fallback_written: bool,
    pub timeout: Option<Duration>,
    pub sticky: Option<StickySession>,
    /// Member response statuses that put the member in error state.
    pub failonstatus: Vec<u16>,
    pub failontimeout: bool,
    /// Failover attempts after the first.
    pub maxattempts: usize,
    pub forcerecovery: bool,
    /// When an idempotent request without a body whose member failed before answering goes to
    /// another member, within `maxattempts` (RFC 9110 §9.2.2; nginx's `proxy_next_upstream`).
    pub retry_idempotent: RetryOn,
    /// `BalancerPersist`: the balancer-manager's changes are kept in the state file.
    pub persist: bool,
    /// The protocols a client may switch to through the members (`upgrade=`).
    pub upgrade: Upgrade,
    /// How long a tunnel may stay open in all (`tunnel_lifetime`); its idle limit is the
    /// member's response timeout.
    pub tunnel_lifetime: Option<Duration>,
    /// The TLS client settings of its `https://` members (`tls_ca`, `tls_client_certificate`).
    pub tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub members: Vec<MemberConfig>,
}

impl BalancerConfig {
    /// Give an `https://` member the balancer's TLS client settings (the system's CAs when the
    /// balancer has none yet: a member added by the balancer-manager to a plain balancer).
    pub fn attach_tls(&mut self, member: &mut MemberConfig) -> Result<(), String> {
        if member.scheme != Scheme::HTTPS {
            return Ok(());
        }
        let client = match &self.tls_client {
            Some(client) => std::sync::Arc::clone(client),
            None => {
                let client = crate::tls::client_config(None, None)?;
                self.tls_client = Some(std::sync::Arc::clone(&client));
                client
            }
        };
        member.tls = Some(crate::tls::MemberTls::new(client, member.authority.host())?);
        Ok(())
    }
}

/// Which `Upgrade` requests go through to the members as upgrades (Apache's `upgrade=` worker
/// parameter, mod_proxy_http 2.4.47+). Any other `Upgrade` header is dropped as hop-by-hop, and
/// the member answers the request as a plain one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Upgrade {
    /// None (the default, as in Apache without `upgrade=`).
    #[default]
    Off,
    /// These protocols (`Upgrade` tokens compared without regard to case), e.g. `websocket`.
    Protocols(Vec<String>),
    /// Any protocol (`upgrade=*`).
    Any,
}

impl Upgrade {
    /// The protocol of an `Upgrade` header's value this balancer lets through: the first token
    /// it allows (a client may offer several, RFC 9110 §7.8).
    pub fn allowed<'v>(&self, offered: &'v str) -> Option<&'v str> {
        let mut tokens = offered.split(',').map(str::trim).filter(|t| !t.is_empty());
        match self {
            Upgrade::Off => None,
            Upgrade::Any => tokens.next(),
            Upgrade::Protocols(allowed) => tokens
                .find(|t| allowed.iter().any(|a| t.split('/').next().is_some_and(|name| name.eq_ignore_ascii_case(a)))),
        }
    }
}

/// Member failures after which an idempotent request without a body is sent to another member
/// (`retry_idempotent = ["error", "timeout"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection failed before a response head arrived: reset, closed, an unparsable
    /// response (nginx's `error`). On by default.
    pub error: bool,
    /// No response head within the timeout (nginx's `timeout`). Off by default: Apache answers a
    /// timeout with a 502 and never sends the request again (docs/apache-behaviour.md §5.8).
    pub timeout: bool,
}

impl Default for RetryOn {
    fn default() -> RetryOn {
        RetryOn { error: true, timeout: false }
    }
}

#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The URL as written (Apache's worker name).
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the member URL without a trailing slash (`""` for `http://host`).
    pub path: String,
    pub route: String,
    /// Apache's lbfactor: `loadfactor` x 100.
    pub lbfactor: u32,
    pub lbset: u32,
    pub retry: Duration,
    pub timeout: Option<Duration>,
    pub connection_timeout: Option<Duration>,
    pub status: MemberStatus,
    /// Route that sticky requests go to while this member is unusable (Apache's RouteRedir).
    pub redirect: Option<String>,
    /// Its active health check, when it has one (`hcmethod`).
    pub health: Option<HealthCheck>,
    /// How to speak TLS to it: set for an `https://` member ([`BalancerConfig::attach_tls`]).
    pub tls: Option<crate::tls::MemberTls>,
}

impl MemberConfig {
    /// A member at `url` with Apache's defaults (what the balancer-manager adds).
    pub fn with_url(url: &str) -> Result<MemberConfig, String> {
        let url = url.trim();
        let (scheme, authority, path) =
            parse_member_url(url).map_err(|why| format!("bad member URL `{url}`: {why}"))?;
        Ok(MemberConfig {
            url: url.to_string(),
            scheme,
            authority,
            path,
            route: String::new(),
            lbfactor: 100,
            lbset: 0,
            retry: DEFAULT_RETRY,
            timeout: None,
            connection_timeout: None,
            status: MemberStatus::default(),
            redirect: None,
            health: None,
            tls: None,
        })
    }

    /// `host:port` to connect to (the port defaults to 80, 443 for `https://`).
    pub fn socket_address(&self) -> String {
        let port = self.authority.port_u16().unwrap_or(if self.scheme == Scheme::HTTPS { 443 } else { 80 });
        format!("{}:{port}", self.authority.host().trim_matches(['[', ']']))
    }
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::single(path, format!("cannot read the configuration: {e}")))?;
        Config::parse(&text, path)
    }

    /// Validate configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Loader {
            text,
            file: path,
            problems: Vec::new(),
            tree: None,
            entries: Vec::new(),
            removed: Vec::new(),
            hc: health::HcDefinitions::default(),
        }
        .load()
    }

    /// A problem about `key` (`balancer.default.lbmethod`), located at its value in the file, or
    /// at the nearest enclosing table when the key is not written (it has its default).
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        let mut at = key;
        let location = loop {
            if let Some(location) = self.locations.get(at) {
                break Some(location);
            }
            match at.rfind(['.', '[']) {
                Some(end) => at = &at[..end],
                None => break None,
            }
        };
        Problem { location, key: Some(key.to_string()), message: message.into() }
    }

    /// `problems` as an error of this configuration's file, in file order.
    pub fn error(&self, mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| p.location.map(|l| (l.line, l.column)));
        ConfigError { file: self.source.clone(), problems }
    }
}

/// Wrong-type errors reported in one go: each bad value is taken out and the file deserialized
/// again, so that one typo does not hide the next.
const MAX_TYPE_ERRORS: usize = 32;

struct Loader<'a> {
    text: &'a str,
    file: &'a Path,
    problems: Vec<Problem>,
    /// The parsed document with spans, for locating keys and values.
    tree: Option<Spanned<toml::de::DeTable<'a>>>,
    /// Every key and array item of the document, with the span of its value.
    entries: Vec<(Vec<String>, std::ops::Range<usize>)>,
    /// Keys whose value had the wrong type and was taken out (`listen`, `balancer.b.timeout`):
    /// what is missing because of them is not reported again.
    removed: Vec<String>,
    /// `[hcexpr.*]` and `[hctemplate.*]`, validated before the balancers that use them.
    hc: health::HcDefinitions,
}

impl Loader<'_> {
    fn problem(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: impl Into<Option<String>>,
        message: impl Into<String>,
    ) {
        let key = key.into();
        if let Some(key) = &key
            && self
                .removed
                .iter()
                .any(|r| r == key || key.starts_with(&format!("{r}.")) || key.starts_with(&format!("{r}[")))
        {
            return;
        }
        self.problems.push(Problem {
            location: span.map(|s| Location::of(self.text, s.start)),
            key,
            message: message.into(),
        });
    }

    fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.problem(Some(value.span()), key.to_string(), message);
    }

    fn load(mut self) -> Result<Config, ConfigError> {
        let raw = match self.deserialize() {
            Some(raw) => raw,
            None => return Err(self.into_error()),
        };
        let config = self.validate(raw);
        if self.problems.is_empty() { Ok(config) } else { Err(self.into_error()) }
    }

    fn into_error(mut self) -> ConfigError {
        self.problems.sort_by_key(|p| p.location.map(|l| (l.line, l.column)));
        ConfigError { file: self.file.to_path_buf(), problems: self.problems }
    }

    /// Parse the TOML and deserialize it, collecting unknown keys (with their lines) on the way.
    /// A value of the wrong type is reported with its key, taken out, and the rest deserialized
    /// again, so every such mistake is reported at once (and the rest validated).
    fn deserialize(&mut self) -> Option<raw::RawConfig> {
        let document = match toml::de::DeTable::parse(self.text) {
            Ok(doc) => doc,
            Err(e) => {
                self.problem(e.span(), None, e.message().to_string());
                return None;
            }
        };
        self.entries = entries(&document);
        self.tree = Some(document.clone());
        let mut document = document;
        let mut unknown: BTreeSet<Vec<String>> = BTreeSet::new();
        let mut removed: Vec<Vec<String>> = Vec::new();
        let mut raw = None;
        // Whether what deserializes is the file less its bad values only (then it is validated).
        let mut whole = true;
        for _ in 0..MAX_TYPE_ERRORS {
            let result = serde_ignored::deserialize(toml::de::Deserializer::from(document.clone()), |path| {
                unknown.insert(path_segments(&path));
            });
            let e = match result {
                Ok(ok) => {
                    raw = Some(ok);
                    break;
                }
                Err(e) => e,
            };
            let key = e.span().and_then(|span| self.key_at(span));
            // A field missing because its bad value was taken out was reported as that value: take
            // its table out too (to find the other bad values), and validate nothing.
            let consequence =
                key.as_ref().is_some_and(|k| removed.iter().any(|r| r.len() > k.len() && r.starts_with(k)));
            if consequence {
                whole = false;
            } else {
                self.problem(e.span(), key.as_deref().map(display_path), e.message().to_string());
            }
            match key.and_then(|k| remove(document.get_mut(), &k)) {
                Some(gone) => {
                    self.removed.push(display_path(&gone));
                    removed.push(gone);
                }
                None => {
                    whole = false;
                    break;
                }
            }
        }
        let raw = raw.filter(|_| whole);
        for mut segments in unknown {
            // The toml crate hands a datetime to serde as a one-field table; where a table of
            // settings was expected, that field is what comes back as "unknown".
            if segments.last().is_some_and(|s| s.starts_with("$__toml_private")) {
                segments.pop();
                let span = self.tree.as_ref().and_then(|t| find(t, &segments)).map(|(_, value)| value);
                let shown = display_path(&segments);
                self.problem(span, shown, "expected a table, found a date-time");
                continue;
            }
            let span = self.tree.as_ref().and_then(|t| find(t, &segments)).map(|(key, _)| key);
            let shown = display_path(&segments);
            self.problem(span, shown, "unknown key");
        }
        raw
    }

    /// The innermost key whose value contains `span` (where a serde error points).
    fn key_at(&self, span: std::ops::Range<usize>) -> Option<Vec<String>> {
        self.entries
            .iter()
            .filter(|(_, value)| value.start <= span.start && span.end <= value.end)
            .min_by_key(|(path, value)| (value.len(), std::cmp::Reverse(path.len())))
            .map(|(path, _)| path.clone())
    }

    fn validate(&mut self, raw: raw::RawConfig) -> Config {
        let mut listen: Vec<SocketAddr> = Vec::new();
        // Each entry's TLS certificate (when it has one), h2c and redirect, in `listen`'s order.
        let mut protocols: Vec<ListenerSettings> = Vec::new();
        // Each address once: the same socket (however written) cannot be bound twice.
        let mut bound: Vec<(SocketAddr, String, usize)> = Vec::new();
        for (i, entry) in raw.listen.iter().enumerate() {
            let mut key = format!("listen[{i}]");
            let addr = match entry.get_ref() {
                raw::RawListen::Address(a) => Spanned::new(entry.span(), a.clone()),
                raw::RawListen::Table(t) => {
                    key.push_str(".address");
                    t.address.clone()
                }
            };
            match addr.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) => {
                    self.unique_address(a, &addr, &key, &mut bound);
                    let settings = match entry.get_ref() {
                        raw::RawListen::Address(_) => (None, false, None),
                        raw::RawListen::Table(t) => self.listener_protocols(i, t),
                    };
                    listen.push(a);
                    protocols.push(settings);
                }
                Err(_) => self.at(
                    &addr,
                    &key,
                    format!("`{}` is not an IP address with a port (like 127.0.0.1:8080)", addr.get_ref()),
                ),
            }
        }
        let admin_listen =
            raw.admin_listen.as_ref().and_then(|addr| match addr.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) => {
                    self.unique_address(a, addr, "admin_listen", &mut bound);
                    Some(a)
                }
                Err(_) => {
                    let why = format!("`{}` is not an IP address with a port (like 127.0.0.1:9901)", addr.get_ref());
                    self.at(addr, "admin_listen", why);
                    None
                }
            });
        if raw.listen.is_empty() {
            self.problem(None, "listen".to_string(), "no address to listen on: add `listen = [\"127.0.0.1:8080\"]`");
        }

        let base = self.file.parent().unwrap_or(Path::new("."));
        let plugins_dir = raw.plugins_dir.as_ref().map(|d| {
            let dir = base.join(d.get_ref());
            match std::fs::metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => self.at(d, "plugins_dir", format!("{} is not a directory", dir.display())),
                Err(e) => self.at(d, "plugins_dir", format!("{}: {}", dir.display(), os_reason(&e))),
            }
            dir
        });
        let plugin_cache = match raw.plugin_cache_dir.as_ref().map(Spanned::get_ref) {
            None => PluginCache::Default,
            Some(d) if d.is_empty() => PluginCache::Off,
            Some(d) => PluginCache::At(base.join(d)),
        };
        let plugin_cache_max_bytes = match &raw.plugin_cache_max_mib {
            None => DEFAULT_PLUGIN_CACHE_MAX_MIB << 20,
            Some(mib) => match *mib.get_ref() {
                1..=1_048_576 => mib.get_ref() << 20,
                _ => {
                    self.at(mib, "plugin_cache_max_mib", "must be 1 to 1048576 (MiB)");
                    DEFAULT_PLUGIN_CACHE_MAX_MIB << 20
                }
            },
        };
        let log_format = match &raw.log_format {
            Some(f) => match LogFormat::parse(f.get_ref()) {
                Ok(format) => Some(format),
                Err(why) => {
                    self.at(f, "log_format", why);
                    None
                }
            },
            None => None,
        };
        let access_log = raw.access_log.as_ref().map(|target| {
            let target = match target.get_ref().as_str() {
                "-" => LogTarget::Stdout,
                path => LogTarget::File(base.join(path)),
            };
            let format =
                log_format.clone().unwrap_or_else(|| LogFormat::parse("combined").expect("the built-in format"));
            (target, format)
        });
        let proxy_timeout = match &raw.proxy_timeout {
            Some(t) => self.timeout(t, "proxy_timeout").unwrap_or(DEFAULT_PROXY_TIMEOUT),
            None => DEFAULT_PROXY_TIMEOUT,
        };
        // 0 is a choice here (exit without waiting), not a typo that fails every request.
        let shutdown_timeout = match &raw.shutdown_timeout {
            Some(t) => self.seconds(t, "shutdown_timeout").unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            None => DEFAULT_SHUTDOWN_TIMEOUT,
        };

        let limits = match &raw.limits {
            Some(l) => {
                let mut found = Vec::new();
                let limits = Limits::validate(l.get_ref(), |span, key, message| found.push((span, key, message)));
                for (span, key, message) in found {
                    self.problem(Some(span), key, message);
                }
                limits
            }
            None => Limits::default(),
        };

        let mut found = Vec::new();
        self.hc = health::HcDefinitions::validate(&raw.hcexpr, &raw.hctemplate, &mut |span, key, message| {
            found.push((span, key, message))
        });
        for (span, key, message) in found {
            self.problem(Some(span), key, message);
        }

        let mut balancers = Vec::new();
        let mut balancer_index = BTreeMap::new();
        for (name, balancer) in &raw.balancers {
            balancer_index.insert(name.clone(), balancers.len());
            balancers.push(self.balancer(name, balancer));
        }

        let mut vhosts = Vec::new();
        for (i, vhost) in raw.vhosts.iter().enumerate() {
            vhosts.push(self.vhost(i, vhost.get_ref(), &balancer_index));
        }
        if raw.vhosts.is_empty() {
            self.problem(
                None,
                "vhost".to_string(),
                "no virtual host: add a [[vhost]] with a server_name and a proxy_pass",
            );
        }

        let listeners = self.listeners(&listen, protocols, &vhosts, &raw);

        let mut plugins = BTreeMap::new();
        for (name, settings) in &raw.plugins {
            plugins.insert(name.clone(), self.plugin_settings(name, settings.get_ref()));
        }
        Config {
            source: self.file.to_path_buf(),
            listen,
            listeners,
            admin_listen,
            plugins_dir,
            plugin_cache,
            plugin_cache_max_bytes,
            access_log,
            proxy_timeout,
            shutdown_timeout,
            state_file: match &raw.state_file {
                Some(f) => base.join(f.get_ref()),
                None => base.join(format!(
                    "{}.state.json",
                    self.file.file_stem().map_or("fulcrum".into(), |s| s.to_string_lossy().into_owned())
                )),
            },
            limits,
            vhosts,
            balancers,
            plugins,
            locations: Locations(
                self.entries
                    .iter()
                    .map(|(path, value)| (display_path(path), Location::of(self.text, value.start)))
                    .collect(),
            ),
        }
    }

    /// A table entry of `listen`: its certificate (read and checked now) and h2c.
    fn listener_protocols(&mut self, i: usize, t: &raw::RawListener) -> ListenerSettings {
        let key = format!("listen[{i}].");
        let certificate = self.certificate(t.tls_certificate.as_ref(), t.tls_key.as_ref(), &key);
        let h2c = t.h2c.as_ref().is_some_and(|h| *h.get_ref());
        if let Some(h) = &t.h2c
            && *h.get_ref()
            && (t.tls_certificate.is_some() || t.tls_key.is_some())
        {
            self.at(
                h,
                &format!("{key}h2c"),
                "h2c is HTTP/2 without TLS: a TLS listener offers HTTP/2 (`h2`) by ALPN already",
            );
        }
        let redirect = t.redirect.as_ref().and_then(|r| {
            let key = format!("{key}redirect");
            if t.tls_certificate.is_some() || h2c {
                self.at(r, &key, "a redirect listener speaks plain HTTP/1.1: no tls_certificate, no h2c");
                return None;
            }
            match redirect_target(r.get_ref()) {
                Ok(target) => Some(target),
                Err(why) => {
                    self.at(r, &key, why);
                    None
                }
            }
        });
        (certificate, h2c, redirect)
    }

    /// A certificate and its key (`tls_certificate` and `tls_key`, or the `names` given, under
    /// `prefix`, like `listen[1].` or `vhost[0].`), read and checked: both or neither; an unusable
    /// file is a problem at its key, naming the file.
    fn certificate(
        &mut self,
        certificate: Option<&Spanned<String>>,
        key: Option<&Spanned<String>>,
        prefix: &str,
    ) -> Option<crate::tls::Certificate> {
        self.certificate_named(certificate, key, prefix, ("tls_certificate", "tls_key"))
    }

    fn certificate_named(
        &mut self,
        certificate: Option<&Spanned<String>>,
        key: Option<&Spanned<String>>,
        prefix: &str,
        (cert_name, key_name): (&str, &str),
    ) -> Option<crate::tls::Certificate> {
        let base = self.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (cert_key, key_key) = (format!("{prefix}{cert_name}"), format!("{prefix}{key_name}"));
        match (certificate, key) {
            (None, None) => None,
            (Some(c), None) => {
                self.at(
                    c,
                    &key_key,
                    format!("{cert_name} needs {key_name}: the PEM file of the certificate's private key"),
                );
                None
            }
            (None, Some(k)) => {
                self.at(k, &cert_key, format!("{key_name} needs {cert_name}: the PEM file of the certificate chain"));
                None
            }
            (Some(c), Some(k)) => {
                match crate::tls::Certificate::load(&base.join(c.get_ref()), &base.join(k.get_ref())) {
                    Ok(loaded) => Some(loaded),
                    Err(crate::tls::CertificateError::Certificate(why)) => {
                        self.at(c, &cert_key, why);
                        None
                    }
                    Err(crate::tls::CertificateError::Key(why)) => {
                        self.at(k, &key_key, why);
                        None
                    }
                }
            }
        }
    }

    /// Each listener's settings; a TLS listener's rustls settings pick the certificate of the
    /// virtual host named by SNI when it has one.
    fn listeners(
        &mut self,
        listen: &[SocketAddr],
        protocols: Vec<ListenerSettings>,
        vhosts: &[VirtualHost],
        raw: &raw::RawConfig,
    ) -> Vec<Listener> {
        let by_name: Vec<(&str, &crate::tls::Certificate)> = vhosts
            .iter()
            .filter_map(|v| v.tls.as_ref().map(|c| (v, c)))
            .flat_map(|(v, c)| {
                std::iter::once(v.server_name.as_str())
                    .chain(v.server_alias.iter().map(String::as_str))
                    .map(move |n| (n, c))
            })
            .collect();
        let mut listeners = Vec::new();
        for (&address, (certificate, h2c, redirect)) in listen.iter().zip(protocols) {
            let tls = certificate.and_then(|certificate| {
                // The first virtual host of a name wins, as it does for requests.
                let mut seen = BTreeSet::new();
                let names = by_name.iter().filter(|(n, _)| seen.insert(*n)).copied();
                match crate::tls::server_config(&certificate, names) {
                    Ok(server_config) => Some(TlsListener { certificate, server_config }),
                    Err(e) => {
                        self.problem(None, "listen".to_string(), format!("cannot set up TLS on {address}: {e}"));
                        None
                    }
                }
            });
            listeners.push(Listener { address, h2c, tls, redirect });
        }
        if !listeners.iter().any(|l| l.tls.is_some()) {
            for (i, v) in raw.vhosts.iter().enumerate() {
                if let Some(c) = &v.get_ref().tls_certificate
                    && vhosts.get(i).is_some_and(|v| v.tls.is_some())
                {
                    self.at(
                        c,
                        &format!("vhost[{i}].tls_certificate"),
                        "no TLS listener would present it: add a `listen` entry with tls_certificate and tls_key",
                    );
                }
            }
        }
        listeners
    }

    fn plugin_settings(&mut self, name: &str, raw: &raw::RawPluginSettings) -> PluginSettings {
        let key = |k: &str| format!("plugins.{name}.{k}");
        let mut settings = PluginSettings { shadow_builtin: raw.shadow_builtin, ..PluginSettings::default() };
        if let Some(ms) = &raw.call_deadline_ms {
            match *ms.get_ref() {
                1..=60_000 => settings.call_deadline = Duration::from_millis(*ms.get_ref()),
                _ => self.at(ms, &key("call_deadline_ms"), "must be 1 to 60000 milliseconds"),
            }
        }
        if let Some(mib) = &raw.memory_limit_mib {
            match *mib.get_ref() {
                1..=4096 => settings.memory_bytes = (*mib.get_ref() as usize) << 20,
                _ => self.at(mib, &key("memory_limit_mib"), "must be 1 to 4096 MiB"),
            }
        }
        if let Some(n) = &raw.recycle_after_calls {
            match *n.get_ref() {
                0 => self.at(n, &key("recycle_after_calls"), "must be at least 1"),
                calls => settings.recycle_after_calls = Some(calls),
            }
        }
        for grant in raw.wasi.iter().flatten() {
            if !settings.wasi.grant(grant.get_ref()) {
                let known = WasiGrants::NAMES.join(", ");
                self.at(grant, &key("wasi"), format!("`{}` is not a WASI grant (known: {known})", grant.get_ref()));
            }
        }
        let status = match &raw.fault_status {
            Some(s) if !(500..=599).contains(s.get_ref()) => {
                self.at(s, &key("fault_status"), "must be a 5xx status");
                500
            }
            Some(s) => *s.get_ref(),
            None => 500,
        };
        settings.on_fault = match raw.on_fault.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "fail")) => OnFault::Fail(status),
            Some((_, "fallback")) => OnFault::Fallback,
            Some((p, other)) => {
                self.at(p, &key("on_fault"), format!("`{other}` is neither `fail` nor `fallback`"));
                OnFault::Fail(status)
            }
        };
        settings
    }

    fn seconds(&mut self, value: &Spanned<u64>, key: &str) -> Option<Duration> {
        if *value.get_ref() > 86_400 * 365 {
            self.at(value, key, "more than a year of seconds: is this a typo?");
            return None;
        }
        Some(Duration::from_secs(*value.get_ref()))
    }

    /// A timeout in seconds: at least 1, since 0 gives up at once (every request would get a 502).
    fn timeout(&mut self, value: &Spanned<u64>, key: &str) -> Option<Duration> {
        if *value.get_ref() == 0 {
            self.at(value, key, "must be at least 1 second (0 would time out every request: a 502 each)");
            return None;
        }
        self.seconds(value, key)
    }

    /// Refuse `addr` when an earlier listener (in `bound`) takes the same socket: the same address
    /// and port however written, or a wildcard address (`0.0.0.0`, `[::]`) and another of its
    /// family on the same port. Port 0 (any free port) never clashes.
    fn unique_address(
        &mut self,
        addr: SocketAddr,
        written: &Spanned<String>,
        key: &str,
        bound: &mut Vec<(SocketAddr, String, usize)>,
    ) {
        let line = Location::of(self.text, written.span().start).line;
        let clash = bound.iter().find(|(other, _, _)| {
            let overlap = addr.ip() == other.ip()
                || ((addr.ip().is_unspecified() || other.ip().is_unspecified()) && addr.is_ipv4() == other.is_ipv4())
                // `[::]` takes IPv4 too on a dual-stack system.
                || (addr.ip().is_unspecified() && addr.is_ipv6() && other.is_ipv4())
                || (other.ip().is_unspecified() && other.is_ipv6() && addr.is_ipv4());
            addr.port() != 0 && addr.port() == other.port() && overlap
        });
        match clash {
            Some((other, other_key, other_line)) if *other == addr => {
                let message =
                    format!("{addr} is already `{other_key}` (line {other_line}): a socket is listened on once");
                self.at(written, key, message);
            }
            Some((other, other_key, other_line)) => {
                let message = format!(
                    "{addr} overlaps {other} (`{other_key}`, line {other_line}): a wildcard address takes the port on \
                     every address, so both cannot be bound"
                );
                self.at(written, key, message);
            }
            None => bound.push((addr, key.to_string(), line)),
        }
    }

    fn vhost(&mut self, i: usize, raw: &raw::RawVhost, balancers: &BTreeMap<String, usize>) -> VirtualHost {
        let key = |k: &str| format!("vhost[{i}].{k}");
        let server_name = raw.server_name.get_ref().trim().to_ascii_lowercase();
        if server_name.is_empty() {
            self.at(&raw.server_name, &key("server_name"), "empty server name");
        }
        let mut routes = Vec::new();
        for (j, pass) in raw.proxy_pass.iter().enumerate() {
            let pass = pass.get_ref();
            let k = format!("vhost[{i}].proxy_pass[{j}]");
            let path = pass.path.get_ref().clone();
            if !path.starts_with('/') {
                self.at(&pass.path, &format!("{k}.path"), format!("`{path}` must start with `/`"));
            }
            let to = pass.to.get_ref().trim();
            let target = if to == "!" {
                RouteTarget::Exclude
            } else if let Some(rest) = to.strip_prefix("balancer://") {
                let (name, target_path) = match rest.find('/') {
                    Some(slash) => (&rest[..slash], &rest[slash..]),
                    None => (rest, ""),
                };
                match balancers.get(name) {
                    Some(&index) => RouteTarget::Balancer { index, path: target_path.to_string() },
                    None => {
                        let known: Vec<_> = balancers.keys().map(String::as_str).collect();
                        self.at(
                            &pass.to,
                            &format!("{k}.to"),
                            format!("no balancer named `{name}` (configured: {})", list_or_none(&known)),
                        );
                        continue;
                    }
                }
            } else {
                self.at(&pass.to, &format!("{k}.to"), format!("`{to}` is neither `balancer://NAME/` nor `!`"));
                continue;
            };
            routes.push(Route { path, target });
        }
        // Longest prefix first: the first match is the most specific, as Apache orders them.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let mut reverse = Vec::new();
        for (j, rule) in raw.proxy_pass_reverse.iter().enumerate() {
            let rule = rule.get_ref();
            let k = format!("vhost[{i}].proxy_pass_reverse[{j}]");
            let to = rule.to.get_ref().trim();
            let target = if let Some(rest) = to.strip_prefix("balancer://") {
                let (name, path) = rest.find('/').map_or((rest, ""), |s| (&rest[..s], &rest[s..]));
                match balancers.get(name) {
                    Some(&index) => ReverseTarget::Balancer { index, path: path.to_string() },
                    None => {
                        self.at(&rule.to, &format!("{k}.to"), format!("no balancer named `{name}`"));
                        continue;
                    }
                }
            } else if to.starts_with("http://") {
                ReverseTarget::Url(to.to_string())
            } else {
                self.at(
                    &rule.to,
                    &format!("{k}.to"),
                    format!("`{to}` is neither `balancer://NAME/` nor an http:// URL"),
                );
                continue;
            };
            reverse.push(ReverseRule { path: rule.path.get_ref().clone(), target });
        }
        let mut matches = Vec::new();
        for (j, m) in raw.proxy_pass_match.iter().enumerate() {
            let m = m.get_ref();
            let k = format!("vhost[{i}].proxy_pass_match[{j}]");
            let regex = match regex::Regex::new(m.regex.get_ref()) {
                Ok(r) => r,
                Err(e) => {
                    self.at(&m.regex, &format!("{k}.regex"), format!("bad regex: {e}"));
                    continue;
                }
            };
            let to = m.to.get_ref().trim().to_string();
            // The worker is the URL up to its path (`http://host:port`); the path is the template.
            let Some(after_scheme) = to.strip_prefix("http://") else {
                self.at(&m.to, &format!("{k}.to"), format!("`{to}` is not an http:// URL"));
                continue;
            };
            let authority_end = after_scheme.find('/').map_or(to.len(), |p| p + "http://".len());
            let base = &to[..authority_end];
            let (scheme, authority, _) = match parse_member_url(base) {
                Ok(parts) => parts,
                Err(why) => {
                    self.at(&m.to, &format!("{k}.to"), format!("bad URL `{to}`: {why}"));
                    continue;
                }
            };
            let seconds = |loader: &mut Self, v: &Option<Spanned<u64>>, key: &str| {
                v.as_ref().and_then(|t| loader.seconds(t, &format!("{k}.{key}")))
            };
            let timeout = |loader: &mut Self, v: &Option<Spanned<u64>>, key: &str| {
                v.as_ref().and_then(|t| loader.timeout(t, &format!("{k}.{key}")))
            };
            let worker = MemberConfig {
                url: base.to_string(),
                scheme,
                authority,
                path: String::new(),
                route: String::new(),
                lbfactor: 100,
                lbset: 0,
                retry: seconds(self, &m.retry, "retry").unwrap_or(DEFAULT_RETRY),
                timeout: timeout(self, &m.timeout, "timeout"),
                connection_timeout: timeout(self, &m.connectiontimeout, "connectiontimeout"),
                status: MemberStatus::default(),
                redirect: None,
                health: None,
                tls: None,
            };
            if worker.scheme == Scheme::HTTPS {
                self.at(
                    &m.to,
                    &format!("{k}.to"),
                    "https:// targets are not supported here yet: route to a balancer with https:// members",
                );
                continue;
            }
            matches.push(MatchRoute { regex, to: to[authority_end..].to_string(), worker });
        }
        let mut rules = Vec::new();
        for (j, table) in raw.rules.iter().enumerate() {
            // A date-time comes through serde as a table with one private key.
            if table.get_ref().keys().any(|k| k.starts_with("$__toml_private")) {
                self.at(table, &format!("vhost[{i}].rules[{j}]"), "expected a table, found a date-time");
                continue;
            }
            let mut config = table.get_ref().clone();
            let plugin = match config.remove("plugin") {
                None => DEFAULT_RULES_PLUGIN.to_string(),
                Some(toml::Value::String(p)) => p,
                Some(_) => {
                    self.at(table, &format!("vhost[{i}].rules[{j}].plugin"), "must be a plugin name (a string)");
                    continue;
                }
            };
            let mut option_lines = BTreeMap::new();
            for key in config.keys() {
                let segments = ["vhost".to_string(), i.to_string(), "rules".into(), j.to_string(), key.clone()];
                if let Some((_, value)) = self.tree.as_ref().and_then(|t| find(t, &segments)) {
                    let mut line = Location::of(self.text, value.start).line;
                    let raw = &self.text[value.start..];
                    if (raw.starts_with("'''") || raw.starts_with("\"\"\"")) && raw[3..].starts_with(['\n', '\r']) {
                        line += 1;
                    }
                    option_lines.insert(key.clone(), line);
                }
            }
            let location = Location::of(self.text, table.span().start);
            rules.push(RulesConfig { plugin, config, location, option_lines });
        }
        let mut locations = Vec::new();
        for (j, spanned) in raw.location.iter().enumerate() {
            let k = format!("vhost[{i}].location[{j}]");
            let mut found = Vec::new();
            let location = location::validate(spanned.get_ref(), &k, spanned.span(), &mut |span, key, message| {
                found.push((span, key, message))
            });
            for (span, key, message) in found {
                self.problem(Some(span), key, message);
            }
            let Some(location) = location else { continue };
            // As in Apache, a proxy_pass wins over a handler: the path must be excluded.
            if let Some(route) = routes.iter().find(|r| crate::path::prefix_matches(&location.path, &r.path))
                && !matches!(route.target, RouteTarget::Exclude)
            {
                self.at(
                    &spanned.get_ref().path,
                    &format!("{k}.path"),
                    format!(
                        "`{}` is proxied by proxy_pass `{}`: exclude it first with {{ path = \"{}\", to = \"!\" }} \
                         (Apache's ProxyPass {} !)",
                        location.path, route.path, location.path, location.path
                    ),
                );
                continue;
            }
            locations.push(location);
        }
        let tls = self.certificate(raw.tls_certificate.as_ref(), raw.tls_key.as_ref(), &key(""));
        VirtualHost {
            tls,
            server_name,
            server_alias: raw.server_alias.iter().map(|a| a.get_ref().trim().to_ascii_lowercase()).collect(),
            preserve_host: raw.preserve_host,
            routes,
            rules,
            reverse,
            matches,
            locations,
        }
    }

    fn balancer(&mut self, name: &str, spanned: &Spanned<raw::RawBalancer>) -> BalancerConfig {
        let raw = spanned.get_ref();
        let key = |k: &str| format!("balancer.{name}.{k}");
        if raw.members.is_empty() {
            self.problem(
                Some(spanned.span()),
                format!("balancer.{name}"),
                format!("balancer `{name}` has no members: add at least one [[balancer.{name}.member]] with a url"),
            );
        }
        let timeout = raw.timeout.as_ref().and_then(|t| self.timeout(t, &key("timeout")));
        let mut members: Vec<MemberConfig> = Vec::new();
        for (i, member) in raw.members.iter().enumerate() {
            if let Some(m) = self.member(name, i, member.get_ref()) {
                if let Some(dup) = members.iter().find(|o| !m.route.is_empty() && o.route == m.route) {
                    let route = &member.get_ref().route;
                    let message = format!("route `{}` is already used by member {}", m.route, dup.url);
                    match route {
                        Some(r) => self.at(r, &format!("balancer.{name}.member[{i}].route"), message),
                        None => self.at(member, &format!("balancer.{name}.member[{i}]"), message),
                    }
                }
                members.push(m);
            }
        }
        for (i, member) in raw.members.iter().enumerate() {
            if let Some(redirect) = &member.get_ref().redirect
                && !members.iter().any(|m| m.route == *redirect.get_ref())
            {
                self.at(
                    redirect,
                    &format!("balancer.{name}.member[{i}].redirect"),
                    format!("no member of balancer `{name}` has route `{}`", redirect.get_ref()),
                );
            }
        }
        let separator = match &raw.stickysessionsep {
            None => '.',
            Some(sep) => {
                let mut chars = sep.get_ref().chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ => {
                        self.at(sep, &key("stickysessionsep"), "must be exactly one character");
                        '.'
                    }
                }
            }
        };
        let sticky = raw.stickysession.as_ref().and_then(|s| {
            if s.get_ref().trim().is_empty() {
                self.at(s, &key("stickysession"), "empty session name");
                return None;
            }
            if let Some((cookie, param)) = s.get_ref().trim().split_once('|')
                && (cookie.trim().is_empty() || param.trim().is_empty())
            {
                self.at(s, &key("stickysession"), "`COOKIE|urlparam` needs both names (one of them is empty)");
                return None;
            }
            Some(StickySession::parse(s.get_ref().trim(), separator, raw.nofailover.unwrap_or(false)))
        });
        let mut failonstatus = Vec::new();
        for status in &raw.failonstatus {
            match u16::try_from(*status.get_ref()) {
                Ok(code) if (100..=599).contains(&code) => failonstatus.push(code),
                _ => self.at(status, &key("failonstatus"), format!("{} is not an HTTP status", status.get_ref())),
            }
        }
        let maxattempts = match &raw.maxattempts {
            Some(m) if *m.get_ref() < 0 => {
                self.at(m, &key("maxattempts"), "cannot be negative");
                0
            }
            Some(m) => *m.get_ref() as usize,
            // Apache's default: one attempt per other member.
            None => raw.members.len().saturating_sub(1),
        };
        let retry_idempotent = match &raw.retry_idempotent {
            None => RetryOn::default(),
            Some(list) => {
                let mut on = RetryOn { error: false, timeout: false };
                for item in list {
                    match item.get_ref().as_str() {
                        "error" => on.error = true,
                        "timeout" => on.timeout = true,
                        other => self.at(
                            item,
                            &key("retry_idempotent"),
                            format!(
                                "`{other}` is not a failure to retry after: use \"error\", \"timeout\" (or [] for none)"
                            ),
                        ),
                    }
                }
                on
            }
        };
        let upgrade = match &raw.upgrade {
            None => Upgrade::Off,
            Some(u) if u.get_ref().trim() == "*" => Upgrade::Any,
            Some(u) => {
                let protocols: Vec<String> =
                    u.get_ref().split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
                let bad = protocols
                    .iter()
                    .find(|p| !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)));
                if protocols.is_empty() {
                    self.at(u, &key("upgrade"), "empty: name the protocols (\"websocket\") or \"*\" for any");
                } else if let Some(bad) = bad {
                    self.at(
                        u,
                        &key("upgrade"),
                        format!("`{bad}` is not a protocol name (an HTTP token such as \"websocket\")"),
                    );
                }
                Upgrade::Protocols(protocols)
            }
        };
        let tunnel_lifetime = raw.tunnel_lifetime.as_ref().and_then(|t| match *t.get_ref() {
            0 => {
                self.at(t, &key("tunnel_lifetime"), "0 would close every tunnel at once: leave it out for no limit");
                None
            }
            secs => Some(Duration::from_secs(secs)),
        });
        let tls_client = self.member_tls_settings(name, raw, &mut members);
        BalancerConfig {
            name: name.to_string(),
            lbmethod: raw.lbmethod.as_ref().map_or_else(|| "byrequests".to_string(), |m| m.get_ref().clone()),
            lbmethod_config: raw.lbmethod_config.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default(),
            fallback: raw.fallback.as_ref().map_or_else(|| "byrequests".to_string(), |f| f.get_ref().clone()),
            fallback_written: raw.fallback.is_some(),
            timeout,
            sticky,
            failonstatus,
            failontimeout: raw.failontimeout.unwrap_or(false),
            maxattempts,
            forcerecovery: raw.forcerecovery.unwrap_or(true),
            retry_idempotent,
            persist: raw.persist,
            upgrade,
            tunnel_lifetime,
            tls_client,
            members,
        }
    }

    /// The balancer's TLS client settings (`tls_ca`, `tls_client_certificate`, `tls_client_key`),
    /// given to each of its `https://` members; problems at their keys, naming the file.
    fn member_tls_settings(
        &mut self,
        name: &str,
        raw: &raw::RawBalancer,
        members: &mut [MemberConfig],
    ) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        let key = |k: &str| format!("balancer.{name}.{k}");
        let https = members.iter().any(|m| m.scheme == Scheme::HTTPS);
        if !https {
            let written = [
                ("tls_ca", &raw.tls_ca),
                ("tls_client_certificate", &raw.tls_client_certificate),
                ("tls_client_key", &raw.tls_client_key),
            ];
            if let Some((field, Some(setting))) = written.into_iter().find(|(_, v)| v.is_some()) {
                self.at(setting, &key(field), "the TLS settings are for https:// members, and this balancer has none");
            }
            return None;
        }
        let (certificate, client_key) = (raw.tls_client_certificate.as_ref(), raw.tls_client_key.as_ref());
        let client =
            self.certificate_named(certificate, client_key, &key(""), ("tls_client_certificate", "tls_client_key"));
        if client.is_none() && (certificate.is_some() || client_key.is_some()) {
            return None;
        }
        let base = self.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let ca = raw.tls_ca.as_ref().map(|f| base.join(f.get_ref()));
        let config = match crate::tls::client_config(ca.as_deref(), client.as_ref()) {
            Ok(config) => config,
            Err(why) => {
                match &raw.tls_ca {
                    Some(f) => self.at(f, &key("tls_ca"), why),
                    None => self.problem(None, key("member"), why),
                }
                return None;
            }
        };
        for (i, member) in members.iter_mut().enumerate().filter(|(_, m)| m.scheme == Scheme::HTTPS) {
            match crate::tls::MemberTls::new(std::sync::Arc::clone(&config), member.authority.host()) {
                Ok(tls) => member.tls = Some(tls),
                Err(why) => self.problem(None, format!("balancer.{name}.member[{i}].url"), why),
            }
        }
        Some(config)
    }

    fn member(&mut self, balancer: &str, i: usize, raw: &raw::RawMember) -> Option<MemberConfig> {
        let key = |k: &str| format!("balancer.{balancer}.member[{i}].{k}");
        let url = raw.url.get_ref().trim().to_string();
        let parsed = match parse_member_url(&url) {
            Ok(p) => Some(p),
            Err(why) => {
                self.at(&raw.url, &key("url"), format!("bad member URL `{url}`: {why}"));
                None
            }
        };
        let loadfactor = match &raw.loadfactor {
            Some(lf) if !(1..=100).contains(lf.get_ref()) => {
                self.at(
                    lf,
                    &key("loadfactor"),
                    format!("loadfactor must be 1 to 100 (Apache's range), not {}", lf.get_ref()),
                );
                1
            }
            Some(lf) => *lf.get_ref() as u32,
            None => 1,
        };
        let lbset = match &raw.lbset {
            Some(s) if !(0..=99).contains(s.get_ref()) => {
                self.at(s, &key("lbset"), format!("lbset must be 0 to 99, not {}", s.get_ref()));
                0
            }
            Some(s) => *s.get_ref() as u32,
            None => 0,
        };
        let retry = raw.retry.as_ref().and_then(|r| self.seconds(r, &key("retry"))).unwrap_or(DEFAULT_RETRY);
        let timeout = raw.timeout.as_ref().and_then(|t| self.timeout(t, &key("timeout")));
        let connection_timeout =
            raw.connectiontimeout.as_ref().and_then(|t| self.timeout(t, &key("connectiontimeout")));
        let status = match &raw.status {
            Some(spec) => match MemberStatus::parse(spec.get_ref()) {
                Ok(status) => status,
                Err(why) => {
                    self.at(spec, &key("status"), why);
                    MemberStatus::default()
                }
            },
            None => MemberStatus::default(),
        };
        let mut found = Vec::new();
        let health = self.hc.member_check(
            &raw.hc(),
            raw.hctemplate.as_ref(),
            &format!("balancer.{balancer}.member[{i}]"),
            parsed.as_ref().map_or("", |(_, _, path)| path.as_str()),
            &mut |span, key, message| found.push((span, key, message)),
        );
        for (span, key, message) in found {
            self.problem(Some(span), key, message);
        }
        let (scheme, authority, path) = parsed?;
        Some(MemberConfig {
            url,
            scheme,
            authority,
            path,
            route: raw.route.as_ref().map(|r| r.get_ref().clone()).unwrap_or_default(),
            lbfactor: loadfactor * 100,
            lbset,
            retry,
            timeout,
            connection_timeout,
            status,
            redirect: raw.redirect.as_ref().map(|r| r.get_ref().clone()),
            health,
            tls: None,
        })
    }
}

/// `http://host[:port][/path]` or `https://...` → its parts.
fn parse_member_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let scheme = uri.scheme().cloned().ok_or("it has no scheme; write it as http://HOST:PORT")?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("scheme `{scheme}` is not supported; members are http:// or https://"));
    }
    let authority = uri.authority().cloned().ok_or("it has no host")?;
    if authority.host().is_empty() {
        return Err("it has no host".into());
    }
    if authority.as_str().contains('@') {
        return Err("user information in member URLs is not supported".into());
    }
    if uri.query().is_some() {
        return Err("a member URL cannot have a query".into());
    }
    let path = uri.path().trim_end_matches('/').to_string();
    Ok((scheme, authority, path))
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// The key path of an ignored field, without serde's internal wrappers.
fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = Vec::new();
    let mut cur = path;
    loop {
        match cur {
            Path::Root => break,
            Path::Seq { parent, index } => {
                out.push(index.to_string());
                cur = parent;
            }
            Path::Map { parent, key } => {
                if !key.starts_with("$__serde_spanned") {
                    out.push(key.clone());
                }
                cur = parent;
            }
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => cur = parent,
        }
    }
    out.reverse();
    out
}

fn display_path(segments: &[String]) -> String {
    let mut s = String::new();
    for seg in segments {
        if seg.parse::<usize>().is_ok() {
            s.push_str(&format!("[{seg}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
    }
    s
}

/// The spans of the key and of the value at `segments` in the parsed document.
#[allow(clippy::type_complexity)]
fn find(
    doc: &Spanned<toml::de::DeTable<'_>>,
    segments: &[String],
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    use toml::de::DeValue;
    let mut table = doc.get_ref();
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    let mut found = None;
    for seg in segments {
        if let Some(arr) = array.take() {
            let idx: usize = seg.parse().ok()?;
            let item = arr.get(idx)?;
            found = Some((item.span(), item.span()));
            match item.get_ref() {
                DeValue::Table(t) => table = t,
                _ => return found,
            }
            continue;
        }
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == seg.as_str())?;
        found = Some((k.span(), v.span()));
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    found
}

/// Every key and array item of the document (`["balancer", "default", "member", "0", "url"]`),
/// with the span of its value.
fn entries(doc: &Spanned<toml::de::DeTable<'_>>) -> Vec<(Vec<String>, std::ops::Range<usize>)> {
    use toml::de::DeValue;
    fn walk(value: &DeValue<'_>, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, std::ops::Range<usize>)>) {
        let mut visit = |path: &mut Vec<String>, segment: String, item: &Spanned<DeValue<'_>>| {
            path.push(segment);
            out.push((path.clone(), item.span()));
            walk(item.get_ref(), path, out);
            path.pop();
        };
        match value {
            DeValue::Table(table) => table.iter().for_each(|(k, v)| visit(path, k.get_ref().to_string(), v)),
            DeValue::Array(array) => array.iter().enumerate().for_each(|(i, v)| visit(path, i.to_string(), v)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&DeValue::Table(doc.get_ref().clone()), &mut Vec::new(), &mut out);
    out
}

/// Take the value at `segments` out of the document: the innermost table key on that path (an
/// array item cannot go without renumbering its neighbours, so its array goes). Returns the key
/// path taken out.
fn remove(root: &mut toml::de::DeTable<'_>, segments: &[String]) -> Option<Vec<String>> {
    use toml::de::DeValue;
    // Which segments are table keys rather than array indexes.
    let mut keys = Vec::with_capacity(segments.len());
    let mut value: Option<&DeValue<'_>> = None;
    for segment in segments {
        let next = match value {
            None => {
                keys.push(true);
                root.get(segment.as_str())?
            }
            Some(DeValue::Table(t)) => {
                keys.push(true);
                t.get(segment.as_str())?
            }
            Some(DeValue::Array(a)) => {
                keys.push(false);
                a.get(segment.parse::<usize>().ok()?)?
            }
            Some(_) => return None,
        };
        value = Some(next.get_ref());
    }
    let last = keys.iter().rposition(|&k| k)?;
    let target = &segments[..=last];
    if last == 0 {
        return root.remove(target[0].as_str()).map(|_| target.to_vec());
    }
    let mut value = root.get_mut(target[0].as_str())?.get_mut();
    for segment in &target[1..last] {
        value = match value {
            DeValue::Table(t) => t.get_mut(segment.as_str())?.get_mut(),
            DeValue::Array(a) => a.get_mut(segment.parse::<usize>().ok()?)?.get_mut(),
            _ => return None,
        };
    }
    match value {
        DeValue::Table(t) => t.remove(target[last].as_str()).map(|_| target.to_vec()),
        _ => None,
    }
}

/// An I/O error's reason without Rust's ` (os error N)` suffix: `Permission denied`.
pub fn os_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests;
