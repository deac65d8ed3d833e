//! Issue 21 (first part): `--capture` writes one pcapng per cell with an interface per hop
//! interface, which a second library reads back; `idlelab explain` on captures the lab made
//! (each shipped failure kind) and on hand-made edge cases; bad input exits 2.

mod common;

use common::{idlelab, interface_names, require_lab, text};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::time::Duration;

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 6379);

/// One packet of a hand-made connection: when, from which side, what.
#[derive(Clone, Copy)]
enum P {
    /// The handshake: SYN, SYN-ACK, ACK.
    Handshake,
    /// Data from the client (`true`) or the server, its length.
    Data(bool, usize),
    /// The side's last data again (a retransmission).
    Again(bool),
    /// A keepalive probe (no data, one below the next sequence number).
    Keepalive(bool),
    Ack(bool),
    Fin(bool),
    Rst(bool),
}

/// A legacy pcap of one connection, `packets` at their times (seconds), Ethernet frames.
fn pcap(packets: &[(f64, P)]) -> Vec<u8> {
    let mut next = [1000u32, 5000u32];
    let mut last_data = [(0u32, 0usize); 2];
    let mut frames: Vec<(f64, Vec<u8>)> = Vec::new();
    let frame = |client: bool, seq: u32, ack: u32, flags: &str, len: usize| -> Vec<u8> {
        let (src, dst) = if client { (CLIENT, SERVER) } else { (SERVER, CLIENT) };
        let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('R') {
            b = b.rst();
        }
        let payload = vec![b'x'; len];
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    };
    for &(t, p) in packets {
        let i = |client: bool| if client { 0 } else { 1 };
        match p {
            P::Handshake => {
                frames.push((t, frame(true, next[0], 0, "S", 0)));
                next[0] += 1;
                frames.push((t + 0.0001, frame(false, next[1], next[0], "SA", 0)));
                next[1] += 1;
                frames.push((t + 0.0002, frame(true, next[0], next[1], "A", 0)));
            }
            P::Data(c, len) => {
                last_data[i(c)] = (next[i(c)], len);
                frames.push((t, frame(c, next[i(c)], next[i(!c)], "A", len)));
                next[i(c)] += len as u32;
            }
            P::Again(c) => {
                let (seq, len) = last_data[i(c)];
                frames.push((t, frame(c, seq, next[i(!c)], "A", len)));
            }
            P::Keepalive(c) => frames.push((t, frame(c, next[i(c)] - 1, next[i(!c)], "A", 0))),
            P::Ack(c) => frames.push((t, frame(c, next[i(c)], next[i(!c)], "A", 0))),
            P::Fin(c) => {
                frames.push((t, frame(c, next[i(c)], next[i(!c)], "FA", 0)));
                next[i(c)] += 1;
            }
            P::Rst(c) => frames.push((t, frame(c, next[i(c)], 0, "R", 0))),
        }
    }
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (t, data) in &frames {
        let ts = Duration::from_secs_f64(1_700_000_000.0 + t);
        w.write_packet(&PcapPacket::new(ts, data.len() as u32, data)).unwrap();
    }
    w.into_writer()
}

/// `idlelab explain` on these bytes: exit code and output (stdout, then stderr).
fn explain(bytes: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.pcap");
    std::fs::write(&path, bytes).unwrap();
    let o = idlelab(&["explain", path.to_str().unwrap()]).output().unwrap();
    (o.status.code(), text(&o))
}

/// A warm connection: handshake, a request and its answer.
fn warm() -> Vec<(f64, P)> {
    vec![(0.0, P::Handshake), (0.01, P::Data(true, 14)), (0.011, P::Data(false, 5)), (0.012, P::Ack(true))]
}

