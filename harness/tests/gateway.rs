//! The first field report's chain for real: hyper-util's pooled HTTPS client, the client
//! sidecar, a CLB-style middlebox, an Envoy ingress gateway terminating TLS with a per-run CA,
//! the server's sidecar and a hyper server.

mod common;
use common::*;
use serde_json::Value;

fn role_index(cell: &Value, prefix: &str) -> String {
    let addresses = cell["evidence"]["lab"]["addresses"].as_object().unwrap();
    addresses
        .keys()
        .find(|k| k.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} node: {addresses:?}"))
        .clone()
}

#[test]
fn https_through_sidecar_clb_and_gateway() {
    let (_out, s) = run_scenario_ok("https-keepalive");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "reset-on-reuse", "{none}");
    assert!(forgotten_segments(none) >= 4, "the CLB reset the forgotten flows: {none}");
    assert!(access_log(none).iter().any(|l| l["flags"] == "UR"), "Envoy saw the upstream reset: {none}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(
        conns.iter().all(|c| c["retry_after_reconnect"]["outcome"] == "ok"),
        "TLS to the run's CA works on a fresh connection"
    );

    assert_eq!(cell(&s, "app-keepalive")["verdict"], "reset-on-reuse", "app keepalive stops at the sidecar");

    let dr = cell(&s, "dr-tcp-keepalive");
    assert_eq!(dr["verdict"], "survived", "{dr}");
    let upstream: Vec<Value> = sockets(dr, "app", Some("after-warm"))
        .into_iter()
        .filter(|s| s["process"] == "envoy" && s["peer"].as_str().unwrap().ends_with(":8443"))
        .collect();
    assert!(
        !upstream.is_empty()
            && upstream.iter().all(|s| s["keepalive"] == true && s["keepalive_read_from"] == "getsockopt"),
        "{upstream:?}"
    );
    assert_eq!(forgotten_segments(dr), 0);

    let gw = cell(&s, "gateway-keepalive");
    assert_eq!(gw["verdict"], "survived", "{gw}");
    let role = role_index(gw, "gw");
    let accepted: Vec<Value> = sockets(gw, &role, Some("after-warm"))
        .into_iter()
        .filter(|s| s["local"].as_str().unwrap().ends_with(":8443"))
        .collect();
    assert!(
        accepted.len() >= 4
            && accepted.iter().all(|s| {
                s["keepalive"] == true && s["keepalive_read_from"] == "getsockopt" && s["keepalive_options"].is_object()
            }),
        "accepted sockets inherit the listener's keepalive (read with getsockopt): {accepted:?}"
    );
    assert_eq!(forgotten_segments(gw), 0);
    assert!(gw["istio"][0]["yaml"].as_str().unwrap().contains("STATE_PREBIND"));
}

#[test]
fn https_without_a_client_sidecar_app_keepalive_reaches_the_clb() {
    let (_out, s) = run_scenario_ok("https-keepalive-direct");
    assert_eq!(cell(&s, "none")["verdict"], "reset-on-reuse");
    let ka = cell(&s, "app-keepalive");
    assert_eq!(ka["verdict"], "survived", "{ka}");
    assert_eq!(forgotten_segments(ka), 0);
    assert_eq!(cell(&s, "gateway-keepalive")["verdict"], "survived");
}

#[test]
fn hyper_util_drops_idle_closed_connections_at_checkout() {
    let (_out, s) = run_scenario_ok("http-idle");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "recovered", "{none}");
    assert!(counter(none, ".idle_timeout") >= 4, "Envoy did close them: {none}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(conns.iter().all(|c| c["peer_closed_ms"].is_u64() && c["replaced_before_use"].is_string()), "{conns:?}");
}
