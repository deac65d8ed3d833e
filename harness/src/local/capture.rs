//! `--capture`: every packet on every interface of every namespace of a cell, on one clock,
//! written as one pcapng per cell with one interface block per hop interface, named after the
//! hop (Wireshark shows `app to-srv`, `sidecar to-app`, `mb1 to-srv`, …).
//!
//! ```text
//!   netns app ─┐  one AF_PACKET socket per namespace (made inside it, read from a thread
//!   netns sc ──┼─ outside): every interface, both directions, the kernel's receive timestamp
//!   netns mb1 ─┤  (SIOCGSTAMPNS: one clock for all) ─▶ sorted by time ─▶ <cell>.pcapng
//!   netns srv ─┘
//! ```
//!
//! On loopback the kernel shows each packet twice (sent, then received): only the received
//! copy is kept. Each packet keeps its first [`SNAPLEN`] bytes: headers and the start of the
//! payload, what an attribution reads. No tcpdump: the sockets are the kernel's own, the file
//! is written with `pcap-file`.

use crate::backend::evidence::{CaptureEvidence, LabEvidence};
use crate::capture::attribute::{NodeActors, PathMap};
use crate::hop::ProxyRole;
use anyhow::{Context, Result, bail};
use std::borrow::Cow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `SIOCGSTAMPNS` (linux/sockios.h): the last packet's receive time as a timespec; the libc
/// crate does not name it.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// Bytes kept of each packet.
pub const SNAPLEN: usize = 256;

/// One captured packet.
struct Packet {
    /// Index into the capture's interfaces.
    iface: u32,
    /// The kernel's receive time, since the Unix epoch.
    ts: Duration,
    original_len: u32,
    /// Sent by the namespace (not received): the `epb_flags` direction Wireshark shows, and
    /// how an attribution tells the hop that sent a segment from those that forwarded it.
    outbound: bool,
    data: Vec<u8>,
}

/// What one namespace's socket read: `(ifindex, packet)`, and how many packets the kernel
/// dropped because the socket's buffer was full.
type TapRead = (Vec<(u32, Packet)>, u32);

/// One namespace's socket and reading thread.
struct NamespaceTap {
    hop: String,
    /// The namespace's interfaces by index, as named inside it.
    names: Vec<(u32, String)>,
    thread: std::thread::JoinHandle<Result<TapRead>>,
}

/// A cell's capture while it runs; [`CellCapture::finish`] stops it and writes the file.
pub struct CellCapture {
    stop: Arc<AtomicBool>,
    taps: Vec<NamespaceTap>,
    /// Each middlebox's `conntrack -E` (its node, the process, its output file).
    conntrack: Vec<(String, super::process::LabProcess, PathBuf)>,
    /// The directory of conntrack's events when the capture owns it (the kind backend's; the
    /// local lab's is the cell's own).
    own_dir: Option<tempfile::TempDir>,
}

/// A capture never finished (the cell panicked): its threads stop within a read timeout, and
/// their sockets close with them.
impl Drop for CellCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a finished capture wrote.
pub struct CaptureFile {
    pub path: PathBuf,
    pub packets: usize,
    /// The interface blocks' names, in order.
    pub interfaces: Vec<String>,
    /// Conntrack's DESTROY events: (node, time, flow's source, destination).
    pub destroys: Vec<(String, f64, std::net::SocketAddr, std::net::SocketAddr)>,
    /// Per middlebox: whether its `conntrack -E` ran to the end and complained of nothing.
    pub conntrack_watched: Vec<(String, bool)>,
    /// Per node whose socket lost packets (its buffer was full): how many.
    pub lost: Vec<(String, u32)>,
}

impl CellCapture {
    /// Start capturing in each `(hop name, namespace path)`, before the cell's traffic, and
    /// watching conntrack in each forwarding one (`forwarders`); `dir` holds the events.
    pub async fn start(namespaces: &[(String, PathBuf)], forwarders: &[String], dir: &Path) -> Result<CellCapture> {
        // Made first, so that a failure below drops it and stops the threads already started.
        let mut capture = CellCapture {
            stop: Arc::new(AtomicBool::new(false)),
            taps: Vec::new(),
            conntrack: Vec::new(),
            own_dir: None,
        };
        for (hop, ns) in namespaces.iter().filter(|(hop, _)| forwarders.contains(hop)) {
            let out = dir.join(format!("conntrack-{hop}.events"));
            let process = super::device::middlebox::watch_destroys(ns, &out)
                .with_context(|| format!("conntrack -E in {hop}'s namespace"))?;
            capture.conntrack.push((hop.clone(), process, out));
        }
        capture.add(namespaces).await?;
        Ok(capture)
    }

