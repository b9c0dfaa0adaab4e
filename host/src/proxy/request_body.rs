//! The client's request body on its way to a member: read-rate timeout, size limit, traffic
//! accounting, and a record of whose fault a broken body was.
//!
//! hyper's client sees only "the body failed" when a request body breaks; whether that was the
//! client (a bad chunk size, a connection closed mid-body, a client too slow or sending too much)
//! or the member matters: a client fault is the client's 400/408/413 and must not put the member
//! in error or be logged as the member's failure. [`RequestBody`] notes the fault in a slot the
//! request path reads when the member exchange fails ([`FaultSlot`]).
//!
//! The timeout is mod_reqtimeout's `body=T,MinRate=R` (docs/apache-behaviour.md §12): the body
//! must start within `T` seconds of the first read, and every `R` bytes received buy one more
//! second, up to `max` when it is set. A client that trickles one byte every two seconds is cut
//! off after `T`; one that streams a large upload at a decent rate never is.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::balancer::Balancer;

/// Why a request body could not be relayed, when it was the client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientFault {
    #[error("the client sent a malformed request body ({0})")]
    Malformed(&'static str),
    #[error("the client closed the connection before the request body was complete")]
    Aborted,
    #[error("the client sent the request body too slowly (request read timeout)")]
    TooSlow,
    #[error("the request body is larger than limit_request_body ({0} bytes)")]
    TooLarge(u64),
}

impl ClientFault {
    /// The status Apache answers for it.
    pub fn status(self) -> hyper::StatusCode {
        match self {
            ClientFault::Malformed(_) | ClientFault::Aborted => hyper::StatusCode::BAD_REQUEST,
            ClientFault::TooSlow => hyper::StatusCode::REQUEST_TIMEOUT,
            ClientFault::TooLarge(_) => hyper::StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Where a [`RequestBody`] leaves its fault for the request path. A request without a body
/// cannot have a body fault: it gets an empty slot, and no allocation.
#[derive(Debug, Clone, Default)]
pub struct FaultSlot(Option<Arc<OnceLock<ClientFault>>>);

impl FaultSlot {
    fn shared() -> FaultSlot {
        FaultSlot(Some(Arc::default()))
    }

    /// The client's fault, once the body has noted one.
    pub fn get(&self) -> Option<&ClientFault> {
        self.0.as_deref()?.get()
    }

    fn set(&self, fault: ClientFault) {
        if let Some(slot) = &self.0 {
            let _ = slot.set(fault);
        }
    }
}

/// mod_reqtimeout's body settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout {
    /// Time for the first bytes (`body=T`); `None` = no body timeout.
    pub initial: Duration,
    /// The most the rate may extend it to (`body=T-MAX`); `None` = no cap.
    pub max: Option<Duration>,
    /// Bytes per second that buy one more second each (`MinRate`); 0 = no extension.
    pub min_rate: u64,
}

/// The client's body, as sent to a member.
#[derive(Debug)]
pub struct RequestBody {
    /// `None`: no body (a request sent again after its member failed had none).
    inner: Option<Incoming>,
    fault: FaultSlot,
    limit: u64,
    received: u64,
    timeout: Option<BodyTimeout>,
    /// Set at the first poll: when the clock started, and the timer.
    clock: Option<(Instant, Pin<Box<Sleep>>)>,
    /// The member the bytes are charged to (its `traffic`, sent plus received).
    charge: Option<(Arc<Balancer>, usize)>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64, timeout: Option<BodyTimeout>) -> (RequestBody, FaultSlot) {
        let fault = if inner.is_end_stream() { FaultSlot::default() } else { FaultSlot::shared() };
        let body = RequestBody {
            inner: Some(inner),
            fault: fault.clone(),
            limit,
            received: 0,
            timeout,
            clock: None,
            charge: None,
        };
        (body, fault)
    }

    /// No body at all.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            fault: FaultSlot::default(),
            limit: u64::MAX,
            received: 0,
            timeout: None,
            clock: None,
            charge: None,
        }
    }

    /// Count the bytes that go from now on as traffic of `member` of `balancer`.
    pub fn charge_to(&mut self, balancer: &Arc<Balancer>, member: usize) {
        self.charge = Some((Arc::clone(balancer), member));
    }

    fn fail(&self, fault: ClientFault) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        self.fault.set(fault);
        Poll::Ready(Some(Err(fault)))
    }

    fn deadline(&self, start: Instant, t: &BodyTimeout) -> Instant {
        let mut allowed = t.initial;
        if t.min_rate > 0 {
            allowed += Duration::from_secs_f64(self.received as f64 / t.min_rate as f64);
        }
        if let Some(max) = t.max {
            allowed = allowed.min(max);
        }
        start + allowed
    }
}

fn classify(e: &hyper::Error) -> ClientFault {
    if e.is_parse() {
        ClientFault::Malformed("invalid chunked framing")
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ClientFault::Aborted
    } else {
        // An I/O error on the client's socket (reset, broken pipe) is the client going away too.
        ClientFault::Aborted
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientFault;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        let this = self.get_mut();
        if let Some(fault) = this.fault.get() {
            return Poll::Ready(Some(Err(*fault)));
        }
        if let Some(t) = this.timeout
            && this.clock.is_none()
        {
            let start = Instant::now();
            let deadline = this.deadline(start, &t);
            this.clock = Some((start, Box::pin(tokio::time::sleep_until(deadline))));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.received += n;
                    if this.received > this.limit {
                        return this.fail(ClientFault::TooLarge(this.limit));
                    }
                    if let Some((balancer, member)) = &this.charge {
                        balancer.members[*member].add_sent(n);
                    }
                    if let (Some(t), Some((start, _))) = (this.timeout, &this.clock) {
                        let deadline = this.deadline(*start, &t);
                        if let Some((_, sleep)) = this.clock.as_mut() {
                            sleep.as_mut().reset(deadline);
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let fault = classify(&e);
                tracing::debug!("request body: {e}");
                this.fail(fault)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some((_, sleep)) = this.clock.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return this.fail(ClientFault::TooSlow);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
