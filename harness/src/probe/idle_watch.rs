//! Watch idle pooled sockets that nobody reads, without taking anything from them.
//!
//! ```text
//!   pool: conn 0 … conn N-1 (idle, the library does not read)
//!            │ poll(POLLRDHUP | POLLERR | POLLHUP), one thread, nothing consumed
//!            ▼ an event at t ─▶ TCP_INFO state: CLOSE-WAIT = the peer's FIN
//!                                               CLOSE      = an RST, or the kernel gave up (ETIMEDOUT)
//! ```
//!
//! A client library that reads only when it expects an answer (memcache-async) learns of a
//! FIN or an RST only on reuse. A peek before the reuse (`recv(MSG_PEEK)`) finds a FIN without
//! consuming it, but it *consumes* a pending `ECONNRESET`: the kernel clears a socket's error
//! as it reports it, so the request then fails with `EPIPE` and the RST's time is lost.
//! `poll()` and `TCP_INFO` clear nothing: the error (`ECONNRESET` or `ETIMEDOUT`) stays for the
//! library's next call, as in an app, and that call says which of the two it was.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What ended a watched socket's quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleEvent {
    /// The peer's FIN: the socket is in CLOSE-WAIT.
    PeerFin,
    /// The socket is CLOSED without a FIN: an RST arrived, or the kernel timed it out.
    SocketClosed,
}

pub struct IdleWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Option<(u64, IdleEvent)>>>,
}

/// The socket's TCP state (`tcpi_state`), without changing anything on it.
fn tcp_state(fd: RawFd) -> Option<u8> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a local of that size.
    let r = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    (r == 0).then_some(info.tcpi_state)
}

const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;

impl IdleWatch {
    /// Start watching `fds` (index = connection id); times are ms since `clock`.
    pub fn start(fds: Vec<RawFd>, clock: Instant) -> IdleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Option<(u64, IdleEvent)>> = vec![None; fds.len()];
            while !stopping.load(Ordering::Relaxed) {
                let watched: Vec<usize> = (0..fds.len()).filter(|&i| seen[i].is_none()).collect();
                if watched.is_empty() {
                    break;
                }
                let mut polls: Vec<libc::pollfd> =
                    watched.iter().map(|&i| libc::pollfd { fd: fds[i], events: libc::POLLRDHUP, revents: 0 }).collect();
                // SAFETY: poll reads and writes only the array it is given, of the length given.
                let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 20) };
                if n <= 0 {
                    continue;
                }
                let at = clock.elapsed().as_millis() as u64;
                for (p, &i) in polls.iter().zip(&watched) {
                    if p.revents == 0 || p.revents & libc::POLLNVAL != 0 {
                        continue;
                    }
                    seen[i] = match tcp_state(p.fd) {
                        Some(TCP_CLOSE) => Some((at, IdleEvent::SocketClosed)),
                        Some(TCP_CLOSE_WAIT) => Some((at, IdleEvent::PeerFin)),
                        _ if p.revents & libc::POLLRDHUP != 0 => Some((at, IdleEvent::PeerFin)),
                        _ => Some((at, IdleEvent::SocketClosed)),
                    };
                }
            }
            seen
        });
        IdleWatch { stop, thread }
    }

    /// Stop watching: per connection, the first event and when it came.
    pub fn stop(self) -> Vec<Option<(u64, IdleEvent)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("idle watch thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    /// A FIN shows as `PeerFin`; an RST as `SocketClosed`, and the RST's error is still there
    /// for the client's next call (which a peek would have taken).
    #[test]
    fn sees_fin_and_rst_and_leaves_the_error_for_the_client() {
        let clock = Instant::now();
        let (fin_client, fin_server) = pair();
        let (mut rst_client, rst_server) = pair();
        let (quiet_client, _quiet_server) = pair();
        let watch =
            IdleWatch::start(vec![fin_client.as_raw_fd(), rst_client.as_raw_fd(), quiet_client.as_raw_fd()], clock);
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(fin_server);
        socket2::SockRef::from(&rst_server).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(rst_server);
        std::thread::sleep(std::time::Duration::from_millis(150));
        let seen = watch.stop();
        assert_eq!(seen[0].map(|e| e.1), Some(IdleEvent::PeerFin));
        assert_eq!(seen[1].map(|e| e.1), Some(IdleEvent::SocketClosed));
        assert!(seen[1].unwrap().0 >= 50, "{seen:?}");
        assert_eq!(seen[2], None);
        let mut buf = [0u8; 1];
        let e = rst_client.write_all(b"x").and_then(|_| rst_client.read(&mut buf).map(|_| ())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "the RST's error must be left for the client");
    }
}
