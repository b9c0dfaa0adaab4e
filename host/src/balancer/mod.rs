//! Balancers and their members: the authoritative balancing state.
//!
//! One [`Balancer`] per `balancer://NAME`. Its lbstatus counters live here, behind one lock that is
//! held across the selector call, so a selection and its counter update are a single step even
//! under concurrent requests: byrequests then gives Apache's exact order (docs/apache-behaviour.md §2).

pub mod byrequests;
pub mod decide;
pub mod select;
pub mod status;
pub mod sticky;

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

pub use decide::{Decision, StickyError};
pub use select::*;
pub use status::MemberStatus;
pub use sticky::StickySession;

use crate::config::{BalancerConfig, MemberConfig};

/// One member (Apache: a worker): its configuration and its live state.
#[derive(Debug)]
pub struct Member {
    pub config: MemberConfig,
    /// Counters and state, shared with the same member in the balancers that a configuration
    /// reload builds (see [`Balancer::succeed`]).
    live: Arc<Live>,
    /// Its URL and route as shared text, for the BALANCER_WORKER_* variables of every request.
    pub url_text: Arc<str>,
    pub route_text: Arc<str>,
}

/// A member's live state. It outlives a configuration reload while the member stays, so the
/// counters continue and requests still in flight on the old configuration count on the same
/// numbers as new ones.
#[derive(Debug)]
struct Live {
    /// Requests in flight.
    busy: AtomicU64,
    /// Request body bytes sent to the member (Apache's `transferred`) and response body bytes read
    /// from it (`read`).
    sent: AtomicU64,
    read: AtomicU64,
    /// Times chosen.
    elected: AtomicU64,
    /// Milliseconds since the balancer's epoch until which the member is in error; 0 = not in error.
    error_until_ms: AtomicU64,
    /// [`MemberStatus`] bits.
    status: AtomicU8,
    /// Health-check results in a row that count towards a change (Apache's pcount and fcount):
    /// passes while the member is out, failures while it is in.
    hc_passes: AtomicU32,
    hc_fails: AtomicU32,
    /// The member's latest load report (busy in the high half, ready in the low half) and when it
    /// came (milliseconds on the balancer's clock; 0: never).
    load: AtomicU64,
    load_at_ms: AtomicU64,
    /// The balancer's count of changes to its members' usability (shared by all its members).
    changes: Arc<AtomicU64>,
}

impl Member {
    fn new(config: MemberConfig, changes: Arc<AtomicU64>) -> Member {
        let live = Live {
            busy: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            read: AtomicU64::new(0),
            elected: AtomicU64::new(0),
            error_until_ms: AtomicU64::new(0),
            status: AtomicU8::new(config.status.bits()),
            hc_passes: AtomicU32::new(0),
            hc_fails: AtomicU32::new(0),
            load: AtomicU64::new(0),
            load_at_ms: AtomicU64::new(0),
            changes,
        };
        Member::with_live(config, Arc::new(live))
    }

    fn with_live(config: MemberConfig, live: Arc<Live>) -> Member {
        Member { url_text: Arc::from(config.url.as_str()), route_text: Arc::from(config.route.as_str()), config, live }
    }

    pub fn busy(&self) -> u64 {
        self.live.busy.load(Ordering::Relaxed)
    }

    pub fn elected(&self) -> u64 {
        self.live.elected.load(Ordering::Relaxed)
    }

    /// Bytes sent to plus read from the member (what `bytraffic` balances on).
    pub fn traffic(&self) -> u64 {
        self.sent() + self.read()
    }

    pub fn sent(&self) -> u64 {
        self.live.sent.load(Ordering::Relaxed)
    }