#[test]
fn explain_names_the_hop_behaviour_of_each_hand_made_failure() {
    let with = |tail: &[(f64, P)]| -> Vec<(f64, P)> { warm().into_iter().chain(tail.iter().copied()).collect() };
    let cases: Vec<(&str, Vec<(f64, P)>, Vec<&str>)> = vec![
        (
            "a FIN after 1 h of idle, then the client's write meets RST",
            with(&[
                (3600.012, P::Fin(false)),
                (3600.013, P::Ack(true)),
                (3700.0, P::Data(true, 14)),
                (3700.001, P::Rst(false)),
            ]),
            vec![
                "idle 3600.0 s (1.0 h), then a FIN from the server side; the client wrote to the closed connection and got RST",
                "Envoy's tcp_proxy idle_timeout",
                "reproduce with: idlelab run redis-idle",
            ],
        ),
        (
            "no FIN: the first write after 400 s meets RST",
            with(&[(400.0, P::Data(true, 14)), (400.0003, P::Rst(false))]),
            vec![
                "no FIN; RST from the server side at 400.000 s",
                "idle 400.0 s (6.7 min), no FIN; the client wrote and the server side answered RST",
                "forgot the flow",
                "reproduce with: idlelab run redis-middlebox",
            ],
        ),
        (
            "RST from the server side while idle",
            with(&[(100.0, P::Rst(false))]),
            vec![
                "no FIN; the server side sent RST with nothing sent by the client",
                "reproduce with: idlelab run redis-middlebox",
            ],
        ),
        (
            "keepalive probes unanswered, then the client's kernel gives up",
            with(&[
                (60.0, P::Keepalive(true)),
                (61.0, P::Keepalive(true)),
                (62.0, P::Keepalive(true)),
                (63.0, P::Rst(true)),
            ]),
            vec!["3 keepalive probe(s) from the client went unanswered", "reproduce with: idlelab run redis-blackhole"],
        ),
        (
            "a black hole: the write after 400 s is retransmitted, never answered",
            with(&[
                (400.0, P::Data(true, 14)),
                (400.2, P::Again(true)),
                (400.6, P::Again(true)),
                (401.4, P::Again(true)),
            ]),
            vec![
                "idle 400.0 s (6.7 min), then the client's data went unanswered: 3 retransmission(s) over 1.400 s",
                "a black hole",
                "reproduce with: idlelab run redis-blackhole",
            ],
        ),
        (
            "keepalive probes answered every 75 s do not shorten the idle before the sidecar's FIN",
            with(
                &(1..=47)
                    .flat_map(|k| [(k as f64 * 75.0, P::Keepalive(true)), (k as f64 * 75.0 + 0.0001, P::Ack(false))])
                    .chain([(3600.012, P::Fin(false)), (3600.013, P::Ack(true))])
                    .collect::<Vec<_>>(),
            ),
            vec![
                "47 keepalive probe(s) seen",
                "idle 3600.0 s (1.0 h), then a FIN from the server side",
                "Envoy's tcp_proxy idle_timeout",
            ],
        ),
        (
            "a capture that starts while the connection idles, its keepalive probes answered",
            vec![
                (0.0, P::Keepalive(true)),
                (0.0001, P::Ack(false)),
                (75.0, P::Keepalive(true)),
                (75.0001, P::Ack(false)),
                (150.0, P::Keepalive(true)),
                (150.0001, P::Ack(false)),
                (200.0, P::Fin(false)),
            ],
            vec![
                "the capture starts mid-connection (no SYN)",
                "2 keepalive probe(s) seen",
                "idle 200.0 s (3.3 min), then a FIN from the server side",
            ],
        ),
        (
            "a capture that starts mid-connection",
            vec![
                (0.0, P::Data(true, 14)),
                (0.001, P::Data(false, 5)),
                (3600.0, P::Fin(false)),
                (3650.0, P::Data(true, 14)),
                (3650.001, P::Rst(false)),
            ],
            vec![
                "the capture starts mid-connection (no SYN)",
                "10.0.0.1:40000 → 10.0.0.2:6379",
                "idle 3600.0 s (1.0 h)",
            ],
        ),
    ];
    for (what, packets, wants) in cases {
        let (code, out) = explain(&pcap(&packets));
        assert_eq!(code, Some(0), "{what}: {out}");
        assert!(out.contains("1 TCP connection(s) on 1 interface(s); 1 ended badly"), "{what}: {out}");
        for want in wants {
            assert!(out.contains(want), "{what}: wants `{want}` in:\n{out}");
        }
    }
    // A connection closed by a FIN exchange, then the client's close; and a server that
    // answers a request after a pause and closes at once (`Connection: close`): nothing
    // ended badly.
    let answered_then_closed = with(&[(2.0, P::Data(true, 14)), (2.001, P::Data(false, 5)), (2.0015, P::Fin(false))]);
    for packets in [with_clean(), answered_then_closed] {
        let (code, out) = explain(&pcap(&packets));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("0 ended badly") && out.contains("Every connection ended with a FIN exchange"), "{out}");
    }
}

