//! The balancer's decision for one request, in Apache's order (docs/apache-behaviour.md §3): the
//! session's sticky route, then that member's `redirect` route (RouteRedir), and only then the
//! lbmethod, which the caller asks through [`Balancer::choose`] with the members already tried.

use std::sync::Arc;

use hyper::header::COOKIE;

use super::{Balancer, ChooseError, Lease, RequestInfo};

/// How the balancer decided: what the BALANCER_* variables and the logs say.
#[derive(Debug, Default)]
pub struct Decision {
    /// The route parsed from the request (BALANCER_SESSION_ROUTE), even when no member has it.
    pub session_route: Option<String>,
    /// The lb algorithm, not the session, chose the member (BALANCER_ROUTE_CHANGED).
    pub route_changed: bool,
}

/// Why the sticky step gives the request no member and no balancing either.
#[derive(Debug, thiserror::Error)]
pub enum StickyError {
    /// `nofailover`: the session's member (and its redirect) is unusable, and the request may not
    /// go elsewhere (503).
    #[error("balancer `{balancer}`: sticky member is down and nofailover is on")]
    NoFailover { balancer: String },
    #[error(transparent)]
    Choose(#[from] ChooseError),
}

impl Balancer {
    /// The sticky step: when the request names a route (URL parameter, then Cookie) whose member is
    /// usable, that member, charged like a balanced choice (Apache's `updatelbstatus`); while it
    /// is unusable, its `redirect` route's member, which still counts as a changed route. `None`:
    /// balance (with BALANCER_ROUTE_CHANGED set whenever the balancer is sticky).
    pub fn sticky_choice(
        self: &Arc<Self>,
        request: &RequestInfo<'_>,
    ) -> Result<(Decision, Option<Lease>), StickyError> {
        let mut decision = Decision::default();
        let Some(sticky) = &self.config.sticky else { return Ok((decision, None)) };
        let uri = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let cookie = crate::request::joined(request.headers, COOKIE);
        decision.session_route = sticky.route(uri, cookie.as_deref()).map(str::to_string);
        let mut lease = None;
        if let Some(index) = decision.session_route.as_deref().and_then(|r| self.member_by_route(r)) {
            let mut redirected = false;
            let mut chosen = self.choose_sticky(request, index)?;
            if chosen.is_none()
                && let Some(target) =
                    self.members[index].config.redirect.as_deref().and_then(|to| self.member_by_route(to))
            {
                chosen = self.choose_sticky(request, target)?;
                redirected = true;
            }
            match chosen {
                Some(chosen) => {
                    lease = Some(chosen);
                    decision.route_changed = redirected;
                }
                None if sticky.nofailover => {
                    return Err(StickyError::NoFailover { balancer: self.config.name.clone() });
                }
                None => {}
            }
        }
        if lease.is_none() {
            decision.route_changed = true;
        }
        Ok((decision, lease))
    }
}