    pub fn read(&self) -> u64 {
        self.live.read.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> MemberStatus {
        MemberStatus::from_bits(self.live.status.load(Ordering::Relaxed))
    }

    pub fn set_status(&self, status: MemberStatus) {
        self.live.status.store(status.bits(), Ordering::Relaxed);
        self.live.changes.fetch_add(1, Ordering::Release);
    }

    /// Set or clear one status flag and leave the others as they are: the health checker and an
    /// administrator may change flags at the same moment. Returns whether the flag changed.
    pub fn set_flag(&self, flag: MemberStatus, on: bool) -> bool {
        let before = if on {
            self.live.status.fetch_or(flag.bits(), Ordering::AcqRel)
        } else {
            self.live.status.fetch_and(!flag.bits(), Ordering::AcqRel)
        };
        let changed = MemberStatus::from_bits(before).contains(flag) != on;
        if changed {
            self.live.changes.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// Health-check passes and failures in a row that count now (see [`crate::health`]).
    pub fn hc_counts(&self) -> (u32, u32) {
        (self.live.hc_passes.load(Ordering::Relaxed), self.live.hc_fails.load(Ordering::Relaxed))
    }

    pub fn set_hc_counts(&self, passes: u32, fails: u32) {
        self.live.hc_passes.store(passes, Ordering::Relaxed);
        self.live.hc_fails.store(fails, Ordering::Relaxed);
    }

    fn set_error_until(&self, until_ms: u64) {
        self.live.error_until_ms.store(until_ms, Ordering::Relaxed);
        self.live.changes.fetch_add(1, Ordering::Release);
    }

    /// Count request body bytes sent to the member.
    pub fn add_sent(&self, bytes: u64) {
        self.live.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count response body bytes read from the member.
    pub fn add_read(&self, bytes: u64) {
        self.live.read.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Why no member could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error("balancer `{balancer}`: no usable member")]
    NoMember { balancer: String },
    #[error("balancer `{balancer}`: {fault}")]
    Fault { balancer: String, fault: SelectorFault },
    #[error("balancer `{balancer}`: plugin `{plugin}` gave an invalid answer: {why}")]
    InvalidAnswer { balancer: String, plugin: String, why: String },
}

struct Core {
    lbstatus: Vec<i64>,
    selector: Box<dyn MemberSelector>,
    /// Answers for the selector when it faults (its `on_fault = "fallback"` policy).
    on_fault: Option<Box<dyn MemberSelector>>,
    /// What the selector reads per request (changes with the selector).
    needs: SelectorNeeds,
    // Scratch buffers reused by every selection, so the hot path does not allocate.
    candidates: Vec<u32>,
    /// What `candidates` was computed from: the balancer's change count then, and the time
    /// (balancer milliseconds) until which it holds (the first error state to end); `None` after
    /// a computation that excluded members, which no later request shares.
    candidates_for: Option<(u64, u64)>,
    busy: Vec<u64>,
    traffic: Vec<u64>,
    load: Vec<Option<LoadReport>>,
}

/// How long a request waiting for its balancer spins before it blocks: a few ordinary selector
/// calls (a select over 16 members takes 2–7 µs).
const LOCK_SPIN: Duration = Duration::from_micros(50);

/// A `balancer://NAME`: members, their state, and the selector.
pub struct Balancer {
    /// What the configuration says (parameters, members as configured).
    pub config: BalancerConfig,
    /// The members with their live counters, in configuration order.
    pub members: Vec<Member>,
    /// `balancer://NAME` and the sticky-session name as shared text, for the BALANCER_*
    /// variables of every request.
    pub url_text: Arc<str>,
    pub sticky_text: Option<Arc<str>>,
    /// What error times count from; kept by the balancers that succeed this one.
    epoch: Instant,
    /// The count of changes to the members' usability (each member's [`Live`] shares it).
    changes: Arc<AtomicU64>,
    core: Mutex<Core>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.config.name)
            .field("lbmethod", &self.config.lbmethod)
            .finish_non_exhaustive()
    }
}

/// A chosen member, counted busy until dropped.
#[derive(Debug)]
pub struct Lease {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Lease {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn member(&self) -> &Member {
        &self.balancer.members[self.index]
    }

    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.member().live.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub fn new(config: &BalancerConfig, selector: Box<dyn MemberSelector>) -> Balancer {
        let changes = Arc::new(AtomicU64::new(0));
        let members = config.members.iter().cloned().map(|m| Member::new(m, Arc::clone(&changes))).collect();
        Balancer::assemble(config, selector, members, vec![0; config.members.len()], Instant::now(), changes)
    }

    /// The balancer `previous` becomes under a new configuration (a reload): a member that stays
    /// keeps its live state (counters, error state, health, status flags set at run time) and its
    /// lbstatus, so byrequests continues its order where it was; a member's `status` changed in
    /// the file is applied (its health-check flag stays). New members start from zero; removed
    /// ones are gone for new requests, while requests in flight finish on what they chose.
    ///
    /// A member stays when the new configuration has a member with its URL and route, or failing
    /// that its URL (a member whose route was renamed); each old member is taken at most once.
    pub fn succeed(previous: &Balancer, config: &BalancerConfig, selector: Box<dyn MemberSelector>) -> Balancer {
        let old_lbstatus = previous.lock().lbstatus.clone();
        let mut taken = vec![false; previous.members.len()];
        let mut members = Vec::with_capacity(config.members.len());
        let mut lbstatus = Vec::with_capacity(config.members.len());
        for m in &config.members {
            let same = |route: bool| {
                (0..previous.members.len()).find(|&i| {
                    let old = &previous.members[i].config;
                    !taken[i] && old.url == m.url && (!route || old.route == m.route)
                })
            };
            match same(true).or_else(|| same(false)) {
                Some(i) => {
                    taken[i] = true;
                    let old = &previous.members[i];
                    let member = Member::with_live(m.clone(), Arc::clone(&old.live));
                    if old.config.status != m.status {
                        let health = member.status().contains(MemberStatus::HC_FAILED);
                        member.set_status(m.status.with(MemberStatus::HC_FAILED, health));
                    }
                    members.push(member);
                    lbstatus.push(old_lbstatus.get(i).copied().unwrap_or(0));
                }
                None => {
                    members.push(Member::new(m.clone(), Arc::clone(&previous.changes)));
                    lbstatus.push(0);
                }
            }
        }
        // The member list changed: candidates are computed again.
        previous.changes.fetch_add(1, Ordering::Release);
        Balancer::assemble(config, selector, members, lbstatus, previous.epoch, Arc::clone(&previous.changes))
    }

    fn assemble(
        config: &BalancerConfig,
        selector: Box<dyn MemberSelector>,
        members: Vec<Member>,
        lbstatus: Vec<i64>,
        epoch: Instant,
        changes: Arc<AtomicU64>,
    ) -> Balancer {
        let n = members.len();
        let needs = selector.needs().clone();
        Balancer {
            url_text: Arc::from(format!("balancer://{}", config.name)),
            sticky_text: config.sticky.as_ref().map(|s| Arc::from(s.cookie.as_str())),
            config: config.clone(),
            members,
            epoch,
            changes,
            core: Mutex::new(Core {
                lbstatus,
                selector,
                on_fault: None,
                needs,
                candidates: Vec::with_capacity(n),
                candidates_for: None,
                busy: Vec::with_capacity(n),
                traffic: Vec::with_capacity(n),
                load: Vec::with_capacity(n),
            }),
        }
    }

    /// Whether member `index` is the same member as `other`'s member `other_index` (it stayed
    /// through a reload: they share their live state).
    pub fn same_member(&self, index: usize, other: &Balancer, other_index: usize) -> bool {
        Arc::ptr_eq(&self.members[index].live, &other.members[other_index].live)
    }

    /// The selector's name (the lbmethod plugin now in use).
    pub fn selector_name(&self) -> String {
        self.lock().selector.name().to_string()
    }

    /// Let `fallback` choose for a request whose selector faulted (instead of failing it).
    pub fn set_fault_fallback(&self, fallback: Box<dyn MemberSelector>) {
        self.lock().on_fault = Some(fallback);
    }

    /// Swap in another selector (a reloaded or fallback plugin). The counters stay: the order
    /// continues where it was, as when Apache's lbmethod is changed at run time.
    pub fn replace_selector(&self, selector: Box<dyn MemberSelector>) {
        let mut core = self.lock();
        core.needs = selector.needs().clone();
        core.selector = selector;
    }

    /// The lbstatus counters as they are now (the balancer-manager's "Load" column).
    pub fn lbstatus(&self) -> Vec<i64> {
        self.lock().lbstatus.clone()
    }

    /// The balancer's state, for one selection. Another request holds it for the microseconds of
    /// its selector call, so a waiter spins briefly; past that the holder is in a long call (a
    /// plugin running to its deadline), and the wait must not hold up this worker thread's other
    /// requests ([`crate::blocking::wait`]).
    fn lock(&self) -> MutexGuard<'_, Core> {
        // The clock is read only once the lock is found taken: the uncontended path is one CAS.
        let mut spin_until = None;
        loop {
            match self.core.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= *spin_until.get_or_insert(now + LOCK_SPIN) {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        crate::blocking::wait(|| self.core.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "not in error".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether member `i` is in error state now (Apache's `Init Err`).
    pub fn in_error(&self, i: usize) -> bool {
        self.in_error_at(i, self.now_ms())
    }

    fn in_error_at(&self, i: usize, now: u64) -> bool {
        let until = self.members[i].live.error_until_ms.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Whether member `i` may serve requests now: not disabled, stopped or taken out by its health
    /// checks, and not in error.
    pub fn is_usable(&self, i: usize) -> bool {
        self.usable_at(i, self.now_ms())
    }

    fn usable_at(&self, i: usize, now: u64) -> bool {
        let status = self.members[i].status();
        !status.contains(MemberStatus::DISABLED)
            && !status.contains(MemberStatus::STOPPED)
            && !status.contains(MemberStatus::HC_FAILED)
            && !self.in_error_at(i, now)
    }

    /// The member whose route is `route` (case-sensitive, as Apache compares routes).
    pub fn member_by_route(&self, route: &str) -> Option<usize> {
        if route.is_empty() {
            return None;
        }
        self.members.iter().position(|m| m.config.route == route)
    }

    /// Record member `i`'s own report of its load (read by its health check).
    pub fn report_load(&self, i: usize, report: LoadReport) {
        let live = &self.members[i].live;
        live.load.store(u64::from(report.busy) << 32 | u64::from(report.ready), Ordering::Relaxed);
        live.load_at_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Member `i`'s load report while it is fresh: younger than three of its health-check
    /// intervals (a member that stopped reporting is not trusted on an old figure).
    pub fn load_report(&self, i: usize) -> Option<LoadReport> {
        self.load_report_at(i, self.now_ms())
    }

    fn load_report_at(&self, i: usize, now: u64) -> Option<LoadReport> {
        let m = &self.members[i];
        let at = m.live.load_at_ms.load(Ordering::Relaxed);
        let interval = m.config.health.as_ref()?.interval.as_millis() as u64;
        if at == 0 || now.saturating_sub(at) > interval.saturating_mul(3) {
            return None;
        }
        let packed = m.live.load.load(Ordering::Relaxed);
        Some(LoadReport { busy: (packed >> 32) as u32, ready: packed as u32 })
    }

    /// End member `i`'s error state now (its health checks found it well again).
    pub fn clear_error(&self, i: usize) {
        if self.members[i].live.error_until_ms.load(Ordering::Relaxed) != 0 {
            self.members[i].set_error_until(0);
        }
    }

    /// Put member `i` in error state for its `retry` period (Apache: a failed connection).
    pub fn mark_error(&self, i: usize) {
        if self.members[i].status().contains(MemberStatus::IGNORE_ERRORS) {
            return;
        }
        let until = self.now_ms() + self.members[i].config.retry.as_millis() as u64;
        self.members[i].set_error_until(until.max(1));
    }

    /// Choose a member for a request with no usable sticky route, skipping `exclude` (members
    /// already tried for this request). The selection and its counter update are one atomic step.
    pub fn choose(self: &Arc<Self>, request: &RequestInfo<'_>, exclude: &[usize]) -> Result<Lease, ChooseError> {
        let mut guard = self.lock();
        let core = &mut *guard;
        self.fill_candidates(core, exclude);
        if core.candidates.is_empty() {
            return Err(ChooseError::NoMember { balancer: self.config.name.clone() });
        }
        let fallback_columns = core.on_fault.as_ref().map(|f| f.needs().columns);
        self.fill_columns(core, core.needs.columns);
        let state = SelectState {
            candidates: &core.candidates,
            lbstatus: if core.needs.columns.lbstatus { &core.lbstatus } else { &[] },
            busy: &core.busy,
            traffic: &core.traffic,
            load: &core.load,
        };
        let selection = match core.selector.select(request, &state) {
            Ok(selection) => selection,
            Err(fault) => {
                let Some(columns) = fallback_columns else {
                    return Err(ChooseError::Fault { balancer: self.config.name.clone(), fault });
                };
                // The `on_fault = "fallback"` policy: the fallback chooses, with the columns it reads.
                self.fill_columns(core, columns);
                let Some(fallback) = core.on_fault.as_mut() else { unreachable!("fallback_columns came from it") };
                tracing::error!(request = request.id, balancer = %self.config.name, "{fault}; choosing with `{}`", fallback.name());
                let state = SelectState {
                    candidates: &core.candidates,
                    lbstatus: if columns.lbstatus { &core.lbstatus } else { &[] },
                    busy: &core.busy,
                    traffic: &core.traffic,
                    load: &core.load,
                };
                fallback
                    .select(request, &state)
                    .map_err(|fault| ChooseError::Fault { balancer: self.config.name.clone(), fault })?
            }
        };
        let index = match selection.member {
            None => return Err(ChooseError::NoMember { balancer: self.config.name.clone() }),
            Some(m) if core.candidates.binary_search(&m).is_ok() => m as usize,
            Some(m) => {
                return Err(
                    self.invalid(core, format!("member {m} is not one of the candidates {:?}", core.candidates))
                );
            }
        };
        self.apply_lbstatus(core, selection.lbstatus)?;
        Ok(self.lease(index))
    }

    /// Charge a request that a sticky route sent to member `index` (Apache's `updatelbstatus`).
    /// Returns `None` when the member is not usable, so the caller balances instead.
    pub fn choose_sticky(
        self: &Arc<Self>,
        request: &RequestInfo<'_>,
        index: usize,
    ) -> Result<Option<Lease>, ChooseError> {
        let mut guard = self.lock();
        let core = &mut *guard;
        if !self.is_usable(index) {
            return Ok(None);
        }
        self.fill_candidates(core, &[]);
        let state = SelectState {
            candidates: &core.candidates,
            lbstatus: if core.needs.columns.lbstatus { &core.lbstatus } else { &[] },
            busy: &[],
            traffic: &[],
            load: &[],
        };
        let lbstatus = core
            .selector
            .sticky(request, index as u32, &state)
            .map_err(|fault| ChooseError::Fault { balancer: self.config.name.clone(), fault })?;
        self.apply_lbstatus(core, lbstatus)?;
        Ok(Some(self.lease(index)))
    }

    /// Refresh the busy / traffic snapshots a selector reads.
    fn fill_columns(&self, core: &mut Core, columns: StateColumns) {
        if columns.busy {
            core.busy.clear();
            core.busy.extend(self.members.iter().map(Member::busy));
        }
        if columns.traffic {
            core.traffic.clear();
            core.traffic.extend(self.members.iter().map(Member::traffic));
        }
        if columns.load {
            let now = self.now_ms();
            core.load.clear();
            core.load.extend((0..self.members.len()).map(|i| self.load_report_at(i, now)));
        }
    }

    fn lease(self: &Arc<Self>, index: usize) -> Lease {
        let member = &self.members[index];
        member.live.busy.fetch_add(1, Ordering::Relaxed);
        member.live.elected.fetch_add(1, Ordering::Relaxed);
        Lease { balancer: Arc::clone(self), index }
    }

    fn apply_lbstatus(&self, core: &mut Core, lbstatus: Vec<i64>) -> Result<(), ChooseError> {
        if lbstatus.is_empty() {
            return Ok(());
        }
        if lbstatus.len() != self.members.len() {
            return Err(
                self.invalid(core, format!("{} lbstatus values for {} members", lbstatus.len(), self.members.len()))
            );
        }
        core.lbstatus = lbstatus;
        Ok(())
    }

    fn invalid(&self, core: &Core, why: String) -> ChooseError {
        crate::counters::plugin_fault(core.selector.name(), "invalid-answer");
        ChooseError::InvalidAnswer { balancer: self.config.name.clone(), plugin: core.selector.name().to_string(), why }
    }

    /// The members the lb algorithm may choose (Apache's `get_best_worker` order): the lowest lbset
    /// tier with a usable member wins; within it, the usable members that are neither hot standby,
    /// spare nor draining, or if there are none, its usable hot standbys and spares. `exclude`
    /// holds members already tried for this request. When every member is in error and
    /// `forcerecovery` is on, they are all made usable again first (Apache's force_recovery: try
    /// them now rather than answer 503 until `retry` ends).
    ///
    /// The list is kept between requests and computed again only when it may have changed: a
    /// member's status or error state changed (the balancer's change count moved), an error
    /// state ended, or this request excludes members. Selection over many members then costs
    /// the selector's work, not a walk over every member's state per request.
    fn fill_candidates(&self, core: &mut Core, exclude: &[usize]) {
        let changes = self.changes();
        // The list holds until a member changes, or until the first error state it counted ends
        // (`u64::MAX` when none was in error: no need to read the clock).
        if exclude.is_empty()
            && let Some((counted, valid_until)) = core.candidates_for
            && counted == changes
            && (valid_until == u64::MAX || self.now_ms() < valid_until)
        {
            return;
        }
        let now = self.now_ms();
        let out = &mut core.candidates;
        out.clear();
        if self.config.forcerecovery && (0..self.members.len()).all(|i| self.in_error_at(i, now)) {
            tracing::warn!(balancer = %self.config.name, "every member is in error state: forcing recovery");
            for m in &self.members {
                m.set_error_until(0);
            }
        }
        let changes = self.changes();
        // One pass: the usable members' tier and kind, and when the first error state ends.
        let mut valid_until = u64::MAX;
        let mut tier = u32::MAX;
        let mut plain_in_tier = false;
        for (i, m) in self.members.iter().enumerate() {
            let until = m.live.error_until_ms.load(Ordering::Relaxed);
            if until != 0 && now < until {
                valid_until = valid_until.min(until);
                continue;
            }
            let status = m.status();
            if status.contains(MemberStatus::DISABLED)
                || status.contains(MemberStatus::STOPPED)
                || status.contains(MemberStatus::HC_FAILED)
                || status.contains(MemberStatus::DRAINING)
                || exclude.contains(&i)
            {
                continue;
            }
            let standby = status.contains(MemberStatus::HOT_STANDBY) || status.contains(MemberStatus::SPARE);
            let lbset = m.config.lbset;
            if lbset < tier {
                tier = lbset;
                plain_in_tier = false;
                out.clear();
            }
            if lbset == tier {
                // Plain members of the tier, or (while it has none) its standbys.
                match (standby, plain_in_tier) {
                    (false, false) => {
                        out.clear();
                        plain_in_tier = true;
                        out.push(i as u32);
                    }
                    (false, true) | (true, false) => out.push(i as u32),
                    (true, true) => {}
                }
            }
        }
        core.candidates_for = exclude.is_empty().then_some((changes, valid_until));
    }

    /// The count of changes to the members' usability so far.
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    /// A balancer over `members` (lbset, status) with the native first-candidate selector.
    fn balancer(members: &[(u32, &str)]) -> Arc<Balancer> {
        let mut text = String::from(
            "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\n\
             proxy_pass = [{ path = \"/\", to = \"balancer://b/\" }]\n[balancer.b]\nforcerecovery = false\n",
        );
        for (i, (lbset, status)) in members.iter().enumerate() {
            text.push_str(&format!(
                "[[balancer.b.member]]\nurl = \"http://10.0.0.{}:80\"\nlbset = {lbset}\nretry = 1\n{}\n",
                i + 1,
                if status.is_empty() { String::new() } else { format!("status = \"{status}\"") }
            ));
        }
        let config = Config::parse(&text, std::path::Path::new("t.toml")).expect("test config").balancers.remove(0);
        Arc::new(Balancer::new(&config, Box::new(SingleMember::default())))
    }

    fn candidates(b: &Balancer, exclude: &[usize]) -> Vec<u32> {
        let mut core = b.lock();
        b.fill_candidates(&mut core, exclude);
        core.candidates.clone()
    }

    /// Members' state → candidates, in Apache's `get_best_worker` order.
    #[test]
    fn candidates_are_the_lowest_usable_tier_standbys_last() {
        /// Members (lbset, status), members excluded, candidates.
        type Case<'a> = (&'a [(u32, &'a str)], &'a [usize], &'a [u32]);
        let cases: &[Case] = &[
            (&[(0, ""), (0, "")], &[], &[0, 1]),
            (&[(1, ""), (0, ""), (0, "+H")], &[], &[1]),
            (&[(0, "+H"), (0, "+H"), (1, "")], &[], &[0, 1]),
            (&[(0, "+D"), (1, "+H"), (1, "")], &[], &[2]),
            (&[(0, ""), (0, "")], &[0], &[1]),
            (&[(0, "+D"), (0, "+S")], &[], &[]),
            (&[(0, "+C"), (0, ""), (1, "")], &[], &[1]),
            (&[(0, "+C"), (1, "+C"), (1, "+H")], &[], &[2]),
        ];
        for (members, exclude, expected) in cases {
            assert_eq!(candidates(&balancer(members), exclude), *expected, "{members:?} excluding {exclude:?}");
        }
    }

    /// The list is kept between requests, yet an error state, its end, a status change and an
    /// excluded member are all seen by the very next request.
    #[test]
    fn kept_candidates_follow_every_change() {
        let b = balancer(&[(0, ""), (0, ""), (0, "")]);
        assert_eq!(candidates(&b, &[]), [0, 1, 2]);
        b.mark_error(1);
        assert_eq!(candidates(&b, &[]), [0, 2]);
        assert_eq!(candidates(&b, &[0]), [2]);
        assert_eq!(candidates(&b, &[]), [0, 2], "an exclusion is for one request only");
        b.members[2].set_status(MemberStatus::DISABLED);
        assert_eq!(candidates(&b, &[]), [0]);
        b.members[2].set_status(MemberStatus::default());
        assert!(b.members[0].set_flag(MemberStatus::HC_FAILED, true));
        assert!(!b.members[0].set_flag(MemberStatus::HC_FAILED, true), "already set: no change");
        assert_eq!(candidates(&b, &[]), [2], "its health checks took member 0 out");
        assert!(!b.is_usable(0));
        b.members[0].set_flag(MemberStatus::HC_FAILED, false);
        assert_eq!(candidates(&b, &[]), [0, 2]);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(candidates(&b, &[]), [0, 1, 2], "member 1's retry of 1 s has ended");
    }

    /// A balancer config from `[balancer.b]` lines and members (url host number, loadfactor,
    /// extra lines).
    fn config(balancer_lines: &str, members: &[(u8, u32, &str)]) -> BalancerConfig {
        let mut text = format!(
            "listen = [\"127.0.0.1:0\"]\n[[vhost]]\nserver_name = \"b\"\n\
             proxy_pass = [{{ path = \"/\", to = \"balancer://b/\" }}]\n[balancer.b]\n{balancer_lines}\n"
        );
        for (host, loadfactor, extra) in members {
            text.push_str(&format!(
                "[[balancer.b.member]]\nurl = \"http://10.0.0.{host}:80\"\nroute = \"m{host}\"\nloadfactor = {loadfactor}\n{extra}\n"
            ));
        }
        Config::parse(&text, std::path::Path::new("t.toml")).expect("test config").balancers.remove(0)
    }

    fn byrequests(config: &BalancerConfig) -> Box<dyn MemberSelector> {
        Box::new(byrequests::NativeByRequests::new(&BalancerSpec::lbmethod(config)))
    }

    /// Choose `n` times; the routes chosen.
    fn routes(b: &Arc<Balancer>, n: usize) -> Vec<String> {
        let (method, uri, headers, client) = (
            hyper::Method::GET,
            hyper::Uri::from_static("/"),
            hyper::HeaderMap::new(),
            ClientAddr::from([127, 0, 0, 1]),
        );
        let request = RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &client, host: "b" };
        (0..n)
            .map(|_| match b.choose(&request, &[]) {
                Ok(lease) => lease.member().config.route.clone(),
                Err(e) => format!("{e}"),
            })
            .collect()
    }

    /// The native byrequests gives Apache's sequences (docs/apache-behaviour.md §2).
    #[test]
    fn native_byrequests_gives_apache_order() {
        // Loadfactors → routes of the first requests.
        let cases: &[(&[u32], &[&str])] = &[
            (&[1, 1], &["m1", "m2", "m1", "m2"]),
            (&[1, 2], &["m2", "m1", "m2", "m2", "m1", "m2"]),
            (&[3, 1, 1], &["m1", "m2", "m1", "m3", "m1"]),
        ];
        for (factors, expected) in cases {
            let members: Vec<(u8, u32, &str)> =
                factors.iter().enumerate().map(|(i, &f)| (i as u8 + 1, f, "")).collect();
            let c = config("", &members);
            let b = Arc::new(Balancer::new(&c, byrequests(&c)));
            assert_eq!(routes(&b, expected.len()), *expected, "loadfactors {factors:?}");
        }
    }

    /// forcerecovery: with every member in error, on tries them again at once; off answers "no
    /// usable member" until `retry` ends.
    #[test]
    fn forcerecovery_when_every_member_is_in_error() {
        for (force, expected) in [(true, "m1"), (false, "balancer `b`: no usable member")] {
            let c = config(&format!("forcerecovery = {force}"), &[(1, 1, ""), (2, 1, "")]);
            let b = Arc::new(Balancer::new(&c, byrequests(&c)));
            b.mark_error(0);
            b.mark_error(1);
            assert_eq!(routes(&b, 1), [expected], "forcerecovery = {force}");
        }
    }

    /// A selector's answer is checked: a member that is not a candidate, or lbstatus of the
    /// wrong length, is refused and changes nothing.
    #[test]
    fn answers_outside_the_candidates_are_refused() {
        struct Answers(Selection, SelectorNeeds);
        impl MemberSelector for Answers {
            fn name(&self) -> &str {
                "answers"
            }
            fn needs(&self) -> &SelectorNeeds {
                &self.1
            }
            fn select(&mut self, _: &RequestInfo<'_>, _: &SelectState<'_>) -> Result<Selection, SelectorFault> {
                Ok(self.0.clone())
            }
            fn sticky(&mut self, _: &RequestInfo<'_>, _: u32, _: &SelectState<'_>) -> Result<Vec<i64>, SelectorFault> {
                Ok(Vec::new())
            }
        }
        let c = config("", &[(1, 1, ""), (2, 1, "status = \"+D\"")]);
        let cases = [
            (Selection { member: Some(1), lbstatus: Vec::new() }, "member 1 is not one of the candidates [0]"),
            (Selection { member: Some(7), lbstatus: Vec::new() }, "member 7 is not one of the candidates"),
            (Selection { member: Some(0), lbstatus: vec![1, 2, 3] }, "3 lbstatus values for 2 members"),
        ];
        for (answer, why) in cases {
            let b = Arc::new(Balancer::new(&c, Box::new(Answers(answer.clone(), SelectorNeeds::default()))));
            let got = routes(&b, 1).remove(0);
            assert!(got.contains("plugin `answers` gave an invalid answer") && got.contains(why), "{answer:?}: {got}");
            assert_eq!(b.lbstatus(), [0, 0], "{answer:?}");
            assert_eq!(b.members[0].busy(), 0, "{answer:?}");
        }
    }

    /// A reload: members that stay keep their counters, lbstatus, error state and busy count;
    /// new ones start at zero; a status changed in the file applies, the health flag stays.
    #[test]
    fn a_succeeding_balancer_keeps_the_members_that_stay() {
        let before = config("", &[(1, 1, ""), (2, 1, ""), (3, 1, "")]);
        let old = Arc::new(Balancer::new(&before, byrequests(&before)));
        assert_eq!(routes(&old, 4), ["m1", "m2", "m3", "m1"]);
        let (method, uri, headers, client) = (
            hyper::Method::GET,
            hyper::Uri::from_static("/"),
            hyper::HeaderMap::new(),
            ClientAddr::from([127, 0, 0, 1]),
        );
        let request = RequestInfo { id: 1, method: &method, uri: &uri, headers: &headers, client: &client, host: "b" };
        let in_flight = old.choose(&request, &[]).expect("a request in flight on m2");
        old.mark_error(2);
        old.members[0].set_flag(MemberStatus::HC_FAILED, true);
        old.members[0].set_flag(MemberStatus::HC_FAILED, false);
        let old_lbstatus = old.lbstatus();

        // m1 re-weighted and disabled in the file, m2 kept, m3 kept, m4 new; nothing removed here.
        let after = config("", &[(1, 2, "status = \"+D\""), (2, 1, ""), (3, 1, ""), (4, 1, "")]);
        let new = Arc::new(Balancer::succeed(&old, &after, byrequests(&after)));
        assert_eq!(new.lbstatus(), [old_lbstatus[0], old_lbstatus[1], old_lbstatus[2], 0]);
        assert_eq!(new.members.iter().map(Member::elected).collect::<Vec<_>>(), [2, 2, 1, 0]);
        assert!(new.in_error(2), "m3's error state carries over");
        assert_eq!(new.members[0].status(), MemberStatus::DISABLED, "the file's new status applies");
        assert_eq!(new.members[1].busy(), 1);
        drop(in_flight);
        assert_eq!(new.members[1].busy(), 0, "a request in flight on the old balancer ends on the new one's count");
        assert!(new.same_member(1, &old, 1) && !new.same_member(3, &old, 2));

        // Removing m2: the others stay, matched by URL and route.
        let smaller = config("", &[(3, 1, ""), (4, 1, "")]);
        let newer = Balancer::succeed(&new, &smaller, byrequests(&smaller));
        assert!(newer.same_member(0, &new, 2) && newer.same_member(1, &new, 3));
        assert_eq!(newer.members.len(), 2);
    }
}
