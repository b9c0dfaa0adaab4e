//! Fulcrum: an HTTP load balancer whose routing is programmable with WebAssembly components.
//!
//! A request's path through the crate:
//!
//! 1. [`server`] accepts it on a listener (hyper, HTTP/1.1 with keep-alive; on a TLS or h2c
//!    listener [`protocols`] does the handshake and speaks HTTP/2 or HTTP/1.1, with the
//!    certificates of [`tls`]);
//! 2. [`proxy`] picks the virtual host (Host → ServerName/ServerAlias) and the route (longest
//!    `proxy_pass` prefix), and asks the route's [`balancer`] for a member;
//! 3. the balancer computes the candidates (usable members of the lowest lbset tier) and asks its
//!    lbmethod, a [`balancer::MemberSelector`], to pick one; the selector is a WebAssembly
//!    component run by [`plugin`] (the only module that names wasmtime), and the balancer checks
//!    the answer and updates its counters in the same locked step;
//! 4. the proxy forwards the request with a pooled client (timeouts, X-Forwarded-*, hop-by-hop
//!    headers removed), fails over on a refused connection, and streams the response back.
//!
//! 5. the response phase of the rules runs, and the request is written to the [`access_log`].
//!
//! [`health`] checks members in the background (mod_proxy_hcheck) and takes failing ones out.
//!
//! [`config`] turns the TOML file into validated values with file:line errors; [`demo`] is an echo
//! backend for `fulcrum demo` and the tests; [`admin`] serves metrics on an address of its own;
//! [`conformance`] runs the kit that any build of a default lbmethod must pass.

pub mod access_log;
pub mod admin;
pub mod balancer;
pub mod blocking;
pub mod coalesce;
pub mod config;
pub mod conformance;
pub mod counters;
pub mod demo;
pub mod header_timer;
pub mod health;
pub mod local;
pub mod log;
pub mod path;
pub mod persist;
pub mod plugin;
pub mod protocols;
pub mod proxy;
pub mod request;
pub mod rules;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tls;

/// Errors that end a command: they carry their whole context (file, balancer, plugin) in words.
pub use anyhow::Error;
