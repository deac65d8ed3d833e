//! What `ss -tano` would show in a namespace, read through the kernel's sock_diag netlink
//! interface: each TCP socket's state, ends, owner and timer.
//!
//! The keepalive timer is the evidence that a socket really has keepalive on: the kernel
//! reports `timer: keepalive` only for sockets with SO_KEEPALIVE set. The owning process comes
//! from the socket's inode, matched against `/proc/<pid>/fd`, as `ss -p` does.

use super::netns::{Netns, in_netns};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags, Timer};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketView {
    pub state: String,
    pub local: String,
    pub peer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<String>,
    pub keepalive: bool,
}

/// One moment's view of a namespace's sockets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SocketSnapshot {
    pub netns_role: String,
    pub moment: String,
    pub sockets: Vec<SocketView>,
}

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

/// Socket inode → the name of a process holding it (`/proc/<pid>/fd`, `/proc/<pid>/comm`).
fn owners() -> HashMap<u32, String> {
    let mut map = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return map };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default().trim().to_string();
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) =
                    t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse().ok())
                {
                    map.entry(inode).or_insert_with(|| comm.clone());
                }
            }
        }
    }
    map
}

fn view(h: &InetResponseHeader, owners: &HashMap<u32, String>) -> SocketView {
    let id = &h.socket_id;
    SocketView {
        state: state_name(h.state).into(),
        local: format!("{}:{}", id.source_address, id.source_port),
        peer: format!("{}:{}", id.destination_address, id.destination_port),
        process: owners.get(&h.inode).cloned(),
        uid: h.uid,
        keepalive: matches!(h.timer, Some(Timer::KeepAlive(_))),
        timer: h.timer.as_ref().map(timer_text),
    }
}

pub async fn snapshot(ns: &Netns, role: &str, moment: &str) -> SocketSnapshot {
    let headers = in_netns(&ns.path(), dump_tcp).await.ok().and_then(Result::ok).unwrap_or_default();
    let owners =
        if headers.is_empty() { HashMap::new() } else { tokio::task::spawn_blocking(owners).await.unwrap_or_default() };
    let sockets = headers.iter().filter(|h| h.state != 10).map(|h| view(h, &owners)).collect();
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
        socket2::SockRef::from(&client).set_keepalive(true).unwrap();
        let local = client.local_addr().unwrap().to_string();
        let owners = owners();
        let views: Vec<SocketView> = dump_tcp().unwrap().iter().map(|h| view(h, &owners)).collect();
        let mine = views.iter().find(|v| v.local == local).expect("our socket is listed");
        assert_eq!(mine.state, "ESTAB");
        assert!(mine.keepalive, "SO_KEEPALIVE shows as a keepalive timer: {mine:?}");
        assert!(mine.process.is_some(), "{mine:?}");
    }
}