/// The reproducer follows the server's port: MySQL's idle close is mysql-idle; a port none of
/// the lab's services use gets no scenario named as its own, only the nearest by kind; the
/// sidecar's own listener (15001) says the service's port is not in the capture.
#[test]
fn explain_names_the_reproducer_by_the_servers_port() {
    let closed = [(0.0, P::Handshake), (0.01, P::Data(true, 14)), (0.011, P::Data(false, 5)), (3600.0, P::Fin(false))];
    let on_port = |port: u16| {
        let bytes = pcap(&closed);
        // The server's port in every frame: rewrite the hand-made capture's 6379 (0x18eb).
        let from = 6379u16.to_be_bytes();
        let to = port.to_be_bytes();
        let mut out = bytes.clone();
        for i in 0..out.len() - 1 {
            if out[i..i + 2] == from {
                out[i..i + 2].copy_from_slice(&to);
            }
        }
        explain(&out)
    };
    let (_, out) = on_port(3306);
    assert!(out.contains("reproduce with: idlelab run mysql-idle"), "{out}");
    let (_, out) = on_port(9999);
    assert!(
        out.contains("port 9999 is none of the lab's services") && out.contains("nearest: idlelab run redis-idle"),
        "{out}"
    );
    let (_, out) = on_port(15001);
    assert!(out.contains("port 15001 is the sidecar's own listener") && !out.contains("reproduce with"), "{out}");
}

fn with_clean() -> Vec<(f64, P)> {
    let mut p = warm();
    p.extend([(5.0, P::Fin(true)), (5.001, P::Fin(false)), (5.002, P::Ack(true))]);
    p
}

