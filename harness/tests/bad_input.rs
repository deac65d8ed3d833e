//! Bad input: a clear error (file, line, what was expected, a hint), exit code 2, nothing created.

mod common;
use common::*;

/// Run the bad fixture `file`: exit 2, nothing created; returns stderr.
fn refused(file: &str) -> String {
    let out = tempdir();
    let target = out.path().join("run");
    let path = fixture(&format!("bad/{file}"));
    let o = run(&["run", path.to_str().unwrap(), "--out", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{file}: {}", text(&o));
    assert!(!target.exists(), "{file}: nothing created");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn expect_refused(file: &str, line_col: &str, words: &[&str]) {
    let err = refused(file);
    assert!(err.contains(&format!("{file}:{line_col}")), "{file}: names the file, line and column: {err}");
    for w in words {
        assert!(err.contains(w), "{file}: mentions `{w}`: {err}");
    }
    assert!(err.contains("hint:"), "{file}: gives a hint: {err}");
}

/// Refused with exit 2 at exactly `file:line:column`, the message saying `says`, and a hint
/// that says `hint` and none of `not_hint`; nothing created.
fn refused_at(file: &str, line_col: &str, says: &[&str], hint: &str, not_hint: &[&str]) {
    let err = refused(file);
    assert!(err.contains(&format!("{file}:{line_col}: ")), "{file}: at {line_col}: {err}");
    for w in says {
        assert!(err.contains(w), "{file}: mentions `{w}`: {err}");
    }
    let h = err.split("hint:").nth(1).unwrap_or_else(|| panic!("{file}: gives a hint: {err}"));
    assert!(h.contains(hint), "{file}: the hint says `{hint}`: {err}");
    for n in not_hint {
        assert!(!h.contains(n), "{file}: the hint does not say `{n}`: {err}");
    }
}

/// Errors found after decoding (the library, `command`, the order of hops) point at the value
/// like a syntax error does.
#[test]
fn a_client_library_error_points_at_the_value() {
    refused_at(
        "unknown-library.yaml",
        "6:12",
        &["client.library `pymemcache` is not one the lab knows"],
        "memcache-async",
        &[],
    );
    refused_at(
        "library-wrong-service.yaml",
        "4:28",
        &["client.library `go-redis` does not speak mysql"],
        "go-sql-driver",
        &[],
    );
    refused_at(
        "command-without-external.yaml",
        "7:5",
        &["client.command is only for `library: external`, not redis-rs"],
        "library: external",
        &[],
    );
    refused_at(
        "misplaced-sidecar.yaml",
        "6:5",
        &["path[1] (sidecar)", "must be the first hop"],
        "from the app to the server",
        &[],
    );
}

/// A malformed duration is refused with what is wrong with it, not "durations take a unit".
#[test]
fn a_malformed_duration_says_what_is_wrong() {
    refused_at(
        "negative-duration.yaml",
        "7:21",
        &["a duration cannot be negative, found `-45m`"],
        "drop the sign (`45m`)",
        &["take a unit"],
    );
    refused_at(
        "unknown-unit.yaml",
        "4:24",
        &["`M` in `15M` is not a duration unit"],
        "`m` is minutes",
        &["take a unit"],
    );
}

#[test]
fn unknown_key() {
    expect_refused("unknown-key.yaml", "5:", &["unknown field `rout`", "route"]);
}

#[test]
fn bare_duration() {
    expect_refused("bare-duration.yaml", "6:", &["duration", "70m"]);
}

#[test]
fn unknown_mitigation() {
    expect_refused("unknown-mitigation.yaml", "9:", &["istio-idle-timout", "istio-idle-timeout"]);
}

#[test]
fn unknown_verdict() {
    expect_refused("unknown-verdict.yaml", "8:", &["closed", "idle-closed"]);
}

#[test]
fn sidecar_mitigation_without_sidecar() {
    expect_refused("no-sidecar.yaml", "8:", &["exclude-outbound-ports", "no `sidecar` hop"]);
}

#[test]
fn not_yaml() {
    expect_refused("not-yaml.yaml", "2:", &["expected"]);
}

#[test]
fn a_time_scale_that_flips_an_ordering_is_refused_naming_the_pair() {
    expect_refused("flipping-scale.yaml", "9:", &["time scale 1200", "path[0].sidecar.idle_timeout", "`idle`"]);
    // The same from the command line, on a shipped scenario.
    let o = run(&["run", "redis-idle", "--mitigation", "none", "--time-scale", "1200", "--out", "/nonexistent/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("breaks the ordering"), "{}", text(&o));
}

#[test]
fn a_race_between_deciding_durations_is_refused_at_any_scale() {
    expect_refused(
        "race.yaml",
        "10:",
        &["`client.heartbeat`", "`path[0].sidecar.idle_timeout`", "race", "another value"],
    );
    let path = fixture("bad/race.yaml");
    let o = run(&["run", path.to_str().unwrap(), "--time-scale", "1", "--out", "/nonexistent/x"]);
    assert_eq!(o.status.code(), Some(2), "unscaled it is still a race: {}", text(&o));
}

#[test]
fn unknown_scenario_name_lists_the_shipped_ones() {
    let o = run(&["run", "redis-idel"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no scenario named `redis-idel`") && err.contains("redis-idle"), "{err}");
}

#[test]
fn missing_envoy_is_a_prerequisite_error() {
    let o = idlelab(&["run", "redis-idle", "--out", "/tmp/idlelab-test-never"])
        .env("ENVOY_BIN", "/nonexistent/envoy")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("envoy") && err.contains("just setup"), "{err}");
    assert!(!std::path::Path::new("/tmp/idlelab-test-never").exists());
}

#[test]
fn every_shipped_scenario_is_valid() {
    let o = run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("redis-idle: ok") && out.contains("redis-idle-passthrough: ok"), "{out}");
    assert!(out.contains("decides nothing on this path"), "the clamped keepalive interval is reported: {out}");
}

/// gRPC balance scenarios: a Deployment of no replicas, a scale event after the run, and a
/// policy the client library does not have, each at its line with a hint.
#[test]
fn grpc_balance_input_is_checked_at_its_line() {
    refused_at("grpc-zero-replicas.yaml", "4:11", &["replicas is 0, expected 1 to 32"], "replicas: 4", &[]);
    refused_at(
        "grpc-scale-after-end.yaml",
        "7:5",
        &["events[0]: scale at 10s is after the end of the run (duration 8s)"],
        "before 8s",
        &[],
    );
    refused_at(
        "grpc-round-robin-tonic.yaml",
        "5:30",
        &["client.lb `round_robin`: tonic has no `round_robin` policy", "balance_list"],
        "pick_first",
        &[],
    );
    refused_at(
        "grpc-middlebox-path.yaml",
        "6:3",
        &["takes only `sidecar` (one per client pod) and `server-sidecar` (one per replica) hops, not `middlebox`"],
        "remove that hop",
        &[],
    );
    refused_at(
        "grpc-lb-without-sidecar.yaml",
        "9:17",
        &["dr-load-balancer changes the client sidecar, and this path has no `sidecar` hop"],
        "give the path the hop",
        &[],
    );
    refused_at(
        "grpc-keepalive-on-redis.yaml",
        "5:9",
        &["`client.http2_keep_alive_interval` is gRPC's HTTP/2 keepalive, and this service is redis"],
        "client.keepalive",
        &[],
    );
    refused_at(
        "grpc-duration-without-replicas.yaml",
        "5:11",
        &["`duration` is for a gRPC balance run (`service: grpc` with `replicas`), not an idle cell"],
        "replicas: N",
        &[],
    );
    refused_at(
        "grpc-go-balance-list.yaml",
        "5:32",
        &["client.lb `balance_list`: `balance_list` is tonic's; grpc-go balances with `round_robin`"],
        "grpc-go: `pick_first`",
        &["tonic:"],
    );
    refused_at(
        "grpc-sidecar-balance-list.yaml",
        "6:14",
        &["client-side balancing over every replica's address with a client sidecar", "PassthroughCluster"],
        "lb: pick_first",
        &[],
    );
    refused_at(
        "grpc-sidecar-settings.yaml",
        "6:3",
        &["a gRPC balance run's `sidecar` takes no settings yet"],
        "- sidecar: {}",
        &[],
    );
    refused_at(
        "grpc-grace-tonic.yaml",
        "7:17",
        &["tonic's server has no MaxConnectionAgeGrace; give the scenario `server: {library: grpc-go}`"],
        "change the scenario",
        &["hop"],
    );
    refused_at(
        "grpc-lb-lowercase.yaml",
        "8:36",
        &["unknown variant `round_robin`, expected one of LEAST_REQUEST, ROUND_ROBIN, RANDOM"],
        "scenarios/README.md",
        &[],
    );
}