    /// Capture in these namespaces too, from now on (a replica a scale event added), on the
    /// same clock.
    pub async fn add(&mut self, namespaces: &[(String, PathBuf)]) -> Result<()> {
        for (hop, ns) in namespaces {
            // The socket belongs to the namespace it is made in; it is read from anywhere.
            let (fd, names) = super::netns::in_netns(ns, open_tap)
                .await?
                .with_context(|| format!("a packet socket in {hop}'s namespace"))?;
            let stop = self.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("capture-{hop}"))
                .spawn(move || read_until(fd, &stop))
                .context("a capture thread")?;
            self.taps.push(NamespaceTap { hop: hop.clone(), names, thread });
        }
        Ok(())
    }

    /// The capture keeps `dir` (where `start` put conntrack's events) until it is finished.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> Self {
        self.own_dir = Some(dir);
        self
    }

    /// Stop, and write every packet of every namespace, by time, to `path`.
    pub fn finish(mut self, path: &Path) -> Result<CaptureFile> {
        use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
        use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
        self.stop.store(true, Ordering::Relaxed);
        let mut destroys = Vec::new();
        let mut conntrack_watched = Vec::new();
        for (hop, mut process, out) in std::mem::take(&mut self.conntrack) {
            // Still running, and nothing said on stderr (`conntrack -E` reports lost events
            // there): its events are the kernel's whole story.
            let running = process.exited().is_none();
            // Its events are written as they come: stopping it loses none already seen.
            drop(process);
            let quiet = std::fs::read_to_string(out.with_extension("stderr")).unwrap_or_default().trim().is_empty();
            conntrack_watched.push((hop.clone(), running && quiet));
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            destroys.extend(
                text.lines()
                    .filter_map(super::device::middlebox::parse_destroy)
                    .map(|(t, s, d)| (hop.clone(), t, s, d)),
            );
        }
        let mut interfaces: Vec<String> = Vec::new();
        let mut packets: Vec<Packet> = Vec::new();
        let mut this = self;
        let mut lost = Vec::new();
        for tap in std::mem::take(&mut this.taps) {
            let (read, dropped) =
                tap.thread.join().map_err(|_| anyhow::anyhow!("the capture thread of {} panicked", tap.hop))??;
            if dropped > 0 {
                lost.push((tap.hop.clone(), dropped));
            }
            // Only the interfaces that carried packets get a block, in the hops' order.
            let mut used: Vec<u32> = read.iter().map(|(ifindex, _)| *ifindex).collect();
            used.sort_unstable();
            used.dedup();
            for ifindex in used {
                let name = tap.names.iter().find(|(i, _)| *i == ifindex).map(|(_, n)| n.clone());
                let id = interfaces.len() as u32;
                interfaces.push(format!("{} {}", tap.hop, name.unwrap_or_else(|| format!("if{ifindex}"))));
                packets.extend(read.iter().filter(|(i, _)| *i == ifindex).map(|(_, p)| Packet {
                    iface: id,
                    ts: p.ts,
                    original_len: p.original_len,
                    outbound: p.outbound,
                    data: p.data.clone(),
                }));
            }
        }
        packets.sort_by_key(|p| p.ts);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = pcap_file::pcapng::PcapNgWriter::new(std::io::BufWriter::new(file))?;
        for name in &interfaces {
            writer.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen: SNAPLEN as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.clone())),
                    // The blocks' times are in nanoseconds (pcap-file writes them so).
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })?;
        }
        for p in &packets {
            writer.write_pcapng_block(EnhancedPacketBlock {
                interface_id: p.iface,
                timestamp: p.ts,
                original_len: p.original_len,
                data: Cow::Borrowed(&p.data),
                // epb_flags: direction 2 outbound, 1 inbound.
                options: vec![EnhancedPacketOption::Flags(if p.outbound { 2 } else { 1 })],
            })?;
        }
        use std::io::Write;
        writer.into_inner().flush().with_context(|| format!("writing {}", path.display()))?;
        Ok(CaptureFile {
            path: path.to_path_buf(),
            packets: packets.len(),
            interfaces,
            destroys,
            conntrack_watched,
            lost,
        })
    }
}

/// Finish a cell's capture (when one was taken and asked for) into `<captures>/<file_name>`,
/// off the runtime's threads: the file, or the note that says why it was not written.
pub async fn finish_cell(
    capture: Option<CellCapture>,
    captures: Option<&Path>,
    cell: &crate::cells::Cell,
) -> Option<Result<CaptureFile, String>> {
    let (c, dir) = (capture?, captures?);
    let path = dir.join(file_name(&cell.scenario, &cell.label));
    let span = tracing::Span::current();
    Some(match tokio::task::spawn_blocking(move || span.in_scope(|| c.finish(&path))).await {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(format!("capture: not written: {e:#}")),
        Err(e) => Err(format!("capture: not written: {e}")),
    })
}

