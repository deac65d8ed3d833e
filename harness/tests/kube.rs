//! The kind backend, verified without a cluster: plan snapshots for every shipped scenario,
//! every Istio resource against Istio 1.30's CRD schemas, every annotation against Istio's
//! list, the Kubernetes objects against k8s-openapi's types, and every EnvoyFilter patch
//! applied to the local lab's own Envoy config, accepted by `envoy --mode validate`, giving the
//! same Envoy field values as the local mitigation.

mod common;
use common::*;
use idlelab::cells::{Cell, expand};
use idlelab::kube::plan::Step;
use idlelab::kube::{KubeTarget, plan};
use serde_json::Value;
use std::path::PathBuf;

fn istio_api() -> PathBuf {
    let dir = std::env::var_os("IDLELAB_ISTIO_API")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().parent().unwrap().join("shared/istio-api"));
    assert!(
        dir.join("customresourcedefinitions.gen.yaml").exists(),
        "Istio's CRDs are read from {} (the shared/ folder beside the repository, or $IDLELAB_ISTIO_API)",
        dir.display()
    );
    dir
}

fn scenario_cells(name: &str) -> Vec<Cell> {
    let s = idlelab::scenario::load(&repo().join("scenarios").join(format!("{name}.yaml"))).unwrap();
    expand(&s, &[], None).unwrap()
}

fn shipped() -> Vec<String> {
    idlelab::scenario::list(&repo().join("scenarios")).unwrap()
}

/// Every manifest document applied by a plan.
fn documents(cells: &[Cell]) -> Vec<Value> {
    plan(cells, &KubeTarget { context: None })
        .steps
        .iter()
        .filter_map(|s| if let Step::Command { stdin: Some(m), .. } = s { Some(m.clone()) } else { None })
        .flat_map(|m| serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&m).unwrap())
        .collect()
}

#[test]
fn plan_snapshots_for_every_shipped_scenario() {
    for name in shipped() {
        let p = plan(&scenario_cells(&name), &KubeTarget { context: None });
        insta::assert_snapshot!(format!("plan-{name}"), p.to_string());
    }
    // An existing cluster: no kind or docker step, the context everywhere.
    let p = plan(&scenario_cells("redis-idle"), &KubeTarget { context: Some("staging".into()) });
    assert_eq!(p.programs(), ["istioctl", "kubectl"]);
    assert!(p.to_string().contains("kubectl --context staging"));
}

#[test]
fn a_compressed_plan_says_its_baseline_is_explicit_and_a_real_time_plan_keeps_istios_defaults() {
    let s = idlelab::scenario::load(&repo().join("scenarios/redis-idle.yaml")).unwrap();
    let compressed = plan(&expand(&s, &["none".into()], None).unwrap(), &KubeTarget { context: None }).to_string();
    assert!(compressed.contains("the baseline is then an explicit value, not Istio's default"), "{compressed}");
    assert!(compressed.contains("ISTIO_META_IDLE_TIMEOUT: 0h0m6s"), "{compressed}");
    let real = plan(
        &expand(&s, &["none".into()], Some(idlelab::scenario::TimeScaleSpec::Factor(1))).unwrap(),
        &KubeTarget { context: None },
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
    let text = std::fs::read_to_string(istio_api().join("customresourcedefinitions.gen.yaml")).unwrap();
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
    let text = std::fs::read_to_string(istio_api().join("annotations.yaml")).unwrap();
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
    // An empty PATH: none of docker, kind, kubectl, istioctl can be found.
    let o = idlelab(&["run", "redis-idle", "--backend", "kind", "--out", out.to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing: docker, kind, kubectl, istioctl") && err.contains("idlelab plan"), "{err}");
    assert!(!out.exists(), "nothing created");
}
