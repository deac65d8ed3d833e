//! Kubernetes objects of a cell, built with k8s-openapi's typed structs (pure functions).
//!
//! ```text
//!   namespace idlelab-<scenario>-<n>   (istio-injection=enabled; each pod opts in or out)
//!     Deployment + Service <service>   the server, same settings as the local lab
//!     Pod mb<i> + Service mb<i>        a middlebox hop: privileged, conntrack + DNAT to the next hop
//!     ConfigMap + Pod idlelab-probe    `idlelab probe --spec /spec/probe.json`, sidecar per the path
//! ```

use crate::config::CellConfig;
use crate::hop::{MiddleboxHop, OnUnknown};
use crate::model::service::Service as Svc;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction,
    Namespace, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecurityContext, Service, ServicePort,
    ServiceSpec, Sysctl, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The probe image `just kind-up` builds from the Dockerfile and loads into kind.
pub const PROBE_IMAGE: &str = "idlelab-probe:dev";

pub fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).expect("a Kubernetes object renders as YAML")
}

fn meta(name: &str, ns: &str, labels: &[(&str, &str)], annotations: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..Default::default()
    }
}

fn inject(on: bool) -> BTreeMap<String, String> {
    BTreeMap::from([("sidecar.istio.io/inject".to_string(), on.to_string())])
}

pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("istio-injection".to_string(), "enabled".to_string()),
                ("app.kubernetes.io/managed-by".to_string(), "idlelab".to_string()),
            ])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The port's name tells Istio the protocol (`pkg/config/kube/conversion.go`): `http-*` puts
/// Envoy's HTTP connection manager and its own upstream pool on the path, `https-*` passes
/// TLS through by SNI, `tcp-*` is `tcp_proxy`. Both backends name ports with this.
pub fn port_name(s: Svc) -> String {
    let protocol = match s {
        Svc::Http => "http",
        Svc::Https => "https",
        Svc::Redis | Svc::Mysql | Svc::Memcached => "tcp",
    };
    format!("{protocol}-{}", s.name())
}

/// The server container, with its own idle settings explicit, as in the local lab.
fn server_container(knobs: &CellConfig) -> Container {
    let port = knobs.service.port();
    let idle = knobs.server_idle_timeout.0.as_secs();
    let (image, args, env): (&str, Vec<String>, Vec<EnvVar>) = match knobs.service {
        Svc::Redis => (
            "redis:7.0.15",
            vec![
                "redis-server",
                "--tcp-keepalive",
                "0",
                "--timeout",
                &idle.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec![],
        ),
        Svc::Mysql => {
            let wait = if idle == 0 { 31_536_000 } else { idle };
            (
                "mariadb:10.11.11",
                vec![
                    format!("--wait-timeout={wait}"),
                    format!("--interactive-timeout={wait}"),
                    "--skip-name-resolve".into(),
                ],
                vec![EnvVar {
                    name: "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD".into(),
                    value: Some("1".into()),
                    ..Default::default()
                }],
            )
        }
        Svc::Memcached => (
            "memcached:1.6.18",
            vec!["memcached".into(), "-U".into(), "0".into(), "-o".into(), format!("idle_timeout={idle}")],
            vec![],
        ),
        Svc::Http | Svc::Https => (
            PROBE_IMAGE,
            vec!["idlelab".into(), "serve-http".into(), "--listen".into(), format!("0.0.0.0:{port}")],
            vec![],
        ),
    };
    let (command, args) = match knobs.service {
        Svc::Mysql => (None, Some(args)),
        _ => (Some(args), None),
    };
    Container {
        name: "server".into(),
        image: Some(image.into()),
        command,
        args,
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            container_port: port as i32,
            name: Some(port_name(knobs.service)),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness(knobs.service)),
        ..Default::default()
    }
}

/// Ready means "answers a real client", so `rollout status` does not return before MariaDB has
/// initialised: redis-cli PING, mariadb-admin ping over TCP, an HTTP GET; memcached's image
/// has no client, so a TCP accept (memcached listens only once it serves).
fn readiness(s: Svc) -> Probe {
    let port = s.port();
    let exec = |cmd: &[&str]| Probe {
        exec: Some(ExecAction { command: Some(cmd.iter().map(|c| c.to_string()).collect()) }),
        ..Default::default()
    };
    let probe = match s {
        Svc::Redis => exec(&["redis-cli", "-p", &port.to_string(), "ping"]),
        Svc::Mysql => {
            exec(&["mariadb-admin", "--protocol=tcp", "-h", "127.0.0.1", "-P", &port.to_string(), "-uroot", "ping"])
        }
        Svc::Memcached => Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port.into()), ..Default::default() }),
            ..Default::default()
        },
        Svc::Http | Svc::Https => Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::Int(port.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    Probe { period_seconds: Some(1), failure_threshold: Some(180), timeout_seconds: Some(2), ..probe }
}

