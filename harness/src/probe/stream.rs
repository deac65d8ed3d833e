//! A TCP stream that remembers what happened on it.
//!
//! The client library owns the socket and reads it eagerly, so when a proxy's FIN or a
//! middlebox's RST arrives while the connection sits idle in the pool, the library's reader
//! sees it at once. Wrapping the stream lets the probe record *when* that happened without
//! changing what the library does.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Clone, Debug, Default)]
pub struct StreamLog {
    pub last_read_ms: Option<u64>,
    pub last_write_ms: Option<u64>,
    /// A read returned end-of-file: the peer's FIN.
    pub eof_ms: Option<u64>,
    /// The first I/O error: when, its kind and its text.
    pub error: Option<(u64, io::ErrorKind, String)>,
    /// The client closed the socket itself (the library dropped the connection): when.
    pub closed_by_client_ms: Option<u64>,
}

impl StreamLog {
    pub fn last_activity_ms(&self) -> Option<u64> {
        self.last_read_ms.max(self.last_write_ms)
    }
}

/// Shared handle to a stream's log.
#[derive(Clone)]
pub struct LogHandle(Arc<Mutex<StreamLog>>);

impl LogHandle {
    pub fn get(&self) -> StreamLog {
        self.0.lock().expect("stream log").clone()
    }
}

pub struct ObservedStream {
    inner: TcpStream,
    log: Arc<Mutex<StreamLog>>,
    clock: Instant,
}

impl ObservedStream {
    pub fn new(inner: TcpStream, clock: Instant) -> (Self, LogHandle) {
        let log = Arc::new(Mutex::new(StreamLog::default()));
        (ObservedStream { inner, log: log.clone(), clock }, LogHandle(log))
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn record_error(&self, e: &io::Error) {
        let mut log = self.log.lock().expect("stream log");
        if log.error.is_none() {
            log.error = Some((self.now(), e.kind(), e.to_string()));
        }
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        let now = self.now();
        if let Ok(mut log) = self.log.lock() {
            log.closed_by_client_ms.get_or_insert(now);
        }
    }
}

impl AsyncRead for ObservedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let now = this.now();
                let mut log = this.log.lock().expect("stream log");
                if buf.filled().len() > before {
                    log.last_read_ms = Some(now);
                } else if wanted && log.eof_ms.is_none() {
                    log.eof_ms = Some(now);
                }
            }
            Poll::Ready(Err(e)) => this.record_error(e),
            Poll::Pending => {}
        }
        r
    }
}

impl AsyncWrite for ObservedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        match &r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let now = this.now();
                let mut log = this.log.lock().expect("stream log");
                log.last_write_ms = Some(now);
            }
            Poll::Ready(Err(e)) => this.record_error(e),
            _ => {}
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Err(e)) = &r {
            this.record_error(e);
        }
        r
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
