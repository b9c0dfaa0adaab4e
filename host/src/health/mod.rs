//! Active health checks, as Apache's mod_proxy_hcheck runs them.
//!
//! Every member with an `hcmethod` ([`crate::config::HealthCheck`]) is checked in the background,
//! `hcinterval` apart, whatever traffic does: a dead member is found without a request paying for
//! it, and a member that answers 500 to everything leaves rotation although it accepts
//! connections. Checks never sit in a request's way: they run on the control thread, not on the
//! workers that serve requests, at most [`CONCURRENCY`] at once, and their first rounds are
//! spread over the interval so that many members are not checked in one burst.
//!
//! Counting follows Apache: while a member is in, `hcfails` failures in a row take it out (status
//! flag `C`, so the balancer skips it); while it is out, `hcpasses` passes in a row bring it back,
//! and also end an error state a failed request had put it in (the checks have just shown it
//! answers). Each change is logged once (`warn` out, `info` back) with the balancer, the member
//! and the reason, and counted in `/metrics`:
//!
//! - `fulcrum_health_checks_total{balancer, member, result}`: `pass` or `fail`;
//! - `fulcrum_health_transitions_total{balancer, member, to}`: `out` or `in`.

pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::balancer::{Balancer, MemberStatus};
use crate::config::HealthCheck;

/// Checks running at once, over all members (Apache's health-check thread pool has 16 threads).
pub const CONCURRENCY: usize = 16;

/// The running checks; dropping this stops them.
#[derive(Debug, Default)]
pub struct Checks {
    tasks: JoinSet<()>,
}

impl Checks {
    /// How many members are being checked.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Start checking every member of `balancers` that has a health check, on the current tokio
/// runtime.
pub fn spawn(balancers: &[Arc<Balancer>]) -> Checks {
    let checked: Vec<(Arc<Balancer>, usize, HealthCheck)> = balancers
        .iter()
        .flat_map(|b| {
            b.members.iter().enumerate().filter_map(|(i, m)| m.config.health.clone().map(|hc| (Arc::clone(b), i, hc)))
        })
        .collect();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut checks = Checks::default();
    let count = checked.len();
    for (k, (balancer, index, check)) in checked.into_iter().enumerate() {
        // The k-th of n members starts k/n of its interval in.
        let offset = check.interval.mul_f64(k as f64 / count as f64);
        checks.tasks.spawn(run(balancer, index, check, offset, Arc::clone(&permits)));
    }
    checks
}

async fn run(balancer: Arc<Balancer>, index: usize, check: HealthCheck, offset: Duration, permits: Arc<Semaphore>) {
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = {
            let Ok(_permit) = permits.acquire().await else { return };
            probe::check(&balancer.members[index].config, &check).await
        };
        if let Ok(Some(report)) = result {
            balancer.report_load(index, report);
        }
        record(&balancer, index, &check, result.map(|_| ()));
    }
}

/// A change a check result makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `hcfails` failures in a row: out of rotation.
    Out,
    /// `hcpasses` passes in a row: back in.
    In,
}

/// Apache's counting. `out`: the member is out now; `passes`, `fails`: the results in a row so
/// far. Returns the new counts and the change to make, if any.
pub fn tally(out: bool, passes: u32, fails: u32, passed: bool, check: &HealthCheck) -> (u32, u32, Option<Transition>) {
    match (out, passed) {
        (false, true) => (0, 0, None),
        (false, false) if fails + 1 >= check.fails => (0, 0, Some(Transition::Out)),
        (false, false) => (0, fails + 1, None),
        (true, false) => (0, 0, None),
        (true, true) if passes + 1 >= check.passes => (0, 0, Some(Transition::In)),
        (true, true) => (passes + 1, 0, None),
    }
}

/// Count one result against member `index` and make the change it calls for.
pub fn record(balancer: &Balancer, index: usize, check: &HealthCheck, result: Result<(), String>) {
    let member = &balancer.members[index];
    let (name, url) = (&balancer.config.name, &member.config.url);
    let out = member.status().contains(MemberStatus::HC_FAILED);
    let (passes, fails) = member.hc_counts();
    let (passes, fails, change) = tally(out, passes, fails, result.is_ok(), check);
    member.set_hc_counts(passes, fails);
    let outcome = if result.is_ok() { "pass" } else { "fail" };
    crate::counters::health_check(name, url, outcome);
    // The flag is set or cleared atomically: an administrator may change other flags meanwhile.
    let changed = match change {
        Some(Transition::Out) => member.set_flag(MemberStatus::HC_FAILED, true),
        Some(Transition::In) => member.set_flag(MemberStatus::HC_FAILED, false),
        None => false,
    };
    match (change, result) {
        (Some(Transition::Out), Err(why)) if changed => {
            tracing::warn!(
                balancer = %name,
                member = %url,
                "health check failed ({} {}): {why}; out of rotation after {} failure(s) in a row",
                check.method.name(),
                check_target(check),
                check.fails
            );
            crate::counters::health_transition(name, url, "out");
        }
        (Some(Transition::In), Ok(())) if changed => {
            balancer.clear_error(index);
            tracing::info!(
                balancer = %name,
                member = %url,
                "health check passed {} time(s) in a row ({} {}): back in rotation",
                check.passes,
                check.method.name(),
                check_target(check)
            );
            crate::counters::health_transition(name, url, "in");
        }
        (None, Err(why)) if !out => {
            tracing::debug!(balancer = %name, member = %url, "health check failed: {why} ({fails} of {} in a row)", check.fails)
        }
        _ => {}
    }
}

fn check_target(check: &HealthCheck) -> &str {
    if check.method.http().is_some() { &check.uri } else { "connect" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HcCondition, HcMethod};

    fn check(passes: u32, fails: u32) -> HealthCheck {
        HealthCheck {
            method: HcMethod::Tcp,
            uri: "/".into(),
            interval: Duration::from_secs(1),
            passes,
            fails,
            expect: HcCondition::default_condition(),
            load: None,
        }
    }

    /// hcpasses 2, hcfails 3: a sequence of results → when the member goes out and comes back.
    #[test]
    fn results_in_a_row_take_a_member_out_and_bring_it_back() {
        let check = check(2, 3);
        // (result, out afterwards)
        let sequence = [
            (false, false),
            (false, false),
            (true, false), // a pass in between starts the count again
            (false, false),
            (false, false),
            (false, true), // third failure in a row
            (true, true),
            (false, true), // a failure in between starts the passes again
            (true, true),
            (true, false), // second pass in a row
            (true, false),
        ];
        let (mut out, mut passes, mut fails) = (false, 0, 0);
        for (step, (passed, expected_out)) in sequence.into_iter().enumerate() {
            let change;
            (passes, fails, change) = tally(out, passes, fails, passed, &check);
            match change {
                Some(Transition::Out) => out = true,
                Some(Transition::In) => out = false,
                None => {}
            }
            assert_eq!(out, expected_out, "after result {step} ({passed})");
        }
    }

    #[test]
    fn apache_defaults_change_on_one_result() {
        let check = check(1, 1);
        assert_eq!(tally(false, 0, 0, false, &check), (0, 0, Some(Transition::Out)));
        assert_eq!(tally(true, 0, 0, true, &check), (0, 0, Some(Transition::In)));
        assert_eq!(tally(false, 0, 0, true, &check), (0, 0, None));
    }
}
