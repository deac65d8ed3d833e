//! `idlelab try` (issue 12): a team's own Istio YAML goes through Istio's code against the
//! failures; the verdict before and after, the diff of what Istio generated, and whether Istio
//! applied each EnvoyFilter.

mod common;
use common::*;

fn try_fix(args: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    require_lab();
    let out = tempdir();
    let mut all = vec!["try"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.path().to_str().unwrap()]);
    let o = run(&all);
    (o.status.code(), text(&o), out)
}

fn file(name: &str) -> String {
    fixture(&format!("try/{name}")).to_str().unwrap().to_string()
}

#[test]
fn an_envoyfilter_that_turns_the_idle_timeout_off_fixes_redis_idle() {
    let (code, all, out) = try_fix(&[&file("envoyfilter-idle-off.yaml"), "--scenario", "redis-idle"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("redis-idle: idle-closed → survived"), "{all}");
    assert!(all.contains("EnvoyFilter idlelab/tcp-idle-off: applied (networkfilter)"), "Istio's own accounting: {all}");
    assert!(
        all.lines().any(|l| l.contains("tcp_proxy idle_timeout: 6s → 0s")),
        "the field, as Istio generated it: {all}"
    );
    assert!(all.contains("namespace prod → idlelab"), "what was mapped is said: {all}");
    let s = summary(out.path());
    let c = cell(&s, "istio-yaml");
    assert_eq!(c["evidence"]["lab"]["envoy_filters"][0]["applied"][0], "networkfilter", "{c}");
    let notes = c["evidence"]["notes"].to_string();
    assert!(notes.contains("diff against the baseline: sidecar: listener") && notes.contains("6s → 0s"), "{notes}");
    assert!(std::fs::read_to_string(out.path().join("report.html")).unwrap().contains("diff against the baseline"));
    assert!(std::fs::read_to_string(out.path().join("try.txt")).unwrap().contains("→ survived"));
}

#[test]
fn an_envoyfilter_that_matches_nothing_is_reported_and_fixes_nothing() {
    let (code, all, _out) = try_fix(&[&file("envoyfilter-wrong-port.yaml"), "--scenario", "redis-idle"]);
    assert_eq!(code, Some(1), "the fix does not fix it: {all}");
    assert!(all.contains("redis-idle: idle-closed → idle-closed"), "{all}");
    assert!(
        all.contains("EnvoyFilter idlelab/tcp-idle-off-wrong-port: not applied: Istio matched none of its patches"),
        "{all}"
    );
    assert!(all.contains("no field that decides these failures changed"), "{all}");
}

#[test]
fn a_destination_rule_keepalive_fixes_the_nlb_behind_the_sidecar() {
    let (code, all, _out) = try_fix(&[&file("destinationrule-keepalive.yaml"), "--scenario", "redis-sidecar-upstream"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("redis-sidecar-upstream: reset-on-reuse → survived"), "{all}");
    assert!(all.contains("host redis.prod.svc.cluster.local → redis.idlelab.svc.cluster.local"), "{all}");
    assert!(
        all.lines().any(|l| l.contains("upstream_connection_options.tcp_keepalive: none → ")),
        "the cluster field in the diff: {all}"
    );
}

/// Bad input: exit 2 with file:line and the reason (Istio's own for a field it rejects), and
/// nothing started.
#[test]
fn bad_yaml_is_refused_with_file_line_and_istios_message() {
    for (name, line, says) in [
        ("bad-syntax.yaml", 5, "unclosed bracket"),
        ("unknown-kind.yaml", 1, "kind `ConfigMap`"),
        (
            "rejected-by-istio.yaml",
            7,
            "Istio rejected DestinationRule bad: cannot parse proto message: unknown field \"idleTimout\"",
        ),
    ] {
        let out = tempdir();
        let target = out.path().join("run");
        let o = run(&["try", &file(name), "--scenario", "redis-idle", "--out", target.to_str().unwrap()]);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {all}");
        assert!(all.contains(&format!("{name}:{line}:")) && all.contains(says), "{name}: {all}");
        assert!(!target.exists(), "{name}: nothing started, no run directory");
    }
}

/// The same YAML as a scenario cell: `mitigation: {istio-yaml: FILE}`.
#[test]
fn istio_yaml_works_as_a_scenario_cell() {
    let (_out, s) = run_scenario_ok(fixture("istio-yaml-scenario.yaml").to_str().unwrap());
    assert_eq!(cell(&s, "none")["verdict"], "idle-closed");
    let c = cell(&s, "istio-yaml");
    assert_eq!(c["verdict"], "survived", "{c}");
    let notes = c["evidence"]["notes"].to_string();
    assert!(notes.contains("Istio: EnvoyFilter idlelab/tcp-idle-off: applied"), "{notes}");
}

/// A DestinationRule for a host no service of the lab has would apply to nothing: refused
/// before anything runs, at the host, with the lab's hosts and the `--host-map` to write.
#[test]
fn a_host_that_matches_nothing_in_the_lab_is_refused_before_anything_runs() {
    let name = "destinationrule-unknown-host.yaml";
    let host = "payments-cache.shop.svc.cluster.local";
    for extra in [&[][..], &["--host-map", "payments-cache.shop.svc.cluster.local=payments"][..]] {
        let out = tempdir();
        let target = out.path().join("run");
        let f = file(name);
        let mut args = vec!["try", f.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", target.to_str().unwrap()]);
        let o = run(&args);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {all}");
        assert!(
            all.contains(&format!("{name}:9:9: DestinationRule payments-cache-keepalive: host `{host}`")),
            "{extra:?}: file:line:column of the host: {all}"
        );
        assert!(all.contains("matches none of the lab's hosts"), "{all}");
        assert!(
            all.contains("redis.idlelab.svc.cluster.local") && all.contains("istio-ingressgateway.istio-system"),
            "the hosts the lab has: {all}"
        );
        assert!(
            all.contains(&format!("hint: map your host onto the lab's service with --host-map {host}=redis")),
            "{all}"
        );
        if !extra.is_empty() {
            assert!(all.contains("(mapped by --host-map to `payments`)"), "{all}");
        }
        assert!(!all.contains("try:") && !all.contains("Istio rejected"), "nothing ran, not even validation: {all}");
        assert!(!target.exists(), "nothing started, no run directory");
    }

    // A mesh VirtualService none of whose hosts is the lab's: at its first host; the
    // DestinationRule beside it names the service by its short name and is not reported.
    let out = tempdir();
    let target = out.path().join("run");
    let o = run(&["try", &file("virtualservice-unknown-host.yaml"), "--out", target.to_str().unwrap()]);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(
        all.contains("virtualservice-unknown-host.yaml:14:11: VirtualService orders-timeout: host `orders.shop.svc.cluster.local`"),
        "{all}"
    );
    assert!(!all.contains("cache-idle"), "the matching DestinationRule is untouched: {all}");
    assert!(!target.exists());
}

/// The same DestinationRule, its host mapped onto the lab's service: it runs, and fixes the
/// load balancer behind the sidecar.
#[test]
fn a_host_mapped_with_host_map_runs() {
    let (code, all, _out) = try_fix(&[
        &file("destinationrule-unknown-host.yaml"),
        "--host-map",
        "payments-cache.shop.svc.cluster.local=redis",
        "--scenario",
        "redis-sidecar-upstream",
    ]);
    assert_eq!(code, Some(0), "{all}");
    assert!(!all.contains("matches none"), "{all}");
    assert!(all.contains("host payments-cache.shop.svc.cluster.local → redis.idlelab.svc.cluster.local"), "{all}");
    assert!(all.contains("redis-sidecar-upstream: reset-on-reuse → survived"), "{all}");
}
