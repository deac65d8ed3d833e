//! The Kubernetes and Istio objects a cluster would hold for a cell's client sidecar, as
//! YAML documents for Istio's control plane.
//!
//! ```text
//!   Namespace <ns>
//!   Service <svc> (clusterIP, port `tcp-<svc>`) + EndpointSlice (the server's address)
//!   Pod client (podIP, label app: idlelab-probe, the mitigation's annotations)
//!   the mitigation's DestinationRule / EnvoyFilter, exactly as `istio_resources()` renders them
//! ```
//!
//! The objects are k8s-openapi types, the same the kind backend applies; the mitigation's
//! forms are the ones the kind plan carries.

use super::Pod;
use crate::hop::Route;
use crate::mitigation::{IstioContext, IstioForm};
use k8s_openapi::api::core::v1::{Namespace, Pod as KubePod, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The app's label, which workload selectors (EnvoyFilter) name.
pub const CLIENT_APP: &str = "idlelab-probe";
/// A cluster IP for the Service when the app connects to an address Istio does not know.
const UNUSED_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

/// What a client sidecar needs: the documents, the pod, and the names Istio gives the chain
/// the app's connection takes.
pub struct SidecarInputs {
    pub docs: Vec<String>,
    pub pod: Pod,
    /// The outbound listener of the service (`<clusterIP>_<port>`), or `virtualOutbound`.
    pub listener: String,
    /// The service's outbound cluster, `outbound|<port>||<host>`.
    pub cluster: String,
    pub ctx: IstioContext,
    /// MeshConfig (a mesh-wide `tcpKeepalive`), when the path sets one.
    pub mesh: Option<String>,
}

fn meta(name: &str, namespace: Option<&str>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    }
}

fn yaml<T: serde::Serialize>(kind: &str, api_version: &str, v: &T) -> String {
    let mut value = serde_json::to_value(v).expect("serializable");
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    crate::kube::manifests::yaml(&value)
}

fn context(service: crate::scenario::Service, namespace: &str, sidecar_pods: Vec<String>, factor: u32) -> IstioContext {
    IstioContext {
        namespace: namespace.into(),
        client_app: CLIENT_APP.into(),
        service_host: format!("{}.{namespace}.svc.cluster.local", service.name()),
        service_port: service.port(),
        sidecar_pods,
        factor,
    }
}

/// The objects for a client sidecar in `namespace`, with `mitigation` rendered at `factor`
/// and no other annotation: the app at `app_ip`, the service's server at `server_ip`.
/// `route` decides whether the app's address is the Service's.
pub fn client_sidecar(
    service: crate::scenario::Service,
    route: Route,
    namespace: &str,
    app_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
    mitigation: &dyn crate::mitigation::Mitigation,
    factor: u32,
) -> SidecarInputs {
    let ctx = context(service, namespace, vec!["client".into()], factor);
    let forms = mitigation.istio_resources(&ctx);
    let annotations = forms
        .iter()
        .filter_map(|f| match f {
            IstioForm::PodAnnotation { pod, key, value } if pod == "client" => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    build(service, route, app_ip, server_ip, ctx, &forms, annotations, None)
}

/// The objects for the client sidecar of a cell, as the kind backend renders that cell: the
/// pod annotations of [`crate::kube::pod_annotations`] (explicit scaled idle timeouts, then
/// the mitigation's), the mitigation's resources at the cell's factor, and a mesh-wide
/// keepalive as MeshConfig. `None` when the path has no client sidecar.
pub fn for_cell(
    cell: &crate::cells::Cell,
    namespace: &str,
    app_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
) -> Option<SidecarInputs> {
    let hop = cell.real.sidecar()?;
    let ctx = context(cell.real.service, namespace, cell.real.sidecar_pods(), cell.time_scale.factor);
    let forms = cell.mitigation.as_mitigation().istio_resources(&ctx);
    let annotations = crate::kube::pod_annotations(cell, &ctx, &forms).remove("client").unwrap_or_default();
    let annotations = annotations.into_iter().filter(|(k, _)| k != "sidecar.istio.io/inject").collect();
    let mesh = cell.scaled.sidecar().and_then(|s| s.upstream_keepalive).map(|ka| {
        let (time, interval) = ka.whole_seconds();
        format!("tcpKeepalive:\n  time: {time}s\n  interval: {interval}s\n  probes: {}\n", ka.probes)
    });
    Some(build(cell.real.service, hop.route, app_ip, server_ip, ctx, &forms, annotations, mesh))
}

#[allow(clippy::too_many_arguments)]
fn build(
    service: crate::scenario::Service,
    route: Route,
    app_ip: Ipv4Addr,
    server_ip: Ipv4Addr,
    ctx: IstioContext,
    forms: &[IstioForm],
    annotations: Vec<(String, String)>,
    mesh: Option<String>,
) -> SidecarInputs {
    let name = service.name();
    let port = service.port();
    let namespace = ctx.namespace.clone();
    let namespace = namespace.as_str();
    let host = ctx.service_host.clone();
    let cluster_ip = if route == Route::Service { server_ip } else { UNUSED_CLUSTER_IP };
    let port_name = format!("tcp-{name}");
    let svc = Service {
        metadata: meta(name, Some(namespace), BTreeMap::new()),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            ports: Some(vec![ServicePort {
                name: Some(port_name.clone()),
                port: port.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let slice = EndpointSlice {
        metadata: meta(
            &format!("{name}-1"),
            Some(namespace),
            BTreeMap::from([("kubernetes.io/service-name".to_string(), name.to_string())]),
        ),
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint { addresses: vec![server_ip.to_string()], ..Default::default() }],
        ports: Some(vec![EndpointPort {
            name: Some(port_name),
            port: Some(port.into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    let labels = vec![("app".to_string(), CLIENT_APP.to_string())];
    let pod_object = KubePod {
        metadata: ObjectMeta {
            annotations: (!annotations.is_empty()).then(|| annotations.iter().cloned().collect()),
            ..meta("client", Some(namespace), labels.iter().cloned().collect())
        },
        status: Some(PodStatus {
            pod_ip: Some(app_ip.to_string()),
            phase: Some("Running".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut docs = vec![
        yaml("Namespace", "v1", &Namespace { metadata: meta(namespace, None, BTreeMap::new()), ..Default::default() }),
        yaml("Service", "v1", &svc),
        yaml("EndpointSlice", "discovery.k8s.io/v1", &slice),
        yaml("Pod", "v1", &pod_object),
    ];
    docs.extend(forms.iter().filter_map(|f| match f {
        IstioForm::Manifest { yaml, .. } => Some(yaml.clone()),
        _ => None,
    }));
    SidecarInputs {
        docs,
        pod: Pod { name: "client".into(), namespace: namespace.into(), ip: app_ip, labels, annotations },
        listener: match route {
            Route::Service => format!("{cluster_ip}_{port}"),
            Route::Passthrough => "virtualOutbound".into(),
        },
        cluster: format!("outbound|{port}||{host}"),
        ctx,
        mesh,
    }
}
