//! The Go probe's physics, on scenarios written here with durations unlike the shipped ones:
//! the request deadline alone ends a wait with no answer (a library timer never races it),
//! the reuse takes every pooled connection out of the pool exactly once and says which socket
//! carried each request, and the evidence says only what was measured (an RST is not a
//! kernel timeout, a reset is not configuration, an EOF is not a reset).

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

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

/// Write `yaml` (its `name:` names the file) into `dir`.
fn write_scenario(dir: &tempfile::TempDir, yaml: &str) -> PathBuf {
    let name = yaml.lines().find_map(|l| l.strip_prefix("name: ")).expect("a scenario has a name");
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    file
}

/// `idlelab <cmd> <files> <args> --out …`: every cell must match its expectation.
fn run_ok(cmd: &str, files: &[PathBuf], args: &[&str]) -> (tempfile::TempDir, Value) {
    let out = tempdir();
    let mut a = vec![cmd];
    a.extend(files.iter().map(|f| f.to_str().unwrap()));
    a.extend(args);
    a.extend(["--out", out.path().to_str().unwrap()]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(0), "{a:?}: every cell must match:\n{}", text(&o));
    let s = summary(out.path());
    (out, s)
}

fn cell_of<'a>(s: &'a Value, scenario: &str, prefix: &str) -> &'a Value {
    s["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["scenario"] == scenario && c["cell"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no cell {scenario}::{prefix} in {s}"))
}

fn replaced(row: &Value) -> Option<&str> {
    row["replaced_before_use"].as_str()
}

/// Whether a replaced connection's socket was closed before the reuse began: then its local
/// port was free, and the kernel may give it to the new connection (seen once: go-redis
/// closed connection 4 at 4351 ms and its request went out at 4354 ms on a new socket with
/// the same port), so an equal address is no sign of reuse.
fn closed_before(why: &str, reuse: &Value) -> bool {
    let closed_at = why
        .split_once("closed it at ")
        .and_then(|(_, rest)| rest.split_once(" ms"))
        .and_then(|(ms, _)| ms.trim().parse::<u64>().ok());
    matches!((closed_at, reuse["at_ms"].as_u64()), (Some(closed), Some(at)) if closed <= at)
}

/// What holds in every cell: each warmed connection is one row (ids 0..pool-1, each once);
/// a row that was not replaced was reused on its own socket (so no two such rows share one);
/// a replaced row's request went on another socket (a socket opened during the reuse may
/// carry a library's retry of another request too: net/http puts it back in its pool); an
/// outcome `reset` never has the text "EOF" (the outcome is what the socket that carried the
/// request saw).
fn check_rows(c: &Value) {
    let key = c["key"].as_str().unwrap_or("?");
    let pool = c["evidence"]["observations"]["pool"].as_u64().unwrap_or_else(|| panic!("{key}: no observations: {c}"));
    let rows = conns(c);
    let mut ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..pool).collect::<Vec<_>>(), "{key}: every pooled connection once: {c}");
    let mut own = HashSet::new();
    for r in &rows {
        let id = &r["id"];
        let on = r["reuse"]["local_addr"].as_str();
        match replaced(r) {
            None => {
                assert_eq!(
                    on,
                    r["local_addr"].as_str(),
                    "{key}: connection {id} was not replaced, so its own socket carried its request: {r}"
                );
                assert!(own.insert(on.unwrap().to_string()), "{key}: two rows reused one socket: {c}");
            }
            Some(why) => assert!(
                on.is_none() || on != r["local_addr"].as_str() || closed_before(why, &r["reuse"]),
                "{key}: connection {id} replaced ({why}) yet reused: {r}"
            ),
        }
        for a in [&r["reuse"], &r["retry_after_reconnect"]] {
            assert!(
                !(a["outcome"] == "reset" && a["error"] == "EOF"),
                "{key}: connection {id}: `reset` with the text EOF: {r}"
            );
        }
    }
}

