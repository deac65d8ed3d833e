//! Middleboxes for real: a conntrack namespace that forgets idle flows, with and without a
//! sidecar in front of it.

mod common;
use common::*;
use serde_json::Value;

/// App-namespace sockets after warm-up owned by `process`, whose peer is the redis port.
fn redis_sockets(cell: &Value, process: &str) -> Vec<Value> {
    sockets(cell, "app", Some("after-warm"))
        .into_iter()
        .filter(|s| s["process"] == process && s["peer"].as_str().unwrap().ends_with(":6379"))
        .collect()
}

#[test]
fn a_forgotten_flow_is_reset_on_reuse_unless_app_keepalive_refreshes_it() {
    let (_out, s) = run_scenario_ok("redis-middlebox");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "reset-on-reuse");
    assert!(forgotten_segments(none) >= 4, "the middlebox answered forgotten segments with RST: {none}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(conns.iter().all(|c| c["peer_closed_ms"].is_null() && c["reuse"]["outcome"] == "reset"), "{conns:?}");
    let ka = cell(&s, "app-keepalive");
    assert_eq!(ka["verdict"], "survived");
    assert_eq!(forgotten_segments(ka), 0, "{ka}");
}

#[test]
fn a_blackholed_flow_hangs_and_tcp_user_timeout_fails_it_fast() {
    let (_out, s) = run_scenario_ok("redis-blackhole");
    let latency = |c: &Value| c["evidence"]["observations"]["connections"][0]["reuse"]["latency_ms"].as_u64().unwrap();
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "hung");
    assert!(latency(none) >= 3000, "waited for the 3 s request timeout: {none}");
    assert!(forgotten_segments(none) >= 4, "the middlebox dropped the segments: {none}");
    let ut = cell(&s, "tcp-user-timeout");
    assert_eq!(ut["verdict"], "timed-out", "ETIMEDOUT from the kernel is not an app that waited: {ut}");
    assert!(latency(ut) < 1500, "TCP_USER_TIMEOUT failed the request well before the request timeout: {ut}");
    let err = ut["evidence"]["observations"]["connections"][0]["reuse"]["error"].as_str().unwrap();
    assert!(err.contains("timed out"), "ETIMEDOUT from the kernel: {err}");
    assert!(ut["explanation"].as_str().unwrap().contains("on reuse"), "{ut}");
    assert_eq!(cell(&s, "app-keepalive=1m")["verdict"], "survived");
}

#[test]
fn app_keepalive_behind_a_sidecar_does_not_reach_the_middlebox() {
    let (_out, s) = run_scenario_ok("redis-sidecar-upstream");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "reset-on-reuse", "{none}");
    let app = redis_sockets(none, "idlelab");
    let upstream = redis_sockets(none, "envoy");
    assert!(
        app.len() >= 4 && app.iter().all(|s| s["keepalive"] == true),
        "the app's sockets have a keepalive timer: {app:?}"
    );
    assert!(
        upstream.len() >= 4 && upstream.iter().all(|s| s["keepalive"] == false),
        "Envoy's upstream sockets have none: {upstream:?}"
    );
    assert!(forgotten_segments(none) >= 4, "{none}");
    assert!(access_log(none).iter().any(|l| l["flags"] == "UR"), "Envoy logged the upstream reset (UR): {none}");

    let dr = cell(&s, "dr-tcp-keepalive");
    assert_eq!(dr["verdict"], "survived", "{dr}");
    let upstream = redis_sockets(dr, "envoy");
    assert!(
        upstream.len() >= 4 && upstream.iter().all(|s| s["keepalive"] == true),
        "now Envoy's upstream has a timer: {upstream:?}"
    );
    assert_eq!(forgotten_segments(dr), 0, "{dr}");

    for m in ["exclude-outbound-ports", "exclude-outbound-ip-ranges"] {
        let c = cell(&s, m);
        assert_eq!(c["verdict"], "survived", "{c}");
        assert!(redis_sockets(c, "envoy").is_empty(), "{m}: no Envoy socket toward redis: {c}");
        assert_eq!(forgotten_segments(c), 0);
    }
}
