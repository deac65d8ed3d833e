//! The kind backend, verified without a cluster: plan snapshots for every shipped scenario,
//! every Istio resource against Istio 1.30's CRD schemas, every annotation against Istio's
//! list, the Kubernetes objects against k8s-openapi's types, and one renderer: the Istio
//! resources, pod annotations and port names the kind plan applies are the objects the local
//! lab gives Istio's control plane (what Istio makes of them: `istio_xds.rs`).

mod common;
use common::*;
use idlelab::cells::{Cell, expand};
use idlelab::kind::plan::Step;
use idlelab::kind::{KubeTarget, plan};
use serde_json::Value;
use std::path::PathBuf;

/// A file of Istio's API module (`istio.io/api`, the version `istio/go.mod` pins, from the Go
/// module cache that `just setup` fills): its CRDs' OpenAPI schemas and its annotations.
fn istio_api(file: &str) -> PathBuf {
    let o = std::process::Command::new("go")
        .args(["list", "-m", "-f", "{{.Dir}}", "istio.io/api"])
        .env("GOFLAGS", "-mod=readonly")
        .current_dir(repo().join("istio"))
        .output()
        .expect("run go (install Go >= 1.26 and run `just setup`)");
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let path = dir.join(file);
    assert!(
        o.status.success() && path.is_file(),
        "{} not found: `go list -m istio.io/api` in istio/ said {:?} {}; run `just setup` (it downloads Istio's modules)",
        path.display(),
        dir,
        String::from_utf8_lossy(&o.stderr)
    );
    path
}

fn scenario_cells(name: &str) -> Vec<Cell> {
    let s = idlelab::scenario::load(&repo().join("scenarios").join(format!("{name}.yaml"))).unwrap();
    expand(&s, &[], None).unwrap()
}

/// The shipped scenarios: the kind backend runs every one (gRPC balance and idle cells too).
fn shipped() -> Vec<String> {
    idlelab::scenario::list(&repo().join("scenarios")).unwrap()
}

/// The nightly kind job runs every shipped scenario: it skips none (the kind backend refuses
/// none of them), so no scenario can fall out of the nightly run unnoticed.
#[test]
fn the_nightly_kind_job_runs_every_shipped_scenario() {
    let workflow = std::fs::read_to_string(repo().join(".github/workflows/nightly.yml")).unwrap();
    let kind_loop = workflow.split("--backend kind --out \"results/kind/$s\"").next().unwrap();
    let kind_loop = &kind_loop[kind_loop.rfind("for s in").expect("the kind job's loop")..];
    assert!(kind_loop.contains("for s in $(sudo target/debug/idlelab list)"), "{kind_loop}");
    assert!(!kind_loop.contains("continue"), "the kind job skips no scenario:\n{kind_loop}");
}

/// Every manifest document applied by a plan.
fn documents(cells: &[Cell]) -> Vec<Value> {
    plan(cells, &KubeTarget { context: None }, false)
        .steps
        .iter()
        .filter_map(|s| if let Step::Command { stdin: Some(m), .. } = s { Some(m.clone()) } else { None })
        .flat_map(|m| serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&m).unwrap())
        .collect()
}

#[test]
fn plan_snapshots_for_every_shipped_scenario() {
    for name in shipped() {
        let p = plan(&scenario_cells(&name), &KubeTarget { context: None }, false);
        insta::assert_snapshot!(format!("plan-{name}"), p.to_string());
    }
    // An existing cluster: no kind or docker step, the context everywhere.
    let p = plan(&scenario_cells("redis-idle"), &KubeTarget { context: Some("staging".into()) }, false);
    assert_eq!(p.programs(), ["istioctl", "kubectl", "printenv"], "the only local command reads the lab image's name");
    assert!(p.to_string().contains("kubectl --context staging"));
}