/// Defect 1: go-sql-driver's read timeout raced the request deadline behind a device that
/// drops a forgotten flow (`invalid connection`, failed-on-reuse, on some runs and some
/// requests). The deadline alone ends the wait: hung on every run, every request `timeout`.
#[test]
fn database_sql_behind_a_silent_drop_hangs_every_request_on_every_run() {
    require_go_probe();
    let dir = tempdir();
    let file = write_scenario(
        &dir,
        "name: go-sql-drop\n\
         summary: database/sql behind a device that silently drops a flow it forgot\n\
         service: mysql\n\
         client: {library: go-sql-driver, pool: 3, keepalive: off}\n\
         path:\n  - middlebox: {idle_timeout: 200s, on_unknown: drop}\n\
         idle: 13m\n\
         cells:\n  - {mitigation: none, expect: hung}\n",
    );
    for pool in ["1", "3"] {
        let (_out, s) = run_ok("run", std::slice::from_ref(&file), &["--pool", pool, "--repeat", "5"]);
        let c = cell_of(&s, "go-sql-drop", "none");
        let repeats = c["repeats"].as_array().unwrap_or_else(|| panic!("pool {pool}: no repeats: {c}"));
        assert_eq!(repeats.len(), 5, "{c}");
        assert!(repeats.iter().all(|r| r["verdict"] == "hung"), "pool {pool}: hung on every run: {repeats:?}");
        assert_eq!(c["verdict"], "hung");
        assert!(c["stable"].as_bool().unwrap(), "{c}");
        check_rows(c);
        let rows = conns(c);
        assert_eq!(rows.len(), pool.parse::<usize>().unwrap());
        for r in &rows {
            assert_eq!(r["reuse"]["outcome"], "timeout", "pool {pool}: every request waited out its deadline: {r}");
            let waited = r["reuse"]["latency_ms"].as_u64().unwrap();
            assert!(
                (2000..3000).contains(&waited),
                "pool {pool}: the request timeout (2 s) ended it, not a library timer (3 s): {r}"
            );
            assert_eq!(r["retry_after_reconnect"]["outcome"], "ok", "a fresh connection crosses the device: {r}");
        }
        assert!(
            c["explanation"].as_str().unwrap().starts_with(&format!("{pool} of {pool} requests got no answer")),
            "{c}"
        );
    }
}

