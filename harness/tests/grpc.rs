//! Issue 20: gRPC balance for real. tonic replicas, each in its own namespace, behind a
//! ClusterIP made as kube-proxy's nftables mode makes it; tonic clients, each in its own
//! namespace with its own channel; Istio's sidecars (real Envoy configured by Istio's code) in
//! front of the clients or the replicas; the balance read from the replicas' own counts.

mod common;

use common::*;
use serde_json::Value;

fn balance(cell: &Value) -> &Value {
    &cell["evidence"]["observations"]["balance"]
}

/// Requests each replica served in segment `i` (before / after the scale event).
fn served(cell: &Value, i: usize) -> Vec<u64> {
    balance(cell)["segments"][i]["served"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect()
}

fn cv(served: &[u64]) -> f64 {
    let n = served.len() as f64;
    let mean = served.iter().sum::<u64>() as f64 / n;
    (served.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() / mean
}

/// The run's summary.json, its report.html and what the terminal printed.
fn run_scenario(name: &str) -> (Value, String, String) {
    require_lab();
    let out = tempdir();
    let o = run(&["run", name, "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{name}: every cell matches its expectation:\n{}", text(&o));
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    (summary(out.path()), html, text(&o))
}

#[test]
fn per_connection_balancing_pins_clients_and_leaves_new_replicas_at_zero() {
    let (s, html, terminal) = run_scenario("grpc-pinned");
    // The charts: one line per replica in report.html (6 per cell), a row per replica in the terminal.
    assert_eq!(html.matches(r#"class="balance""#).count(), 3, "one chart per cell");
    assert_eq!(html.matches(r#"class="replica""#).count(), 18, "one line per replica");
    assert_eq!(terminal.matches("replica  5 ").count(), 3, "{terminal}");

    // ClusterIP: each client's one connection stays on one replica for the whole run.
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "pinned");
    let before = served(none, 0);
    assert_eq!(before.len(), 4);
    assert!(before.iter().filter(|&&n| n > 0).count() <= 3, "3 connections reach at most 3 replicas: {before:?}");
    let after = served(none, 1);
    assert_eq!(after.len(), 6);
    assert_eq!(&after[4..], &[0, 0], "replicas added by the scale-up serve nothing until a reconnect: {after:?}");
    let notes = none["evidence"]["notes"].to_string();
    for k in 0..3 {
        assert!(
            notes.contains(&format!("client-{k}:")) && !notes.contains(&format!("client-{k}: 0 requests")),
            "client {k} sent requests: {notes}"
        );
    }
    assert!(!notes.contains("channel 0 → replicas"), "no channel reached two replicas: {notes}");
    assert!(balance(none)["failed"].as_array().unwrap().is_empty(), "no request failed: {notes}");

    // Client-side balancing over the headless addresses: even over the 4 it knows, 0 for the 2 added.
    let headless = cell(&s, "headless-client-balancing");
    assert_eq!(headless["verdict"], "pinned");
    let before = served(headless, 0);
    assert!(before.iter().all(|&n| n > 0) && cv(&before) <= 0.3, "balanced over the 4 it resolved: {before:?}");
    let after = served(headless, 1);
    assert_eq!(&after[4..], &[0, 0], "not in the list it resolved: {after:?}");
    assert!(after[..4].iter().all(|&n| n > 0), "{after:?}");

    // A client sidecar: Envoy picks a replica per request, the added ones as soon as EDS has them.
    let sidecar = cell(&s, "client-sidecar");
    assert_eq!(sidecar["verdict"], "balanced");
    assert_sidecars_balance(sidecar, "LEAST_REQUEST");
}

/// A cell's notes, one string each.
fn note_lines(c: &Value) -> Vec<String> {
    c["evidence"]["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

/// A cell whose client sidecars spread every request: each client's one channel reached every
/// replica, each segment within CV 0.3, the added replicas at half an even share within 2 s, Envoy's
/// cluster with `lb` as Istio set it, and every endpoint pushed to it.
fn assert_sidecars_balance(c: &Value, lb: &str) {
    let notes = c["evidence"]["notes"].to_string();
    let lines = note_lines(c);
    for k in 0..3 {
        let own = lines.iter().find(|l| l.starts_with(&format!("client-{k}: "))).expect("a line per client");
        assert!(own.ends_with("channel 0 → replicas 0,1,2,3,4,5"), "client {k} reached every replica: {own}");
    }
    for i in 0..2 {
        let seg = served(c, i);
        assert!(seg.iter().all(|&n| n > 0) && cv(&seg) <= 0.3, "segment {i}: {seg:?}");
    }
    let shares = balance(c)["time_to_share_ms"].as_array().unwrap();
    assert_eq!(shares.len(), 2, "one figure per added replica: {shares:?}");
    for p in shares {
        assert!(p[1].as_u64().is_some_and(|ms| ms <= 2000), "an added replica served half its share within 2 s: {p}");
    }
    assert!(notes.contains(&format!("lb_policy {lb}, 4 endpoints (EDS)")), "{notes}");
    assert!(notes.contains("every client sidecar held 6 endpoints (EDS)"), "{notes}");
    assert!(notes.contains("opened 6 to replicas"), "one upstream connection per replica: {notes}");
    assert!(balance(c)["failed"].as_array().unwrap().is_empty(), "{notes}");
}

#[test]
fn a_client_sidecar_balances_per_request_with_either_load_balancer() {
    let (s, _, _) = run_scenario("grpc-sidecar");
    let default = cell(&s, "none");
    assert_eq!(default["verdict"], "balanced");
    assert_sidecars_balance(default, "LEAST_REQUEST");
    let rr = cell(&s, "dr-load-balancer=ROUND_ROBIN");
    assert_eq!(rr["verdict"], "balanced");
    assert_sidecars_balance(rr, "ROUND_ROBIN");
    // Round robin per sidecar: every replica within a few requests of the others.
    let after = served(rr, 1);
    assert!(cv(&after) <= 0.1, "{after:?}");
}

#[test]
fn a_server_sidecar_swallows_max_connection_age() {
    let (s, _, _) = run_scenario("grpc-max-connection-age-server-sidecar");
    for label in ["none", "server-max-connection-age=500ms"] {
        let c = cell(&s, label);
        assert_eq!(c["verdict"], "pinned", "{label}");
        let after = served(c, 1);
        assert_eq!(&after[4..], &[0, 0], "{label}: the added replicas get nothing: {after:?}");
    }
    // The replicas' GOAWAYs end their sidecars' connections to the app, many times; the
    // clients' connections to those sidecars stay: at most 6 accepted, over all replicas, in
    // both cells (without the age, no GOAWAY at all).
    let number_after = |line: &str, word: &str| -> u64 {
        line.split(word).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap()
    };
    for (label, min_goaways, max_goaways) in [("none", 0, 0), ("server-max-connection-age=500ms", 20, u64::MAX)] {
        let notes = note_lines(cell(&s, label));
        let sidecars: Vec<&String> = notes.iter().filter(|n| n.starts_with("grpc-")).collect();
        assert_eq!(sidecars.len(), 6, "{label}: one line per replica sidecar: {notes:?}");
        let accepted: u64 = sidecars.iter().map(|l| number_after(l, "accepted ")).sum();
        assert!((1..=6).contains(&accepted), "{label}: the 6 client connections, never re-opened: {notes:?}");
        // 16 s at one GOAWAY per 500 ms on each busy replica's app connection: 30 or more.
        let goaways: u64 = sidecars.iter().map(|l| number_after(l, "requests), ")).sum();
        assert!(
            (min_goaways..=max_goaways).contains(&goaways),
            "{label}: {goaways} GOAWAYs at the sidecars: {notes:?}"
        );
    }
}

#[test]
fn client_side_balancing_loads_every_replica_and_a_cluster_ip_leaves_one_idle() {
    let (s, _, _) = run_scenario("grpc-steady");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "pinned");
    let served_none = served(none, 0);
    assert!(served_none.contains(&0), "3 connections over 4 replicas leave one idle: {served_none:?}");
    let headless = cell(&s, "headless-client-balancing");
    assert_eq!(headless["verdict"], "balanced");
    let served_headless = served(headless, 0);
    assert!(cv(&served_headless) <= 0.3, "{served_headless:?}");
    // The same number of requests either way: 3 clients × 8 s at 20 per second, give or take.
    let total = |v: &[u64]| v.iter().sum::<u64>();
    assert!(total(&served_none) > 300 && total(&served_headless) > 300, "{served_none:?} {served_headless:?}");
}

#[test]
fn max_connection_age_rebalances_onto_replicas_added_later() {
    let (s, _, _) = run_scenario("grpc-max-connection-age");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "pinned");
    let after = served(none, 1);
    assert_eq!(&after[4..], &[0, 0], "no reconnect, nothing for the added replicas: {after:?}");

    // GOAWAY every 500 ms: each reconnect is a new pick, the added replicas get their share.
    let aged = cell(&s, "server-max-connection-age");
    assert_eq!(aged["verdict"], "balanced");
    let after = served(aged, 1);
    assert!(after.iter().all(|&n| n > 0), "every replica served after the scale-up: {after:?}");
    let reached: Vec<bool> =
        balance(aged)["time_to_share_ms"].as_array().unwrap().iter().map(|p| p[1].is_u64()).collect();
    assert_eq!(reached, [true, true], "both added replicas reached half their share: {}", balance(aged));
    // The calls that raced a GOAWAY, if any, are counted with what the client got.
    for f in balance(aged)["failed"].as_array().unwrap() {
        assert!(f.as_str().unwrap().contains(" at "), "{f}");
    }
}

/// The scaled value of a cell's duration `label`, in ms.
fn scaled_ms(cell: &Value, label: &str) -> u64 {
    let v = cell["time_scale"]["values"].as_array().unwrap().iter().find(|v| v["label"] == label).unwrap();
    let s = v["scaled"].as_str().unwrap();
    match s.strip_suffix("ms") {
        Some(ms) => ms.parse().unwrap(),
        None => (s.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0).round() as u64,
    }
}

#[test]
fn keepalive_pings_cross_a_middlebox_directly_and_end_at_a_sidecar() {
    // Direct: no PING, an RST on reuse; PINGs more often than the NLB forgets keep the flow;
    // PINGs less often meet its RST while idle, and tonic reconnects before the call.
    let (s, _, _) = run_scenario("grpc-keepalive-direct");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "reset-on-reuse");
    assert_eq!(cell(&s, "grpc-keepalive=1m/20s")["verdict"], "survived");
    let late = cell(&s, "grpc-keepalive=7m/20s");
    assert_eq!(late["verdict"], "recovered");
    let interval = scaled_ms(late, "client.http2_keepalive.interval");
    let obs = &late["evidence"]["observations"];
    for c in obs["connections"].as_array().unwrap() {
        let reset = c["peer_reset_ms"].as_u64().expect("the PING met the NLB's RST while idle");
        // The PING is the socket's last activity; it went out one interval after the warm call.
        let since_open = reset - c["opened_ms"].as_u64().unwrap();
        assert!((interval..interval + 1000).contains(&since_open), "the first PING after {interval} ms met it: {c}");
        assert!(reset - c["last_activity_ms"].as_u64().unwrap() <= 50, "the RST answered the PING: {c}");
        assert!(reset < obs["reuse_started_ms"].as_u64().unwrap(), "before the call: {c}");
        assert!(c["replaced_before_use"].as_str().unwrap().contains("ConnectionReset"), "{c}");
        assert_eq!(c["reuse"]["outcome"], "ok", "tonic reconnected for the call: {c}");
    }

    // Through the sidecar: the PINGs end at Envoy; the NLB forgets Envoy's upstream connection
    // with or without them, and Envoy answers the call itself (UC); TCP keepalive on Envoy's
    // upstream socket keeps the flow.
    let (s, _, _) = run_scenario("grpc-keepalive-sidecar");
    for label in ["none", "grpc-keepalive=1m/20s"] {
        let c = cell(&s, label);
        assert_eq!(c["verdict"], "failed-on-reuse", "{label}");
        let notes = c["evidence"]["notes"].to_string();
        assert!(
            notes.contains("gRPC Unavailable: upstream connect error or disconnect/reset before headers"),
            "{label}: {notes}"
        );
        assert!(
            notes.contains("flags UC (upstream_reset_before_response_started{connection_termination})"),
            "{label}: {notes}"
        );
        let conns = c["evidence"]["observations"]["connections"].as_array().unwrap();
        for conn in conns {
            assert!(
                conn["peer_reset_ms"].is_null() && conn["peer_closed_ms"].is_null(),
                "the app's own socket saw nothing: {conn}"
            );
        }
        // Both app connections ride one upstream connection of Envoy's: the call that meets
        // it fails and is retried on a new connection; the other may find the new upstream
        // connection Envoy opened meanwhile and pass (the order is the scheduler's).
        assert!(conns.iter().any(|c| c["reuse"]["outcome"] != "ok"), "{label}: a reuse failed: {conns:?}");
        for conn in conns.iter().filter(|c| c["reuse"]["outcome"] != "ok") {
            assert_eq!(conn["retry_after_reconnect"]["outcome"], "ok", "{conn}");
        }
    }
    assert_eq!(cell(&s, "dr-tcp-keepalive=1m/10s/3")["verdict"], "survived");
}

#[test]
fn a_pings_unanswered_ack_is_what_finds_a_blackholed_connection() {
    let (s, _, _) = run_scenario("grpc-keepalive-blackhole");
    assert_eq!(cell(&s, "none")["verdict"], "hung");
    assert_eq!(cell(&s, "grpc-keepalive=1m/20s")["verdict"], "survived");
    let late = cell(&s, "grpc-keepalive=7m/20s");
    assert_eq!(late["verdict"], "recovered");
    let (interval, timeout) =
        (scaled_ms(late, "client.http2_keepalive.interval"), scaled_ms(late, "client.http2_keepalive.timeout"));
    let obs = &late["evidence"]["observations"];
    for c in obs["connections"].as_array().unwrap() {
        // No RST and no FIN: tonic gave the connection up itself, one timeout after the PING.
        assert!(c["peer_reset_ms"].is_null() && c["peer_closed_ms"].is_null(), "{c}");
        let why = c["replaced_before_use"].as_str().unwrap();
        assert!(why.contains("tonic closed it itself") && why.contains("keep_alive_timeout"), "{why}");
        let closed_at: u64 = why.split(" at ").nth(1).and_then(|r| r.split(" ms").next()).unwrap().parse().unwrap();
        let since_open = closed_at - c["opened_ms"].as_u64().unwrap();
        assert!(
            (interval + timeout..interval + timeout + 1000).contains(&since_open),
            "closed one interval ({interval} ms) and one timeout ({timeout} ms) after the warm call: {c}"
        );
        assert_eq!(c["reuse"]["outcome"], "ok", "{c}");
    }
}

#[test]
fn grpc_go_pins_and_balances_as_tonic_does() {
    let (s, _, _) = run_scenario("grpc-pinned-go");
    // pick_first: one connection per client, the added replicas at 0.
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "pinned");
    let after = served(none, 1);
    assert_eq!(&after[4..], &[0, 0], "{after:?}");
    assert!(after[..4].iter().filter(|&&n| n > 0).count() <= 3, "3 connections: {after:?}");
    // round_robin over the addresses resolved at start: every one of them, none added later.
    let headless = cell(&s, "headless-client-balancing");
    assert_eq!(headless["verdict"], "pinned");
    let after = served(headless, 1);
    assert!(after[..4].iter().all(|&n| n > 0) && cv(&after[..4]) <= 0.1, "round robin: {after:?}");
    assert_eq!(&after[4..], &[0, 0], "{after:?}");
    assert!(headless["evidence"]["notes"].to_string().contains("channel 0 → replicas 0,1,2,3"));
    // The client sidecar, for grpc-go's calls too.
    let sidecar = cell(&s, "client-sidecar");
    assert_eq!(sidecar["verdict"], "balanced");
    assert_sidecars_balance(sidecar, "LEAST_REQUEST");
}

#[test]
fn grpc_gos_keepalive_finds_a_forgotten_flow_at_its_own_10_s_minimum() {
    let (s, _, _) = run_scenario("grpc-keepalive-go");
    assert_eq!(cell(&s, "none")["verdict"], "reset-on-reuse");
    let kept = cell(&s, "grpc-keepalive=5m/20s");
    assert_eq!(kept["verdict"], "survived");
    let late = cell(&s, "grpc-keepalive=7m/20s");
    assert_eq!(late["verdict"], "recovered");
    // grpc-go raises a keepalive Time below 10 s to 10 s: the time scale never goes below it.
    for c in [kept, late] {
        assert!(scaled_ms(c, "client.http2_keepalive.interval") >= 10_000, "{}", c["time_scale"]);
    }
    let interval = scaled_ms(late, "client.http2_keepalive.interval");
    for c in late["evidence"]["observations"]["connections"].as_array().unwrap() {
        let why = c["replaced_before_use"].as_str().unwrap();
        // The Go probe says what it measured: the read's ECONNRESET, or the socket found closed by an RST.
        let reset = why.contains("connection reset by peer") || why.contains("an RST had closed its socket");
        assert!(reset && why.contains("while it idled"), "{why}");
        let reset = c["peer_reset_ms"].as_u64().expect("the PING met the NLB's RST while idle");
        let since_open = reset - c["opened_ms"].as_u64().unwrap();
        assert!(
            (interval..interval + 1000).contains(&since_open),
            "the first PING, {interval} ms after the warm call: {c}"
        );
        assert_eq!(c["reuse"]["outcome"], "ok", "grpc-go reconnected for the call: {c}");
    }
}

#[test]
fn grpc_go_replicas_age_connections_without_failing_a_call() {
    let (s, _, _) = run_scenario("grpc-max-connection-age-go");
    assert_eq!(cell(&s, "none")["verdict"], "pinned");
    for label in ["server-max-connection-age=500ms", "server-max-connection-age=500ms+grace=100ms"] {
        let c = cell(&s, label);
        assert_eq!(c["verdict"], "balanced", "{label}");
        let after = served(c, 1);
        assert!(after.iter().all(|&n| n > 0), "{label}: every replica served after the scale-up: {after:?}");
        // grpc-go's GOAWAY is two-phase (a first GOAWAY and a PING, then the last stream id), yet
        // a call can still race a reconnect (measured: 0 or 1 of 1,920, "Cancelled"): few, and
        // each reported with its status and time.
        let failed = balance(c)["failed"].as_array().unwrap();
        assert!(failed.len() * 100 <= balance(c)["requests"].as_u64().unwrap() as usize, "{label}: {failed:?}");
        for f in failed {
            assert!(f.as_str().unwrap().contains(" at "), "{label}: {f}");
        }
        assert!(note_lines(c).iter().any(|n| n.contains("every replica (grpc-go) sends GOAWAY")), "{label}");
    }
}
