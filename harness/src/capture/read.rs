//! Reading a capture, pcap or pcapng, as a stream: each TCP segment with its interface and
//! time, decoded from whatever link layer the file has. A capture of millions of packets is
//! never held whole: blocks are parsed from a fixed buffer as the file is read.

use anyhow::{Result, anyhow, bail};
use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError};
use std::net::{IpAddr, SocketAddr};

/// One TCP segment as a capture saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The interface it was seen on (its index in the file; 0 for a pcap).
    pub iface: u32,
    /// Seconds since the Unix epoch.
    pub ts: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_no: u32,
    /// TCP payload bytes (from the IP lengths: a short snaplen still counts them).
    pub len: u32,
    /// Sent (`Some(true)`) or received by the interface's host, where the capture says:
    /// pcapng's `epb_flags` direction bits, or a Linux cooked capture's packet type.
    pub outbound: Option<bool>,
}

/// An interface of the capture: its name where the file gives one.
#[derive(Clone, Debug, Default)]
pub struct Interface {
    pub name: Option<String>,
    linktype: Option<Linktype>,
    /// Units per second of its timestamps.
    resolution: u64,
    offset: i64,
}

/// What a capture held: its interfaces, and how many packets were not TCP over IP.
#[derive(Debug, Default)]
pub struct Capture {
    pub interfaces: Vec<Interface>,
    /// The current pcapng section is big-endian (its options' numbers are).
    big_endian: bool,
    pub packets: u64,
    pub not_tcp: u64,
}

/// Read `input` block by block and hand each TCP segment to `each`, in file order.
/// `name` names the input in errors.
pub fn for_each_segment(
    input: impl std::io::Read + Send,
    name: &str,
    mut each: impl FnMut(&Segment, &Capture),
) -> Result<Capture> {
    let mut reader = pcap_parser::create_reader(1 << 20, input).map_err(|e| match e {
        PcapError::Eof => anyhow!("{name}: empty file; expected a pcap or pcapng capture"),
        PcapError::HeaderNotRecognized => {
            anyhow!("{name}: not a capture: expected a pcap or pcapng file (tcpdump -w, Wireshark, kubectl sniff)")
        }
        e => anyhow!("{name}: not a readable capture ({e:?}); expected a pcap or pcapng file"),
    })?;
    let mut capture = Capture::default();
    let mut consumed: u64 = 0;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                handle(block, &mut capture, &mut each);
                consumed += offset as u64;
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::UnexpectedEof) => bail!(
                "{name}: truncated: the file ends inside a block after {consumed} bytes ({} packets read); expected whole blocks (was the capture still being written?)",
                capture.packets
            ),
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    bail!(
                        "{name}: truncated: the file ends inside a block after {consumed} bytes ({} packets read); expected whole blocks (was the capture still being written?)",
                        capture.packets
                    );
                }
                reader.refill().map_err(|e| anyhow!("{name}: reading: {e:?}"))?;
            }
            Err(e) => bail!("{name}: a damaged block after {consumed} bytes: {e:?}"),
        }
    }
    Ok(capture)
}