/// Defect 2: each library takes every pooled connection out of its pool exactly once (held
/// until all are taken), and each row is the socket that carried its request.
#[test]
fn each_library_reuses_every_pooled_connection_exactly_once() {
    require_go_probe();
    let dir = tempdir();
    let sidecar = |name: &str, service: &str, library: &str, pool: u32, closed: &str| {
        format!(
            "name: {name}\nsummary: {library}, {pool} pooled connections\nservice: {service}\n\
             client: {{library: {library}, pool: {pool}}}\npath:\n  - sidecar: {{idle_timeout: 1h}}\nidle: 13m\n\
             cells:\n  - {{mitigation: none, expect: survived}}\n  - {{mitigation: {{istio-idle-timeout: 10m}}, expect: {closed}}}\n"
        )
    };
    let files = [
        write_scenario(&dir, &sidecar("once-go-redis", "redis", "go-redis", 5, "recovered")),
        write_scenario(&dir, &sidecar("once-go-sql", "mysql", "go-sql-driver", 3, "recovered")),
        write_scenario(&dir, &sidecar("once-gomemcache", "memcached", "gomemcache", 5, "idle-closed")),
        write_scenario(
            &dir,
            "name: once-go-http\nsummary: net/http, 3 pooled connections\nservice: http\n\
             client: {library: go-net-http, pool: 3}\npath: []\nidle: 13m\n\
             cells:\n  - {mitigation: {pool-max-idle: 1h}, expect: survived}\n  - {mitigation: none, expect: recovered}\n",
        ),
    ];
    let (_out, s) = run_ok("matrix", &files, &["--jobs", "4"]);
    for (scenario, pool) in [("once-go-redis", 5), ("once-go-sql", 3), ("once-gomemcache", 5), ("once-go-http", 3)] {
        let cells: Vec<&Value> = s["cells"].as_array().unwrap().iter().filter(|c| c["scenario"] == scenario).collect();
        assert_eq!(cells.len(), 2, "{scenario}: {s}");
        for c in cells {
            check_rows(c);
            let rows = conns(c);
            assert_eq!(rows.len(), pool, "{c}");
            if c["verdict"] == "survived" {
                assert!(
                    rows.iter().all(|r| r["reuse"]["outcome"] == "ok" && replaced(r).is_none()),
                    "{scenario}: all {pool} pooled connections answered: {c}"
                );
                assert!(
                    c["explanation"].as_str().unwrap().starts_with(&format!("all {pool} pooled connections answered")),
                    "{c}"
                );
            }
        }
    }
    // Where the pool replaced every connection, each request went on its own new socket.
    for (scenario, prefix) in [("once-go-redis", "istio"), ("once-go-sql", "istio"), ("once-go-http", "none")] {
        let c = cell_of(&s, scenario, prefix);
        let rows = conns(c);
        assert!(rows.iter().all(|r| replaced(r).is_some() && r["reuse"]["local_addr"].is_string()), "{c}");
    }
    let closed = cell_of(&s, "once-gomemcache", "istio");
    assert!(
        conns(closed)
            .iter()
            .all(|r| r["peer_closed_ms"].is_u64() && r["reuse"]["error"] == "EOF" && r["reuse"]["outcome"] == "eof"),
        "gomemcache handed out each closed connection once: {closed}"
    );
    // net/http's own 90 s idle limit closed healthy sockets: that, and only that, is configuration.
    let own = cell_of(&s, "once-go-http", "none");
    assert!(conns(own).iter().all(|r| replaced(r).is_some_and(|w| w.contains("configuration"))), "{own}");
    for c in [cell_of(&s, "once-go-redis", "istio"), cell_of(&s, "once-go-sql", "istio")] {
        assert!(
            conns(c).iter().all(|r| r["peer_closed_ms"].is_u64()
                && replaced(r).is_some_and(|w| w.contains("FIN") && !w.contains("configuration"))),
            "the sidecar's FIN, not configuration: {c}"
        );
    }
}

/// Defect 3a: go-redis behind the sidecar and an NLB that forgets Envoy's idle upstream flows.
/// A connection reset (on reuse, or while idle when Envoy's keepalive meets the NLB) is never
/// described as the pool's configuration; the pool's own idle limit is.
#[test]
fn go_redis_calls_it_configuration_only_when_its_pool_closed_a_healthy_socket() {
    require_go_probe();
    let dir = tempdir();
    let file = write_scenario(
        &dir,
        "name: go-redis-nlb-reset\n\
         summary: go-redis behind the sidecar, an NLB (250 s) forgetting Envoy's idle upstream flows\n\
         service: redis\n\
         client: {library: go-redis, pool: 4}\n\
         path:\n  - sidecar: {idle_timeout: 1h}\n  - middlebox: {preset: nlb, idle_timeout: 250s}\n\
         idle: 13m\n\
         cells:\n\
         \x20 - {mitigation: none, expect: reset-on-reuse}\n\
         \x20 - {mitigation: {dr-tcp-keepalive: {time: 300s, interval: 30s, probes: 3}}, expect: recovered}\n\
         \x20 - {mitigation: {pool-max-idle: 5m}, expect: recovered}\n",
    );
    let (_out, s) = run_ok("run", &[file], &[]);
    for prefix in ["none", "dr-tcp-keepalive"] {
        let c = cell_of(&s, "go-redis-nlb-reset", prefix);
        check_rows(c);
        for r in conns(c) {
            assert!(
                !replaced(&r).is_some_and(|w| w.contains("configuration")),
                "{prefix}: a reset socket is not the pool's configuration: {r}"
            );
        }
    }
    let none = cell_of(&s, "go-redis-nlb-reset", "none");
    assert!(conns(none).iter().all(|r| r["reuse"]["outcome"] == "reset"), "each held connection met the RST: {none}");
    let kept = cell_of(&s, "go-redis-nlb-reset", "dr-tcp-keepalive");
    assert!(
        conns(kept).iter().all(|r| replaced(r).is_some_and(|w| w.contains("RST") || w.contains("FIN"))),
        "Envoy closed the downstream connections when its keepalive met the NLB; the evidence says how: {kept}"
    );
    let limit = cell_of(&s, "go-redis-nlb-reset", "pool-max-idle");
    check_rows(limit);
    assert!(
        conns(limit)
            .iter()
            .all(|r| replaced(r).is_some_and(|w| w.contains("closed it itself") && w.contains("configuration"))),
        "ConnMaxIdleTime closed healthy sockets: {limit}"
    );
}