#[test]
fn a_compressed_plan_says_its_baseline_is_explicit_and_a_real_time_plan_keeps_istios_defaults() {
    let s = idlelab::scenario::load(&repo().join("scenarios/redis-idle.yaml")).unwrap();
    let compressed =
        plan(&expand(&s, &["none".into()], None).unwrap(), &KubeTarget { context: None }, false).to_string();
    assert!(compressed.contains("the baseline is then an explicit value, not Istio's default"), "{compressed}");
    assert!(compressed.contains("ISTIO_META_IDLE_TIMEOUT: 0h0m6s"), "{compressed}");
    let real = plan(
        &expand(&s, &["none".into()], Some(idlelab::model::service::TimeScaleSpec::Factor(1))).unwrap(),
        &KubeTarget { context: None },
        false,
    )
    .to_string();
    assert!(!real.contains("ISTIO_META_IDLE_TIMEOUT"), "Istio's own 1 h stands: {real}");
    assert!(real.contains("\"idle_ms\": 4200000"), "the probe idles the real 70 minutes: {real}");
}

/// `openAPIV3Schema` of an Istio kind at an apiVersion, from the CRD file.
fn crd_schema(crds: &[Value], api_version: &str, kind: &str) -> Value {
    let (group, version) = api_version.split_once('/').unwrap();
    let crd = crds
        .iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {api_version} {kind}"));
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{kind} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone()
}

#[test]
fn every_istio_resource_passes_the_istio_1_30_crd_schemas() {
    let text = std::fs::read_to_string(istio_api("kubernetes/customresourcedefinitions.gen.yaml")).unwrap();
    let crds: Vec<Value> = serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    let mut checked = std::collections::BTreeSet::new();
    for name in shipped() {
        for doc in documents(&scenario_cells(&name)) {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            if !api.contains("istio.io") {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap();
            let schema = crd_schema(&crds, api, kind);
            let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
            let errors: Vec<String> =
                validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            assert!(errors.is_empty(), "{name}: {kind} does not match Istio's schema: {errors:?}\n{doc:#}");
            // A wrongly typed spec must fail, or the check proves nothing.
            let mut broken = doc.clone();
            broken["spec"] = Value::String("not an object".into());
            assert!(!validator.is_valid(&broken), "{kind}: the schema rejects a spec that is not an object");
            if kind == "EnvoyFilter" {
                let mut wrong = doc.clone();
                wrong["spec"]["configPatches"][0]["applyTo"] = Value::String("NOT_A_THING".into());
                assert!(!validator.is_valid(&wrong), "the schema knows applyTo's values");
            }
            checked.insert(kind.to_string());
        }
    }
    let kinds: Vec<&str> = checked.iter().map(String::as_str).collect();
    assert_eq!(kinds, ["DestinationRule", "EnvoyFilter", "Gateway", "VirtualService"]);
}

#[test]
fn every_istio_annotation_is_one_istio_knows() {
    #[derive(serde::Deserialize)]
    struct Annotations {
        annotations: Vec<Value>,
    }
    let text = std::fs::read_to_string(istio_api("annotation/annotations.yaml")).unwrap();
    let known: Vec<String> = serde_saphyr::from_str::<Annotations>(&text)
        .unwrap()
        .annotations
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for name in shipped() {
        for doc in documents(&scenario_cells(&name)) {
            let metas = [&doc["metadata"], &doc["spec"]["template"]["metadata"]];
            for m in metas {
                for key in m["annotations"].as_object().into_iter().flat_map(|a| a.keys()) {
                    if key.contains("istio.io/") {
                        assert!(known.contains(key), "{name}: annotation {key} is not in Istio's annotations.yaml");
                        seen.insert(key.clone());
                    }
                }
            }
        }
    }
    for k in [
        "sidecar.istio.io/inject",
        "proxy.istio.io/config",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    ] {
        assert!(seen.contains(k), "the plans use {k}");
    }
}

#[test]
fn kubernetes_objects_read_back_as_k8s_openapi_types() {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Pod, Service},
    };
    let mut kinds = std::collections::BTreeSet::new();
    for name in shipped() {
        for doc in documents(&scenario_cells(&name)) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let ok = match kind.as_str() {
                "Deployment" => serde_json::from_value::<Deployment>(doc.clone()).is_ok(),
                "Service" => serde_json::from_value::<Service>(doc.clone()).is_ok(),
                "Pod" => serde_json::from_value::<Pod>(doc.clone()).is_ok(),
                "ConfigMap" => serde_json::from_value::<ConfigMap>(doc.clone()).is_ok(),
                "Namespace" => serde_json::from_value::<Namespace>(doc.clone()).is_ok(),
                _ => continue,
            };
            assert!(ok, "{name}: {kind} does not read back as k8s-openapi's type: {doc:#}");
            kinds.insert(kind);
        }
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
}

