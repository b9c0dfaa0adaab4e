//! The configuration file as written: serde shapes with spans, before validation.
//!
//! Names follow Apache where Apache has them: member and balancer parameters keep Apache's own
//! spelling (`loadfactor`, `connectiontimeout`, `stickysession`, `failonstatus`), directives become
//! snake_case keys (`ServerName` → `server_name`, `ProxyTimeout` → `proxy_timeout`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// Addresses to listen on (`Listen`), e.g. `["127.0.0.1:8080"]`; an entry may be a table
    /// with TLS or h2c settings (`{ address = "...", tls_certificate = "...", tls_key = "..." }`).
    #[serde(default)]
    pub listen: Vec<Spanned<RawListen>>,
    /// The admin listener (`GET /metrics`), e.g. `"127.0.0.1:9901"`; none by default.
    pub admin_listen: Option<Spanned<String>>,
    /// A folder of `.wasm` plugin components, loaded at start.
    pub plugins_dir: Option<Spanned<String>>,
    /// Where compiled plugins are kept between runs; `""` turns the cache off.
    pub plugin_cache_dir: Option<Spanned<String>>,
    /// The plugin cache's size bound, MiB (default 1024): past it, least recently used files go.
    pub plugin_cache_max_mib: Option<Spanned<u64>>,
    /// `CustomLog`: a file (relative to this config) or `-` for stdout.
    pub access_log: Option<Spanned<String>>,
    /// `LogFormat`: Apache's format string, or `combined` (the default) / `common`.
    pub log_format: Option<Spanned<String>>,
    /// `ProxyTimeout`, seconds: how long to wait for a member's response (default 300, Debian's `Timeout`).
    pub proxy_timeout: Option<Spanned<u64>>,
    /// Seconds that SIGTERM or SIGINT lets requests in flight finish before exiting (default 30).
    /// Apache's `GracefulShutdownTimeout`, except that 0 exits at once (Apache's 0 waits forever).
    pub shutdown_timeout: Option<Spanned<u64>>,
    /// Where balancers with `persist = true` keep the balancer-manager's changes (default: this
    /// file's name with `.state.json`, next to it).
    pub state_file: Option<Spanned<String>>,
    /// `[limits]`: request size limits, read timeouts, connections (Apache's defaults).
    pub limits: Option<Spanned<super::limits::RawLimits>>,
    #[serde(default, rename = "vhost")]
    pub vhosts: Vec<Spanned<RawVhost>>,
    #[serde(default, rename = "balancer")]
    pub balancers: BTreeMap<String, Spanned<RawBalancer>>,
    /// Per-plugin sandbox and failure settings, by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Spanned<RawPluginSettings>>,
    /// Health-check templates (`ProxyHCTemplate`): `hc*` keys members take with `hctemplate`.
    #[serde(default)]
    pub hctemplate: BTreeMap<String, Spanned<super::health::RawHcParams>>,
    /// Health-check conditions (`ProxyHCExpr`): statuses and body regexes a check must see.
    #[serde(default)]
    pub hcexpr: BTreeMap<String, Spanned<super::health::RawHcExpr>>,
}

/// One `listen` entry: an address as a string (plain HTTP/1.1, as always), or a table.
#[derive(Debug)]
pub enum RawListen {
    /// Its span is the entry's.
    Address(String),
    Table(RawListener),
}

