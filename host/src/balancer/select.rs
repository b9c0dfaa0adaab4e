//! The member-selection seam: what the balancer asks of an lbmethod, in native terms.
//!
//! The balancer owns the state and the decision; a [`MemberSelector`] only proposes. The plugin
//! module implements this trait with WebAssembly components; nothing here knows about Wasm.

use std::fmt;

use hyper::http::HeaderName;

pub use crate::request::{ClientAddr, RequestFields, RequestInfo};

/// Per-member state columns a selector declared it reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateColumns {
    pub lbstatus: bool,
    pub busy: bool,
    pub traffic: bool,
    /// The members' fresh load reports ([`LoadReport`]).
    pub load: bool,
}

/// A member's own report of its load (mod_heartmonitor's `busy=N&ready=M`), read from its health
/// checks' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests it says it is busy with.
    pub busy: u32,
    /// Requests it says it is ready to take more of.
    pub ready: u32,
}

/// What a selector reads per request, declared once when it is configured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SelectorNeeds {
    pub fields: RequestFields,
    pub headers: Vec<HeaderName>,
    pub columns: StateColumns,
}

/// The balancer's state for one selection; every list is indexed by member.
#[derive(Debug, Clone, Copy)]
pub struct SelectState<'a> {
    /// Members the selector may choose, ascending, never empty.
    pub candidates: &'a [u32],
    /// Empty unless the selector declared the column.
    pub lbstatus: &'a [i64],
    pub busy: &'a [u64],
    pub traffic: &'a [u64],
    /// Each member's load report while it is fresh; empty unless the selector declared the column.
    pub load: &'a [Option<LoadReport>],
}

/// A selector's proposal, checked by the balancer before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub member: Option<u32>,
    /// New lbstatus for every member, or empty for "unchanged".
    pub lbstatus: Vec<i64>,
}

/// Why a selector call produced no answer. The selector has already recovered (a trapped instance
/// is discarded); the request that hit it gets a 5xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorFault {
    pub plugin: String,
    pub kind: FaultKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The plugin trapped (a panic, an unreachable, an out-of-bounds access).
    Trap,
    /// The call ran past its deadline and was interrupted.
    Deadline,
    /// The plugin tried to grow its memory past its limit.
    Memory,
    /// The plugin called a WASI function its configuration does not grant.
    NotGranted,
    /// The plugin could not be (re)instantiated or (re)configured.
    Setup,
}

impl FaultKind {
    /// The `kind` label of `fulcrum_plugin_faults_total`.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::NotGranted => "not-granted",
            FaultKind::Setup => "setup",
        }
    }

    /// What the plugin did, in words: "ran past its deadline".
    pub fn what(self) -> &'static str {
        match self {
            FaultKind::Trap => "trapped",
            FaultKind::Deadline => "ran past its deadline",
            FaultKind::Memory => "exceeded its memory limit",
            FaultKind::NotGranted => "called a WASI function it was not granted",
            FaultKind::Setup => "could not be set up",
        }
    }
}

impl fmt::Display for SelectorFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}` {}: {}", self.plugin, self.kind.what(), self.detail)
    }
}

impl std::error::Error for SelectorFault {}

/// An lbmethod for one balancer. Calls are serialised by the balancer, which holds its state for
/// the duration of each call.
pub trait MemberSelector: Send {
    /// The plugin's name, for logs and errors.
    fn name(&self) -> &str;

    /// What the selector reads per request (fixed after configuration).
    fn needs(&self) -> &SelectorNeeds;

    /// Propose a member among `state.candidates` for a request without a usable sticky route.
    fn select(&mut self, request: &RequestInfo<'_>, state: &SelectState<'_>) -> Result<Selection, SelectorFault>;

    /// A sticky route sent the request to `member`: propose new lbstatus values (empty: unchanged).
    fn sticky(
        &mut self,
        request: &RequestInfo<'_>,
        member: u32,
        state: &SelectState<'_>,
    ) -> Result<Vec<i64>, SelectorFault>;
}

/// The facts a selector is configured with.
#[derive(Debug, Clone)]
pub struct BalancerSpec<'a> {
    pub name: &'a str,
    pub lbmethod: &'a str,
    pub members: &'a [crate::config::MemberConfig],
    pub config: &'a toml::Table,
}

impl<'a> BalancerSpec<'a> {
    /// The balancer's own lbmethod with its `lbmethod_config`.
    pub fn lbmethod(b: &'a crate::config::BalancerConfig) -> Self {
        BalancerSpec { name: &b.name, lbmethod: &b.lbmethod, members: &b.members, config: &b.lbmethod_config }
    }

    /// The balancer's `fallback` built-in, with no options: `lbmethod_config` belongs to the lbmethod.
    pub fn fallback(b: &'a crate::config::BalancerConfig) -> Self {
        static NO_OPTIONS: std::sync::LazyLock<toml::Table> = std::sync::LazyLock::new(toml::Table::new);
        BalancerSpec { name: &b.name, lbmethod: &b.fallback, members: &b.members, config: &NO_OPTIONS }
    }
}

/// Builds selectors by lbmethod name (the plugin registry implements it).
pub trait SelectorFactory {
    fn selector(&self, spec: &BalancerSpec<'_>) -> Result<Box<dyn MemberSelector>, crate::Error>;
}

/// The selector of a worker that is not balanced (a `proxy_pass_match` target): one member, so the
/// only candidate. Native, because there is nothing to decide.
#[derive(Debug, Default)]
pub struct SingleMember {
    needs: SelectorNeeds,
}

impl MemberSelector for SingleMember {
    fn name(&self) -> &str {
        "single-member"
    }

    fn needs(&self) -> &SelectorNeeds {
        &self.needs
    }

    fn select(&mut self, _request: &RequestInfo<'_>, state: &SelectState<'_>) -> Result<Selection, SelectorFault> {
        Ok(Selection { member: state.candidates.first().copied(), lbstatus: Vec::new() })
    }

    fn sticky(
        &mut self,
        _request: &RequestInfo<'_>,
        _member: u32,
        _state: &SelectState<'_>,
    ) -> Result<Vec<i64>, SelectorFault> {
        Ok(Vec::new())
    }
}