#[test]
fn run_on_kind_without_the_tools_fails_fast_and_creates_nothing() {
    let out = std::env::temp_dir().join(format!("idlelab-test-kind-{}", std::process::id()));
    // An empty PATH and no kind-up tools: none of docker, kind, kubectl, istioctl can be found.
    let o = idlelab(&["run", "redis-idle", "--backend", "kind", "--out", out.to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .env("IDLELAB_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing: docker, kind, kubectl, istioctl") && err.contains("just kind-up"), "{err}");
    assert!(!out.exists(), "nothing created");
}

/// `--capture` on a cluster of the user's own: its pods are on other machines, whose
/// namespaces this one cannot open. Refused before anything exists, saying what works.
#[test]
fn capture_on_a_cluster_of_ones_own_is_refused_and_creates_nothing() {
    let out = std::env::temp_dir().join(format!("idlelab-test-kind-capture-{}", std::process::id()));
    let args = ["run", "redis-idle", "--backend", "kind", "--context", "staging", "--capture", "--out"];
    let o = idlelab(&args).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--context staging") && err.contains("just kind-up") && err.contains("hint:"), "{err}");
    assert!(!out.exists(), "nothing created");
}

/// Every document of a plan's `kubectl apply` steps for one cell.
fn applied(cell: &Cell, index: usize) -> Vec<Value> {
    idlelab::kind::cell_steps(cell, index, &KubeTarget { context: None }, false)
        .iter()
        .filter_map(|s| match s {
            Step::Command { stdin: Some(m), .. } => Some(m.clone()),
            _ => None,
        })
        .flat_map(|m| serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&m).unwrap())
        .collect()
}

fn local(cell: &Cell, ns: &str) -> Vec<Value> {
    if let Some(grpc) = &cell.real.grpc {
        let ip = |n: u32| -> std::net::Ipv4Addr { format!("198.18.1.{n}").parse().unwrap() };
        let addrs = idlelab::render::objects::GrpcAddresses {
            cluster_ip: ip(252),
            clients: (0..grpc.clients as u32).map(|k| ip(1 + k)).collect(),
            replicas: (0..grpc.max_replicas()).map(|i| ip(100 + i)).collect(),
            ready: grpc.replicas as usize,
        };
        return idlelab::render::objects::for_grpc_cell(cell, ns, &addrs)
            .map(|o| {
                o.docs.iter().flat_map(|d| serde_saphyr::from_str_multiple::<Value, Vec<Value>>(d).unwrap()).collect()
            })
            .unwrap_or_default();
    }
    let addrs = idlelab::render::objects::Addresses {
        app: "198.18.0.1".parse().unwrap(),
        server: "198.18.0.6".parse().unwrap(),
        gateway: Some("198.18.0.2".parse().unwrap())
            .filter(|_| cell.real.path.iter().any(|h| matches!(h, idlelab::hop::Hop::Gateway(_)))),
    };
    let cert = idlelab::render::objects::GatewayCert { cert_pem: "C", key_pem: "K" };
    idlelab::render::objects::for_cell(cell, ns, addrs, Some(cert))
        .map(|o| o.docs.iter().flat_map(|d| serde_saphyr::from_str_multiple::<Value, Vec<Value>>(d).unwrap()).collect())
        .unwrap_or_default()
}

fn istio_resources(docs: &[Value]) -> Vec<Value> {
    let mut v: Vec<Value> =
        docs.iter().filter(|d| d["apiVersion"].as_str().is_some_and(|a| a.contains("istio.io"))).cloned().collect();
    v.sort_by_key(|d| d.to_string());
    v
}

