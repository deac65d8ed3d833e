//! Both pods with a sidecar: which idle timeout fires, and which mitigation reaches it.

mod common;
use common::*;
use serde_json::Value;

fn envoy_counter(cell: &Value, role: &str, suffix: &str) -> u64 {
    envoys(cell)
        .iter()
        .filter(|e| e["role"] == role)
        .filter_map(|e| e["counters"].as_object().cloned())
        .flat_map(|m| m.into_iter())
        .filter(|(k, _)| k.ends_with(suffix))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum()
}

#[test]
fn a_destination_rule_does_not_reach_the_server_sidecar() {
    let (_out, s) = run_scenario_ok("redis-server-sidecar");

    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed");
    assert!(
        envoy_counter(none, "server-sidecar", "tcp.inbound|6379||.downstream_cx_total") >= 4,
        "captured inbound: {none}"
    );

    let dr = cell(&s, "dr-idle-timeout");
    assert_eq!(dr["verdict"], "idle-closed", "{dr}");
    assert_eq!(envoy_counter(dr, "sidecar", ".idle_timeout"), 0, "the client's outbound timer was raised: {dr}");
    assert!(
        envoy_counter(dr, "server-sidecar", "tcp.inbound|6379||.idle_timeout") >= 4,
        "the server's inbound timer fired: {dr}"
    );

    let both = cell(&s, "istio-idle-timeout");
    assert_eq!(both["verdict"], "survived", "{both}");
    assert_eq!(counter(both, ".idle_timeout"), 0, "{both}");
    let pods: Vec<&str> = both["istio"].as_array().unwrap().iter().map(|f| f["pod"].as_str().unwrap()).collect();
    assert_eq!(pods, ["client", "server"], "the annotation goes on both pods");
}