/// Defect 3b: keepalive probes through a device that drops a flow it forgot go unanswered,
/// and the kernel gives up (ETIMEDOUT) while the pool idles: the kernel's timeout, not an RST,
/// whether the library's request meets the error (gomemcache: `timed-out`) or its pool's
/// check at checkout reads it first (go-redis: replaced, `recovered`).
#[test]
fn a_keepalive_give_up_behind_a_dropping_device_is_the_kernels_timeout() {
    require_go_probe();
    let dir = tempdir();
    let yaml = |name: &str, service: &str, library: &str, expect: &str| {
        format!(
            "name: {name}\nsummary: {library} straight through a dropping device, keepalive 40 s / 20 s / 3\n\
             service: {service}\nclient: {{library: {library}, pool: 3, keepalive: {{time: 40s, interval: 20s, probes: 3}}}}\n\
             path:\n  - middlebox: {{idle_timeout: 30s, on_unknown: drop}}\nidle: 5m\n\
             cells:\n  - {{mitigation: none, expect: {expect}}}\n"
        )
    };
    let files = [
        write_scenario(&dir, &yaml("ka-drop-gomemcache", "memcached", "gomemcache", "timed-out")),
        write_scenario(&dir, &yaml("ka-drop-go-redis", "redis", "go-redis", "recovered")),
    ];
    let (_out, s) = run_ok("matrix", &files, &["--jobs", "2"]);
    for scenario in ["ka-drop-gomemcache", "ka-drop-go-redis"] {
        let c = cell_of(&s, scenario, "none");
        check_rows(c);
        for r in conns(c) {
            assert!(
                r["timed_out_ms"].is_u64() && r["peer_reset_ms"].is_null(),
                "{scenario}: the kernel timed the connection out while idle, no RST came: {r}"
            );
        }
    }
    let mc = cell_of(&s, "ka-drop-gomemcache", "none");
    assert_eq!(mc["verdict"], "timed-out", "{mc}");
    assert!(conns(mc).iter().all(|r| r["reuse"]["outcome"] == "timed-out"), "gomemcache's write met ETIMEDOUT: {mc}");
    let redis = cell_of(&s, "ka-drop-go-redis", "none");
    assert!(
        conns(redis).iter().all(|r| replaced(r)
            .is_some_and(|w| w.contains("timed it out") && !w.contains("RST") && !w.contains("configuration"))),
        "{redis}"
    );
}

/// The row seen once in CI: the old socket closed 3 ms before the reuse, and the new socket
/// got the same port. A socket still open at the reuse is no excuse.
#[test]
fn an_equal_address_is_excused_only_after_the_old_socket_closed() {
    let why = "the peer's FIN had arrived at 3352 ms while it idled; go-redis closed it at 4351 ms (at checkout, during request 0); request 3, which it stands for, went to a new connection (198.18.1.1:35430)";
    assert!(closed_before(why, &serde_json::json!({"at_ms": 4354})));
    assert!(!closed_before(why, &serde_json::json!({"at_ms": 4000})), "closed after the reuse began");
    assert!(!closed_before("the peer's FIN had arrived at 3352 ms", &serde_json::json!({"at_ms": 4354})));
}
