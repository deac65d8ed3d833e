//! Istio resources the kube backend adds around a cell's mitigation: the explicit, scaled
//! idle timeouts of a compressed run, and the ingress gateway's Gateway + VirtualService.

use crate::cells::Cell;
use crate::hop::{GatewayHop, Hop};
use crate::mitigation::envoyfilter_idle_timeout::TCP_PROXY_TYPE_URL;
use crate::mitigation::istio_idle_timeout::go_duration;
use crate::mitigation::to_yaml;
use crate::model::duration::Dur;
use serde_json::json;

const ISTIO_DEFAULT_IDLE: Dur = Dur::secs(3600);

/// The sidecars whose idle timeout must be set explicitly on the cluster: every one in a
/// compressed run (its scaled value), and any whose scenario value is not Istio's 1 h.
/// Taken from the path *before* the mitigation, which renders its own resources.
pub fn scaled_idle_timeouts(cell: &Cell) -> Vec<(String, Dur)> {
    let factor = cell.time_scale.factor;
    cell.baseline
        .path
        .iter()
        .filter_map(|h| match h {
            Hop::Sidecar(s) => Some(("client".to_string(), s.idle_timeout)),
            Hop::ServerSidecar(s) => Some(("server".to_string(), s.idle_timeout)),
            _ => None,
        })
        .filter(|(_, d)| factor > 1 || *d != ISTIO_DEFAULT_IDLE)
        .map(|(pod, d)| (pod, crate::model::scale::scale_millis(d, factor)))
        .collect()
}

pub fn idle_timeout_annotation(d: Dur) -> String {
    format!("proxyMetadata:\n  ISTIO_META_IDLE_TIMEOUT: {}\n", go_duration(d))
}

/// Gateway + VirtualService: the ingress gateway listens on `port` (TLS terminated with the
/// run's certificate, or plain TCP) and routes to `next_host`.
pub fn gateway_manifests(g: &GatewayHop, ns: &str, next_host: &str, port: u16) -> String {
    let mut server = json!({
        "port": {"number": port, "name": if g.tls { format!("tls-{port}") } else { format!("tcp-{port}") }, "protocol": if g.tls { "TLS" } else { "TCP" }},
        "hosts": ["*"]
    });
    if g.tls {
        server["tls"] = json!({"mode": "SIMPLE", "credentialName": gateway_secret_name(ns)});
    }
    let gateway = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "idlelab-gateway", "namespace": ns},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [server]}
    });
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "idlelab-gateway", "namespace": ns},
        "spec": {
            "hosts": ["*"],
            "gateways": ["idlelab-gateway"],
            "tcp": [{"match": [{"port": port}], "route": [{"destination": {"host": next_host, "port": {"number": port}}}]}]
        }
    });
    format!("{}---\n{}", to_yaml(&gateway), to_yaml(&vs))
}

/// The gateway's tcp_proxy idle timeout, scaled, merged by an EnvoyFilter (context GATEWAY).
pub fn gateway_idle_timeout(ns: &str, d: Dur, port: u16) -> String {
    let v = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": format!("idlelab-gateway-idle-{ns}"), "namespace": "istio-system", "labels": {CELL_LABEL: ns}},
        "spec": {
            "workloadSelector": {"labels": {"istio": "ingressgateway"}},
            "configPatches": [{
                "applyTo": "NETWORK_FILTER",
                "match": {"context": "GATEWAY", "listener": {"portNumber": port, "filterChain": {"filter": {"name": "envoy.filters.network.tcp_proxy"}}}},
                "patch": {"operation": "MERGE", "value": {
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {"@type": TCP_PROXY_TYPE_URL, "idle_timeout": format!("{}s", d.as_secs_f64())}
                }}
            }]
        }
    });
    to_yaml(&v)
}

/// The label every object a cell creates outside its own namespace carries (the gateway's
/// EnvoyFilters and Secret in istio-system): the cell's teardown deletes by it.
pub use crate::mitigation::CELL_LABEL;

/// The kinds of those objects, as kubectl names them: a cell's teardown and a run's sweep
/// delete these kinds by [`CELL_LABEL`].
pub const CELL_KINDS_IN_ISTIO_SYSTEM: &str = "envoyfilter,secret";

/// The `kubernetes.io/tls` Secret (namespace istio-system) the gateway's Gateway names.
pub fn gateway_secret_name(ns: &str) -> String {
    format!("idlelab-{ns}")
}

/// The gateway's `kubernetes.io/tls` Secret as a manifest to apply (a re-run replaces it),
/// labelled with its cell; the run's certificate and key go in at execution
/// (`$RUN_CERT_PEM`, `$RUN_KEY_PEM`, as YAML double-quoted strings with `\n` escapes).
pub fn gateway_secret_manifest(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {}\n  namespace: istio-system\n  labels:\n    {CELL_LABEL}: {ns}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: \"$RUN_CERT_PEM\"\n  tls.key: \"$RUN_KEY_PEM\"\n",
        gateway_secret_name(ns)
    )
}

