//! Reading what Envoy received from Istio's control plane (its config dump): the fields of
//! a proxy's config that decide these failures, for the chain the app's connection takes.

use crate::render::objects;
use serde_json::Value;

/// The config dump's section whose `@type` is named `name` (`ListenersConfigDump`, …).
pub fn dump_section<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump["configs"].as_array()?.iter().find(|c| c["@type"].as_str().and_then(|t| t.rsplit('.').next()) == Some(name))
}

/// A listener Envoy received over xDS, by name.
pub fn dynamic_listener<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "ListenersConfigDump")?["dynamic_listeners"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
        .map(|l| &l["active_state"]["listener"])
}

/// A cluster Envoy received over xDS, by name.
pub fn dynamic_cluster<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "ClustersConfigDump")?["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .find(|c| c["cluster"]["name"] == name)
        .map(|c| &c["cluster"])
}

/// A route configuration Envoy received over RDS, by name.
pub fn dynamic_route_config<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump_section(dump, "RoutesConfigDump")?["dynamic_route_configs"]
        .as_array()?
        .iter()
        .find(|r| r["route_config"]["name"] == name)
        .map(|r| &r["route_config"])
}

/// The filter chains of `p`'s listener that carry the app's connection: the catch-all chain
/// of `virtualOutbound` (passthrough), the chains matching the port on an inbound listener,
/// every chain otherwise.
pub fn chains<'a>(listener: &'a Value, p: &objects::ProxyInputs) -> Vec<&'a Value> {
    let all = listener["filter_chains"].as_array().into_iter().flatten();
    match p.listener.as_str() {
        "virtualOutbound" => all.filter(|fc| fc["name"] == "virtualOutbound-catchall-tcp").collect(),
        "virtualInbound" => {
            all.filter(|fc| fc["filter_chain_match"]["destination_port"] == u64::from(p.port)).collect()
        }
        _ => all.collect(),
    }
}

/// The RDS route configurations the chains' HTTP connection managers name (they arrive
/// after the listener).
pub fn route_names(listener: &Value, p: &objects::ProxyInputs) -> Vec<String> {
    chains(listener, p)
        .iter()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .filter_map(|f| f["typed_config"]["rds"]["route_config_name"].as_str().map(str::to_string))
        .collect()
}

/// The distinct values of a field across chains, or one value when they agree.
fn distinct(values: Vec<Value>) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    match out.len() {
        0 => Value::Null,
        1 => out.remove(0),
        _ => Value::Array(out),
    }
}

fn duration_or_default(v: &Value, default: &str) -> Value {
    match v {
        Value::String(d) => Value::String(d.clone()),
        _ => Value::String(format!("unset (Envoy's default: {default})")),
    }
}

/// Whether the client sidecar's upstream HTTP pool got the idle timeout the time scale
/// modelled (`expected`, scaled), read from the `cluster_http_idle_timeout` of
/// [`deciding_fields`]; unset is Envoy's 1 h. The model decides the cell's factor: a config
/// that disagrees (a rule the lab did not see sets the pool's idle timeout) would run the cell
/// on durations the time scale never checked, so it is an error, not a verdict.
pub fn http_pool_idle_mismatch(fields: &Value, expected: crate::model::duration::Dur) -> Option<String> {
    let got = fields["cluster_http_idle_timeout"].as_str().unwrap_or("unset");
    let ms = if got.starts_with("unset") {
        Some(3_600_000.0)
    } else {
        got.strip_suffix('s').and_then(|v| v.parse::<f64>().ok()).map(|s| s * 1000.0)
    };
    let want = expected.0.as_millis() as f64;
    match ms {
        Some(ms) if (ms - want).abs() < 0.5 => None,
        _ => Some(format!(
            "its upstream HTTP pool's idle timeout is {got} in the config Envoy received, but the time scale modelled {expected}: a resource the lab does not model sets it, and the cell's orderings were not checked against it"
        )),
    }
}

