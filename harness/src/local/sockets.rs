//! What `ss -tanop` would show in a namespace, read through the kernel's sock_diag netlink
//! interface: each TCP socket's state, ends, owner and timer, plus the socket's keepalive
//! options read straight from the socket.
//!
//! The owning process comes from the socket's inode, matched against `/proc/<pid>/fd`, as
//! `ss -p` does. Whether keepalive is on is read with `getsockopt(SO_KEEPALIVE, TCP_KEEPIDLE,
//! TCP_KEEPINTVL, TCP_KEEPCNT)` on a duplicate of the owner's descriptor (`pidfd_getfd`), not
//! inferred from the timer: the kernel shows one timer per socket, and a socket with
//! keepalive on shows `on` (retransmit) instead of `keepalive` while it waits for an ACK, which
//! is the normal state right after traffic. The timer is kept as `ss -o` prints it.

use super::netns::{Netns, in_netns};
use crate::backend::evidence::{KeepaliveOptions, SocketSnapshot, SocketView, timer_source};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags, Timer};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use std::collections::HashMap;

/// TCP state names as `ss` prints them.
pub fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "UNCONN",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// The timer as `ss -o` prints it: `keepalive,972ms,0`.
pub fn timer_text(t: &Timer) -> String {
    match t {
        Timer::KeepAlive(d) => format!("keepalive,{}ms,0", d.as_millis()),
        Timer::Retransmit(d, n) => format!("on,{}ms,{n}", d.as_millis()),
        Timer::Probe(d) => format!("persist,{}ms,0", d.as_millis()),
        Timer::TimeWait => "timewait".into(),
    }
}

/// Every IPv4 TCP socket of the calling thread's network namespace.
fn dump_tcp() -> std::io::Result<Vec<InetResponseHeader>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId::new_v4(),
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    let mut out = Vec::new();
    let mut receive = vec![0; 65536];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&receive[offset..size])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(r.header),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(std::io::Error::other(format!("sock_diag: {e:?}"))),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// A process holding a socket, and the descriptor it holds it under.
#[derive(Clone, Debug)]
struct Owner {
    pid: i32,
    fd: i32,
    comm: String,
}

/// Socket inode → a process holding it (`/proc/<pid>/fd`, `/proc/<pid>/comm`).
fn owners() -> HashMap<u32, Owner> {
    let mut map = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return map };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default().trim().to_string();
        let Ok(pid) = pid.to_string_lossy().parse::<i32>() else { continue };
        for fd in fds.flatten() {
            let Ok(fd_number) = fd.file_name().to_string_lossy().parse::<i32>() else { continue };
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) =
                    t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse().ok())
                {
                    map.entry(inode).or_insert_with(|| Owner { pid, fd: fd_number, comm: comm.clone() });
                }
            }
        }
    }
    map
}

/// A duplicate of descriptor `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`, Linux 5.6+).
fn duplicate_fd(pid: i32, fd: i32) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pid = Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH)?;
    pidfd_getfd(pidfd_open(pid, PidfdFlags::empty())?, fd, PidfdGetfdFlags::empty())
}

/// Whether this kernel lets the lab duplicate a process's descriptor (not blocked by seccomp):
/// tried on a descriptor of this process.
pub fn pidfd_getfd_available() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open("/proc/self/stat").map_err(|e| e.to_string())?;
    duplicate_fd(std::process::id() as i32, probe.as_raw_fd()).map(drop).map_err(|e| format!("pidfd_getfd: {e}"))
}