fn handle(block: PcapBlockOwned, capture: &mut Capture, each: &mut impl FnMut(&Segment, &Capture)) {
    let mut outbound = None;
    let (iface, ts, data) = match block {
        PcapBlockOwned::LegacyHeader(h) => {
            let resolution = if h.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
            capture.interfaces = vec![Interface { name: None, linktype: Some(h.network), resolution, offset: 0 }];
            return;
        }
        PcapBlockOwned::Legacy(b) => {
            let res = capture.interfaces.first().map(|i| i.resolution).unwrap_or(1_000_000);
            (0, b.ts_sec as f64 + b.ts_usec as f64 / res as f64, b.data)
        }
        PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
            capture.big_endian = shb.big_endian();
            capture.interfaces.clear();
            return;
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            let name = idb
                .options
                .iter()
                .find(|o| o.code == pcap_parser::OptionCode::IfName)
                .and_then(|o| std::str::from_utf8(&o.value).ok().map(|s| s.trim_end_matches('\0').to_string()));
            capture.interfaces.push(Interface {
                name,
                linktype: Some(idb.linktype),
                resolution: idb.ts_resolution().unwrap_or(1_000_000),
                offset: idb.ts_offset(),
            });
            return;
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let Some(i) = capture.interfaces.get(epb.if_id as usize) else {
                capture.packets += 1;
                capture.not_tcp += 1;
                return;
            };
            let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
            let ts = units as f64 / i.resolution as f64 + i.offset as f64;
            let caplen = (epb.caplen as usize).min(epb.data.len());
            // epb_flags (option 2): bits 0-1 are the direction, 1 inbound, 2 outbound.
            if let Some(flags) = epb.options.iter().find(|o| o.code.0 == 2).and_then(|o| {
                let b: [u8; 4] = o.value.get(..4)?.try_into().ok()?;
                Some(if capture.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
            }) {
                outbound = match flags & 3 {
                    1 => Some(false),
                    2 => Some(true),
                    _ => None,
                };
            }
            (epb.if_id, ts, &epb.data[..caplen])
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => (0, 0.0, spb.data),
        PcapBlockOwned::NG(_) => return,
    };
    capture.packets += 1;
    let linktype = capture.interfaces.get(iface as usize).and_then(|i| i.linktype).unwrap_or(Linktype::ETHERNET);
    // A Linux cooked capture (`tcpdump -i any`) shows a loopback packet twice, as sent and as
    // received: keep the received copy. SLL2 names the interface: use it as the interface.
    let (pkttype, hatype) = match linktype {
        Linktype::LINUX_SLL if data.len() >= 4 => {
            (u16::from_be_bytes([data[0], data[1]]), u16::from_be_bytes([data[2], data[3]]))
        }
        Linktype::LINUX_SLL2 if data.len() >= 11 => (u16::from(data[10]), u16::from_be_bytes([data[8], data[9]])),
        _ => (0, u16::MAX),
    };
    const PACKET_OUTGOING: u16 = 4;
    if hatype != u16::MAX {
        outbound = Some(pkttype == PACKET_OUTGOING);
    }
    const ARPHRD_LOOPBACK: u16 = 772;
    if pkttype == PACKET_OUTGOING && hatype == ARPHRD_LOOPBACK {
        capture.packets -= 1;
        return;
    }
    let iface = match linktype {
        Linktype::LINUX_SLL2 if data.len() >= 8 => u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        _ => iface,
    };
    match decode(linktype, data) {
        Some(mut s) => {
            s.iface = iface;
            s.ts = ts;
            s.outbound = outbound;
            each(&s, capture);
        }
        None => capture.not_tcp += 1,
    }
}

/// The TCP segment in a frame of `linktype`, if it holds one.
fn decode(linktype: Linktype, data: &[u8]) -> Option<Segment> {
    use etherparse::{LaxSlicedPacket, TransportSlice};
    let ip = match linktype {
        Linktype::ETHERNET => data,
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => return from_ip(data),
        // Linux cooked capture (tcpdump -i any): 16 bytes, then the packet.
        Linktype::LINUX_SLL => data.get(16..)?,
        Linktype::LINUX_SLL2 => data.get(20..)?,
        // BSD loopback: a 4-byte address family.
        Linktype::NULL | Linktype::LOOP => data.get(4..)?,
        _ => return None,
    };
    if linktype == Linktype::ETHERNET {
        let p = LaxSlicedPacket::from_ethernet(ip).ok()?;
        return segment_of(p.net.as_ref()?, p.transport.as_ref()?);
    }
    return from_ip(ip);

    fn from_ip(ip: &[u8]) -> Option<Segment> {
        let p = LaxSlicedPacket::from_ip(ip).ok()?;
        segment_of(p.net.as_ref()?, p.transport.as_ref()?)
    }

    fn segment_of(net: &etherparse::LaxNetSlice, transport: &TransportSlice) -> Option<Segment> {
        let TransportSlice::Tcp(tcp) = transport else { return None };
        let (src, dst, ip_payload_len) = match net {
            etherparse::LaxNetSlice::Ipv4(v4) => {
                let h = v4.header();
                let total = h.total_len() as u32;
                let header = (h.ihl() as u32) * 4;
                (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), total.saturating_sub(header))
            }
            etherparse::LaxNetSlice::Ipv6(v6) => {
                let h = v6.header();
                let ext: u32 = v6.extensions().slice().len() as u32;
                (
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                    (h.payload_length() as u32).saturating_sub(ext),
                )
            }
            _ => return None,
        };
        let len = ip_payload_len.saturating_sub(tcp.header_len() as u32);
        Some(Segment {
            iface: 0,
            ts: 0.0,
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            seq: tcp.sequence_number(),
            ack_no: tcp.acknowledgment_number(),
            len,
            outbound: None,
        })
    }
}