/// The fields of a proxy's config that decide these failures, as Envoy received them from
/// Istio's control plane, for the chain the app's connection takes through it: the
/// `tcp_proxy` `idle_timeout`, or for HTTP the connection manager's idle timeout and the
/// route's retry policy; the cluster's `tcp_keepalive` and HTTP pool idle timeout; the
/// listener's `socket_options`.
pub fn deciding_fields(dump: &Value, p: &objects::ProxyInputs) -> Value {
    let listener = dynamic_listener(dump, &p.listener);
    let chains = listener.map(|l| chains(l, p)).unwrap_or_default();
    let filters: Vec<&Value> = chains
        .iter()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .map(|f| &f["typed_config"])
        .collect();
    let is = |f: &&&Value, suffix: &str| f["@type"].as_str().is_some_and(|t| t.ends_with(suffix));
    let tcp: Vec<&Value> = filters.iter().filter(|f| is(f, "TcpProxy")).copied().collect();
    let hcm: Vec<&Value> = filters.iter().filter(|f| is(f, "HttpConnectionManager")).copied().collect();
    let mut fields = serde_json::json!({
        "source": "ADS from Istio's discovery server (idlelab-xds)",
        "role": p.role.name(),
        "listener": p.listener,
        "cluster": p.cluster,
    });
    if !tcp.is_empty() {
        fields["idle_timeout"] =
            distinct(tcp.iter().map(|t| duration_or_default(&t["idle_timeout"], "3600s")).collect());
    }
    if !hcm.is_empty() {
        fields["http_idle_timeout"] = distinct(
            hcm.iter()
                .map(|h| duration_or_default(&h["common_http_protocol_options"]["idle_timeout"], "3600s"))
                .collect(),
        );
        let retries: Vec<Value> = hcm
            .iter()
            .filter_map(|h| h["rds"]["route_config_name"].as_str())
            .filter_map(|name| dynamic_route_config(dump, name))
            .flat_map(|rc| rc["virtual_hosts"].as_array().cloned().unwrap_or_default())
            .filter(|vh| {
                vh["domains"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d.as_str().is_some_and(|d| d.starts_with(p.cluster.rsplit('|').next().unwrap_or(""))))
                })
            })
            .flat_map(|vh| vh["routes"].as_array().cloned().unwrap_or_default())
            .map(|r| r["route"]["retry_policy"].clone())
            .collect();
        fields["retry_policy"] = distinct(retries);
    }
    if tcp.is_empty() && hcm.is_empty() {
        fields["idle_timeout"] = "no tcp_proxy or HTTP connection manager on that chain".into();
    }
    if let Some(c) = dynamic_cluster(dump, &p.cluster) {
        let ka = &c["upstream_connection_options"]["tcp_keepalive"];
        fields["tcp_keepalive"] = if ka.is_null() { Value::Null } else { ka.clone() };
        fields["lb_policy"] = lb_policy(c).into();
        let http = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        if !http.is_null() {
            fields["cluster_http_idle_timeout"] =
                duration_or_default(&http["common_http_protocol_options"]["idle_timeout"], "3600s");
        }
    }
    if let Some(opts) = listener.map(|l| &l["socket_options"]).filter(|o| !o.is_null()) {
        fields["socket_options"] = opts.clone();
    }
    let section = dump_section(dump, "ListenersConfigDump");
    fields["dynamic_listeners"] =
        section.and_then(|l| l["dynamic_listeners"].as_array()).map(|a| a.len()).unwrap_or(0).into();
    fields["static_listeners"] = section
        .and_then(|l| l["static_listeners"].as_array())
        .map(|a| a.iter().map(|l| l["listener"]["name"].clone()).collect())
        .unwrap_or_default();
    fields
}

/// How a cluster picks an endpoint: its `load_balancing_policy` extension's name when Istio
/// set one, else `lb_policy` (the dump omits Envoy's default, ROUND_ROBIN).
pub fn lb_policy(cluster: &Value) -> String {
    if let Some(name) = cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]["name"].as_str() {
        return name.to_string();
    }
    cluster["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_string()
}

/// The endpoints Envoy holds for `cluster`, from its admin `/clusters` text
/// (`<cluster>::<ip>:<port>::health_flags::healthy`), healthy ones only.
pub fn healthy_hosts(clusters: &str, cluster: &str) -> Vec<String> {
    let mut hosts: Vec<String> = clusters
        .lines()
        .filter_map(|l| l.strip_prefix(cluster)?.strip_prefix("::"))
        .filter_map(|rest| {
            let (host, field) = rest.split_once("::")?;
            (field.starts_with("health_flags::") && rest.ends_with("::healthy")).then(|| host.to_string())
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Every `tcp_proxy` of a listener (each filter chain), as Istio generated it.
pub fn tcp_proxies(listener: &Value) -> Vec<&Value> {
    listener["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
        .filter(|f| f["name"] == "envoy.filters.network.tcp_proxy")
        .map(|f| &f["typed_config"])
        .collect()
}

#[cfg(test)]
mod lb_tests {
    use super::*;

    #[test]
    fn reads_the_lb_policy_and_the_healthy_hosts() {
        assert_eq!(lb_policy(&serde_json::json!({"lb_policy": "LEAST_REQUEST"})), "LEAST_REQUEST");
        assert_eq!(lb_policy(&serde_json::json!({"name": "c"})), "ROUND_ROBIN");
        let text = "outbound|50051||grpc.idlelab.svc.cluster.local::observability_name::x\n\
            outbound|50051||grpc.idlelab.svc.cluster.local::198.18.0.70:50051::health_flags::healthy\n\
            outbound|50051||grpc.idlelab.svc.cluster.local::198.18.0.70:50051::cx_active::1\n\
            outbound|50051||grpc.idlelab.svc.cluster.local::198.18.0.66:50051::health_flags::healthy\n\
            outbound|50051||grpc.idlelab.svc.cluster.local::198.18.0.74:50051::health_flags::/failed_eds_health\n\
            outbound|6379||redis.idlelab.svc.cluster.local::198.18.0.9:6379::health_flags::healthy\n";
        assert_eq!(
            healthy_hosts(text, "outbound|50051||grpc.idlelab.svc.cluster.local"),
            vec!["198.18.0.66:50051", "198.18.0.70:50051"]
        );
    }
}
