//! The body of every response Fulcrum sends: a member's body streamed through, or Fulcrum's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use super::member_http::{BodyError, MemberBody};

/// A response body: a member's, read from its connection as the client takes it
/// ([`MemberBody`]: it keeps the member busy until done and counts its traffic), or Fulcrum's own.
#[derive(Debug)]
pub enum ProxyBody {
    Member(MemberBody),
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
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Member(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Member(body) => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Member(body) => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}
