//! End-to-end tests: the real `fulcrum` binary, real echo backends, real sockets on 127.0.0.1.

mod access_log;
mod admin;
mod apache;
mod apache_diff;
mod balancing;
mod cache;
mod check;
mod compat;
mod conformance;
mod failures;
mod fault_injection;
mod faults;
mod guide;
mod hardening;
mod health;
mod http_fuzz;
mod languages;
mod no_loss;
mod plugin_folder;
mod plugin_new;
mod reload;
mod routing;
mod rules_component;
mod sticky;
mod support;
mod tiers;
