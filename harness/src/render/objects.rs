//! The Kubernetes and Istio objects a cluster would hold for a cell, as YAML documents for
//! Istio's control plane, and the proxies that stand for its pods.
//!
//! ```text
//!   Namespace <ns>                      Namespace istio-system (with a gateway)
//!   Service <svc> (port `tcp-|http-|https-<svc>`, selector app=<svc>) + EndpointSlice
//!   Pod client   (app: idlelab-probe, the client sidecar's annotations)
//!   Pod <svc>    (app: <svc>, the server sidecar's annotations)          with a server sidecar
//!   Pod + Service istio-ingressgateway, Gateway + VirtualService, Secret  with a gateway hop
//!   the mitigation's DestinationRule / EnvoyFilter, exactly as `istio_resources()` renders them
//! ```
//!
//! The Istio resources, the pod annotations and the port names come from the functions the
//! kind backend applies (`render::pod_annotations`, `render::istio`, `render::manifests::port_name`,
//! the mitigation's forms). What differs is what a cluster's controllers would add: the local
//! lab writes the Pod (with its IP) and the EndpointSlice that a Deployment and the endpoint
//! controller would create. A middlebox is a router in the local lab, not a pod behind a
//! Service, so the app addresses the next hop that has one (the gateway, else the server).

use crate::hop::{Hop, Route};
use crate::mitigation::{IstioContext, IstioForm};
use k8s_openapi::api::core::v1::{
    Namespace, Pod as KubePod, PodSpec, PodStatus, Secret, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The pod a proxy stands for: what the downward API and the injector would give it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ip: Ipv4Addr,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Pod {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Its SPIFFE identity, as Istio's CA would put it in the workload certificate.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://cluster.local/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

/// Where Istio's ingress gateway lives, and its Service.
use crate::hop::{GATEWAY_NAMESPACE, GATEWAY_SERVICE};
/// The app's label, which workload selectors (EnvoyFilter) name.
use crate::mitigation::CLIENT_APP;
/// The gateway's service account (Istio's chart).
const GATEWAY_SA: &str = "istio-ingressgateway-service-account";
/// Cluster IPs for Services the app does not address (their clients use the endpoints).
const UNUSED_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);
const UNUSED_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 253);

pub use crate::hop::ProxyRole;

/// One proxy of the cell: its pod, and the names Istio gives the chain the app's connection
/// takes through it.
#[derive(Clone, Debug)]
pub struct ProxyInputs {
    pub role: ProxyRole,
    pub pod: Pod,
    /// The listener that carries the connection: `<clusterIP>_<port>` or `virtualOutbound`
    /// (client), `virtualInbound` (server), `0.0.0.0_<port>` (gateway).
    pub listener: String,
    /// The port of the filter chain (inbound and gateway listeners have one per port).
    pub port: u16,
    /// The cluster the chain sends to.
    pub cluster: String,
}

/// Everything Istio's control plane is given for a cell.
pub struct CellObjects {
    pub docs: Vec<String>,
    /// MeshConfig additions (a mesh-wide `tcpKeepalive`), when the path sets one.
    pub mesh: Option<String>,
    pub proxies: Vec<ProxyInputs>,
    pub ctx: IstioContext,
}

impl CellObjects {
    pub fn proxy(&self, role: ProxyRole) -> Option<&ProxyInputs> {
        self.proxies.iter().find(|p| p.role == role)
    }
}

/// Where the cell's pods are.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub app: Ipv4Addr,
    pub server: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
}

/// The gateway's TLS certificate (PEM), as the `kubernetes.io/tls` Secret holds it.
pub struct GatewayCert<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn yaml<T: serde::Serialize>(kind: &str, api_version: &str, v: &T) -> String {
    let mut value = serde_json::to_value(v).expect("serializable");
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    crate::render::manifests::yaml(&value)
}