pub fn server(knobs: &CellConfig, ns: &str, annotations: BTreeMap<String, String>) -> (Deployment, Service) {
    let name = knobs.service.name();
    let labels = [("app", name)];
    let deployment = Deployment {
        metadata: meta(name, ns, &labels, BTreeMap::new()),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec { containers: vec![server_container(knobs)], ..Default::default() }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    (deployment, service(name, ns, knobs.service, name))
}

fn service(name: &str, ns: &str, s: Svc, app: &str) -> Service {
    Service {
        metadata: meta(name, ns, &[("app", app)], BTreeMap::new()),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some(port_name(s)),
                port: s.port() as i32,
                target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(s.port() as i32)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The name of the middlebox's counter of forgotten-flow segments (`nft list counter ip
/// idlelab_middlebox forgotten`), which the cell's evidence reads.
pub const MIDDLEBOX_COUNTER: &str = "forgotten";

/// The middlebox's rules: DNAT to the next hop, masquerade, and the forgotten-flow verdict.
///
/// The pod is a DNAT proxy, not a router: once conntrack has forgotten a flow, its next segment
/// (with `nf_conntrack_tcp_loose=0`) is never DNATed, is addressed to the pod itself and takes
/// the INPUT path, where the pod's own TCP stack would answer with RST. So INPUT gets the same
/// `ct state invalid` verdict as FORWARD, both counted in one named counter.
pub fn middlebox_script(hop: &MiddleboxHop, next_host: &str, port: u16) -> String {
    let verdict = match hop.on_unknown {
        OnUnknown::Reset => "reject with tcp reset",
        OnUnknown::Drop => "drop",
    };
    let c = MIDDLEBOX_COUNTER;
    format!(
        "set -eu\nnext=$(getent hosts {next_host} | awk '{{print $1}}')\nnft -f - <<NFT\ntable ip idlelab_middlebox {{\n  counter {c} {{ }}\n  chain pre {{ type nat hook prerouting priority -100; tcp dport {port} dnat to $next:{port}; }}\n  chain post {{ type nat hook postrouting priority 100; oifname != \"lo\" masquerade; }}\n  chain forward {{ type filter hook forward priority 0; ct state invalid meta l4proto tcp counter name {c} {verdict}; }}\n  chain input {{ type filter hook input priority 0; ct state invalid meta l4proto tcp counter name {c} {verdict}; }}\n}}\nNFT\nsysctl -w net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_tcp_loose=0 net.netfilter.nf_conntrack_tcp_timeout_established={}\nexec sleep infinity\n",
        hop.conntrack_timeout_s()
    )
}

pub fn middlebox(name: &str, ns: &str, hop: &MiddleboxHop, next_host: &str, s: Svc) -> (Pod, Service) {
    let pod = Pod {
        metadata: meta(name, ns, &[("app", name)], inject(false)),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "middlebox".into(),
                image: Some(PROBE_IMAGE.into()),
                command: Some(vec!["sh".into(), "-c".into(), middlebox_script(hop, next_host, s.port())]),
                security_context: Some(SecurityContext {
                    privileged: Some(true),
                    capabilities: Some(Capabilities { add: Some(vec!["NET_ADMIN".into()]), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    (pod, service(name, ns, s, name))
}

/// The probe container's command: `idlelab probe` for the Rust client libraries,
/// `idlelab-probe-go` (in the same image) for the Go ones. Both read the spec from the file.
fn probe_command(knobs: &CellConfig) -> Vec<String> {
    use crate::model::library::Runtime;
    let spec = ["--spec".to_string(), "/spec/probe.json".to_string()];
    match knobs.client.library.runtime() {
        Runtime::Go => std::iter::once("idlelab-probe-go".to_string()).chain(spec).collect(),
        // An external client has no image: the kind backend refuses it before this.
        Runtime::Rust | Runtime::External => {
            ["idlelab".to_string(), "probe".to_string()].into_iter().chain(spec).collect()
        }
    }
}

pub fn probe(ns: &str, spec_json: &str, knobs: &CellConfig, annotations: BTreeMap<String, String>) -> (ConfigMap, Pod) {
    let cm = ConfigMap {
        metadata: meta("idlelab-probe-spec", ns, &[("app", "idlelab-probe")], BTreeMap::new()),
        data: Some(BTreeMap::from([("probe.json".to_string(), spec_json.to_string())])),
        ..Default::default()
    };
    // Keepalive interval and count for libraries that set only the idle time come from the
    // pod's sysctls (namespaced and allowed by default), as in the local lab.
    let sysctls = knobs.client.keepalive.map(|k| {
        vec![
            Sysctl { name: "net.ipv4.tcp_keepalive_intvl".into(), value: k.whole_seconds().1.to_string() },
            Sysctl { name: "net.ipv4.tcp_keepalive_probes".into(), value: k.probes.to_string() },
        ]
    });
    let pod = Pod {
        metadata: meta("idlelab-probe", ns, &[("app", "idlelab-probe")], annotations),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            security_context: sysctls.map(|s| PodSecurityContext { sysctls: Some(s), ..Default::default() }),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(PROBE_IMAGE.into()),
                command: Some(probe_command(knobs)),
                volume_mounts: Some(vec![VolumeMount {
                    name: "spec".into(),
                    mount_path: "/spec".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "spec".into(),
                config_map: Some(ConfigMapVolumeSource { name: "idlelab-probe-spec".into(), ..Default::default() }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    (cm, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_carry_api_version_kind_and_the_servers_settings() {
        let knobs = crate::mitigation::contract::tests::test_knobs();
        let (d, s) = server(&knobs, "ns1", inject(true));
        let y = yaml(&d);
        assert!(y.contains("apiVersion: apps/v1") && y.contains("kind: Deployment"), "{y}");
        assert!(y.contains("--tcp-keepalive") && y.contains("sidecar.istio.io/inject"), "{y}");
        let y = yaml(&s);
        assert!(y.contains("kind: Service") && y.contains("tcp-redis"), "{y}");
        let (_, pod) = probe("ns1", "{}", &knobs, inject(true));
        assert!(yaml(&pod).contains("/spec/probe.json"));
    }
}