/// SO_KEEPALIVE and, when on, its settings, read from a duplicate of `owner`'s descriptor.
/// `None` when the owner is gone or the descriptor is no longer that socket.
fn read_keepalive(owner: &Owner, inode: u32) -> Option<(bool, Option<KeepaliveOptions>)> {
    let fd = duplicate_fd(owner.pid, owner.fd).ok()?;
    // The owner may have closed and reused the descriptor number since /proc was read.
    if rustix::fs::fstat(&fd).ok()?.st_ino != u64::from(inode) {
        return None;
    }
    let socket = socket2::SockRef::from(&fd);
    let on = socket.keepalive().ok()?;
    if !on {
        return Some((false, None));
    }
    let options = (|| {
        Some(KeepaliveOptions {
            idle_s: socket.tcp_keepalive_time().ok()?.as_secs() as u32,
            interval_s: socket.tcp_keepalive_interval().ok()?.as_secs() as u32,
            probes: socket.tcp_keepalive_retries().ok()?,
        })
    })();
    Some((true, options))
}

fn view(h: &InetResponseHeader, owners: &HashMap<u32, Owner>) -> SocketView {
    let id = &h.socket_id;
    let owner = owners.get(&h.inode);
    let read = owner.and_then(|o| read_keepalive(o, h.inode));
    let (keepalive, keepalive_options, keepalive_read_from) = match read {
        Some((on, options)) => (on, options, "getsockopt".to_string()),
        None => (matches!(h.timer, Some(Timer::KeepAlive(_))), None, timer_source()),
    };
    SocketView {
        state: state_name(h.state).into(),
        local: format!("{}:{}", id.source_address, id.source_port),
        peer: format!("{}:{}", id.destination_address, id.destination_port),
        process: owner.map(|o| o.comm.clone()),
        uid: h.uid,
        keepalive,
        keepalive_options,
        keepalive_read_from,
        timer: h.timer.as_ref().map(timer_text),
    }
}

pub async fn snapshot(ns: &Netns, role: &str, moment: &str) -> SocketSnapshot {
    let headers = in_netns(&ns.path(), dump_tcp).await.ok().and_then(Result::ok).unwrap_or_default();
    let owners =
        if headers.is_empty() { HashMap::new() } else { tokio::task::spawn_blocking(owners).await.unwrap_or_default() };
    let sockets = tokio::task::spawn_blocking(move || {
        headers.iter().filter(|h| h.state != 10).map(|h| view(h, &owners)).collect()
    })
    .await
    .unwrap_or_default();
    SocketSnapshot { netns_role: role.into(), moment: moment.into(), sockets }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn states_and_timers_read_as_ss_prints_them() {
        assert_eq!(state_name(1), "ESTAB");
        assert_eq!(state_name(8), "CLOSE-WAIT");
        assert_eq!(timer_text(&Timer::KeepAlive(Duration::from_millis(972))), "keepalive,972ms,0");
    }

    #[test]
    fn dumps_this_namespaces_sockets_with_their_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let params = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(7))
            .with_interval(Duration::from_secs(3))
            .with_retries(4);
        socket2::SockRef::from(&client).set_tcp_keepalive(&params).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let local = client.local_addr().unwrap().to_string();
        let owners = owners();
        let views: Vec<SocketView> = dump_tcp().unwrap().iter().map(|h| view(h, &owners)).collect();
        let mine = views.iter().find(|v| v.local == local).expect("our socket is listed");
        assert_eq!(mine.state, "ESTAB");
        assert!(mine.keepalive, "SO_KEEPALIVE is read from the socket: {mine:?}");
        assert_eq!(mine.keepalive_read_from, "getsockopt");
        assert_eq!(mine.keepalive_options, Some(KeepaliveOptions { idle_s: 7, interval_s: 3, probes: 4 }));
        assert!(mine.process.is_some(), "{mine:?}");
        let accepted = server_side.local_addr().unwrap().to_string();
        let peer = server_side.peer_addr().unwrap().to_string();
        let theirs = views.iter().find(|v| v.local == accepted && v.peer == peer).expect("the accepted end is listed");
        assert!(!theirs.keepalive && theirs.keepalive_options.is_none(), "{theirs:?}");
        assert_eq!(theirs.keepalive_read_from, "getsockopt");
    }
}