/// A Service with one port named as the kind backend names it, and its EndpointSlice.
fn service_docs(
    name: &str,
    namespace: &str,
    selector: (&str, &str),
    cluster_ip: Ipv4Addr,
    service: crate::model::service::Service,
    endpoints: &[Ipv4Addr],
) -> [String; 2] {
    let port_name = crate::render::manifests::port_name(service);
    let port = service.port();
    let svc = Service {
        metadata: meta(name, Some(namespace), &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            selector: Some(BTreeMap::from([(selector.0.to_string(), selector.1.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some(port_name.clone()),
                port: port.into(),
                // The API server defaults it to `port`; Istio's fake client does not, and
                // the inbound chain would match port 0.
                target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    [yaml("Service", "v1", &svc), endpoint_slice_doc(name, namespace, service, endpoints)]
}

/// The EndpointSlice the endpoint controller keeps for Service `name`: one endpoint per Ready pod.
pub fn endpoint_slice_doc(
    name: &str,
    namespace: &str,
    service: crate::model::service::Service,
    endpoints: &[Ipv4Addr],
) -> String {
    let slice = EndpointSlice {
        metadata: meta(&format!("{name}-1"), Some(namespace), &[("kubernetes.io/service-name", name)]),
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|ip| Endpoint { addresses: vec![ip.to_string()], ..Default::default() })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(crate::render::manifests::port_name(service)),
            port: Some(service.port().into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    yaml("EndpointSlice", "discovery.k8s.io/v1", &slice)
}

/// A running Pod with its IP, labels, annotations and service account.
fn pod_doc(pod: &Pod) -> String {
    let labels: Vec<(&str, &str)> = pod.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let object = KubePod {
        metadata: ObjectMeta {
            annotations: (!pod.annotations.is_empty()).then(|| pod.annotations.iter().cloned().collect()),
            ..meta(&pod.name, Some(&pod.namespace), &labels)
        },
        spec: Some(PodSpec { service_account_name: Some(pod.service_account.clone()), ..Default::default() }),
        status: Some(PodStatus {
            pod_ip: Some(pod.ip.to_string()),
            phase: Some("Running".into()),
            ..Default::default()
        }),
    };
    yaml("Pod", "v1", &object)
}

/// The labels the injector adds to a pod with a sidecar: auto mTLS sends Istio mTLS to an
/// endpoint with `security.istio.io/tlsMode: istio`.
fn injected_labels(app: &str) -> Vec<(String, String)> {
    vec![
        ("app".to_string(), app.to_string()),
        ("security.istio.io/tlsMode".to_string(), "istio".to_string()),
        ("service.istio.io/canonical-name".to_string(), app.to_string()),
    ]
}

/// A running pod of app `app` with Istio's sidecar: the injector's labels, the default
/// service account.
fn injected_pod(name: String, namespace: &str, ip: Ipv4Addr, app: &str, annotations: Vec<(String, String)>) -> Pod {
    Pod {
        name,
        namespace: namespace.into(),
        service_account: "default".into(),
        ip,
        labels: injected_labels(app),
        annotations,
    }
}

/// A server pod's sidecar: `virtualInbound`'s chain for `port`, to `inbound|<port>||`.
fn inbound_proxy(pod: Pod, port: u16) -> ProxyInputs {
    ProxyInputs {
        role: ProxyRole::ServerSidecar,
        pod,
        listener: "virtualInbound".into(),
        port,
        cluster: format!("inbound|{port}||"),
    }
}

/// The manifests among a mitigation's Istio forms (its DestinationRule, EnvoyFilter).
fn manifests(forms: &[IstioForm]) -> impl Iterator<Item = String> + '_ {
    forms.iter().filter_map(|f| match f {
        IstioForm::Manifest { yaml, .. } => Some(yaml.clone()),
        _ => None,
    })
}

/// A pod's annotations as the injector leaves them on a running pod: the injection switch
/// itself is gone (the pod has its sidecar, or not).
fn annotations_of(
    annotations: &mut BTreeMap<&'static str, BTreeMap<String, String>>,
    pod: &str,
) -> Vec<(String, String)> {
    annotations.remove(pod).unwrap_or_default().into_iter().filter(|(k, _)| k != "sidecar.istio.io/inject").collect()
}

/// The objects of a cell as the kind backend renders it, at `addrs`. `None` when the path has
/// no Istio proxy. `cert` is the gateway's certificate when it terminates TLS.
pub fn for_cell(
    cell: &crate::cells::Cell,
    namespace: &str,
    addrs: Addresses,
    cert: Option<GatewayCert<'_>>,
) -> Option<CellObjects> {
    let path = &cell.real.path;
    if !path.iter().any(|h| matches!(h, Hop::Sidecar(_) | Hop::ServerSidecar(_) | Hop::Gateway(_))) {
        return None;
    }
    let ctx = super::local_context(cell, namespace);
    let forms = cell.mitigation.as_mitigation().istio_resources(&ctx);
    let mut annotations = super::pod_annotations(cell, &ctx, &forms);
    let mut annotations_of = |pod: &str| annotations_of(&mut annotations, pod);
    let service = cell.real.service;
    let (name, port) = (service.name(), service.port());
    let route = cell.real.sidecar().map(|s| s.route).unwrap_or(Route::Service);
    let addressed = |ip: Ipv4Addr, unused: Ipv4Addr| if route == Route::Service { ip } else { unused };
    let server_host = format!("{name}.{namespace}.svc.cluster.local");
    let mut docs =
        vec![yaml("Namespace", "v1", &Namespace { metadata: meta(namespace, None, &[]), ..Default::default() })];
    let mut proxies = Vec::new();

    // The server, its Service and (with a sidecar) its Pod.
    let server_cluster_ip =
        if addrs.gateway.is_some() { UNUSED_CLUSTER_IP } else { addressed(addrs.server, UNUSED_CLUSTER_IP) };
    docs.extend(service_docs(name, namespace, ("app", name), server_cluster_ip, service, &[addrs.server]));
    if path.iter().any(|h| matches!(h, Hop::ServerSidecar(_))) {
        let pod = injected_pod(name.into(), namespace, addrs.server, name, annotations_of("server"));
        docs.push(pod_doc(&pod));
        proxies.push(inbound_proxy(pod, port));
    }

    // The ingress gateway: its Pod and Service, Gateway + VirtualService to the server, the
    // certificate's Secret, and the explicit scaled idle timeout of a compressed run.
    let gateway = path.iter().find_map(|h| match h {
        Hop::Gateway(g) => Some(g),
        _ => None,
    });
    if let (Some(g), Some(gw_ip)) = (gateway, addrs.gateway) {
        docs.push(yaml(
            "Namespace",
            "v1",
            &Namespace { metadata: meta(GATEWAY_NAMESPACE, None, &[]), ..Default::default() },
        ));
        let labels = [("app", GATEWAY_SERVICE), ("istio", "ingressgateway")];
        let pod = Pod {
            name: GATEWAY_SERVICE.into(),
            namespace: GATEWAY_NAMESPACE.into(),
            service_account: GATEWAY_SA.into(),
            ip: gw_ip,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: vec![],
        };
        docs.push(pod_doc(&pod));
        docs.extend(service_docs(
            GATEWAY_SERVICE,
            GATEWAY_NAMESPACE,
            ("istio", "ingressgateway"),
            addressed(gw_ip, UNUSED_GATEWAY_IP),
            service,
            &[gw_ip],
        ));
        docs.push(crate::render::istio::gateway_manifests(g, namespace, &server_host, port));
        if let Some(c) = cert.filter(|_| g.tls) {
            let mut secret = Secret {
                metadata: meta(&crate::render::istio::gateway_secret_name(namespace), Some(GATEWAY_NAMESPACE), &[]),
                type_: Some("kubernetes.io/tls".into()),
                ..Default::default()
            };
            // `data`, not `stringData`: the API server turns one into the other, the fake
            // client Istio reads here does not.
            let bytes = |pem: &str| k8s_openapi::ByteString(pem.as_bytes().to_vec());
            secret.data = Some(BTreeMap::from([
                ("tls.crt".to_string(), bytes(c.cert_pem)),
                ("tls.key".to_string(), bytes(c.key_pem)),
            ]));
            docs.push(yaml("Secret", "v1", &secret));
        }
        docs.extend(crate::render::istio::gateway_extras(cell, namespace, port).into_iter().map(|(y, _)| y));
        proxies.push(ProxyInputs {
            role: ProxyRole::Gateway,
            pod,
            listener: format!("0.0.0.0_{port}"),
            port,
            cluster: format!("outbound|{port}||{server_host}"),
        });
    }

    // The client pod.
    if cell.real.sidecar().is_some() {
        let pod = injected_pod("client".into(), namespace, addrs.app, CLIENT_APP, annotations_of("client"));
        docs.push(pod_doc(&pod));
        let target_ip = match addrs.gateway {
            Some(gw) => addressed(gw, UNUSED_GATEWAY_IP),
            None => server_cluster_ip,
        };
        proxies.push(ProxyInputs {
            role: ProxyRole::Sidecar,
            pod,
            listener: match route {
                // Istio gives an HTTP port one wildcard listener (routes by Host over RDS),
                // other protocols a listener per Service address.
                Route::Service if service.is_http() => format!("0.0.0.0_{port}"),
                Route::Service => format!("{target_ip}_{port}"),
                Route::Passthrough => "virtualOutbound".into(),
            },
            port,
            cluster: match route {
                Route::Service => format!("outbound|{port}||{}", ctx.service_host),
                Route::Passthrough => "PassthroughCluster".into(),
            },
        });
    }

    docs.extend(manifests(&forms));
    docs.extend(crate::render::istio::sidecar_http_pool_idle(cell, &ctx).map(|(y, _)| y));
    let mesh = cell.scaled.sidecar().and_then(|s| s.upstream_keepalive).map(|ka| {
        let (time, interval) = ka.whole_seconds();
        format!("tcpKeepalive:\n  time: {time}s\n  interval: {interval}s\n  probes: {}\n", ka.probes)
    });
    Some(CellObjects { docs, mesh, proxies, ctx })
}

/// Where a gRPC balance cell's pods are: its ClusterIP, each client pod, and each replica the
/// run will have (the first `ready` of them Ready at the start).
#[derive(Clone, Debug)]
pub struct GrpcAddresses {
    pub cluster_ip: Ipv4Addr,
    pub clients: Vec<Ipv4Addr>,
    pub replicas: Vec<Ipv4Addr>,
    pub ready: usize,
}

/// The objects of a gRPC balance cell with sidecars: the Service `grpc` (port `grpc-grpc`, so
/// Istio speaks HTTP/2 and balances per request) and its EndpointSlice over the Ready
/// replicas; a Pod per client (`client-<k>`) with a client sidecar, and per replica
/// (`grpc-<i>`, every replica the run scales to: a Pod exists before it is Ready) with a
/// server sidecar; the mitigation's DestinationRule. `None` when no pod has a sidecar.
pub fn for_grpc_cell(cell: &crate::cells::Cell, namespace: &str, addrs: &GrpcAddresses) -> Option<CellObjects> {
    let path = &cell.real.path;
    let client_sidecar = path.iter().any(|h| matches!(h, Hop::Sidecar(_)));
    let server_sidecar = path.iter().any(|h| matches!(h, Hop::ServerSidecar(_)));
    if !client_sidecar && !server_sidecar {
        return None;
    }
    let ctx = super::local_context(cell, namespace);
    let forms = cell.mitigation.as_mitigation().istio_resources(&ctx);
    let mut annotations = super::pod_annotations(cell, &ctx, &forms);
    let mut annotations_of = |pod: &str| annotations_of(&mut annotations, pod);
    let service = cell.real.service;
    let (name, port) = (service.name(), service.port());
    let mut docs =
        vec![yaml("Namespace", "v1", &Namespace { metadata: meta(namespace, None, &[]), ..Default::default() })];
    docs.extend(service_docs(
        name,
        namespace,
        ("app", name),
        addrs.cluster_ip,
        service,
        &addrs.replicas[..addrs.ready],
    ));
    let mut proxies = Vec::new();
    if server_sidecar {
        let server_annotations = annotations_of("server");
        for (i, ip) in addrs.replicas.iter().enumerate() {
            let pod = injected_pod(format!("{name}-{i}"), namespace, *ip, name, server_annotations.clone());
            docs.push(pod_doc(&pod));
            proxies.push(inbound_proxy(pod, port));
        }
    }
    if client_sidecar {
        let client_annotations = annotations_of("client");
        for (k, ip) in addrs.clients.iter().enumerate() {
            let pod = injected_pod(format!("client-{k}"), namespace, *ip, CLIENT_APP, client_annotations.clone());
            docs.push(pod_doc(&pod));
            proxies.push(ProxyInputs {
                role: ProxyRole::Sidecar,
                pod,
                // An HTTP port (gRPC is one): one wildcard listener, routes by authority over RDS.
                listener: format!("0.0.0.0_{port}"),
                port,
                cluster: format!("outbound|{port}||{}", ctx.service_host),
            });
        }
    }
    docs.extend(manifests(&forms));
    Some(CellObjects { docs, mesh: None, proxies, ctx })
}