/// `{ address = "127.0.0.1:8443", tls_certificate = "www.pem", tls_key = "www.key" }`: Apache's
/// `Listen 443 https` with `SSLEngine on`, `SSLCertificateFile`, `SSLCertificateKeyFile`; or
/// `{ address = "127.0.0.1:8080", h2c = true }` (`Protocols h2c http/1.1`); or
/// `{ address = "127.0.0.1:80", redirect = "https://www.example.com" }`.
#[derive(Debug, Deserialize)]
pub struct RawListener {
    pub address: Spanned<String>,
    /// PEM file of the certificate chain (the server's first): the listener speaks TLS.
    pub tls_certificate: Option<Spanned<String>>,
    /// PEM file of the certificate's private key.
    pub tls_key: Option<Spanned<String>>,
    /// Cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3) beside HTTP/1.1 (plain listeners).
    pub h2c: Option<Spanned<bool>>,
    /// Every request gets a 301 to this URL followed by its path and query (Apache's
    /// `Redirect permanent / https://www.example.com/` in a port-80 virtual host).
    pub redirect: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawListen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an address like \"127.0.0.1:8080\", or a table like { address = \"127.0.0.1:8443\", \
                     tls_certificate = \"cert.pem\", tls_key = \"key.pem\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen::Address(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawListen, A::Error> {
                RawListener::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawListen::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
pub struct RawPluginSettings {
    /// Wall-clock budget of one call, milliseconds (default 100).
    pub call_deadline_ms: Option<Spanned<u64>>,
    /// Linear-memory cap per instance, MiB (default 64).
    pub memory_limit_mib: Option<Spanned<u64>>,
    /// What a request gets when the plugin faults: `fail` (an error status, the default) or
    /// `fallback` (a selector's balancer uses its `fallback` built-in for that request).
    pub on_fault: Option<Spanned<String>>,
    /// Replace an instance after this many calls (default: never).
    pub recycle_after_calls: Option<Spanned<u64>>,
    /// WASI capabilities granted: `clocks`, `random`, `cli` (default none).
    pub wasi: Option<Vec<Spanned<String>>>,
    /// The status of `fail` (default 500).
    pub fault_status: Option<Spanned<u16>>,
    /// A file of this name in `plugins_dir` may replace the built-in plugin of the same name.
    #[serde(default)]
    pub shadow_builtin: bool,
}

#[derive(Debug, Deserialize)]
pub struct RawVhost {
    pub server_name: Spanned<String>,
    #[serde(default)]
    pub server_alias: Vec<Spanned<String>>,
    /// `ProxyPreserveHost`: send the client's Host to the member instead of the member's own.
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub proxy_pass: Vec<Spanned<RawProxyPass>>,
    /// `ProxyPassReverse PATH URL`: member URLs in Location/Content-Location become this server's.
    #[serde(default)]
    pub proxy_pass_reverse: Vec<Spanned<RawProxyPass>>,
    /// `ProxyPassMatch REGEX URL [timeout=…]`: requests whose path matches go to one URL, unbalanced.
    #[serde(default)]
    pub proxy_pass_match: Vec<Spanned<RawProxyPassMatch>>,
    /// Rule sets, run in order: `plugin` (default `apache-rules`) and the plugin's own keys.
    #[serde(default)]
    pub rules: Vec<Spanned<toml::Table>>,
    /// Local handlers (`<Location PATH> SetHandler NAME`, `Require ip`) on excluded paths.
    #[serde(default)]
    pub location: Vec<Spanned<super::location::RawLocation>>,
    /// `SSLCertificateFile` in the virtual host: its own certificate on TLS listeners, chosen
    /// by SNI (else the listener's).
    pub tls_certificate: Option<Spanned<String>>,
    /// `SSLCertificateKeyFile`.
    pub tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawProxyPass {
    /// The URL-path prefix (`ProxyPass PATH ...`).
    pub path: Spanned<String>,
    /// `balancer://NAME/PATH`, or `"!"` to exclude the path from proxying.
    pub to: Spanned<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawProxyPassMatch {
    /// Matched against the request path (unanchored unless the regex says so).
    pub regex: Spanned<String>,
    /// `http://HOST:PORT/PATH` with `$0`..`$9` from the match.
    pub to: Spanned<String>,
    /// Seconds to wait for the response.
    pub timeout: Option<Spanned<u64>>,
    /// Seconds to wait for the connection.
    pub connectiontimeout: Option<Spanned<u64>>,
    /// Seconds the worker stays in error state after a refused connection (default 60).
    pub retry: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawBalancer {
    /// The member-selection plugin (`byrequests`, `bytraffic`, `bybusyness`, or a plugin's name).
    pub lbmethod: Option<Spanned<String>>,
    /// The lbmethod plugin's own configuration table.
    pub lbmethod_config: Option<Spanned<toml::Table>>,
    /// `timeout`, seconds: the balancer-wide response timeout.
    pub timeout: Option<Spanned<u64>>,
    /// The built-in lbmethod that takes over when the lbmethod plugin's file is removed
    /// (default `byrequests`).
    pub fallback: Option<Spanned<String>>,
    /// `stickysession`: the session cookie name, or `COOKIE|urlparam`.
    pub stickysession: Option<Spanned<String>>,
    /// `stickysessionsep`: what separates the route in the session value (default `.`).
    pub stickysessionsep: Option<Spanned<String>>,
    /// `scolonpathdelim`: accepted for Apache compatibility; `;` always ends a URL route (as
    /// Apache 2.4.71 was observed to do with it off, docs/apache-behaviour.md §3.1).
    #[serde(rename = "scolonpathdelim")]
    pub _scolonpathdelim: Option<bool>,
    /// `nofailover`: a sticky route whose member is down gets a 503 (default off).
    pub nofailover: Option<bool>,
    /// `failonstatus`: member statuses that put the member in error state (the response is relayed).
    #[serde(default)]
    pub failonstatus: Vec<Spanned<i64>>,
    /// `failontimeout`: a response timeout puts the member in error state (default off).
    pub failontimeout: Option<bool>,
    /// `maxattempts`: failover attempts after the first (default: members - 1).
    pub maxattempts: Option<Spanned<i64>>,
    /// `forcerecovery`: when every member is in error, try them again at once (default on).
    pub forcerecovery: Option<bool>,
    /// After which member failures an idempotent request without a body goes to another member:
    /// `"error"` (the default), `"timeout"` (Fulcrum's, like nginx's `proxy_next_upstream`).
    pub retry_idempotent: Option<Vec<Spanned<String>>>,
    /// `BalancerPersist`: the balancer-manager's changes outlive restarts and reloads (kept in
    /// `state_file`).
    #[serde(default)]
    pub persist: bool,
    /// Apache's `upgrade=` worker parameter: the protocols (`Upgrade` tokens, `"websocket"`) a
    /// client may switch to through this balancer's members, or `"*"` for any.
    pub upgrade: Option<Spanned<String>>,
    /// Seconds an upgraded connection (a tunnel) may stay open in all; none by default (its idle
    /// limit is the member's response timeout, as in Apache).
    pub tunnel_lifetime: Option<Spanned<u64>>,
    /// For `https://` members: the PEM file of the CAs their certificates must chain to
    /// (Apache's `SSLProxyCACertificateFile`); the system's CAs when absent.
    pub tls_ca: Option<Spanned<String>>,
    /// A client certificate chain and key (PEM) for members that ask for one (Apache's
    /// `SSLProxyMachineCertificateFile`).
    pub tls_client_certificate: Option<Spanned<String>>,
    pub tls_client_key: Option<Spanned<String>>,
    #[serde(default, rename = "member")]
    pub members: Vec<Spanned<RawMember>>,
}

#[derive(Debug, Deserialize)]
pub struct RawMember {
    pub url: Spanned<String>,
    #[serde(default)]
    pub route: Option<Spanned<String>>,
    /// Apache's `loadfactor` (1-100, default 1); lbfactor = loadfactor x 100.
    pub loadfactor: Option<Spanned<i64>>,
    /// Apache's `lbset` tier (0-99, default 0).
    pub lbset: Option<Spanned<i64>>,
    /// Seconds a member stays in error state before it is tried again (default 60).
    pub retry: Option<Spanned<u64>>,
    /// Seconds to wait for the member's response (overrides the balancer and `proxy_timeout`).
    pub timeout: Option<Spanned<u64>>,
    /// Seconds to wait for the TCP connection to the member.
    pub connectiontimeout: Option<Spanned<u64>>,
    /// Apache's `status`: `+H` (hot standby), `+D` (disabled), `+S`, `+I`, `+N`, `+R`.
    pub status: Option<Spanned<String>>,
    /// Apache's `redirect`: the route to send sticky requests to while this member is unusable.
    pub redirect: Option<Spanned<String>>,
    /// Active health checks (mod_proxy_hcheck): see `config/health.rs`.
    pub hcmethod: Option<Spanned<String>>,
    pub hcuri: Option<Spanned<String>>,
    pub hcinterval: Option<Spanned<super::health::RawInterval>>,
    pub hcpasses: Option<Spanned<i64>>,
    pub hcfails: Option<Spanned<i64>>,
    pub hcexpr: Option<Spanned<String>>,
    pub hcload: Option<Spanned<String>>,
    /// A `[hctemplate.NAME]` whose `hc*` keys apply where the member sets none of its own.
    pub hctemplate: Option<Spanned<String>>,
}

impl RawMember {
    /// The member's own `hc*` keys.
    pub fn hc(&self) -> super::health::RawHcParams {
        super::health::RawHcParams {
            hcmethod: self.hcmethod.clone(),
            hcuri: self.hcuri.clone(),
            hcinterval: self.hcinterval.clone(),
            hcpasses: self.hcpasses.clone(),
            hcfails: self.hcfails.clone(),
            hcexpr: self.hcexpr.clone(),
            hcload: self.hcload.clone(),
        }
    }
}
