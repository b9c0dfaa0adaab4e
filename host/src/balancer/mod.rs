//! Balancers and their members: the authoritative balancing state.
//!
//! One [`Balancer`] per `balancer://NAME`. Its lbstatus counters live here, behind one lock that is
//! held across the selector call, so a selection and its counter update are a single step even
//! under concurrent requests: byrequests then gives Apache's exact order (docs/apache-behaviour.md §2).

pub mod select;
pub mod status;
pub mod sticky;

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

pub use select::*;
pub use status::MemberStatus;
pub use sticky::StickySession;

use crate::config::{BalancerConfig, MemberConfig};

/// One member (Apache: a worker) with its live counters.
#[derive(Debug)]
pub struct Member {
    pub config: MemberConfig,
    /// Requests in flight.
    busy: AtomicU64,
    /// Bytes sent to plus read from the member.
    traffic: AtomicU64,
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
    /// The balancer's count of changes to its members' usability (shared by all its members).
    changes: Arc<AtomicU64>,
    /// Its URL and route as shared text, for the BALANCER_WORKER_* variables of every request.
    pub url_text: Arc<str>,
    pub route_text: Arc<str>,
}

impl Member {
    fn new(config: MemberConfig, changes: Arc<AtomicU64>) -> Member {
        let status = config.status.bits();
        Member {
            url_text: Arc::from(config.url.as_str()),
            route_text: Arc::from(config.route.as_str()),
            config,
            busy: AtomicU64::new(0),
            traffic: AtomicU64::new(0),
            elected: AtomicU64::new(0),
            error_until_ms: AtomicU64::new(0),
            status: AtomicU8::new(status),
            hc_passes: AtomicU32::new(0),
            hc_fails: AtomicU32::new(0),
            changes,
        }
    }

    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    pub fn elected(&self) -> u64 {
        self.elected.load(Ordering::Relaxed)
    }

    pub fn traffic(&self) -> u64 {
        self.traffic.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> MemberStatus {
        MemberStatus::from_bits(self.status.load(Ordering::Relaxed))
    }

    pub fn set_status(&self, status: MemberStatus) {
        self.status.store(status.bits(), Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Set or clear one status flag and leave the others as they are: the health checker and an
    /// administrator may change flags at the same moment. Returns whether the flag changed.
    pub fn set_flag(&self, flag: MemberStatus, on: bool) -> bool {
        let before = if on {
            self.status.fetch_or(flag.bits(), Ordering::AcqRel)
        } else {
            self.status.fetch_and(!flag.bits(), Ordering::AcqRel)
        };
        let changed = MemberStatus::from_bits(before).contains(flag) != on;
        if changed {
            self.changes.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// Health-check passes and failures in a row that count now (see [`crate::health`]).
    pub fn hc_counts(&self) -> (u32, u32) {
        (self.hc_passes.load(Ordering::Relaxed), self.hc_fails.load(Ordering::Relaxed))
    }

    pub fn set_hc_counts(&self, passes: u32, fails: u32) {
        self.hc_passes.store(passes, Ordering::Relaxed);
        self.hc_fails.store(fails, Ordering::Relaxed);
    }

    fn set_error_until(&self, until_ms: u64) {
        self.error_until_ms.store(until_ms, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Release);
    }

    pub fn add_traffic(&self, bytes: u64) {
        self.traffic.fetch_add(bytes, Ordering::Relaxed);
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
    epoch: Instant,
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
        self.member().busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub fn new(config: &BalancerConfig, selector: Box<dyn MemberSelector>) -> Balancer {
        let n = config.members.len();
        let needs = selector.needs().clone();
        let changes = Arc::new(AtomicU64::new(0));
        Balancer {
            url_text: Arc::from(format!("balancer://{}", config.name)),
            sticky_text: config.sticky.as_ref().map(|s| Arc::from(s.cookie.as_str())),
            config: config.clone(),
            members: config.members.iter().cloned().map(|m| Member::new(m, Arc::clone(&changes))).collect(),
            epoch: Instant::now(),
            core: Mutex::new(Core {
                lbstatus: vec![0; n],
                selector,
                on_fault: None,
                needs,
                candidates: Vec::with_capacity(n),
                candidates_for: None,
                busy: Vec::with_capacity(n),
                traffic: Vec::with_capacity(n),
            }),
        }
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
        let until = self.members[i].error_until_ms.load(Ordering::Relaxed);
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

    /// End member `i`'s error state now (its health checks found it well again).
    pub fn clear_error(&self, i: usize) {
        if self.members[i].error_until_ms.load(Ordering::Relaxed) != 0 {
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
    }

    fn lease(self: &Arc<Self>, index: usize) -> Lease {
        let member = &self.members[index];
        member.busy.fetch_add(1, Ordering::Relaxed);
        member.elected.fetch_add(1, Ordering::Relaxed);
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
        crate::admin::count_fault(core.selector.name(), "invalid-answer");
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
        let now = self.now_ms();
        let changes = self.changes();
        if exclude.is_empty()
            && let Some((counted, valid_until)) = core.candidates_for
            && counted == changes
            && now < valid_until
        {
            return;
        }
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
            let until = m.error_until_ms.load(Ordering::Relaxed);
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
        self.members.first().map_or(0, |m| m.changes.load(Ordering::Acquire))
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
}