/// Istio's redirect seen on a pod's loopback: the app's segments go to the sidecar's listener
/// (`127.0.0.1:15001`, `:15006`) after istio-iptables' REDIRECT, but the sidecar's answers come
/// back already un-NATed, from the address the app connected to. Seen as is, one connection
/// would be two halves. [`LoopbackRedirects::fix`] gives every segment of such a connection
/// the listener's address and remembers the original destination.
#[derive(Debug, Default)]
pub struct LoopbackRedirects {
    /// By interface and the app's address: the listener, and the address the app dialled.
    by_client: std::collections::BTreeMap<(u32, SocketAddr), (SocketAddr, Option<SocketAddr>)>,
}

/// Istio's redirect listeners (outbound, inbound).
pub const REDIRECT_PORTS: [u16; 2] = [15001, 15006];

impl LoopbackRedirects {
    fn is_listener(a: SocketAddr) -> bool {
        a.ip().is_loopback() && REDIRECT_PORTS.contains(&a.port())
    }

    pub fn fix(&mut self, s: &mut Segment) {
        if Self::is_listener(s.dst) && !Self::is_listener(s.src) {
            self.by_client.entry((s.iface, s.src)).or_insert((s.dst, None));
        } else if let Some((listener, original)) = self.by_client.get_mut(&(s.iface, s.dst))
            && s.src != *listener
        {
            original.get_or_insert(s.src);
            s.src = *listener;
        }
    }

    /// The address the app dialled, for its connection to a redirect listener.
    pub fn original(&self, iface: u32, client: SocketAddr) -> Option<SocketAddr> {
        self.by_client.get(&(iface, client)).and_then(|(_, o)| *o)
    }
}

/// Sightings of one SYN further apart than this are two connections (a NAT forwards a SYN in
/// well under a millisecond; a retransmitted SYN keeps its own addresses).
const SAME_SYN_S: f64 = 1.0;

/// A connection through a NAT (kube-proxy's ClusterIP DNAT on a node, a middlebox pod's DNAT and
/// masquerade) has other addresses on each side of it, but the same sequence numbers: a NAT
/// rewrites addresses, never a segment's numbers. [`NatJoin::fix`] gives every sighting of a
/// connection the address pair its client sent its SYN with (the SYN's first sighting), so that
/// the hops' sightings of one packet are one packet again. Without a NAT on the path (the local
/// lab routes) every connection has one pair, and nothing changes.
#[derive(Debug, Default)]
pub struct NatJoin {
    /// A connection's pair as a hop behind a NAT saw it → as its client sent it, from the time
    /// of that sighting of its SYN on (a later connection may reuse the NAT's pair).
    alias: std::collections::BTreeMap<Pair, Vec<(f64, Pair)>>,
}

/// A connection's two ends, as one direction of its segments has them.
type Pair = (SocketAddr, SocketAddr);

impl NatJoin {
    /// The joins the SYNs of `segments` (every interface of a capture) show: two pairs whose
    /// SYNs carry one initial sequence number within [`SAME_SYN_S`].
    pub fn of<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> NatJoin {
        let mut syns: Vec<&Segment> = segments.into_iter().filter(|s| s.syn && !s.ack).collect();
        syns.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        // By initial sequence number: the first sighting's time and pair.
        let mut first: std::collections::BTreeMap<u32, (f64, Pair)> = Default::default();
        let mut alias: std::collections::BTreeMap<Pair, Vec<(f64, Pair)>> = Default::default();
        for s in syns {
            let pair = (s.src, s.dst);
            let canonical = match first.get(&s.seq) {
                Some(&(t, canonical)) if s.ts - t <= SAME_SYN_S => canonical,
                _ => {
                    first.insert(s.seq, (s.ts, pair));
                    pair
                }
            };
            // A pair once behind a NAT and now a connection of its own ends its alias.
            if canonical != pair || alias.contains_key(&pair) {
                alias.entry(pair).or_default().push((s.ts, canonical));
            }
        }
        NatJoin { alias }
    }

