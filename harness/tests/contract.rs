//! The probe contract (scenarios/PROBE.md) is enough to write a client: a small Python probe
//! written from the document alone (tests/fixtures/contract-client.py) drives the real lab,
//! and a client that breaks the contract is reported clearly.

mod common;
use common::*;

#[test]
fn an_external_client_written_from_the_contract_sees_the_sidecar_idle_close() {
    require_lab();
    let (code, all, pid, out) = run_with_pid(fixture("contract-redis-idle.yaml").to_str().unwrap());
    assert_eq!(code, Some(0), "every cell must match:\n{all}");
    let s = summary(out.path());
    assert_eq!(s["pass"], true, "{s}");

    // Baseline: Envoy closed the idle connections, and the external client saw each FIN.
    let none = cell(&s, "none");
    assert_eq!(none["verdict"], "idle-closed", "{none}");
    assert!(counter(none, ".idle_timeout") >= 4, "Envoy's idle_timeout counter: {none}");
    let obs = &none["evidence"]["observations"];
    let conns = obs["connections"].as_array().expect("the client's connections");
    assert_eq!(conns.len(), 4, "pool: 4 connections: {obs}");
    for c in conns {
        assert!(c["peer_closed_ms"].is_u64(), "FIN seen by poll/TCP_INFO while idle: {c}");
        assert!(c["reuse"]["outcome"].is_string(), "a reuse attempt is reported: {c}");
        assert_ne!(c["reuse"]["outcome"], "ok", "the first GET on a closed connection fails: {c}");
        assert_eq!(c["retry_after_reconnect"]["outcome"], "ok", "the server itself was fine: {c}");
        assert_eq!(c["keepalive"], false, "keepalive: off, read back from the socket: {c}");
    }

    // Raising Istio's idle timeout: no close, every GET answered.
    let istio = cell(&s, "istio-idle-timeout");
    assert_eq!(istio["verdict"], "survived", "{istio}");
    assert_eq!(counter(istio, ".idle_timeout"), 0, "{istio}");
    let conns = istio["evidence"]["observations"]["connections"].as_array().expect("the client's connections");
    assert_eq!(conns.len(), 4, "{istio}");
    assert!(conns.iter().all(|c| c["reuse"]["outcome"] == "ok"), "{conns:?}");

    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn an_external_client_that_breaks_the_contract_is_reported_clearly() {
    require_lab();
    let dir = tempdir();
    let scenario = dir.path().join("broken-client.yaml");
    std::fs::write(
        &scenario,
        r#"name: broken-client
summary: an external client that prints something other than the contract's JSON lines
service: redis
client: {library: external, command: [sh, -c, "echo not-json"], pool: 1}
path: []
idle: 10s
cells:
  - {mitigation: none, expect: survived, why: nothing on a direct path closes a 10 s idle connection}
"#,
    )
    .unwrap();
    let (code, all, pid, out) = run_with_pid(scenario.to_str().unwrap());
    assert_eq!(code, Some(1), "a client that breaks the contract fails the run:\n{all}");
    let s = summary(out.path());
    assert_eq!(s["pass"], false, "{s}");
    let c = cell(&s, "none");
    assert_eq!(c["pass"], false, "{c}");
    assert_ne!(c["verdict"], "survived", "no verdict from a client that printed no observations: {c}");
    let error = c["error"].as_str().unwrap_or_else(|| panic!("the cell carries an error: {c}"));
    assert!(error.contains("not-json"), "the error quotes what the probe printed: {error}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}