/// `(kind, pod, annotations)` of the probe/client and server pods, injection switch aside;
/// each once (a gRPC cell has several of each: client pods, replicas).
fn pod_annotations(docs: &[Value]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for d in docs {
        let (who, meta) = match (d["kind"].as_str(), d["metadata"]["name"].as_str()) {
            (Some("Pod"), Some("idlelab-probe" | "client")) => ("client", &d["metadata"]),
            (Some("Pod"), Some(n)) if n.starts_with("client-") => ("client", &d["metadata"]),
            (Some("Pod"), Some(_)) if d["metadata"]["labels"]["app"] == "grpc" => ("server", &d["metadata"]),
            (Some("Deployment" | "StatefulSet"), Some(_)) => ("server", &d["spec"]["template"]["metadata"]),
            (Some("Pod"), Some(n)) if d["metadata"]["labels"]["app"] == n && n != "istio-ingressgateway" => {
                ("server", &d["metadata"])
            }
            _ => continue,
        };
        let mut a = meta["annotations"].clone();
        if let Some(m) = a.as_object_mut() {
            m.remove("sidecar.istio.io/inject");
            // By design the one difference: the lab's 198.18.0.0/15 is the cluster's own ranges
            // on kind (`exclude_outbound_ip_ranges_names_the_clusters_ranges_on_kind`).
            if let Some(v) = m.get_mut("traffic.sidecar.istio.io/excludeOutboundIPRanges") {
                *v = "ADDRESS RANGES".into();
            }
            // The other, for evidence only: on kind the probe's sidecar keeps all of Envoy's
            // stats (Istio's bootstrap keeps few), as the local lab's Envoy does.
            const STATS: &str = "proxyStatsMatcher:\n  inclusionRegexps:\n  - \".*\"\n";
            if let Some(config) = m.get("proxy.istio.io/config").and_then(Value::as_str).map(str::to_string) {
                match config.replace(STATS, "") {
                    rest if rest.is_empty() => {
                        m.remove("proxy.istio.io/config");
                    }
                    rest => {
                        m.insert("proxy.istio.io/config".into(), rest.into());
                    }
                }
            }
        }
        if a.as_object().is_some_and(|m| !m.is_empty()) {
            out.push((who.to_string(), a));
        }
    }
    out.sort_by_key(|(w, a)| (w.clone(), a.to_string()));
    out.dedup();
    out
}