/// A cell's capture file name: `<scenario>--<cell label>.pcapng`, the label's characters that
/// a file name should not hold replaced.
pub fn file_name(scenario: &str, label: &str) -> String {
    let safe = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=+".contains(c) { c } else { '_' }).collect::<String>()
    };
    format!("{}--{}.pcapng", safe(scenario), safe(label))
}

/// The cell's note about its capture, written or not.
pub fn outcome_note(capture: &Result<CaptureFile, String>) -> String {
    capture.as_ref().map_or_else(|e| e.clone(), note)
}

/// The cell's note about its capture.
pub fn note(file: &CaptureFile) -> String {
    let lost = if file.lost.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = file.lost.iter().map(|(hop, n)| format!("{n} on {hop}")).collect();
        format!("; the kernel dropped packets the capture could not take in time: {}", each.join(", "))
    };
    format!(
        "capture: {} ({} packets on {} interfaces: {}){lost}; `idlelab explain` reads it",
        file.path.display(),
        file.packets,
        file.interfaces.len(),
        file.interfaces.join(", ")
    )
}

/// The node of a hop that forwards packets without terminating them (a middlebox: a node of
/// its own, no proxy in it): what it takes in and does not send on, it dropped; its conntrack
/// is watched.
pub fn forwarding_node(index: usize, hop: &crate::hop::Hop) -> Option<String> {
    let on = hop.on_path();
    on.own_node(index).filter(|_| on.proxy_role().is_none())
}

/// What the lab knows about a cell's path, for the attribution: the lifelines in path order,
/// each node's actors (the app's namespace holds the client sidecar, the server's the server
/// sidecar; a middlebox forwards), the sockets' owners from the listings, Envoy's access logs,
/// and what the capture itself recorded (conntrack's DESTROY events, the kernel's drops).
fn path_map(knobs: &crate::config::CellConfig, evidence: &LabEvidence, file: &CaptureFile) -> PathMap {
    let mut map = PathMap::default();
    map.actors.push("app".into());
    map.nodes.insert("app".into(), NodeActors { main: "app".into(), ..Default::default() });
    map.nodes.insert("srv".into(), NodeActors { main: "server".into(), ..Default::default() });
    let mut gateway_actor = None;
    for (i, hop) in knobs.path.iter().enumerate() {
        let on = hop.on_path();
        let (actor, node) = match (on.own_node(i), on.proxy_role()) {
            (Some(node), role) => {
                let forwards = forwarding_node(i, hop).is_some();
                if let Some(f) = on.forgets_flows() {
                    map.forget_after.insert(node.clone(), f.timeout.as_secs_f64());
                }
                if role == Some(ProxyRole::Gateway) {
                    gateway_actor = Some(node.clone());
                }
                let proxy = role.map(|_| node.clone());
                map.nodes.insert(node.clone(), NodeActors { main: node.clone(), proxy, forwards });
                (node.clone(), node)
            }
            (None, Some(role)) => {
                let node = if role == ProxyRole::ServerSidecar { "srv" } else { "app" };
                (role.name().to_string(), node.to_string())
            }
            (None, None) => continue,
        };
        if let Some(n) = map.nodes.get_mut(&node)
            && node != actor
            && n.main != actor
        {
            n.proxy = Some(actor.clone());
        }
        map.actors.push(actor);
    }
    map.actors.push("server".into());
    for snapshot in &evidence.sockets {
        let Some(node) = map.nodes.get(&snapshot.netns_role) else { continue };
        for socket in &snapshot.sockets {
            let Ok(local) = socket.local.parse::<std::net::SocketAddr>() else { continue };
            let actor = match socket.process.as_deref() {
                Some("envoy") => node.proxy.clone().unwrap_or_else(|| node.main.clone()),
                Some(_) => node.main.clone(),
                None => continue,
            };
            let Ok(peer) = socket.peer.parse::<std::net::SocketAddr>() else { continue };
            map.sockets.insert((snapshot.netns_role.clone(), local, peer), actor);
        }
    }
    for e in &evidence.envoys {
        let actor = if e.role == ProxyRole::Gateway.name() { gateway_actor.clone() } else { None };
        map.access_logs.insert(actor.unwrap_or_else(|| e.role.clone()), e.access_log.clone());
    }
    // Envoy's admin, the agent's ports, xDS and the control plane's debug port: not the path.
    map.control_ports = [15000, 15004, 15010, 15012, 15014, 15017, 15020, 15021, 15053, 15090].into();
    map.destroys = file.destroys.clone();
    map.conntrack_watched = file.conntrack_watched.iter().cloned().collect();
    map.capture_lost = file.lost.iter().cloned().collect();
    map
}

