//! Issue 17: verdicts that follow the physics on scenarios nobody here wrote. Each scenario
//! below uses durations unlike the shipped ones, and its expectation was written from the
//! physics before the run.

mod common;
use common::*;
use serde_json::Value;

/// Write `yaml` as a scenario file and run it; every cell must match its expectation.
fn run_yaml(name: &str, yaml: &str, extra: &[&str]) -> (tempfile::TempDir, Value) {
    require_lab();
    let dir = tempdir();
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["run", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{name}: every cell must match:\n{}", text(&o));
    let s = summary(&out);
    (dir, s)
}

fn rows(c: &Value) -> Vec<Value> {
    c["evidence"]["observations"]["connections"].as_array().cloned().unwrap_or_default()
}

fn orderings(c: &Value) -> Vec<String> {
    c["time_scale"]["orderings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(str::to_string))
        .collect()
}

/// Defect 3: keepalive time (60 s) < the middlebox's timeout (300 s) < interval (1200 s). The
/// first probe is answered and refreshes the flow; the kernel gives up at 60 + 2 × 1200 =
/// 2460 s, after the 1860 s idle, so the reuse meets the forgotten flow and waits it out:
/// `hung`. The old model put the give-up at 60 + 1200 = 1260 s, before the idle.
#[test]
fn keepalive_gives_up_one_interval_later_when_its_first_probe_is_answered() {
    let (_d, s) = run_yaml(
        "ka-first-probe-answered",
        "name: ka-first-probe-answered
summary: a scenario nobody here wrote (issue 17)
service: redis
client: {pool: 2, keepalive: {time: 60s, interval: 1200s, probes: 1}, request_timeout: 2s}
path:
  - middlebox: {idle_timeout: 300s, on_unknown: drop}
idle: 31m
cells:
  - mitigation: none
    expect: hung
",
        &[],
    );
    let c = cell(&s, "none");
    assert_eq!(c["verdict"], "hung", "{c}");
    assert!(orderings(c).iter().any(|o| o == "idle < client.keepalive give-up"), "{:?}", orderings(c));
    assert!(rows(c).iter().all(|r| r["timed_out_ms"].is_null()), "no connection died while idle: {c}");
}

/// Defect 2: the connection manager closes the app's idle connections (8 min), hyper-util
/// replaces them at checkout, and Envoy carries the new requests on upstream connections a
/// middlebox forgot at 250 s: 503 UC on the new sockets. The FIN was on the old sockets, so
/// the verdict is `failed-on-reuse`, not `idle-closed`.
#[test]
fn a_fin_on_the_replaced_socket_is_not_blamed_for_the_failure_on_its_replacement() {
    let (_d, s) = run_yaml(
        "hcm-closes-nlb-forgets",
        "name: hcm-closes-nlb-forgets
summary: a scenario nobody here wrote (issue 17)
service: http
client: {pool: 3}
path:
  - sidecar: {idle_timeout: 8m, route: service}
  - middlebox: {idle_timeout: 250s, on_unknown: reset}
idle: 12m
cells:
  - mitigation: none
    expect: failed-on-reuse
",
        &[],
    );
    let c = cell(&s, "none");
    assert_eq!(c["verdict"], "failed-on-reuse", "{c}");
    let failed: Vec<Value> = rows(c).into_iter().filter(|r| r["reuse"]["outcome"] != "ok").collect();
    assert!(!failed.is_empty(), "{c}");
    for r in &failed {
        assert!(r["replaced_before_use"].is_string(), "the FIN'd connection was replaced: {r}");
        assert_ne!(r["reuse"]["local_addr"], r["local_addr"], "the request ran on the replacement: {r}");
        assert!(r["reuse"]["error"].as_str().unwrap_or("").contains("503"), "{r}");
    }
}

/// Defect 1: Envoy's upstream HTTP pool idles out after 1 h (its default; Istio sets none),
/// before a middlebox forgets the flow at 100 min: at reuse (150 min) Envoy opens a fresh
/// upstream connection. With `ISTIO_META_IDLE_TIMEOUT` at 24 h the app's own connections stay
/// up: `survived`; with the 1 h default they are closed (FIN) and replaced: `recovered`. A time
/// scale that left the 1 h default unscaled kept stale upstream connections: 503 on reuse.
#[test]
fn envoys_default_upstream_http_idle_timeout_is_scaled_like_any_other_duration() {
    let (_d, s) = run_yaml(
        "http-pool-default",
        "name: http-pool-default
summary: a scenario nobody here wrote (issue 17)
service: http
client: {pool: 2}
path:
  - sidecar: {route: service}
  - middlebox: {idle_timeout: 100m, on_unknown: reset}
idle: 150m
cells:
  - mitigation: none
    expect: recovered
  - mitigation: {istio-idle-timeout: 24h}
    expect: survived
",
        &[],
    );
    for name in ["none", "istio-idle-timeout"] {
        let c = cell(&s, name);
        let values = c["time_scale"]["values"].as_array().unwrap();
        let pool = values
            .iter()
            .find(|v| v["label"].as_str().unwrap().contains("upstream_http_idle_timeout"))
            .unwrap_or_else(|| panic!("{name}: the time scale knows Envoy's default: {values:?}"));
        assert_eq!(pool["real"], "1h", "{pool}");
        // What Envoy received: the scaled value, on the service's cluster.
        let secs = |v: &Value| v.as_str().and_then(|t| t.strip_suffix('s')).and_then(|t| t.parse::<f64>().ok());
        let sidecar = envoys(c).into_iter().find(|e| e["role"] == "sidecar").expect("a client sidecar");
        let got = secs(&sidecar["istio_config"]["cluster_http_idle_timeout"]);
        assert!(
            got.zip(secs(&pool["scaled"])).is_some_and(|(g, w)| (g - w).abs() < 0.001),
            "{name}: Envoy received {:?}, the time scale says {}",
            sidecar["istio_config"]["cluster_http_idle_timeout"],
            pool["scaled"]
        );
        assert_eq!(forgotten_segments(c), 0, "{name}: no segment met the forgotten flow: {c}");
    }
}

/// Defect 5: every pooled connection is taken out once, and each row says which socket
/// carried its request (hyper-util, pool 5, through the sidecar's connection manager).
#[test]
fn the_http_probe_takes_each_pooled_connection_out_once() {
    let (_d, s) = run_yaml(
        "http-each-once",
        "name: http-each-once
summary: a scenario nobody here wrote (issue 17)
service: http
client: {pool: 5}
path:
  - sidecar: {idle_timeout: 40m, route: service}
idle: 7m
cells:
  - mitigation: none
    expect: survived
",
        &[],
    );
    let c = cell(&s, "none");
    let r = rows(c);
    let mut ids: Vec<u64> = r.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3, 4], "{c}");
    for row in &r {
        assert_eq!(row["reuse"]["local_addr"], row["local_addr"], "each request on its own pooled socket: {row}");
        assert!(row["replaced_before_use"].is_null(), "{row}");
    }
}