    /// The client's pair of the connection seen as `pair` at `ts`, when a NAT changed it.
    pub fn canonical(&self, pair: Pair, ts: f64) -> Option<Pair> {
        let found = self.alias.get(&pair)?.iter().rev().find(|(from, _)| *from <= ts).map(|(_, c)| *c);
        found.filter(|c| *c != pair)
    }

    /// Give `s` its connection's pair as the client sent it (either direction).
    pub fn fix(&self, s: &mut Segment) {
        if let Some((src, dst)) = self.canonical((s.src, s.dst), s.ts) {
            (s.src, s.dst) = (src, dst);
        } else if let Some((src, dst)) = self.canonical((s.dst, s.src), s.ts) {
            (s.src, s.dst) = (dst, src);
        }
    }

    /// The client's address of a connection whose source a NAT rewrote to `addr` (a proxy
    /// behind a masquerading middlebox logs the middlebox's address as its downstream).
    pub fn client_of(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.alias
            .iter()
            .filter(|((src, _), _)| *src == addr)
            .filter_map(|(_, seen)| seen.last().map(|(_, c)| c.0))
            .rfind(|c| *c != addr)
    }

    /// How many pairs behind a NAT were joined to their client's.
    pub fn joined(&self) -> usize {
        self.alias.iter().filter(|(pair, seen)| seen.iter().any(|(_, c)| c != *pair)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ts: f64, src: &str, dst: &str, syn: bool, ack: bool, seq: u32) -> Segment {
        Segment {
            iface: 0,
            ts,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            syn,
            ack,
            fin: false,
            rst: false,
            seq,
            ack_no: 0,
            len: 0,
            outbound: None,
        }
    }

    /// A cluster's middlebox pod: the app dials its Service (kube-proxy DNATs to the pod), the
    /// pod DNATs to the server's Service and masquerades. Four pairs, one connection.
    #[test]
    fn a_connection_through_two_nats_is_one_connection_with_the_clients_pair() {
        let (app, svc, pod, masq, srv_svc, srv) = (
            "10.244.0.5:40000",
            "10.96.0.9:6379",
            "10.244.0.7:6379",
            "10.244.0.7:40000",
            "10.96.0.4:6379",
            "10.244.0.8:6379",
        );
        let mut segments = vec![
            seg(0.0, app, svc, true, false, 7),
            seg(0.0001, app, pod, true, false, 7),
            seg(0.0002, masq, srv_svc, true, false, 7),
            seg(0.0003, masq, srv, true, false, 7),
            seg(0.0004, srv, masq, true, true, 900),
            // Another connection, with its own numbers, and a later one that reuses seq 7.
            seg(0.5, "10.244.0.5:40001", svc, true, false, 8),
            seg(3.0, "10.244.0.5:40002", svc, true, false, 7),
        ];
        let join = NatJoin::of(&segments);
        assert_eq!(join.joined(), 3);
        for s in &mut segments {
            join.fix(s);
        }
        let pairs: Vec<String> = segments.iter().map(|s| format!("{} > {}", s.src, s.dst)).collect();
        let want = format!("{app} > {svc}");
        assert!(pairs[..4].iter().all(|p| *p == want), "{pairs:?}");
        assert_eq!(pairs[4], format!("{svc} > {app}"), "the answer, as the client sees it");
        assert_eq!(pairs[5], format!("10.244.0.5:40001 > {svc}"));
        assert_eq!(pairs[6], format!("10.244.0.5:40002 > {svc}"), "3 s later: another connection");
        // A proxy behind the masquerade logs the middlebox's address: the client's is known.
        assert_eq!(join.client_of(masq.parse().unwrap()), Some(app.parse().unwrap()));
        // Later, a connection of its own on the NAT's pair (no other sighting of its SYN).
        let later = vec![
            seg(0.0, app, svc, true, false, 7),
            seg(0.0001, masq, srv, true, false, 7),
            seg(9.0, masq, srv, true, false, 99),
        ];
        let join = NatJoin::of(&later);
        assert_eq!(
            join.canonical((masq.parse().unwrap(), srv.parse().unwrap()), 1.0).map(|p| p.0.to_string()),
            Some(app.into())
        );
        assert_eq!(
            join.canonical((masq.parse().unwrap(), srv.parse().unwrap()), 9.5),
            None,
            "its own connection from 9 s on"
        );
    }
}
