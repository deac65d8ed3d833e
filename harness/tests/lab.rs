//! The real lab: namespaces, nftables capture, Envoy as the sidecar, redis-server, the probe.

mod common;
use common::*;

#[test]
fn redis_idle_reproduces_the_sidecar_idle_close_and_each_mitigation() {
    let (out, s) = run_scenario_ok("redis-idle");
    assert_eq!(s["schema_version"], 2);
    assert_eq!(s["backend"], "local");
    assert_eq!(s["pass"], true);

    // Baseline: Envoy's idle timeout fired (its counter, its access log) and the client saw it.
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed", "{none}");
    assert!(counter(none, ".idle_timeout") >= 4, "Envoy's idle_timeout counter: {none}");
    let log = access_log(none);
    assert!(log.iter().any(|l| l["close_reason"] == "tcp_session_idle_timeout"), "{log:?}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(conns.iter().all(|c| c["peer_closed_ms"].is_u64()), "FIN seen while idle on every connection: {conns:?}");
    assert!(conns.iter().all(|c| c["retry_after_reconnect"]["outcome"] == "ok"), "the server itself was fine");

    // Client-side: keepalive is really on the app's socket, and Envoy still closes.
    let ka = cell(&s, "app-keepalive");
    assert_eq!(ka["verdict"], "idle-closed", "{ka}");
    assert!(counter(ka, ".idle_timeout") >= 4, "{ka}");
    let app = sockets(ka, "app", None);
    let app_sockets_with_timer =
        app.iter().filter(|sock| sock["process"] == "idlelab" && sock["keepalive"] == true).count();
    assert!(app_sockets_with_timer >= 4, "the app's sockets must show timer:(keepalive…): {app:?}");
    assert!(ka["evidence"]["observations"]["connections"].as_array().unwrap().iter().all(|c| c["keepalive"] == true));

    // Envoy knobs.
    for m in ["istio-idle-timeout", "envoyfilter-idle-timeout"] {
        let c = cell(&s, m);
        assert_eq!(c["verdict"], "survived", "{c}");
        assert_eq!(counter(c, ".idle_timeout"), 0, "{c}");
    }
    // Capture rule: the connection never passed through Envoy.
    let excl = cell(&s, "exclude-outbound-ports");
    assert_eq!(excl["verdict"], "survived", "{excl}");
    assert_eq!(counter(excl, "outbound|6379||redis.idlelab.svc.cluster.local.downstream_cx_total"), 0, "{excl}");
    // Pool and heartbeat.
    let pool = cell(&s, "pool-max-idle");
    assert_eq!(pool["verdict"], "recovered", "{pool}");
    let hb = cell(&s, "app-heartbeat");
    assert_eq!(hb["verdict"], "survived", "{hb}");
    assert!(hb["evidence"]["observations"]["connections"][0]["heartbeats"].as_u64().unwrap() >= 2, "{hb}");
    assert!(std::fs::read_to_string(out.path().join("summary.md")).unwrap().contains("| `none` |"));
}

#[test]
fn redis_idle_passthrough_goes_through_passthrough_cluster() {
    let (_out, s) = run_scenario_ok("redis-idle-passthrough");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed");
    assert!(counter(none, "tcp.PassthroughCluster.idle_timeout") >= 4, "{none}");
    let ef = cell(&s, "envoyfilter-idle-timeout");
    assert!(counter(ef, "tcp.PassthroughCluster.downstream_cx_total") >= 4, "went through the passthrough chain: {ef}");
}

#[test]
fn verdicts_follow_the_physics_not_the_names() {
    let (_out, s) = run_scenario_ok(fixture("physics-short-idle.yaml").to_str().unwrap());
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "survived", "idle 50m < timeout 1h: {none}");
    assert_eq!(counter(none, ".idle_timeout"), 0);
    let lowered = cell(&s, "istio-idle-timeout");
    assert_eq!(lowered["verdict"], "idle-closed", "a 40m timeout fires in a 50m idle: {lowered}");
}

#[test]
fn a_cell_that_does_not_match_exits_1_and_cleans_up() {
    require_lab();
    let (code, all, pid, out) = run_with_pid(fixture("wrong-expectation.yaml").to_str().unwrap());
    assert_eq!(code, Some(1), "{all}");
    let s = summary(out.path());
    assert_eq!(s["pass"], false);
    assert_eq!(cell(&s, "none")["verdict"], "idle-closed");
    assert!(all.contains("FAIL wrong-expectation::none"), "{all}");
    // A cell that did not match keeps its control plane's and pilot-agent's logs.
    let logs = out.path().join("logs/wrong-expectation--none");
    let xds =
        std::fs::read_to_string(logs.join("control-plane-idlelab-xds.log")).expect("the control plane's log is kept");
    assert!(xds.contains("PUSH"), "Istio's push log: {xds}");
    assert!(logs.join("sidecar-proxy-pilot-agent.log").is_file());
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

/// `-v` shows what the lab did, per cell: each process started and each xDS push a proxy
/// received from Istio's control plane (the client's and the server pod's).
#[test]
fn verbose_shows_each_xds_push_per_proxy() {
    require_lab();
    let out = tempdir();
    let o = run(&["run", "redis-server-sidecar", "--mitigation", "none", "-v", "--out", out.path().to_str().unwrap()]);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(0), "{all}");
    for proxy in ["client.idlelab", "redis.idlelab"] {
        for xds in ["CDS", "LDS"] {
            assert!(
                all.lines().any(|l| l.contains("xDS push to a proxy") && l.contains(proxy) && l.contains(xds)),
                "{proxy} {xds}: {all}"
            );
        }
    }
    assert!(all.contains("process started") && all.contains("cell{key=redis-server-sidecar::none"), "{all}");
}
