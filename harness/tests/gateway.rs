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
    // An `http-*` port: the connection manager's downstream idle timeout, then its drain.
    assert!(counter(none, ".downstream_cx_idle_timeout") >= 4, "Envoy did close them: {none}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(conns.iter().all(|c| c["peer_closed_ms"].is_u64() && c["replaced_before_use"].is_string()), "{conns:?}");
}

/// `http-sidecar-upstream`: on an `http-*` port the app's connection ends at the sidecar's
/// HTTP connection manager; a load balancer behind it forgets Envoy's pooled upstream
/// connections. Per mitigation: what the app got, whether Envoy retried, and how many
/// requests the server received.
#[test]
fn http_sidecar_upstream_shows_the_apps_503_the_retries_and_the_servers_count() {
    let (_out, s) = run_scenario_ok("http-sidecar-upstream");
    let http = |c: &Value| c["evidence"]["lab"]["http"].as_str().unwrap_or_else(|| panic!("{c}")).to_string();
    let received = |c: &Value, path: &str| c["evidence"]["lab"]["server_requests"][path].as_u64().unwrap_or(0);
    for label in ["none", "app-keepalive", "istio-idle-timeout"] {
        let c = cell(&s, label);
        assert_eq!(c["verdict"], "failed-on-reuse", "{label}: {c}");
        let log = access_log(c);
        let reuse: Vec<&Value> = log.iter().filter(|l| l["path"] == "/").collect();
        assert!(
            reuse.iter().any(|l| l["code"] == 503 && l["flags"] == "UC"),
            "{label}: the sidecar answered 503 UC: {reuse:?}"
        );
        assert!(reuse.iter().all(|l| l["attempts"] == 1), "{label}: Istio's default policy did not retry: {reuse:?}");
        let failed = reuse.iter().filter(|l| l["code"] == 503).count() as u64;
        assert_eq!(
            received(c, "/") + failed,
            reuse.len() as u64,
            "{label}: every request Envoy passed on reached the server once, no duplicate: {c}"
        );
        let h = http(c);
        assert!(h.contains("HTTP 503") && h.contains("no retry"), "{label}: {h}");
        assert!(forgotten_segments(c) >= 1, "{label}: the NLB refused a forgotten flow: {c}");
    }
    for label in ["dr-tcp-keepalive", "dr-http-idle-timeout", "dr-idle-timeout"] {
        let c = cell(&s, label);
        assert_eq!(c["verdict"], "survived", "{label}: {c}");
        assert_eq!(received(c, "/"), 4, "{label}: {c}");
        assert!(access_log(c).iter().filter(|l| l["path"] == "/").all(|l| l["code"] == 200), "{label}");
    }
    let idle = cell(&s, "dr-http-idle-timeout");
    assert!(counter(idle, ".upstream_cx_idle_timeout") >= 4, "Envoy retired its idle upstream connections: {idle}");
    assert_eq!(forgotten_segments(idle), 0, "{idle}");
    let sidecar = &envoys(idle)[0]["istio_config"];
    assert!(sidecar["cluster_http_idle_timeout"].as_str().is_some_and(|t| t.ends_with('s')), "{sidecar}");
}
