//! Connections to members: a small keep-alive pool per member, with connect and send kept apart.
//!
//! Connecting first and handing the request over only on a live connection is what makes
//! failover safe: when a member refuses the connection, the request (body included, still unread)
//! goes to the next member; once a request's bytes may have reached a member it is never sent
//! again. A pooled connection that turns out closed gives the request back unsent
//! (`try_send_request`), and the request simply takes a fresh connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::request_body::RequestBody;

/// Idle connections kept per member; more are closed when released.
const MAX_IDLE: usize = 256;

/// Keep-alive connections to one member.
#[derive(Debug)]
pub struct MemberPool {
    /// `host:port` to connect to.
    address: String,
    connect_timeout: Option<Duration>,
    idle: Mutex<Vec<SendRequest<RequestBody>>>,
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("connecting to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("HTTP handshake with {0}: {1}")]
    Handshake(String, hyper::Error),
}

/// A connection checked out of a pool. [`Conn::release`] puts it back once its response is done;
/// dropping it closes it.
#[derive(Debug)]
pub struct Conn {
    pub send: SendRequest<RequestBody>,
    pool: Arc<MemberPool>,
    /// Came from the idle pool (so it may have been closed by the member meanwhile).
    pub reused: bool,
}

impl MemberPool {
    pub fn new(address: String, connect_timeout: Option<Duration>) -> MemberPool {
        MemberPool { address, connect_timeout, idle: Mutex::new(Vec::new()) }
    }

    /// An idle live connection, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Conn, ConnectError> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match idle {
                Some(send) if send.is_ready() => return Ok(Conn { send, pool: Arc::clone(self), reused: true }),
                Some(_) => continue, // closed or still busy: drop it
                None => break,
            }
        }
        let connect = TcpStream::connect(self.address.as_str());
        let stream = match self.connect_timeout {
            Some(t) => {
                tokio::time::timeout(t, connect).await.map_err(|_| ConnectError::Timeout(self.address.clone()))?
            }
            None => connect.await,
        }
        .map_err(|e| ConnectError::Io(self.address.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let (send, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(self.address.clone(), e))?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection to {address} ended: {e}");
            }
        });
        Ok(Conn { send, pool: Arc::clone(self), reused: false })
    }
}

impl Conn {
    /// Return the connection to its pool for the next request.
    pub fn release(self) {
        if self.send.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(self.send);
        }
    }
}
