//! The body of every response Fulcrum sends: a member's body streamed through, or Fulcrum's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::upstream::Conn;
use crate::balancer::Lease;

/// A response body. A member's body keeps the member's [`Lease`] (it counts as busy) until the
/// body has been sent or dropped, counts the bytes as the member's traffic, and hands its
/// connection back to the pool once the body is complete.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream { body: Incoming, lease: Option<Lease>, conn: Option<Conn> },
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Full::new(text.into()))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, lease, conn } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(data), Some(lease)) = (frame.data_ref(), lease.as_ref()) {
                            lease.member().add_traffic(data.len() as u64);
                        }
                        // hyper stops polling once the body says it has ended, so the end is
                        // noticed here, not only at `Ready(None)`.
                        if body.is_end_stream() {
                            finish(lease, conn);
                        }
                    }
                    Poll::Ready(None) => finish(lease, conn),
                    Poll::Ready(Some(Err(_))) => {
                        // A broken body: the connection's state is unknown, so it is not reused.
                        lease.take();
                        conn.take();
                    }
                    Poll::Pending => {}
                }
                polled
            }
            ProxyBody::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

/// The member's response is complete: it is no longer busy, and its connection can carry the next
/// request.
fn finish(lease: &mut Option<Lease>, conn: &mut Option<Conn>) {
    lease.take();
    if let Some(conn) = conn.take() {
        conn.release();
    }
}
