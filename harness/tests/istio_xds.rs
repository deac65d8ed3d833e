//! Istio's own code configures every proxy of the lab (issue 10): the cell's objects go in
//! (the kind backend's, with the mitigation's `istio_resources()`), Istio 1.30's generators
//! and pilot-agent turn them into Envoy config, and the field comes out of each Envoy's
//! config dump. Cells are rendered at time scale 1, so values are the real ones.

mod common;
use common::*;
use idlelab::local::config_dump::tcp_proxies;
use idlelab::local::{config_dump, control_plane, xds_only};
use idlelab::model::service::TimeScaleSpec;
use idlelab::render::objects::{self, ProxyRole};
use idlelab::tools;
use serde_json::Value;
use std::net::Ipv4Addr;

const ADDRS: objects::Addresses =
    objects::Addresses { app: Ipv4Addr::new(198, 18, 200, 1), server: Ipv4Addr::new(198, 18, 200, 2), gateway: None };

fn require_istio() {
    require_lab();
    assert!(
        tools::xds_bin().is_file() && tools::agent_bin().is_file() && tools::bootstrap_template().is_file(),
        "Istio's binaries are missing: run `just setup` (it builds istio/ with Go)"
    );
}

/// The one cell of a scenario written inline: `service`, `path` and the mitigation.
fn cell(service: &str, path: &str, mitigation: &str) -> idlelab::cells::Cell {
    let text = format!(
        "name: t\nsummary: s\nservice: {service}\nclient: {{pool: 1}}\npath: {path}\nidle: 2h\ncells: [{{mitigation: {mitigation}, expect: survived}}]\n"
    );
    let s = idlelab::scenario::parse(&text, std::path::Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    idlelab::cells::expand(&s, &[], Some(TimeScaleSpec::Factor(1))).unwrap().remove(0)
}

const CLIENT: &str = "[{sidecar: {}}]";

fn run_objects(o: &objects::CellObjects) -> xds_only::ObjectsRun {
    require_istio();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(xds_only::objects_config(o)).unwrap_or_else(|e| panic!("{e:#}"))
}

fn run(service: &str, path: &str, mitigation: &str) -> (objects::CellObjects, xds_only::ObjectsRun) {
    run_at(service, path, mitigation, ADDRS)
}

fn run_at(
    service: &str,
    path: &str,
    mitigation: &str,
    addrs: objects::Addresses,
) -> (objects::CellObjects, xds_only::ObjectsRun) {
    let c = cell(service, path, mitigation);
    let ca = idlelab::certs::generate().unwrap();
    let cert = objects::GatewayCert { cert_pem: &ca.cert_pem, key_pem: &ca.key_pem };
    let o = objects::for_cell(&c, "lab", addrs, Some(cert)).expect("a path with a proxy");
    let r = run_objects(&o);
    (o, r)
}

fn listener<'a>(r: &'a xds_only::ObjectsRun, role: ProxyRole, name: &str) -> &'a Value {
    config_dump::dynamic_listener(&r.proxy(role).dump, name).unwrap_or_else(|| panic!("no dynamic listener {name}"))
}

fn idle_timeouts(l: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        tcp_proxies(l).iter().map(|t| t["idle_timeout"].as_str().unwrap_or("unset").to_string()).collect();
    v.dedup();
    v
}

fn fields(o: &objects::CellObjects, r: &xds_only::ObjectsRun, role: ProxyRole) -> Value {
    config_dump::deciding_fields(&r.proxy(role).dump, o.proxy(role).unwrap())
}

