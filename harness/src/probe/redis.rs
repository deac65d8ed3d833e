//! Redis through the `redis` crate's multiplexed async connection, on a socket the probe
//! opened (so it can set keepalive and watch the socket).
//!
//! Warm: `SET idlelab:<id> <n>`. Heartbeat: `PING`. Reuse: `GET idlelab:<id>`.

use super::client::{Client, ClientError};
use super::stream::ObservedStream;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo, RedisError};
use std::time::Duration;

pub struct RedisClient {
    response_timeout: Duration,
}

impl RedisClient {
    pub fn new(response_timeout: Duration) -> Self {
        RedisClient { response_timeout }
    }
}

fn err(e: RedisError) -> ClientError {
    let mut io_kind = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
            break;
        }
        src = s.source();
    }
    ClientError { timeout: e.is_timeout(), io_kind, text: e.to_string() }
}

impl Client for RedisClient {
    type Conn = MultiplexedConnection;

    async fn handshake(&self, stream: ObservedStream) -> Result<Self::Conn, ClientError> {
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, stream, config).await.map_err(err)?;
        tokio::spawn(driver);
        Ok(conn)
    }

    async fn warm(&self, conn: &mut Self::Conn, id: usize) -> Result<(), ClientError> {
        redis::cmd("SET").arg(format!("idlelab:{id}")).arg(id).query_async::<()>(conn).await.map_err(err)
    }

    async fn heartbeat(&self, conn: &mut Self::Conn) -> Result<(), ClientError> {
        redis::cmd("PING").query_async::<String>(conn).await.map(|_| ()).map_err(err)
    }

    fn reads_eagerly(&self) -> bool {
        true
    }

    async fn request(&self, conn: &mut Self::Conn, id: usize) -> Result<(), ClientError> {
        redis::cmd("GET")
            .arg(format!("idlelab:{id}"))
            .query_async::<Option<String>>(conn)
            .await
            .map(|_| ())
            .map_err(err)
    }
}