/// The gateway's listener `socket_options` the scenario's path gives it (before any
/// mitigation), merged by an EnvoyFilter (context GATEWAY). `None` when it has none.
pub fn gateway_socket_options(g: &GatewayHop, ns: &str, port: u16, factor: u32) -> Option<String> {
    let mut options: Vec<serde_json::Value> = g
        .keepalive
        .map(|ka| {
            let scaled = crate::model::service::Keepalive {
                time: Dur::secs(crate::model::scale::scale_seconds(ka.time, factor)),
                interval: Dur::secs(crate::model::scale::scale_seconds(ka.interval, factor)),
                probes: ka.probes,
            };
            crate::mitigation::gateway_keepalive::socket_options(&scaled).as_array().cloned().unwrap_or_default()
        })
        .unwrap_or_default();
    options.extend(g.socket_options.iter().map(|o| o.envoy_json()));
    if options.is_empty() {
        return None;
    }
    let v = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": format!("idlelab-gateway-socket-options-{ns}"), "namespace": "istio-system", "labels": {CELL_LABEL: ns}},
        "spec": {
            "workloadSelector": {"labels": {"istio": "ingressgateway"}},
            "configPatches": [{
                "applyTo": "LISTENER",
                "match": {"context": "GATEWAY", "listener": {"portNumber": port}},
                "patch": {"operation": "MERGE", "value": {"socket_options": options}}
            }]
        }
    });
    Some(to_yaml(&v))
}

/// The Istio resources a cell's gateway hop adds besides Gateway + VirtualService, with what
/// each is for: its scaled idle timeout (a compressed run), its own socket options.
pub fn gateway_extras(cell: &Cell, ns: &str, port: u16) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let factor = cell.time_scale.factor;
    for hop in &cell.baseline.path {
        if let Hop::Gateway(g) = hop {
            if factor > 1 && !g.idle_timeout.is_zero() {
                let scaled = crate::model::scale::scale_millis(g.idle_timeout, factor);
                out.push((
                    gateway_idle_timeout(ns, scaled, port),
                    "the gateway's scaled tcp_proxy idle timeout, set explicitly",
                ));
            }
            if let Some(y) = gateway_socket_options(g, ns, port, factor) {
                out.push((y, "the gateway's listener socket options (the scenario's path)"));
            }
        }
    }
    out
}

/// The client sidecar's upstream HTTP pool idle timeout that no DestinationRule sets (Envoy's
/// 1 h default on the service's cluster, Istio's 5 min on PassthroughCluster), scaled and set
/// explicitly by an EnvoyFilter in a compressed run: a default that decides an outcome is a
/// duration like any other. `None` on a TCP port, without a client sidecar, at factor 1, or
/// when a DestinationRule sets the value (the mitigation renders it, scaled).
///
/// The patch replaces the cluster's `HttpProtocolOptions` entry whole (Istio merges a map's
/// `Any` values by replacing them), so it carries the protocol choice Istio makes for the
/// cluster too: HTTP/1.1 for an `http-*` service port, HTTP/2 for a `grpc-*` one, the downstream's protocol for
/// PassthroughCluster. The lab checks what Envoy received (`local::config_dump::http_pool_idle_mismatch`).
pub fn sidecar_http_pool_idle(cell: &Cell, ctx: &crate::mitigation::IstioContext) -> Option<(String, &'static str)> {
    let factor = cell.time_scale.factor;
    if factor <= 1 || !cell.real.service.is_http() {
        return None;
    }
    let (scaled, passthrough) = cell.scaled.sidecar()?.http_pool_idle_default()?;
    let (cluster, protocol) = if passthrough {
        (
            "PassthroughCluster".to_string(),
            json!({"use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}),
        )
    } else {
        (
            format!("outbound|{}||{}", ctx.service_port, ctx.service_host),
            // Istio's protocol for the port: HTTP/1.1 on `http-*`, HTTP/2 on `grpc-*`.
            if cell.real.service == crate::model::service::Service::Grpc {
                json!({"explicit_http_config": {"http2_protocol_options": {}}})
            } else {
                json!({"explicit_http_config": {"http_protocol_options": {}}})
            },
        )
    };
    let mut options = json!({
        "@type": HTTP_PROTOCOL_OPTIONS_TYPE_URL,
        "common_http_protocol_options": {"idle_timeout": format!("{}s", scaled.as_secs_f64())}
    });
    for (k, v) in protocol.as_object().expect("object") {
        options[k] = v.clone();
    }
    let v = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "idlelab-time-scale-http-pool", "namespace": ctx.namespace},
        "spec": {
            "workloadSelector": {"labels": {"app": ctx.client_app}},
            "configPatches": [{
                "applyTo": "CLUSTER",
                "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"name": cluster}},
                "patch": {"operation": "MERGE", "value": {
                    "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: options}
                }}
            }]
        }
    });
    Some((to_yaml(&v), "the client sidecar's upstream HTTP pool idle timeout (a default no resource sets), scaled"))
}

/// The key of Envoy's upstream HTTP options in a cluster's `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HTTP_PROTOCOL_OPTIONS_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