fn port_names(docs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = docs
        .iter()
        .filter(|d| {
            // A gRPC cell's headless Service is the cluster's way to list the replicas; the
            // local lab hands its clients their addresses.
            d["kind"] == "Service"
                && d["metadata"]["name"] != "istio-ingressgateway"
                && !d["metadata"]["name"].as_str().unwrap().ends_with("-headless")
                && !d["metadata"]["name"].as_str().unwrap().starts_with("mb")
        })
        .flat_map(|d| d["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// One renderer for both backends: for every cell of every shipped scenario, the Istio
/// resources (DestinationRule, EnvoyFilter, Gateway, VirtualService), the client and server
/// pods' annotations and the service's port names that the kind plan applies are the ones the
/// local lab hands Istio's control plane. Where a middlebox sits in front of the next
/// addressed hop, the kind backend addresses the middlebox's own Service and the local lab
/// (whose middleboxes are routers) the hop behind it: there, only a DestinationRule's `host`
/// may differ, and it must name each backend's target.
#[test]
fn the_local_lab_and_the_kind_plan_render_the_same_objects() {
    let mut compared = 0;
    for name in shipped() {
        for (i, c) in scenario_cells(&name).iter().enumerate() {
            let ns = idlelab::kind::namespace_of(i, &c.scenario);
            let kind = applied(c, i);
            let local = local(c, &ns);
            if local.is_empty() {
                continue; // no Istio proxy on the path: nothing goes to Istio's control plane
            }
            let key = format!("{}::{}", c.scenario, c.label);
            let kind_host = idlelab::render::cluster_target_host(c, &ns);
            let local_host = idlelab::hop::target_host(&c.real.path, c.real.service, &ns);
            // The target host, as a DestinationRule's `host` or inside an outbound cluster's
            // name (`outbound|<port>||<host>`, the time scale's EnvoyFilter).
            let host_of = |docs: Vec<Value>, host: &str| {
                docs.into_iter()
                    .map(|d| {
                        let text = d.to_string().replace(&format!("\"{host}\""), "\"TARGET\"");
                        let text = text.replace(&format!("||{host}\""), "||TARGET\"");
                        serde_json::from_str::<Value>(&text).unwrap()
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                host_of(istio_resources(&kind), &kind_host),
                host_of(istio_resources(&local), &local_host),
                "{key}: the Istio resources differ"
            );
            assert_eq!(pod_annotations(&kind), pod_annotations(&local), "{key}: the pods' annotations differ");
            assert_eq!(port_names(&kind), port_names(&local), "{key}: the port names differ");
            compared += 1;
        }
    }
    assert!(compared >= 40, "only {compared} cells compared");
}

/// The comparison sees a difference when there is one.
#[test]
fn the_renderer_comparison_can_fail() {
    let c = &scenario_cells("redis-idle")[1];
    let ns = idlelab::kind::namespace_of(1, &c.scenario);
    let mut local = local(c, &ns);
    assert_eq!(pod_annotations(&applied(c, 1)), pod_annotations(&local));
    for d in &mut local {
        if d["kind"] == "Pod" {
            d["metadata"]["annotations"]["proxy.istio.io/config"] =
                "proxyMetadata: {ISTIO_META_IDLE_TIMEOUT: 1s}".into();
        }
    }
    assert_ne!(pod_annotations(&applied(c, 1)), pod_annotations(&local));
}

/// Issue 13, defect 1: a forgotten flow's next segment is not DNATed and takes the middlebox
/// pod's INPUT path; there it must meet the same verdict and counter as on FORWARD, or a `drop`
/// middlebox answers with the pod's own RST. The rules must also be valid nft (checked by nft
/// itself, in a namespace of its own) and the plan must read the counter as evidence.
#[test]
fn the_middlebox_pod_gives_forgotten_flows_the_same_verdict_on_input_and_counts_them() {
    require_lab();
    let blackhole = &scenario_cells("redis-blackhole")[0];
    let Some(idlelab::hop::Hop::Middlebox(m)) =
        blackhole.scaled.path.iter().find(|h| matches!(h, idlelab::hop::Hop::Middlebox(_)))
    else {
        panic!("redis-blackhole has a middlebox")
    };
    let script = idlelab::render::manifests::middlebox_script(m, "redis.ns.svc.cluster.local", 6379);
    assert!(script.contains("chain input { type filter hook input priority 0; ct state invalid meta l4proto tcp counter name forgotten drop; }"), "{script}");
    assert!(script.contains("chain forward { type filter hook forward priority 0; ct state invalid meta l4proto tcp counter name forgotten drop; }"), "{script}");
    // nft itself accepts the ruleset (check mode, in a throwaway namespace).
    let ruleset =
        script.split("<<NFT\n").nth(1).unwrap().split("\nNFT\n").next().unwrap().replace("$next", "10.96.0.10");
    let ns = idlelab::local::netns::Netns::create(format!(
        "{}{}-nftcheck",
        idlelab::local::netns::PREFIX,
        std::process::id()
    ))
    .unwrap();
    ns.exec("nft", &["-c", "-f", "-"], Some(&ruleset))
        .unwrap_or_else(|e| panic!("nft refused the middlebox rules: {e:#}\n{ruleset}"));
    drop(ns);
    let steps = idlelab::kind::cell_steps(blackhole, 0, &KubeTarget { context: None }, false);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Command { args, capture: Some(_), .. } if args.join(" ").contains("nft list counter ip idlelab_middlebox forgotten"))),
        "the evidence reads the counter both rules count in"
    );
}

/// Issue 13, defect 2: the gateway's EnvoyFilters live in istio-system beside the one shared
/// gateway; each is named and labelled per cell, and the teardown deletes them by that label
/// and waits, before the next cell uses the gateway.
#[test]
fn every_gateway_envoyfilter_is_per_cell_and_the_teardown_deletes_it() {
    let mut checked = 0;
    for name in ["https-keepalive", "https-keepalive-direct"] {
        for (i, c) in scenario_cells(name).iter().enumerate() {
            let ns = idlelab::kind::namespace_of(i, &c.scenario);
            let docs = applied(c, i);
            for d in docs.iter().filter(|d| d["kind"] == "EnvoyFilter" && d["metadata"]["namespace"] == "istio-system")
            {
                assert_eq!(d["metadata"]["labels"]["idlelab.dev/cell"], ns.as_str(), "{d}");
                assert!(d["metadata"]["name"].as_str().unwrap().ends_with(&ns), "{d}");
                checked += 1;
            }
            let steps = idlelab::kind::cell_steps(c, i, &KubeTarget { context: None }, false);
            let teardown = steps
                .iter()
                .filter_map(|s| if let Step::Command { args, .. } = s { Some(args.join(" ")) } else { None })
                .position(|a| a.contains("delete envoyfilter,secret -l idlelab.dev/cell=") && a.contains("--wait=true"))
                .expect("the teardown deletes the cell's gateway objects by label");
            let probe_log = steps
                .iter()
                .filter_map(|s| if let Step::Command { args, .. } = s { Some(args.join(" ")) } else { None })
                .position(|a| a.contains("exec idlelab-probe -c probe"))
                .unwrap();
            assert!(teardown > probe_log, "teardown comes after the cell");
        }
    }
    assert!(checked >= 3, "gateway-keepalive and the scaled idle timeout render EnvoyFilters: {checked}");
}

/// Issue 13, defect 3: on kind the lab's 198.18.0.0/15 means nothing; excludeOutboundIPRanges
/// names the cluster's own service and pod ranges, the ones kind-config sets.
#[test]
fn exclude_outbound_ip_ranges_names_the_clusters_ranges_on_kind() {
    let config = std::fs::read_to_string(repo().join("kind-config/cluster.yaml")).unwrap();
    for r in idlelab::render::KIND_RANGES {
        assert!(config.contains(&format!("\"{r}\"")), "kind-config sets {r}");
    }
    let cells = scenario_cells("redis-sidecar-upstream");
    let (i, c) =
        cells.iter().enumerate().find(|(_, c)| c.label.starts_with("exclude-outbound-ip-ranges")).expect("the cell");
    let docs = applied(c, i);
    let probe = docs.iter().find(|d| d["kind"] == "Pod" && d["metadata"]["name"] == "idlelab-probe").unwrap();
    let ranges = probe["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundIPRanges"].as_str().unwrap();
    assert_eq!(ranges, idlelab::render::KIND_RANGES.join(","), "{probe}");
}

/// Issue 13, defect 4: `rollout status` waits for a server that answers a real client.
#[test]
fn every_server_has_a_readiness_probe_that_is_a_real_client() {
    for name in shipped() {
        let c = &scenario_cells(&name)[0];
        let docs = applied(c, 0);
        let d = docs.iter().find(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet").unwrap();
        let probe = &d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
        let how = probe.to_string();
        let want = match c.real.service {
            idlelab::model::service::Service::Redis => "redis-cli",
            idlelab::model::service::Service::Mysql => "mariadb-admin",
            idlelab::model::service::Service::Memcached | idlelab::model::service::Service::Grpc => "tcpSocket",
            _ => "httpGet",
        };
        assert!(how.contains(want), "{name}: {how}");
        assert_eq!(probe["periodSeconds"], 1, "{name}");
    }
}

/// Issue 13, defect 9: the Istio profile asks for little, so a 2-vCPU runner schedules a cell.
#[test]
fn the_istio_profile_requests_fit_a_small_runner() {
    let p: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo().join("istio-profiles/minimal.yaml")).unwrap()).unwrap();
    assert_eq!(p["spec"]["components"]["pilot"]["k8s"]["resources"]["requests"]["cpu"], "100m");
    assert_eq!(p["spec"]["values"]["global"]["proxy"]["resources"]["requests"]["cpu"], "10m");
    let ports = p["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"].to_string();
    assert!(ports.contains("https-https") && ports.contains("http-http"), "named as the lab names them: {ports}");
}

/// Issue 13, defect 8: the nightly job fails when a cell regresses. No step swallows a
/// failure, tools come with checksums (cargo, the Go module proxy, the pinned istio/ module;
/// no bare download to a path that needs sudo), and the matrix is compared with the previous
/// night's summary.
#[test]
fn the_nightly_workflow_fails_on_a_regression_and_installs_checksummed_tools() {
    let text = std::fs::read_to_string(repo().join(".github/workflows/nightly.yml")).unwrap();
    let wf: Value = serde_saphyr::from_str(&text).unwrap();
    let steps: Vec<&Value> =
        wf["jobs"].as_object().unwrap().values().flat_map(|j| j["steps"].as_array().unwrap().iter()).collect();
    for s in &steps {
        let run = s["run"].as_str().unwrap_or_default();
        assert!(!run.contains("|| echo") && !run.contains("|| true"), "a swallowed failure: {run}");
        assert!(!run.contains("curl") && !run.contains("wget"), "an unchecked download: {run}");
        assert!(s.get("continue-on-error").is_none(), "{s}");
    }
    let compare =
        steps.iter().find(|s| s["run"].as_str().is_some_and(|r| r.contains("just compare"))).expect("a compare step");
    assert!(compare["run"].as_str().unwrap().contains("results/previous"), "against the previous night: {compare}");
    assert!(
        steps.iter().any(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/cache/restore"))),
        "the previous summary is restored"
    );
    let kind_loop =
        steps.iter().find(|s| s["run"].as_str().is_some_and(|r| r.contains("--backend kind --out"))).unwrap();
    assert!(kind_loop["run"].as_str().unwrap().contains("exit 1"), "{kind_loop}");
    assert!(text.contains("junit.xml"), "GitHub shows the failing cells");
}

/// Issue 19, defects 1 and 8: the profile names Istio's hub and tag (an istioctl built from
/// source would install its *testing* images otherwise), kind-up checks istioctl's version
/// before it installs and passes the hub and tag of the images it built, and the mesh-wide
/// keepalive file is an overlay with nothing but its keepalive, so it cannot drift from the
/// profile (the old copy had stale gateway port names and istiod's default requests).
#[test]
fn the_istio_profile_names_its_images_and_the_overlay_cannot_go_stale() {
    let read = |f: &str| std::fs::read_to_string(repo().join(f)).unwrap();
    let p: Value = serde_saphyr::from_str(&read("istio-profiles/minimal.yaml")).unwrap();
    assert_eq!(p["spec"]["hub"], "docker.io/istio");
    assert_eq!(p["spec"]["tag"], idlelab::kind::engine::pinned("ISTIO_RELEASE"));
    let env = &p["spec"]["values"]["pilot"]["env"];
    assert_eq!(env["PILOT_ENABLE_METADATA_EXCHANGE"], "false", "as the local lab's control plane");
    assert_eq!(env["PILOT_ENABLE_ALPN_FILTER"], "false");
    let overlay: Value = serde_saphyr::from_str(&read("istio-profiles/mesh-keepalive.yaml")).unwrap();
    let keys: Vec<&String> = overlay["spec"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["meshConfig"], "an overlay: only the mesh-wide keepalive");
    let meshconfig: Vec<&String> = overlay["spec"]["meshConfig"].as_object().unwrap().keys().collect();
    assert_eq!(meshconfig, ["tcpKeepalive"]);
    let up = read("kind-images/kind-up.sh");
    let check = up.find("istioctl version --remote=false").expect("kind-up checks istioctl's version");
    let install = up.find("istioctl install").expect("kind-up installs Istio");
    assert!(check < install, "the version is checked before the install");
    assert!(up[install..].contains("--set \"hub=$hub\" --set \"tag=$tag\""), "the images' hub and tag, explicitly");
}

/// Issue 19, defect 7: `kind load` of a BuildKit image with a provenance attestation is
/// fragile (kind#3795): every image build is either the legacy builder (no attestation) or
/// BuildKit with `--provenance=false`.
#[test]
fn no_image_is_built_with_a_provenance_attestation() {
    let build = std::fs::read_to_string(repo().join("kind-images/build.sh")).unwrap();
    let builds: Vec<&str> = build.lines().filter(|l| l.contains("docker build")).collect();
    assert!(builds.len() >= 4, "{builds:#?}");
    for l in builds {
        assert!(l.contains("DOCKER_BUILDKIT=0") || l.contains("--provenance=false"), "{l}");
    }
}

/// Issue 19, defects 3 and 4: in every nightly job the baseline is restored from the path it is
/// saved to (else `compare` never runs); `compare` runs as root, as the matrix did (a root-owned
/// target/ would fail a user's `cargo build`); the kind job brings the cluster up once, with
/// `just kind-up`, and removes it.
#[test]
fn the_nightly_jobs_restore_the_baseline_they_save_and_install_istio_once() {
    let wf: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo().join(".github/workflows/nightly.yml")).unwrap())
            .unwrap();
    for (name, job) in wf["jobs"].as_object().unwrap() {
        let steps = job["steps"].as_array().unwrap();
        let path_of = |action: &str| {
            steps
                .iter()
                .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
                .map(|s| s["with"]["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let (restored, saved) = (path_of("actions/cache/restore"), path_of("actions/cache/save"));
        assert_eq!(restored.len(), 1, "{name}: one baseline restored");
        assert_eq!(restored, saved, "{name}: the baseline is saved where it is restored from");
        let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
        for r in &runs {
            for line in r.lines().filter(|l| l.contains("idlelab compare") || l.contains("just compare")) {
                assert!(line.trim_start().starts_with("sudo"), "{name}: compare runs as root: {line}");
            }
        }
        if name == "kind" {
            assert!(job["timeout-minutes"].as_u64().unwrap() <= 90, "{name}: well inside its limit");
            let ups = runs.iter().filter(|r| r.contains("just kind-up")).count();
            assert_eq!(ups, 1, "{name}: the cluster and Istio come up once");
            assert!(!runs.iter().any(|r| r.contains("istioctl install")), "{name}: no per-scenario install");
            assert!(runs.iter().any(|r| r.contains("just kind-down")), "{name}: the cluster is removed");
        }
    }
}

/// Issue 13, defect 7: a cell's namespace is unique per run (`$RUN_ID`), and with the id filled
/// in every shipped cell's namespace is a valid DNS label.
#[test]
fn namespaces_are_unique_per_run_and_valid_dns_labels() {
    for name in shipped() {
        for (i, _) in scenario_cells(&name).iter().enumerate() {
            let ns = idlelab::kind::namespace_of(i, &name);
            assert!(ns.contains("$RUN_ID"), "{ns}");
            let real = ns.replace("$RUN_ID", "a1b2c3");
            assert!(real.len() <= 63, "{real}");
            assert!(real.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{real}");
        }
    }
}

/// The kind plan's Istio resources, for every shipped cell, pass Istio 1.30's own validation
/// (the webhook's, after a strict decode: `idlelab-xds --validate`), as the local lab's do.
#[test]
fn istios_own_validation_accepts_every_istio_resource_of_the_kind_plan() {
    require_lab();
    assert!(idlelab::tools::xds_bin().is_file(), "run `just setup` (it builds istio/)");
    let mut docs = Vec::new();
    for name in shipped() {
        for (i, c) in scenario_cells(&name).iter().enumerate() {
            for d in applied(c, i).iter().filter(|d| d["apiVersion"].as_str().is_some_and(|a| a.contains("istio.io"))) {
                let yaml = serde_saphyr::to_string(d).unwrap().replace("$RUN_ID", "a1b2c3");
                docs.push(yaml);
            }
        }
    }
    assert!(docs.len() >= 40, "{}", docs.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(idlelab::local::control_plane::validate(&docs))
        .unwrap_or_else(|e| panic!("Istio rejected a resource of the plan: {e:#}"));
    // And it can refuse: the same check on a broken one.
    let bad = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad, namespace: x}\nspec: {host: h, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}}\n";
    assert!(rt.block_on(idlelab::local::control_plane::validate(&[bad.to_string()])).is_err());
}