#[test]
fn explain_refuses_what_is_not_a_capture_of_tcp() {
    let (code, out) = explain(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a capture: expected a pcap or pcapng file"), "{out}");

    let whole = pcap(&with_clean());
    let (code, out) = explain(&whole[..whole.len() - 20]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("truncated: the file ends inside a block"), "{out}");

    let (code, out) = explain(&[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("empty file"), "{out}");

    // UDP only.
    let mut udp = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5000, 53)
        .write(&mut udp, b"query")
        .unwrap();
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    w.write_packet(&PcapPacket::new(Duration::from_secs(1), udp.len() as u32, &udp)).unwrap();
    let (code, out) = explain(&w.into_writer());
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("1 packets, none of them TCP over IP"), "{out}");

    let o = idlelab(&["explain", "/nonexistent/capture.pcap"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("cannot open"), "{}", text(&o));
}

/// The lab's own captures: one cell of each shipped failure kind with `--capture`. Each pcapng
/// has an interface per hop interface, named after the hop; `idlelab explain` on it names the
/// failure the cell reproduced, on the interface where the app's connection is.
#[test]
fn explain_reads_the_labs_own_captures_of_each_failure_kind() {
    require_lab();
    let out = tempfile::tempdir().unwrap();
    let cases = [
        // The sidecar's Envoy (in the app's namespace) closes the idle connection: FIN to the app.
        ("redis-idle", "none", "app lo", "then a FIN from the server side", "idlelab run redis-idle"),
        (
            "redis-middlebox",
            "none",
            "app to-srv",
            "no FIN; the client wrote and the server side answered RST",
            "idlelab run redis-middlebox",
        ),
        (
            "redis-blackhole",
            "none",
            "app to-srv",
            "then the client's data went unanswered",
            "idlelab run redis-blackhole",
        ),
        // The NLB behind the sidecar resets Envoy's upstream; Envoy resets the app's socket:
        // on the app's loopback, an RST on reuse with no FIN, to the port the app dialled.
        (
            "redis-sidecar-upstream",
            "none",
            "app lo",
            "no FIN; the client wrote and the server side answered RST",
            "idlelab run redis-middlebox",
        ),
        // The app's own keepalive crosses a black hole: its probes go unanswered.
        (
            "redis-blackhole",
            "app-keepalive=400s/30s/3",
            "app to-srv",
            "keepalive probe(s) from the client went unanswered",
            "idlelab run redis-blackhole",
        ),
        // redis's own `timeout` closes the idle connection: a FIN from the server itself.
        ("redis-server-timeout", "none", "app to-srv", "then a FIN from the server side", "reproduce with"),
    ];
    for (scenario, cell, iface, finding, reproduce) in cases {
        let dir = out.path().join(format!("{scenario}-{}", cell.replace('/', "_")));
        let o = idlelab(&["run", scenario, "--mitigation", cell, "--capture", "--out", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{scenario}: {}", text(&o));
        let file = dir.join("captures").join(format!("{scenario}--{}.pcapng", cell.replace('/', "_")));
        let (names, packets) = interface_names(&file);
        assert!(packets > 10, "{scenario}: {packets} packets");
        assert!(
            names.iter().any(|n| n.starts_with("app ")) && names.iter().any(|n| n.starts_with("srv ")),
            "{scenario}: {names:?}"
        );
        if scenario.contains("blackhole") || scenario.contains("middlebox") {
            assert!(names.iter().any(|n| n.starts_with("mb0 ")), "{scenario}: the middlebox's interfaces: {names:?}");
        }
        let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        assert!(summary.contains(&format!("capture: {}", file.display())), "{scenario}: the cell names its capture");

        let e = idlelab(&["explain", file.to_str().unwrap()]).output().unwrap();
        let said = text(&e);
        assert_eq!(e.status.code(), Some(0), "{scenario}: {said}");
        let block = said
            .split("\n\n")
            .find(|b| b.contains(&format!(" on {iface}\n")) && b.contains(finding))
            .unwrap_or_else(|| panic!("{scenario}: no finding `{finding}` on {iface}:\n{said}"));
        assert!(block.contains(reproduce), "{scenario}: {block}");
    }
}

/// A gRPC balance cell's capture: one interface per interface of each pod (`client-K`,
/// `grpc-I`) and of the node that holds the ClusterIP, from the clients' start; the lab's own
/// readiness checks of the replicas are not in it (they read the socket table, they do not
/// connect). Every request of `none` goes to one replica per client, so the packets to the
/// ClusterIP cross the node to a replica's eth0.
#[test]
fn a_grpc_balance_cell_is_captured_on_every_pod_and_the_node() {
    require_lab();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let o = idlelab(&["run", "grpc-pinned", "--mitigation", "none", "--capture", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let file = dir.join("captures/grpc-pinned--none.pcapng");
    let (names, packets) = interface_names(&file);
    assert!(packets > 1000, "{packets} packets in 16 s of requests every 50 ms from 3 clients");
    for k in 0..3 {
        assert!(names.contains(&format!("client-{k} eth0")), "{names:?}");
        assert!(names.contains(&format!("node c{k}")), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("grpc-") && n.ends_with(" eth0")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("grpc-") && n.ends_with(" lo")), "no readiness check: {names:?}");
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(summary.contains(&format!("capture: {}", file.display())), "the cell names its capture");
    let e = idlelab(&["explain", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(e.status.code(), Some(0), "{}", text(&e));
    // idlelab's reader and pcap-parser count the same packets and interfaces.
    let first = format!("{}: {packets} packets, ", file.display());
    assert!(text(&e).contains(&first), "{first:?} in {}", text(&e));
    assert!(text(&e).contains(&format!(" on {} interface(s)", names.len())), "{}", text(&e));
}
