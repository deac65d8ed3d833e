//! MariaDB through mysql_async and memcached through memcache-async, for real: the idle close
//! and the "idle_timeout fixed redis but not MySQL" report.

mod common;
use common::*;
use serde_json::Value;

fn notes(cell: &Value) -> String {
    cell["evidence"]["observations"]["notes"].as_array().map(|n| format!("{n:?}")).unwrap_or_default()
}

#[test]
fn mysql_async_silently_replaces_idle_closed_connections() {
    let (_out, s) = run_scenario_ok("mysql-idle");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "recovered", "{none}");
    assert!(counter(none, ".idle_timeout") >= 4, "Envoy closed them: {none}");
    let n = notes(none);
    assert!(n.contains("4 of the pool's sockets had received the peer's FIN"), "{n}");
    assert!(n.contains("checkout discarded 4 pooled connections"), "{n}");
    let why = none["explanation"].as_str().unwrap();
    assert!(
        why.contains("dropped it and opened a new connection") && why.contains("CLOSE-WAIT"),
        "measured, not configured: {none}"
    );
    assert!(none["evidence"]["lab"]["server_start_ms"].as_u64().unwrap() > 0);
    let istio = cell(&s, "istio-idle-timeout");
    assert_eq!(istio["verdict"], "survived");
    assert!(notes(istio).contains("reused"), "the same connection ids came back: {istio}");
    assert_eq!(cell(&s, "exclude-outbound-ports")["verdict"], "survived");
}

#[test]
fn memcached_meets_the_idle_close_unless_the_pool_checks() {
    let (_out, s) = run_scenario_ok("memcached-idle");
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed", "{none}");
    let conns = none["evidence"]["observations"]["connections"].as_array().unwrap();
    assert!(
        conns.iter().all(|c| c["peer_closed_ms"].as_u64().is_some_and(|t| t < c["reuse"]["at_ms"].as_u64().unwrap())),
        "the idle watch saw each FIN while idle, before the reuse: {conns:?}"
    );
    let tob = cell(&s, "pool-test-on-borrow");
    assert_eq!(tob["verdict"], "recovered");
    assert!(tob["explanation"].as_str().unwrap().contains("test-on-borrow"), "{tob}");
    assert_eq!(cell(&s, "app-heartbeat")["verdict"], "survived");
}

/// The report: with the sidecar's idle timeout raised, redis is fine on the idle path, but
/// MySQL and memcached still fail behind a load balancer until Envoy's upstream has keepalive
/// or the port bypasses the sidecar.
#[test]
fn raising_the_idle_timeout_fixes_redis_but_not_mysql_or_memcached() {
    require_lab();
    let out = tempdir();
    let o = run(&["run", "redis-idle", "--mitigation", "istio-idle-timeout", "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(cell(&summary(out.path()), "istio-idle-timeout")["verdict"], "survived");

    for name in ["mysql-sidecar-upstream", "memcached-sidecar-upstream"] {
        let (_out, s) = run_scenario_ok(name);
        let istio = cell(&s, "istio-idle-timeout");
        assert_eq!(istio["verdict"], "reset-on-reuse", "{name}: {istio}");
        assert!(forgotten_segments(istio) >= 4, "{name}: the NLB reset the forgotten flows: {istio}");
        for fix in ["dr-tcp-keepalive", "exclude-outbound-ports"] {
            let c = cell(&s, fix);
            assert_eq!(c["verdict"], "survived", "{name} / {fix}: {c}");
            assert_eq!(forgotten_segments(c), 0, "{name} / {fix}");
        }
        assert_eq!(cell(&s, "pool-test-on-borrow")["verdict"], "recovered", "{name}");
    }
}
