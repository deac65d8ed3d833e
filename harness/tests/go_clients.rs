//! The field reports' own Go client libraries behind the probe contract (issue 11): each runs
//! against the real server behind Istio's sidecar, driven by `idlelab-probe-go`, and the
//! verdict and the evidence say what that library did.

mod common;
use common::*;
use serde_json::Value;

fn require_go_probe() {
    require_lab();
    assert!(
        idlelab::tools::go_probe_bin().is_file(),
        "the Go probe is missing: run `just setup` (it builds clients/go with Go)"
    );
}

fn conns(c: &Value) -> Vec<Value> {
    c["evidence"]["observations"]["connections"].as_array().cloned().unwrap_or_default()
}

fn notes(c: &Value) -> String {
    let mut all: Vec<String> = c["evidence"]["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    all.extend(
        c["evidence"]["observations"]["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string)),
    );
    all.join(" | ")
}

/// The Go probe's own sockets, as sock_diag sees them in the app's namespace.
fn probe_sockets(c: &Value) -> Vec<Value> {
    sockets(c, "app", Some("after-warm"))
        .into_iter()
        .filter(|s| s["process"].as_str().is_some_and(|p| p.starts_with("idlelab-probe")))
        .collect()
}

#[test]
fn database_sql_says_invalid_connection_behind_the_sidecar_and_the_nlb() {
    require_go_probe();
    let (_out, s) = run_scenario_ok("mysql-sidecar-upstream-go");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "reset-on-reuse", "{none}");
    assert!(
        conns(none).iter().any(|c| c["reuse"]["error"] == "invalid connection" && c["reuse"]["outcome"] == "reset"),
        "go-sql-driver's own words, the socket's reset underneath: {none}"
    );
    assert!(forgotten_segments(none) >= 1, "{none}");
    // Go's default keepalive is on the app's sockets (read from the sockets), and stops at Envoy.
    let ka = probe_sockets(none);
    assert!(!ka.is_empty() && ka.iter().all(|s| s["keepalive"] == true), "{ka:?}");
    assert!(notes(none).contains("net.Dialer.KeepAliveConfig{Idle: 1s"), "{}", notes(none));

    let idle = cell(&s, "pool-max-idle");
    assert_eq!(idle["verdict"], "recovered", "{idle}");
    assert!(notes(idle).contains("database/sql DB.SetConnMaxIdleTime = 5m"), "the setting's name: {}", notes(idle));
    assert!(
        conns(idle).iter().all(|c| c["replaced_before_use"].as_str().is_some_and(|w| w.contains("closed it itself"))),
        "{idle}"
    );
    assert_eq!(cell(&s, "dr-tcp-keepalive")["verdict"], "survived");
    assert_eq!(cell(&s, "exclude-outbound-ports")["verdict"], "survived");
}

#[test]
fn database_sql_retries_a_connection_the_driver_found_closed() {
    require_go_probe();
    let (_out, s) = run_scenario_ok("mysql-idle-go");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "recovered", "{none}");
    assert!(counter(none, ".idle_timeout") >= 4, "Envoy closed them: {none}");
    let rows = conns(none);
    assert!(
        rows.iter().all(|c| c["peer_closed_ms"].is_u64() && c["replaced_before_use"].is_string()),
        "every FIN was seen while idle, and no pooled connection served a request: {none}"
    );
    assert!(
        rows.iter()
            .any(|c| c["replaced_before_use"].as_str().is_some_and(|w| w.contains("retried the request on a new one"))),
        "database/sql's retry after driver.ErrBadConn is in the evidence: {none}"
    );
    assert_eq!(cell(&s, "istio-idle-timeout")["verdict"], "survived");
}

#[test]
fn go_redis_hides_the_idle_close_and_has_its_own_idle_limit() {
    require_go_probe();
    let (_out, s) = run_scenario_ok("redis-idle-go");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "recovered", "{none}");
    assert!(conns(none).iter().all(|c| c["peer_closed_ms"].is_u64()), "{none}");
    let raised = cell(&s, "istio-idle-timeout");
    assert_eq!(raised["verdict"], "recovered", "go-redis's own 30 min limit: {raised}");
    assert_eq!(counter(raised, ".idle_timeout"), 0, "the sidecar closed nothing: {raised}");
    assert!(notes(raised).contains("go-redis Options.ConnMaxIdleTime = 30m"), "{}", notes(raised));
}

#[test]
fn gomemcache_hands_out_the_closed_connection() {
    require_go_probe();
    let (_out, s) = run_scenario_ok("memcached-idle-go");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed", "{none}");
    assert!(conns(none).iter().all(|c| c["reuse"]["error"] == "EOF" && c["peer_closed_ms"].is_u64()), "{none}");
    assert_eq!(cell(&s, "istio-idle-timeout")["verdict"], "survived");
}

#[test]
fn net_http_keeps_idle_connections_90_s_and_retries_a_reset_get() {
    require_go_probe();
    let (_out, s) = run_scenario_ok("https-keepalive-go");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "recovered", "{none}");
    assert!(notes(none).contains("net/http Transport.IdleConnTimeout = 90s"), "{}", notes(none));
    let kept = cell(&s, "pool-max-idle");
    assert_eq!(kept["verdict"], "recovered", "{kept}");
    assert!(
        conns(kept).iter().any(|c| c["replaced_before_use"]
            .as_str()
            .is_some_and(|w| w.contains("retried") && w.contains("connection reset by peer"))),
        "net/http retried the idempotent GET after the CLB's reset: {kept}"
    );
    assert!(forgotten_segments(kept) >= 1, "{kept}");

    let (_out, on) = run_scenario_ok("https-keepalive-direct-go");
    let c = cell(&on, "pool-max-idle");
    assert_eq!(c["verdict"], "survived", "Go's default keepalive crosses the CLB: {c}");
    assert_eq!(forgotten_segments(c), 0);
    let (_out, off) = run_scenario_ok("https-keepalive-direct-go-off");
    let c = cell(&off, "pool-max-idle");
    assert_eq!(c["verdict"], "recovered", "{c}");
    assert!(forgotten_segments(c) >= 1, "with keepalive off the CLB forgot the flows: {c}");
}

/// A mitigation the library cannot express is refused when the scenario loads.
#[test]
fn a_setting_the_library_lacks_is_refused_at_load() {
    let dir = tempdir();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        "name: s\nsummary: s\nservice: memcached\nclient: {library: gomemcache}\npath: [{sidecar: {}}]\nidle: 70m\ncells:\n  - {mitigation: {pool-max-idle: 30m}, expect: recovered}\n",
    )
    .unwrap();
    let o = run(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("gomemcache") && text(&o).contains("has no idle-time limit"), "{}", text(&o));
    std::fs::write(&file, "name: s\nsummary: s\nservice: redis\nclient: {library: go-sql-driver}\npath: []\nidle: 70m\ncells: [{mitigation: none, expect: survived}]\n").unwrap();
    let o = run(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("does not speak redis") && text(&o).contains("go-redis"), "{}", text(&o));
}