/// The attributions of a cell's written capture (its packets read back as any capture is),
/// scored against what the cell's configuration says acts first.
pub fn attribute(
    file: &CaptureFile,
    knobs: &crate::config::CellConfig,
    evidence: &LabEvidence,
    factor: u32,
) -> Result<CaptureEvidence> {
    let name = file.path.display().to_string();
    let input = std::fs::File::open(&file.path).with_context(|| format!("opening {name}"))?;
    let mut segments = Vec::new();
    crate::capture::read::for_each_segment(std::io::BufReader::new(input), &name, |s, _| segments.push(s.clone()))?;
    let map = path_map(knobs, evidence, file);
    let configured = knobs.configured_first_acts();
    let attributions = crate::capture::attribute::attribute(&segments, &file.interfaces, &map, f64::from(factor));
    let agree = attributions
        .iter()
        .filter(|a| configured.iter().any(|c| crate::capture::attribute::agrees(c, &a.first)))
        .count();
    Ok(CaptureEvidence {
        file: name,
        packets: file.packets,
        interfaces: file.interfaces.clone(),
        attributions,
        configured,
        agree,
        lost: file.lost.iter().cloned().collect(),
    })
}

/// A written capture's evidence and the notes a cell shows of it (both backends): the file,
/// then per connection of the app that ended badly, which hop acted first.
pub fn judge(
    file: &CaptureFile,
    knobs: &crate::config::CellConfig,
    evidence: &LabEvidence,
    factor: u32,
) -> (Option<CaptureEvidence>, Vec<String>) {
    let mut notes = vec![note(file)];
    match attribute(file, knobs, evidence, factor) {
        Ok(c) => {
            notes.extend(c.attributions.iter().map(|a| format!("which hop: {}: {}", a.connection, a.sentence)));
            (Some(c), notes)
        }
        Err(e) => {
            notes.push(format!("which hop: the capture could not be read back: {e:#}"));
            (None, notes)
        }
    }
}

/// Inside a namespace: a packet socket for every protocol on every interface, and the
/// interfaces' names (which only this namespace knows).
fn open_tap() -> Result<(OwnedFd, Vec<(u32, String)>)> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A read returns every 100 ms at the latest, to see the stop flag.
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    let buffer: libc::c_int = 8 << 20;
    for (opt, value, len) in [
        (libc::SO_RCVTIMEO, &timeout as *const _ as *const libc::c_void, size_of::<libc::timeval>()),
        (libc::SO_RCVBUF, &buffer as *const _ as *const libc::c_void, size_of::<libc::c_int>()),
    ] {
        // SAFETY: value points at a live value of `len` bytes.
        if unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, value, len as libc::socklen_t) } != 0 {
            bail!("setsockopt: {}", std::io::Error::last_os_error());
        }
    }
    let mut names = Vec::new();
    // if_nameindex(3) answers for the calling thread's namespace.
    // SAFETY: the list is freed below and not used after.
    unsafe {
        let list = libc::if_nameindex();
        if !list.is_null() {
            let mut p = list;
            while (*p).if_index != 0 {
                let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
                names.push(((*p).if_index, name));
                p = p.add(1);
            }
            libc::if_freenameindex(list);
        }
    }
    Ok((fd, names))
}

/// Read packets until `stop`: `(ifindex, packet)`, the loopback's sent copies left out, and
/// the packets the kernel dropped for want of room in the socket (`PACKET_STATISTICS`).
fn read_until(fd: OwnedFd, stop: &AtomicBool) -> Result<TapRead> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    // After the stop, what the socket already holds is still read (without waiting): the
    // last FIN or RST is often the packet that matters.
    let mut draining = false;
    loop {
        if !draining && stop.load(Ordering::Relaxed) {
            draining = true;
        }
        // SAFETY: zeroed sockaddr_ll is a valid out-parameter.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and addr are live and sized as passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC | if draining { libc::MSG_DONTWAIT } else { 0 },
                &mut addr as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock if draining => break,
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted => {
                    continue;
                }
                _ => bail!("reading the packet socket: {e}"),
            }
        }
        // Loopback: the same packet as sent and as received; keep the received one.
        if addr.sll_hatype == libc::ARPHRD_LOOPBACK && addr.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a live timespec; SIOCGSTAMPNS writes the last packet's receive time.
        let ts = if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) } == 0 {
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        } else {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
        };
        let original_len = n as usize;
        let kept = original_len.min(SNAPLEN).min(buf.len());
        out.push((
            addr.sll_ifindex as u32,
            Packet {
                iface: 0,
                ts,
                original_len: original_len as u32,
                outbound: addr.sll_pkttype == libc::PACKET_OUTGOING,
                data: buf[..kept].to_vec(),
            },
        ));
    }
    let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: stats is a live tpacket_stats of `len` bytes.
    let read = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if read != 0 {
        bail!("reading the packet socket's statistics: {}", std::io::Error::last_os_error());
    }
    Ok((out, stats.tp_drops))
}
