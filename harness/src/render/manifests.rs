//! Kubernetes objects of a cell, built with k8s-openapi's typed structs (pure functions).
//!
//! ```text
//!   namespace idlelab-<scenario>-<n>   (istio-injection=enabled; each pod opts in or out)
//!     Deployment + Service <service>   the server, same settings as the local lab
//!     Pod mb<i> + Service mb<i>        a middlebox hop: privileged, conntrack + DNAT to the next hop
//!     ConfigMap + Pod idlelab-probe    `idlelab probe --spec /spec/probe.json`, sidecar per the path
//!   a gRPC balance cell instead:
//!     StatefulSet grpc + Service grpc  the replicas (`serve-grpc`), the ClusterIP, and the
//!       + Service grpc-headless        headless name that lists every Ready replica
//!     ConfigMap + Pod client-<k>       one per client; its probe runs by `kubectl exec`
//! ```

use crate::config::CellConfig;
use crate::hop::{MiddleboxHop, OnUnknown};
use crate::model::service::Service as Svc;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, ExecAction, HTTPGetAction, Namespace,
    Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecurityContext, Service, ServicePort, ServiceSpec,
    Sysctl, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The lab's image (servers, middlebox, probes), named at execution: `kind-images/build.sh lab`
/// builds it from Debian's packages and the lab's binaries, tagged by their hash.
pub const LAB_IMAGE: &str = "$LAB_IMAGE";

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
        Svc::Grpc => "grpc",
    };
    format!("{protocol}-{}", s.name())
}

