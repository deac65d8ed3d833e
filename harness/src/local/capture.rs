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
    data: Vec<u8>,
}

/// One namespace's socket and reading thread.
struct NamespaceTap {
    hop: String,
    /// The namespace's interfaces by index, as named inside it.
    names: Vec<(u32, String)>,
    thread: std::thread::JoinHandle<Result<Vec<(u32, Packet)>>>,
}

/// A cell's capture while it runs; [`CellCapture::finish`] stops it and writes the file.
pub struct CellCapture {
    stop: Arc<AtomicBool>,
    taps: Vec<NamespaceTap>,
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
}

impl CellCapture {
    /// Start capturing in each `(hop name, namespace path)`, before the cell's traffic.
    pub async fn start(namespaces: &[(String, PathBuf)]) -> Result<CellCapture> {
        // Made first, so that a failure below drops it and stops the threads already started.
        let mut capture = CellCapture { stop: Arc::new(AtomicBool::new(false)), taps: Vec::new() };
        for (hop, ns) in namespaces {
            // The socket belongs to the namespace it is made in; it is read from anywhere.
            let (fd, names) = super::netns::in_netns(ns, open_tap)
                .await?
                .with_context(|| format!("a packet socket in {hop}'s namespace"))?;
            let stop = capture.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("capture-{hop}"))
                .spawn(move || read_until(fd, &stop))
                .context("a capture thread")?;
            capture.taps.push(NamespaceTap { hop: hop.clone(), names, thread });
        }
        Ok(capture)
    }

    /// Stop, and write every packet of every namespace, by time, to `path`.
    pub fn finish(self, path: &Path) -> Result<CaptureFile> {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
        self.stop.store(true, Ordering::Relaxed);
        let mut interfaces: Vec<String> = Vec::new();
        let mut packets: Vec<Packet> = Vec::new();
        let mut this = self;
        for tap in std::mem::take(&mut this.taps) {
            let read =
                tap.thread.join().map_err(|_| anyhow::anyhow!("the capture thread of {} panicked", tap.hop))??;
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
                options: vec![],
            })?;
        }
        use std::io::Write;
        writer.into_inner().flush().with_context(|| format!("writing {}", path.display()))?;
        Ok(CaptureFile { path: path.to_path_buf(), packets: packets.len(), interfaces })
    }
}

/// A cell's capture file name: `<scenario>--<cell label>.pcapng`, the label's characters that
/// a file name should not hold replaced.
pub fn file_name(scenario: &str, label: &str) -> String {
    let safe = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=+".contains(c) { c } else { '_' }).collect::<String>()
    };
    format!("{}--{}.pcapng", safe(scenario), safe(label))
}

/// The cell's note about its capture.
pub fn note(file: &CaptureFile) -> String {
    format!(
        "capture: {} ({} packets on {} interfaces: {}); `idlelab explain` reads it",
        file.path.display(),
        file.packets,
        file.interfaces.len(),
        file.interfaces.join(", ")
    )
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

/// Read packets until `stop`: `(ifindex, packet)`, the loopback's sent copies left out.
fn read_until(fd: OwnedFd, stop: &AtomicBool) -> Result<Vec<(u32, Packet)>> {
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
        if addr.sll_hatype == libc::ARPHRD_LOOPBACK && addr.sll_pkttype == libc::PACKET_OUTGOING as u8 {
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
            Packet { iface: 0, ts, original_len: original_len as u32, data: buf[..kept].to_vec() },
        ));
    }
    Ok(out)
}