/// Listeners and clusters arrive over ADS; only Istio's own static listeners (stats,
/// readiness) are in the bootstrap, none of ours.
#[test]
fn the_sidecars_listeners_come_from_istio_over_ads() {
    let (o, r) = run("redis", CLIENT, "none");
    let dump = &r.proxy(ProxyRole::Sidecar).dump;
    let listeners = config_dump::dump_section(dump, "ListenersConfigDump").unwrap();
    let statics: Vec<&str> = listeners["static_listeners"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["listener"]["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(statics.iter().all(|n| *n == "0.0.0.0_15090" || *n == "0.0.0.0_15021"), "{statics:?}");
    let bootstrap = config_dump::dump_section(dump, "BootstrapConfigDump").unwrap();
    assert!(bootstrap["bootstrap"]["dynamic_resources"]["ads_config"].is_object(), "ADS in the bootstrap");
    let client = o.proxy(ProxyRole::Sidecar).unwrap();
    // Istio 1.30 leaves the field unset without IDLE_TIMEOUT or a DestinationRule: Envoy's own
    // tcp_proxy default, 1 h, applies.
    let l = listener(&r, ProxyRole::Sidecar, &client.listener);
    assert_eq!(idle_timeouts(l), vec!["unset"], "Istio's default is Envoy's 1 h: {l}");
    assert!(config_dump::dynamic_listener(dump, "virtualOutbound").is_some());
    assert!(config_dump::dynamic_cluster(dump, &client.cluster).is_some());
    assert!(r.control_plane_ready_ms < 30_000 && r.proxy(ProxyRole::Sidecar).proxy_ready_ms < 20_000);
    let capture = &r.proxy(ProxyRole::Sidecar).capture;
    assert!(capture.contains("redirect to :15001"), "istio-iptables installed the capture: {capture}");
}

#[test]
fn istio_meta_idle_timeout_reaches_the_outbound_listener_and_the_server_pods_inbound() {
    let path = "[{sidecar: {}}, {server-sidecar: {}}]";
    let (o, r) = run("redis", path, "{istio-idle-timeout: 24h}");
    let client = o.proxy(ProxyRole::Sidecar).unwrap();
    assert_eq!(idle_timeouts(listener(&r, ProxyRole::Sidecar, &client.listener)), vec!["86400s"]);
    let passthrough = idle_timeouts(listener(&r, ProxyRole::Sidecar, "virtualOutbound"));
    assert!(passthrough.iter().any(|t| t == "86400s"), "the passthrough chain too: {passthrough:?}");
    let inbound = fields(&o, &r, ProxyRole::ServerSidecar);
    assert_eq!(inbound["idle_timeout"], "86400s", "inbound on the server pod: {inbound}");
    let capture = &r.proxy(ProxyRole::ServerSidecar).capture;
    assert!(capture.contains("redirect to :15006"), "inbound capture by istio-iptables: {capture}");

    // A DestinationRule reaches the client's outbound chain only (istio#60009).
    let (o, r) = run("redis", path, "{dr-idle-timeout: 24h}");
    assert_eq!(fields(&o, &r, ProxyRole::Sidecar)["idle_timeout"], "86400s");
    let inbound = fields(&o, &r, ProxyRole::ServerSidecar);
    assert!(inbound["idle_timeout"].as_str().unwrap().starts_with("unset"), "{inbound}");
}

#[test]
fn the_envoyfilter_turns_the_idle_timeout_off() {
    let (o, r) = run("redis", CLIENT, "{envoyfilter-idle-timeout: 0s}");
    assert_eq!(fields(&o, &r, ProxyRole::Sidecar)["idle_timeout"], "0s");
}

#[test]
fn a_destination_rule_sets_the_service_clusters_keepalive_and_idle_timeout() {
    let (o, r) = run("redis", CLIENT, "{dr-tcp-keepalive: {time: 300s, interval: 75s, probes: 9}}");
    let dump = &r.proxy(ProxyRole::Sidecar).dump;
    let cluster = config_dump::dynamic_cluster(dump, &o.proxy(ProxyRole::Sidecar).unwrap().cluster).unwrap();
    let ka = &cluster["upstream_connection_options"]["tcp_keepalive"];
    assert_eq!(
        (ka["keepalive_time"].as_u64(), ka["keepalive_interval"].as_u64(), ka["keepalive_probes"].as_u64()),
        (Some(300), Some(75), Some(9)),
        "{cluster}"
    );
    let passthrough = config_dump::dynamic_cluster(dump, "PassthroughCluster").unwrap();
    assert!(
        passthrough["upstream_connection_options"].is_null(),
        "PassthroughCluster is not the rule's host: {passthrough}"
    );

    let (o, r) = run("redis", CLIENT, "{dr-idle-timeout: 24h}");
    assert_eq!(fields(&o, &r, ProxyRole::Sidecar)["idle_timeout"], "86400s");
    let passthrough = idle_timeouts(listener(&r, ProxyRole::Sidecar, "virtualOutbound"));
    assert!(
        passthrough.iter().all(|t| t == "unset"),
        "the passthrough chain keeps Envoy's 1 h default: {passthrough:?}"
    );
}

/// An `http-*` port gets Envoy's HTTP connection manager with Istio's default retry policy;
/// `http.idleTimeout` lands on the service cluster's upstream pool.
#[test]
fn an_http_port_gets_the_connection_manager_and_the_dr_sets_the_upstream_pool_idle() {
    let (o, r) = run("http", CLIENT, "{dr-http-idle-timeout: 5m}");
    let f = fields(&o, &r, ProxyRole::Sidecar);
    assert_eq!(f["listener"], "0.0.0.0_8080");
    assert!(f.get("idle_timeout").is_none(), "no tcp_proxy on an http port: {f}");
    assert!(f["http_idle_timeout"].as_str().unwrap().starts_with("unset"), "{f}");
    assert_eq!(f["cluster_http_idle_timeout"], "300s", "{f}");
    let retry = &f["retry_policy"];
    assert_eq!(retry["num_retries"], 2, "Istio's default retries: {f}");
    let on = retry["retry_on"].as_str().unwrap();
    assert!(on.contains("connect-failure") && !on.contains("reset"), "{on}");

    let (o, r) = run("http", CLIENT, "{istio-idle-timeout: 24h}");
    let f = fields(&o, &r, ProxyRole::Sidecar);
    assert_eq!(f["http_idle_timeout"], "86400s", "IDLE_TIMEOUT sets the connection manager's: {f}");
    assert!(f.get("cluster_http_idle_timeout").is_none_or(|v| v.as_str().unwrap().starts_with("unset")), "{f}");
}

/// The ingress gateway: `pilot-agent proxy router`, TLS from the Gateway's credentialName
/// Secret over SDS, and the gateway-keepalive EnvoyFilter on its listener.
#[test]
fn the_gateway_terminates_tls_from_its_secret_and_takes_the_keepalive_filter() {
    let addrs = objects::Addresses { gateway: Some(Ipv4Addr::new(198, 18, 200, 3)), ..ADDRS };
    let path = "[{sidecar: {}}, {gateway: {tls: true}}, {server-sidecar: {}}]";
    let (o, r) = run_at("https", path, "{gateway-keepalive: {time: 300s, interval: 75s, probes: 9}}", addrs);
    let f = fields(&o, &r, ProxyRole::Gateway);
    assert_eq!(f["listener"], "0.0.0.0_8443", "{f}");
    let opts = f["socket_options"].as_array().unwrap_or_else(|| panic!("{f}"));
    // Envoy's config dump writes int64 fields as strings.
    let int = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    assert!(
        opts.iter().any(|o| int(&o["name"]) == Some(4) && int(&o["int_value"]) == Some(300)),
        "TCP_KEEPIDLE 300: {f}"
    );
    let dump = &r.proxy(ProxyRole::Gateway).dump;
    let secrets = config_dump::dump_section(dump, "SecretsConfigDump").unwrap();
    let names: Vec<&str> =
        secrets["dynamic_active_secrets"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(names.contains(&"kubernetes://idlelab-lab"), "the credentialName Secret came over SDS: {names:?}");
    assert!(r.proxy(ProxyRole::Gateway).capture.trim().is_empty(), "a gateway has no capture");
    // The client sidecar's upstream is the gateway's Service.
    assert_eq!(
        o.proxy(ProxyRole::Sidecar).unwrap().cluster,
        "outbound|8443||istio-ingressgateway.istio-system.svc.cluster.local"
    );
}

#[test]
fn excluded_ports_and_ranges_are_left_out_of_istios_capture() {
    let (_, r) = run("redis", CLIENT, "{exclude-outbound-ports: [6379]}");
    let capture = &r.proxy(ProxyRole::Sidecar).capture;
    assert!(capture.contains("6379"), "{capture}");
    let (_, r) = run("redis", CLIENT, "{exclude-outbound-ip-ranges: [198.18.0.0/15]}");
    let capture = &r.proxy(ProxyRole::Sidecar).capture;
    assert!(capture.contains("198.18.0.0/15"), "{capture}");
}

/// Istio's validation comes first: a resource the webhook would refuse never reaches a proxy.
#[test]
fn a_resource_istio_rejects_is_refused_with_istios_message() {
    require_istio();
    let mut o = objects::for_cell(&cell("redis", CLIENT, "none"), "lab", ADDRS, None).unwrap();
    o.docs.push(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: lab}\nspec:\n  host: redis.lab.svc.cluster.local\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}\n".into(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(xds_only::objects_config(&o)).err().expect("rejected");
    let r = e.downcast_ref::<control_plane::Rejected>().unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!((r.kind.as_str(), r.name.as_str()), ("DestinationRule", "bad"));
    assert!(r.message.contains("max connections must be non-negative"), "{r}");
}
