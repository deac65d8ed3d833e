//! Verdicts that follow the physics (issue 9): each test runs the real lab on a case the
//! shipped cells once judged wrong, and checks the verdict and the measured evidence.

mod common;
use common::*;
use serde_json::Value;

fn conns(cell: &Value) -> Vec<Value> {
    cell["evidence"]["observations"]["connections"].as_array().unwrap().clone()
}

/// A scaled duration as reports print it (`6.316s`, `120ms`, `2m`), in seconds.
fn seconds(text: &str) -> f64 {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).expect("a unit"));
    let n: f64 = num.parse().unwrap();
    match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        other => panic!("unexpected unit {other} in {text}"),
    }
}

fn run_cells(scenario: &str, mitigations: &[&str]) -> (tempfile::TempDir, Value) {
    require_lab();
    let out = tempdir();
    let mut args = vec!["run", scenario, "--out", out.path().to_str().unwrap()];
    for m in mitigations {
        args.extend(["--mitigation", m]);
    }
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{scenario}: every cell must match:\n{}", text(&o));
    let s = summary(out.path());
    (out, s)
}

/// memcache-async does not read an idle socket: an RST that a middlebox sends while the pool
/// idles (answering a keepalive probe that came too late) waits in the socket. It is
/// `reset-on-reuse`, timed when it arrived, never `idle-closed` without a FIN.
#[test]
fn an_rst_while_idle_is_reset_on_reuse_timed_when_it_arrived() {
    let (_out, s) = run_cells("memcached-middlebox", &["app-keepalive"]);
    let late = cell(&s, "app-keepalive=400s");
    assert_eq!(late["verdict"], "reset-on-reuse", "{late}");
    let scale = late["time_scale"]["factor"].as_u64().unwrap();
    let first_probe_ms = 400_000 / scale;
    for c in conns(late) {
        assert!(c["peer_closed_ms"].is_null(), "no FIN was sent: {c}");
        let rst = c["peer_reset_ms"].as_u64().expect("the RST's arrival is recorded");
        let reuse = c["reuse"]["at_ms"].as_u64().unwrap();
        assert!(
            rst >= first_probe_ms && rst < first_probe_ms + 1500,
            "the RST answered the first probe at ~{first_probe_ms} ms, not the reuse at {reuse} ms: {c}"
        );
        assert_eq!(c["reuse"]["outcome"], "reset", "the probe left the RST's error for the client: {c}");
    }
    assert!(late["explanation"].as_str().unwrap().contains("reset while idle"), "{late}");
    assert_eq!(cell(&s, "app-keepalive=1m")["verdict"], "survived");
}

/// A DestinationRule selects its host's clusters; PassthroughCluster is not one of them, so
/// its keepalive cannot keep a passthrough flow alive across a middlebox.
#[test]
fn a_destination_rule_keepalive_does_not_reach_passthrough_cluster() {
    let (_out, s) = run_cells(fixture("passthrough-middlebox.yaml").to_str().unwrap(), &[]);
    let dr = cell(&s, "dr-tcp-keepalive");
    assert_eq!(dr["verdict"], "reset-on-reuse", "{dr}");
    assert!(forgotten_segments(dr) >= 4, "the middlebox forgot the flow and reset the reuse: {dr}");
    // Istio names cluster stats `cluster.PassthroughCluster;.…`; the tcp_proxy's are plain.
    assert!(
        counter(dr, "tcp.PassthroughCluster.downstream_cx_total") >= 4,
        "the flows went through PassthroughCluster: {dr}"
    );
    let generated = &envoys(dr)[0]["istio_config"];
    assert_eq!(generated["cluster"], "PassthroughCluster", "{generated}");
    assert!(generated["tcp_keepalive"].is_null(), "Istio gave PassthroughCluster no keepalive: {generated}");
    let upstream: Vec<Value> = sockets(dr, "app", Some("after-warm"))
        .into_iter()
        .filter(|s| s["process"] == "envoy" && s["peer"].as_str().unwrap().ends_with(":6379"))
        .collect();
    assert!(
        upstream.len() >= 4 && upstream.iter().all(|s| s["keepalive"] == false),
        "Envoy's upstream sockets of the passthrough chain have no keepalive: {upstream:?}"
    );
}

/// redis's `timeout` runs on a whole-second clock: it closes 0–1.1 s after its value. The
/// time scale keeps the idle period clear of that window, so 20 runs give one verdict.
#[test]
fn a_whole_second_server_clock_never_flips_the_verdict() {
    require_lab();
    let out = tempdir();
    let o = run(&[
        "run",
        "redis-server-timeout",
        "--mitigation",
        "none",
        "--repeat",
        "20",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "20 runs, one verdict:\n{}", text(&o));
    let s = summary(out.path());
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed");
    assert_eq!(none["stable"], true, "{none}");
    let scaled = |label: &str| -> f64 {
        let v = none["time_scale"]["values"].as_array().unwrap().iter().find(|v| v["label"] == label).unwrap();
        seconds(v["scaled"].as_str().unwrap())
    };
    assert!(
        scaled("idle") >= scaled("server.idle_timeout") + 1.1 + 1.0,
        "the idle period stays 1 s past the latest moment redis may act"
    );
}

/// A blackholed flow whose keepalive probes go unanswered: the kernel declares the
/// connection dead while it idles. That is `timed-out`, with the moment it happened.
#[test]
fn a_connection_killed_by_unanswered_keepalive_is_timed_out() {
    let (_out, s) = run_cells("redis-blackhole", &["app-keepalive=400s/30s/3"]);
    let c = cell(&s, "app-keepalive=400s");
    assert_eq!(c["verdict"], "timed-out", "{c}");
    let ka = c["time_scale"]["values"].as_array().unwrap();
    let secs = |label: &str| -> u64 {
        let v = ka.iter().find(|v| v["label"] == label).unwrap();
        (seconds(v["scaled"].as_str().unwrap()) * 1000.0).round() as u64
    };
    let give_up = secs("client.keepalive.time") + 3 * secs("client.keepalive.interval");
    for conn in conns(c) {
        let dead = conn["timed_out_ms"].as_u64().expect("when the kernel gave up");
        let since = dead - conn["last_activity_ms"].as_u64().unwrap();
        assert!(since >= give_up && since < give_up + 1000, "dead at time + probes × interval ({give_up} ms): {conn}");
        assert!(dead < conn["reuse"]["at_ms"].as_u64().unwrap(), "while idle: {conn}");
    }
    assert!(c["explanation"].as_str().unwrap().contains("ETIMEDOUT"), "{c}");
}
