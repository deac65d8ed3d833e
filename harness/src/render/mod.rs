//! One renderer of a cell's Kubernetes and Istio objects, owned by neither backend and used
//! by both: the local lab hands them to Istio's control plane on this host, the kind backend
//! applies them to a cluster.

pub mod istio;
pub mod manifests;
pub mod objects;

use crate::cells::Cell;
use crate::mitigation::{CLIENT_APP, IstioContext, IstioForm};
use std::collections::BTreeMap;

/// The kind cluster's service and pod CIDRs (`kind-config/cluster.yaml`, `networking`): what
/// the local lab's 198.18.0.0/15 stands for in a mitigation that names address ranges.
pub const KIND_RANGES: [&str; 2] = ["10.96.0.0/16", "10.244.0.0/16"];

/// A cell's Istio context: where its objects go and what they name. The three places a
/// cell's objects are rendered differ only in these arguments (see the three below).
fn context(
    cell: &Cell,
    namespace: &str,
    service_host: String,
    factor: u32,
    cluster_ranges: Option<Vec<String>>,
) -> IstioContext {
    IstioContext {
        namespace: namespace.into(),
        client_app: CLIENT_APP.into(),
        service_host,
        service_port: cell.real.service.port(),
        sidecar_pods: cell.real.sidecar_pods(),
        factor,
        cluster_ranges,
    }
}

/// In the local lab: the cell's own control plane, its scaled durations, the local target
/// (the gateway's Service, else the server's: a middlebox is a router there, not a Service).
pub fn local_context(cell: &Cell, namespace: &str) -> IstioContext {
    context(
        cell,
        namespace,
        crate::hop::target_host(&cell.real.path, cell.real.service, namespace),
        cell.time_scale.factor,
        None,
    )
}

/// On a cluster: the cell's namespace there, its scaled durations, the first hop with a
/// Service as target, and the cluster's ranges for a mitigation that names addresses.
pub fn cluster_context(cell: &Cell, namespace: &str) -> IstioContext {
    let ranges = KIND_RANGES.iter().map(|r| r.to_string()).collect();
    context(cell, namespace, cluster_target_host(cell, namespace), cell.time_scale.factor, Some(ranges))
}

/// In reports: the real-world resource a user would apply (unscaled), in a namespace named
/// after the scenario.
pub fn report_context(cell: &Cell) -> IstioContext {
    let ns = format!("idlelab-{}", cell.scenario);
    let host = format!("{}.{ns}.svc.cluster.local", cell.real.service.name());
    context(cell, &ns, host, 1, None)
}

/// The host the app connects to: the first hop with an address after the client sidecar
/// (a middlebox's Service, the ingress gateway), else the server's Service. A DestinationRule
/// for the client sidecar's upstream names this host.
pub fn cluster_target_host(cell: &Cell, ns: &str) -> String {
    cell.real
        .path
        .iter()
        .enumerate()
        .find_map(|(i, h)| h.on_path().cluster_host(i, ns))
        .unwrap_or_else(|| format!("{}.{ns}.svc.cluster.local", cell.real.service.name()))
}

/// The annotations of the `client` and `server` pods of a cell: sidecar injection as the path
/// says, each sidecar's explicit (scaled) idle timeout, then the mitigation's own annotations,
/// which win. The kind backend and Istio's control plane in the local lab both take these.
pub fn pod_annotations(
    cell: &Cell,
    ctx: &IstioContext,
    forms: &[IstioForm],
) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let scaled_sidecars = istio::scaled_idle_timeouts(cell);
    let mut annotations: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    let sidecar_on = |pod: &str| ctx.sidecar_pods.iter().any(|p| p == pod);
    for pod in ["client", "server"] {
        let a = annotations.entry(pod).or_default();
        a.insert("sidecar.istio.io/inject".into(), sidecar_on(pod).to_string());
        if let Some((_, d)) = scaled_sidecars.iter().find(|(p, _)| p == pod) {
            a.insert("proxy.istio.io/config".into(), istio::idle_timeout_annotation(*d));
        }
    }
    for f in forms {
        if let IstioForm::PodAnnotation { pod, key, value } = f {
            annotations
                .entry(if pod == "server" { "server" } else { "client" })
                .or_default()
                .insert(key.clone(), value.clone());
        }
    }
    annotations
}
