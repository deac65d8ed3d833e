//! Istio's own code configures the sidecar (issue 10): the mitigation's Istio resource goes in
//! (the same `istio_resources()` the kind backend applies), Istio 1.30's generators and
//! pilot-agent turn it into Envoy config, and the field comes out of Envoy's config dump.

mod common;
use common::*;
use idlelab::duration::Dur;
use idlelab::hop::Route;
use idlelab::istio::{self, objects, tcp_proxies};
use idlelab::mitigation::{Mitigation, MitigationSpec};
use idlelab::scenario::Service;
use serde_json::Value;
use std::net::Ipv4Addr;

const APP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);

fn require_istio() {
    require_lab();
    assert!(
        istio::xds_bin().is_file() && istio::agent_bin().is_file() && istio::bootstrap_template().is_file(),
        "Istio's binaries are missing: run `just setup` (it builds istio/ with Go)"
    );
}

fn mitigation(yaml: &str) -> MitigationSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn sidecar(route: Route, m: &dyn Mitigation) -> (objects::SidecarInputs, istio::SidecarRun) {
    require_istio();
    let inputs = objects::client_sidecar(Service::Redis, route, "lab", APP, SERVER, m, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = rt.block_on(istio::sidecar_config(&inputs)).unwrap_or_else(|e| panic!("{e:#}"));
    (inputs, run)
}

fn listener<'a>(run: &'a istio::SidecarRun, name: &str) -> &'a Value {
    istio::dynamic_listener(&run.dump, name).unwrap_or_else(|| panic!("no dynamic listener {name}"))
}

fn idle_timeouts(l: &Value) -> Vec<String> {
    tcp_proxies(l).iter().map(|t| t["idle_timeout"].as_str().unwrap_or("unset").to_string()).collect()
}

/// Listeners and clusters arrive over ADS; only Istio's own static listeners (stats,
/// readiness) are in the bootstrap, none of ours.
#[test]
fn the_sidecars_listeners_come_from_istio_over_ads() {
    let (inputs, run) = sidecar(Route::Service, mitigation("none").as_mitigation());
    let listeners = istio::dump_section(&run.dump, "ListenersConfigDump").unwrap();
    let statics: Vec<&str> = listeners["static_listeners"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["listener"]["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(statics.iter().all(|n| *n == "0.0.0.0_15090" || *n == "0.0.0.0_15021"), "{statics:?}");
    let bootstrap = istio::dump_section(&run.dump, "BootstrapConfigDump").unwrap();
    assert!(bootstrap["bootstrap"]["dynamic_resources"]["ads_config"].is_object(), "ADS in the bootstrap");
    let l = listener(&run, &inputs.listener);
    // Istio 1.30 leaves the field unset without IDLE_TIMEOUT or a DestinationRule: Envoy's own
    // tcp_proxy default, 1 h, applies.
    assert_eq!(idle_timeouts(l), vec!["unset"], "Istio's default is Envoy's 1 h: {l}");
    assert!(istio::dynamic_listener(&run.dump, "virtualOutbound").is_some());
    assert!(istio::dynamic_cluster(&run.dump, &inputs.cluster).is_some());
    assert!(run.control_plane_ready_ms < 30_000 && run.proxy_ready_ms < 20_000);
    assert!(run.capture.contains("redirect to :15001"), "istio-iptables installed the capture: {}", run.capture);
}

#[test]
fn istio_meta_idle_timeout_reaches_every_outbound_tcp_proxy() {
    let (inputs, run) = sidecar(Route::Service, mitigation("istio-idle-timeout: 24h").as_mitigation());
    assert_eq!(idle_timeouts(listener(&run, &inputs.listener)), vec!["86400s"]);
    let passthrough = idle_timeouts(listener(&run, "virtualOutbound"));
    assert!(passthrough.iter().any(|t| t == "86400s"), "the passthrough chain too: {passthrough:?}");
}

#[test]
fn the_envoyfilter_turns_the_idle_timeout_off() {
    let (inputs, run) = sidecar(Route::Service, mitigation("envoyfilter-idle-timeout: 0s").as_mitigation());
    assert_eq!(idle_timeouts(listener(&run, &inputs.listener)), vec!["0s"]);
}

#[test]
fn a_destination_rule_sets_the_service_clusters_keepalive_and_idle_timeout() {
    let m = mitigation("dr-tcp-keepalive: {time: 300s, interval: 75s, probes: 9}");
    let (inputs, run) = sidecar(Route::Service, m.as_mitigation());
    let cluster = istio::dynamic_cluster(&run.dump, &inputs.cluster).unwrap();
    let ka = &cluster["upstream_connection_options"]["tcp_keepalive"];
    assert_eq!(
        (ka["keepalive_time"].as_u64(), ka["keepalive_interval"].as_u64(), ka["keepalive_probes"].as_u64()),
        (Some(300), Some(75), Some(9)),
        "{cluster}"
    );
    let passthrough = istio::dynamic_cluster(&run.dump, "PassthroughCluster").unwrap();
    assert!(
        passthrough["upstream_connection_options"].is_null(),
        "PassthroughCluster is not the rule's host: {passthrough}"
    );

    let (inputs, run) = sidecar(Route::Service, mitigation("dr-idle-timeout: 24h").as_mitigation());
    assert_eq!(idle_timeouts(listener(&run, &inputs.listener)), vec!["86400s"]);
    let passthrough = idle_timeouts(listener(&run, "virtualOutbound"));
    assert!(
        passthrough.iter().all(|t| t == "unset"),
        "the passthrough chain keeps Envoy's 1 h default: {passthrough:?}"
    );
}

#[test]
fn excluded_ports_and_ranges_are_left_out_of_istios_capture() {
    let (_, run) = sidecar(Route::Service, mitigation("exclude-outbound-ports: [6379]").as_mitigation());
    assert!(run.capture.contains("6379"), "{}", run.capture);
    let (_, run) = sidecar(Route::Service, mitigation("exclude-outbound-ip-ranges: [198.18.0.0/15]").as_mitigation());
    assert!(run.capture.contains("198.18.0.0/15"), "{}", run.capture);
}

/// Istio's validation comes first: a resource the webhook would refuse never reaches a proxy.
#[test]
fn a_resource_istio_rejects_is_refused_with_istios_message() {
    require_istio();
    let mut inputs = objects::client_sidecar(
        Service::Redis,
        Route::Service,
        "lab",
        APP,
        SERVER,
        mitigation("none").as_mitigation(),
        1,
    );
    inputs.docs.push(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: lab}\nspec:\n  host: redis.lab.svc.cluster.local\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}\n".into(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(istio::sidecar_config(&inputs)).err().expect("rejected");
    let r = e.downcast_ref::<istio::Rejected>().unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!((r.kind.as_str(), r.name.as_str()), ("DestinationRule", "bad"));
    assert!(r.message.contains("max connections must be non-negative"), "{r}");
    let _ = Dur::secs(0);
}
