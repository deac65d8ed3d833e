//! memcached through `memcache-async`'s ASCII protocol, on a socket the probe opened (so
//! keepalive and TCP_USER_TIMEOUT can be set), in the probe's own pool.
//!
//! Warm: `set idlelab:<id>` then `version` (a round trip). Heartbeat and test-on-borrow:
//! `version`. Reuse: `get idlelab:<id>`. The library reads only when it expects an answer, so
//! a FIN or an RST that arrives while idle is seen by the probe's idle watch (`idle_watch`).

use super::client::{Client, ClientError};
use super::stream::ObservedStream;
use memcache_async::ascii::Protocol;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct MemcachedClient;

/// memcache-async has no timer of its own: an `ETIMEDOUT` here is the kernel's, not a request
/// that went unanswered (the probe's own request timeout covers that).
fn err(e: std::io::Error) -> ClientError {
    ClientError { timeout: false, io_kind: Some(e.kind()), text: e.to_string() }
}

impl Client for MemcachedClient {
    type Conn = Arc<Mutex<Protocol<ObservedStream>>>;

    async fn handshake(&self, stream: ObservedStream) -> Result<Self::Conn, ClientError> {
        Ok(Arc::new(Mutex::new(Protocol::new(stream))))
    }

    async fn warm(&self, conn: &mut Self::Conn, id: usize) -> Result<(), ClientError> {
        let mut c = conn.lock().await;
        c.set(format!("idlelab:{id}"), id.to_string().as_bytes(), 0).await.map_err(err)?;
        c.version().await.map(|_| ()).map_err(err)
    }

    async fn heartbeat(&self, conn: &mut Self::Conn) -> Result<(), ClientError> {
        conn.lock().await.version().await.map(|_| ()).map_err(err)
    }

    async fn request(&self, conn: &mut Self::Conn, id: usize) -> Result<(), ClientError> {
        conn.lock().await.get(format!("idlelab:{id}")).await.map(|_| ()).map_err(err)
    }

    fn reads_eagerly(&self) -> bool {
        false
    }
}
