//! The environment variables Fulcrum sets for a request (Apache's `subprocess_env`: the
//! BALANCER_* variables of mod_proxy_balancer, mod_unique_id's `UNIQUE_ID`, mod_ssl's `HTTPS` and
//! `SSL_*`), and which of them anyone reads.
//!
//! Only rules plugins (through their declared variables) and the access log (`%{NAME}e`) read
//! them, so a variable nobody reads is not set: each one set costs a lookup in the request's
//! environment and, for most, a reference count taken and given back. What a virtual host's
//! readers read is worked out once, when its rules are built or one of its rule sets is rebuilt
//! ([`Read`]), not per request.

use std::sync::atomic::{AtomicU16, Ordering};

/// The variables Fulcrum sets, each a bit of a [`Read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Var {
    BalancerName = 1 << 0,
    BalancerWorkerName = 1 << 1,
    BalancerWorkerRoute = 1 << 2,
    BalancerSessionSticky = 1 << 3,
    BalancerSessionRoute = 1 << 4,
    BalancerRouteChanged = 1 << 5,
    UniqueId = 1 << 6,
    Https = 1 << 7,
    SslProtocol = 1 << 8,
    SslCipher = 1 << 9,
    SslTlsSni = 1 << 10,
}

impl Var {
    pub const ALL: [Var; 11] = [
        Var::BalancerName,
        Var::BalancerWorkerName,
        Var::BalancerWorkerRoute,
        Var::BalancerSessionSticky,
        Var::BalancerSessionRoute,
        Var::BalancerRouteChanged,
        Var::UniqueId,
        Var::Https,
        Var::SslProtocol,
        Var::SslCipher,
        Var::SslTlsSni,
    ];

    /// The variable's name, as Apache spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Var::BalancerName => "BALANCER_NAME",
            Var::BalancerWorkerName => "BALANCER_WORKER_NAME",
            Var::BalancerWorkerRoute => "BALANCER_WORKER_ROUTE",
            Var::BalancerSessionSticky => "BALANCER_SESSION_STICKY",
            Var::BalancerSessionRoute => "BALANCER_SESSION_ROUTE",
            Var::BalancerRouteChanged => "BALANCER_ROUTE_CHANGED",
            Var::UniqueId => "UNIQUE_ID",
            Var::Https => "HTTPS",
            Var::SslProtocol => "SSL_PROTOCOL",
            Var::SslCipher => "SSL_CIPHER",
            Var::SslTlsSni => "SSL_TLS_SNI",
        }
    }
}

/// A set of [`Var`]s: those some reader reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vars(u16);

impl Vars {
    /// The variables for which `reads(name)` holds.
    pub fn read_by(reads: impl Fn(&str) -> bool) -> Vars {
        Vars(Var::ALL.iter().filter(|v| reads(v.name())).fold(0, |set, v| set | *v as u16))
    }

    pub fn contains(self, var: Var) -> bool {
        self.0 & var as u16 != 0
    }

    pub fn union(self, other: Vars) -> Vars {
        Vars(self.0 | other.0)
    }
}

/// What a virtual host's rules and the access log read, kept current when a rule set is rebuilt
/// (a request reads it once).
#[derive(Debug, Default)]
pub struct Read(AtomicU16);

impl Read {
    pub fn new(vars: Vars) -> Read {
        Read(AtomicU16::new(vars.0))
    }

    pub fn get(&self) -> Vars {
        Vars(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, vars: Vars) {
        self.0.store(vars.0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_what_its_readers_read() {
        let rules =
            Vars::read_by(|name| ["balancer_worker_route", "UNIQUE_ID"].iter().any(|r| r.eq_ignore_ascii_case(name)));
        let log = Vars::read_by(|name| name == "BALANCER_NAME");
        let read = Read::new(rules.union(log));
        let got: Vec<&str> = Var::ALL.iter().filter(|v| read.get().contains(**v)).map(|v| v.name()).collect();
        assert_eq!(got, ["BALANCER_NAME", "BALANCER_WORKER_ROUTE", "UNIQUE_ID"]);
        read.set(Vars::default());
        assert!(Var::ALL.iter().all(|v| !read.get().contains(*v)));
    }
}