/// The server container: the lab image's Debian servers (the versions the local lab runs), with
/// the same arguments as the local lab, its own idle settings explicit.
fn server_container(knobs: &CellConfig) -> Container {
    let port = knobs.service.port();
    let idle = knobs.server_idle_timeout.0.as_secs();
    let service = knobs.service;
    let args: Vec<String> = match service {
        // Files in /tmp: the pod's own.
        Svc::Redis => std::iter::once("redis-server".to_string())
            .chain(service.server_args(idle, &["--dir".into(), "/tmp".into()]).expect("redis's arguments"))
            .collect(),
        Svc::Mysql => {
            // mariadb-install-db, then the server, with the local lab's arguments.
            let word = |a: Vec<String>| a.join(" ");
            let install = word(Svc::mariadb_install_args(&["--datadir=/tmp/data".into()]));
            let files = ["--datadir=/tmp/data".to_string(), "--socket=/tmp/mysql.sock".into()];
            let server = word(service.server_args(idle, &files).expect("MariaDB's arguments"));
            let script = format!(
                "mariadb-install-db {install} >/tmp/install.log 2>&1 || {{ cat /tmp/install.log; exit 1; }}\nexec mariadbd {server}\n"
            );
            vec!["sh".into(), "-c".into(), script]
        }
        Svc::Memcached => std::iter::once("memcached".to_string())
            .chain(service.server_args(idle, &[]).expect("memcached's arguments"))
            .collect(),
        Svc::Http | Svc::Https => {
            vec!["idlelab".into(), "serve-http".into(), "--listen".into(), format!("0.0.0.0:{port}")]
        }
        // A gRPC idle cell's one server (a balance cell's replicas are `grpc_replicas`).
        Svc::Grpc => ["idlelab", "serve-grpc", "--replica", "0", "--counts", "/tmp/counts", "--listen"]
            .into_iter()
            .map(String::from)
            .chain([format!("0.0.0.0:{port}")])
            .collect(),
    };
    Container {
        name: "server".into(),
        image: Some(LAB_IMAGE.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(lab_command(args)),
        ports: Some(vec![ContainerPort {
            container_port: port as i32,
            name: Some(port_name(knobs.service)),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness(knobs.service)),
        ..Default::default()
    }
}

/// tini as PID 1: it passes SIGTERM on, so a pod stops at once (with
/// `terminationGracePeriodSeconds` 1) instead of waiting for the kubelet's SIGKILL.
fn lab_command(args: Vec<String>) -> Vec<String> {
    ["/usr/bin/tini".to_string(), "--".to_string()].into_iter().chain(args).collect()
}

/// Lab pods stop within a second: nothing in them needs a graceful shutdown.
const GRACE_S: i64 = 1;

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
        Svc::Memcached | Svc::Grpc => Probe {
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
                spec: Some(PodSpec {
                    containers: vec![server_container(knobs)],
                    termination_grace_period_seconds: Some(GRACE_S),
                    ..Default::default()
                }),
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

/// A pod that only waits, its ConfigMap `specs` at /spec: a probe runs in it by `kubectl
/// exec`, so the pod and its sidecar outlive the probe and the evidence is read after the
/// probe, however short its run.
fn waiting_pod(name: &str, ns: &str, app: &str, specs: &str, annotations: BTreeMap<String, String>) -> Pod {
    Pod {
        metadata: meta(name, ns, &[("app", app)], annotations),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(GRACE_S),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(LAB_IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(lab_command(vec!["sleep".into(), "infinity".into()])),
                volume_mounts: Some(vec![VolumeMount {
                    name: "spec".into(),
                    mount_path: "/spec".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "spec".into(),
                config_map: Some(ConfigMapVolumeSource { name: specs.into(), ..Default::default() }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The lab image's program for `library`: `idlelab` for the Rust libraries (tonic too),
/// `idlelab-probe-go` for the Go ones (grpc-go too); both take the same contracts.
pub fn lab_program(library: crate::model::library::Library) -> &'static str {
    use crate::model::library::Runtime;
    match library.runtime() {
        Runtime::Go => "idlelab-probe-go",
        // An external client has no image: the kind backend refuses it before this.
        Runtime::Rust | Runtime::External => "idlelab",
    }
}

/// Where a replica pod keeps its counts (`serve-grpc --counts`), read back by `kubectl exec`.
pub const GRPC_COUNTS: &str = "/tmp/counts";

/// The headless Service of a gRPC balance cell: its name resolves to every Ready replica.
pub fn grpc_headless_name(s: Svc) -> String {
    format!("{}-headless", s.name())
}

/// A gRPC balance cell's replicas: a StatefulSet, so that each pod has a stable name
/// (`grpc-0`, `grpc-1`, …) whose ordinal is the replica id it answers with and by which the
/// cell reads its counts; `Parallel`, so a scale-up starts every new pod at once, as a
/// Deployment's would. The ClusterIP Service (kube-proxy balances per connection) and the
/// headless one (every Ready replica's record) select them all.
pub fn grpc_replicas(
    knobs: &CellConfig,
    grpc: &crate::config::GrpcConfig,
    ns: &str,
    annotations: BTreeMap<String, String>,
) -> (StatefulSet, Service, Service) {
    let s = knobs.service;
    let (name, port) = (s.name(), s.port());
    let mut serve = format!(
        "exec {} serve-grpc --replica \"${{HOSTNAME##*-}}\" --counts {GRPC_COUNTS} --listen 0.0.0.0:{port}",
        lab_program(grpc.server_library)
    );
    if let Some(age) = grpc.max_connection_age {
        serve.push_str(&format!(" --max-connection-age-ms {}", age.0.as_millis()));
    }
    if let Some(grace) = grpc.max_connection_age_grace {
        serve.push_str(&format!(" --max-connection-age-grace-ms {}", grace.0.as_millis()));
    }
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let set = StatefulSet {
        metadata: meta(name, ns, &[("app", name)], BTreeMap::new()),
        spec: Some(StatefulSetSpec {
            replicas: Some(grpc.replicas as i32),
            service_name: Some(grpc_headless_name(s)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some(LAB_IMAGE.into()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        command: Some(lab_command(vec!["sh".into(), "-c".into(), serve])),
                        ports: Some(vec![ContainerPort {
                            container_port: port as i32,
                            name: Some(port_name(s)),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(readiness(s)),
                        ..Default::default()
                    }],
                    termination_grace_period_seconds: Some(GRACE_S),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut headless = service(&grpc_headless_name(s), ns, s, name);
    if let Some(spec) = headless.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    (set, service(name, ns, s, name), headless)
}

/// The specs of a gRPC balance cell's clients, one key per client (`client-0.json`, …).
pub const GRPC_CLIENT_SPECS: &str = "grpc-client-specs";

/// The clients of a gRPC balance cell: one pod each (`client-<k>`, with the client app's
/// label, so its sidecar is the one the mitigation's objects select), waiting; its probe runs
/// by `kubectl exec`. Their specs, in one ConfigMap.
pub fn grpc_clients(
    ns: &str,
    specs: &[(String, String)],
    annotations: BTreeMap<String, String>,
) -> (ConfigMap, Vec<Pod>) {
    let app = crate::mitigation::CLIENT_APP;
    let cm = ConfigMap {
        metadata: meta(GRPC_CLIENT_SPECS, ns, &[("app", app)], BTreeMap::new()),
        data: Some(specs.iter().map(|(pod, json)| (format!("{pod}.json"), json.clone())).collect()),
        ..Default::default()
    };
    let pods = specs.iter().map(|(pod, _)| waiting_pod(pod, ns, app, GRPC_CLIENT_SPECS, annotations.clone())).collect();
    (cm, pods)
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
        "set -eu\n# The next hop's Service may not resolve yet: wait for it (the pod is Ready only once the rules below are in).\nfor i in $(seq 120); do next=$(getent hosts {next_host} | awk '{{print $1}}'); [ -n \"$next\" ] && break; sleep 0.5; done\n[ -n \"$next\" ] || {{ echo 'middlebox: {next_host} did not resolve within 60 s' >&2; exit 1; }}\nnft -f - <<NFT\ntable ip idlelab_middlebox {{\n  counter {c} {{ }}\n  chain pre {{ type nat hook prerouting priority -100; tcp dport {port} dnat to $next:{port}; }}\n  chain post {{ type nat hook postrouting priority 100; oifname != \"lo\" masquerade; }}\n  chain forward {{ type filter hook forward priority 0; ct state invalid meta l4proto tcp counter name {c} {verdict}; }}\n  chain input {{ type filter hook input priority 0; ct state invalid meta l4proto tcp counter name {c} {verdict}; }}\n}}\nNFT\nsysctl -w net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_tcp_loose=0 net.netfilter.nf_conntrack_tcp_timeout_established={}\ntouch /tmp/ready\nexec sleep infinity\n",
        hop.conntrack_timeout_s()
    )
}

pub fn middlebox(name: &str, ns: &str, hop: &MiddleboxHop, next_host: &str, s: Svc) -> (Pod, Service) {
    let pod = Pod {
        metadata: meta(name, ns, &[("app", name)], inject(false)),
        spec: Some(PodSpec {
            // A bare pod that fails is not restarted into a crash loop: its cell fails at the wait.
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(GRACE_S),
            containers: vec![Container {
                name: "middlebox".into(),
                image: Some(LAB_IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(lab_command(vec!["sh".into(), "-c".into(), middlebox_script(hop, next_host, s.port())])),
                // Ready means the rules and sysctls are in (the script's last step before it sleeps).
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction { command: Some(vec!["test".into(), "-e".into(), "/tmp/ready".into()]) }),
                    period_seconds: Some(1),
                    ..Default::default()
                }),
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

/// The probe's command, run in the probe pod by `kubectl exec` (its output is the exec's):
/// `idlelab probe` for the Rust client libraries, `idlelab-probe-go` (in the same image) for the
/// Go ones. Both read the spec from the file.
pub fn probe_command(knobs: &CellConfig) -> Vec<String> {
    let program = lab_program(knobs.client.library);
    // `idlelab` hosts other subcommands; the Go probe is only the probe.
    let sub = (program == "idlelab").then_some("probe");
    [program].into_iter().chain(sub).chain(["--spec", "/spec/probe.json"]).map(String::from).collect()
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
    let mut pod = waiting_pod("idlelab-probe", ns, "idlelab-probe", "idlelab-probe-spec", annotations);
    if let (Some(spec), Some(sysctls)) = (pod.spec.as_mut(), sysctls) {
        spec.security_context = Some(PodSecurityContext { sysctls: Some(sysctls), ..Default::default() });
    }
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
        assert!(yaml(&pod).contains("mountPath: /spec"));
        assert!(probe_command(&knobs).join(" ").ends_with("--spec /spec/probe.json"));
    }

    /// Issue 19, defect 3: every lab pod stops at once. tini is PID 1 (it passes SIGTERM on, so
    /// `sleep infinity` and `serve-http` end) and the grace period is 1 s.
    #[test]
    fn every_lab_pod_stops_at_once() {
        let knobs = crate::mitigation::contract::tests::test_knobs();
        let hop = MiddleboxHop {
            preset: None,
            idle_timeout: crate::model::duration::Dur(std::time::Duration::from_secs(30)),
            on_unknown: OnUnknown::Reset,
        };
        let (d, _) = server(&knobs, "ns1", BTreeMap::new());
        let server_spec = d.spec.unwrap().template.spec.unwrap();
        let (_, probe_pod) = probe("ns1", "{}", &knobs, BTreeMap::new());
        let (mb, _) = middlebox("mb0", "ns1", &hop, "redis.ns1.svc.cluster.local", Svc::Redis);
        for spec in [server_spec, probe_pod.spec.unwrap(), mb.spec.unwrap()] {
            assert_eq!(spec.termination_grace_period_seconds, Some(1));
            let command = spec.containers[0].command.clone().unwrap();
            assert_eq!(command[..2], ["/usr/bin/tini", "--"], "{command:?}");
            assert_eq!(spec.containers[0].image.as_deref(), Some(LAB_IMAGE));
        }
    }

    /// Issue 19, defect 6: a middlebox is Ready only once its rules are in. Its script waits
    /// for the next hop's name to resolve (and fails, not loops, when it never does); the pod
    /// is not restarted into a crash loop.
    #[test]
    fn a_middlebox_is_ready_only_once_its_rules_are_loaded() {
        let hop = MiddleboxHop {
            preset: None,
            idle_timeout: crate::model::duration::Dur(std::time::Duration::from_secs(30)),
            on_unknown: OnUnknown::Drop,
        };
        let (pod, _) = middlebox("mb0", "ns1", &hop, "redis.ns1.svc.cluster.local", Svc::Redis);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let ready = spec.containers[0].readiness_probe.clone().expect("a readiness probe");
        let check = ready.exec.unwrap().command.unwrap().join(" ");
        let script = middlebox_script(&hop, "redis.ns1.svc.cluster.local", 6379);
        let marker = check.strip_prefix("test -e ").expect(&check);
        let (nft, sysctl, touch) = (
            script.find("nft -f").unwrap(),
            script.find("sysctl -w").unwrap(),
            script.find(&format!("touch {marker}")).unwrap(),
        );
        assert!(nft < touch && sysctl < touch, "the marker comes after the rules and sysctls:\n{script}");
        let resolve = script.find("getent hosts").unwrap();
        assert!(resolve < nft && script[..nft].contains("sleep") && script[..nft].contains("exit 1"), "{script}");
    }
}
