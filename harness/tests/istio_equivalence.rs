//! Each mitigation's Istio form does to the lab's own gateway and server-sidecar Envoys what
//! its local form does. (The client sidecar is configured by Istio's own code: tests/istio_xds.rs.)
//!
//! For every shipped cell whose mitigation has a cluster form, the test renders the local
//! lab's Envoy configs twice: once with the mitigation applied the local way, once from the
//! scenario as written with the Istio resource applied the way istiod would (an EnvoyFilter's
//! MERGE patch, a DestinationRule's fields, an annotation's proxy metadata or capture list).
//! The Envoy field values must be equal, and every patched config must pass
//! `envoy --mode validate`.

mod common;
use common::*;
use idlelab::cells::{Cell, expand};
use idlelab::duration::Dur;
use idlelab::hop::Hop;
use idlelab::knobs::Knobs;
use idlelab::lab::envoy::{EnvoyFiles, envoy_bin};
use idlelab::lab::{gateway, server_sidecar};
use idlelab::mitigation::{IstioContext, IstioForm};
use idlelab::timescale::apply_factor;
use serde_json::Value;
use std::net::Ipv4Addr;

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 6);

/// The Envoy configs (and capture rules) of a path: what a mitigation can change.
struct Rendered {
    gateway: Option<Value>,
    server_sidecar: Option<Value>,
}

fn render(k: &Knobs, dir: &std::path::Path) -> Rendered {
    let files = EnvoyFiles { dir: dir.to_path_buf() };
    let port = k.service.port();
    let mut r = Rendered { gateway: None, server_sidecar: None };
    for hop in &k.path {
        match hop {
            Hop::Sidecar(_) => {}
            Hop::Gateway(g) => {
                r.gateway = Some(gateway::bootstrap(g, k.service.name(), TARGET, TARGET, port, &files, None))
            }
            Hop::ServerSidecar(h) => r.server_sidecar = Some(server_sidecar::bootstrap(h, port, &files)),
            Hop::Middlebox(_) => {}
        }
    }
    r
}

/// Envoy durations ("6.000s", "6s", "0.5s") in milliseconds.
fn ms(v: &Value) -> u64 {
    let s = v.as_str().expect("a duration string");
    (s.trim_end_matches('s').parse::<f64>().expect("seconds") * 1000.0).round() as u64
}

fn tcp_proxies(bootstrap: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    for l in bootstrap["static_resources"]["listeners"].as_array_mut().unwrap() {
        for chain in l["filter_chains"].as_array_mut().unwrap() {
            for f in chain["filters"].as_array_mut().unwrap() {
                if f["name"] == "envoy.filters.network.tcp_proxy" {
                    out.push(&mut f["typed_config"]);
                }
            }
        }
    }
    out
}

/// Protobuf MERGE as EnvoyFilter applies it: messages merge field by field, lists append.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot, v) => *slot = v.clone(),
    }
}

/// What istiod would make of the resources: applied to the configs of the unmitigated path.
fn apply_istio(r: &mut Rendered, forms: &[IstioForm]) {
    for form in forms {
        match form {
            IstioForm::Manifest { kind, yaml } if kind == "EnvoyFilter" => {
                let ef: Value = serde_saphyr::from_str(yaml).unwrap();
                for p in ef["spec"]["configPatches"].as_array().unwrap() {
                    assert_eq!(p["patch"]["operation"], "MERGE");
                    match (p["applyTo"].as_str().unwrap(), p["match"]["context"].as_str().unwrap()) {
                        // The client sidecar's: Istio's own code applies it.
                        ("NETWORK_FILTER", "SIDECAR_OUTBOUND") => {}
                        ("NETWORK_FILTER", "GATEWAY") => {
                            for tp in tcp_proxies(r.gateway.as_mut().expect("a gateway")) {
                                merge(tp, &p["patch"]["value"]["typed_config"]);
                            }
                        }
                        ("LISTENER", "GATEWAY") => {
                            let g = r.gateway.as_mut().expect("a gateway");
                            let l = &mut g["static_resources"]["listeners"][0];
                            assert_eq!(
                                l["address"]["socket_address"]["port_value"],
                                p["match"]["listener"]["portNumber"]
                            );
                            merge(l, &p["patch"]["value"]);
                        }
                        other => panic!("no translation for {other:?}"),
                    }
                }
            }
            // A DestinationRule acts on the client sidecar: Istio's own code applies it.
            IstioForm::Manifest { kind, .. } if kind == "DestinationRule" => {}
            IstioForm::PodAnnotation { pod, key, value } => match key.as_str() {
                "proxy.istio.io/config" if pod == "server" => {
                    let d = go_ms(value.split("ISTIO_META_IDLE_TIMEOUT:").nth(1).unwrap().trim());
                    let idle = Value::String(format!("{}s", d as f64 / 1000.0));
                    for tp in tcp_proxies(r.server_sidecar.as_mut().expect("a server sidecar")) {
                        tp["idle_timeout"] = idle.clone();
                    }
                }
                // The client pod's annotations reach Istio's own pilot-agent and istio-iptables.
                _ if pod == "client" => {}
                other => panic!("no translation for annotation {other}"),
            },
            IstioForm::Manifest { kind, .. } => panic!("no translation for {kind}"),
            IstioForm::AppSetting { .. } => {}
        }
    }
}

/// A Go duration (`0h0m6s`, `0s`, `1500ms`) in milliseconds.
fn go_ms(s: &str) -> u64 {
    if let Some(v) = s.strip_suffix("ms") {
        return v.parse().unwrap();
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        match c {
            'h' => total += std::mem::take(&mut num).parse::<u64>().unwrap() * 3_600_000,
            'm' => total += std::mem::take(&mut num).parse::<u64>().unwrap() * 60_000,
            's' => total += std::mem::take(&mut num).parse::<u64>().unwrap() * 1000,
            d => num.push(d),
        }
    }
    total
}

/// The Envoy field values a mitigation can change, in comparable form.
fn fields(r: &mut Rendered) -> Value {
    let idle = |b: &mut Value| tcp_proxies(b).into_iter().map(|t| ms(&t["idle_timeout"])).collect::<Vec<u64>>();
    let mut v = serde_json::json!({});
    if let Some(b) = r.server_sidecar.as_mut() {
        v["server_idle_ms"] = serde_json::json!(idle(b));
    }
    if let Some(g) = r.gateway.as_mut() {
        v["gateway_socket_options"] = g["static_resources"]["listeners"][0]["socket_options"].clone();
        v["gateway_idle_ms"] = serde_json::json!(idle(g));
    }
    v
}

fn validate(name: &str, config: &Value) {
    let dir = tempdir();
    let path = dir.path().join("bootstrap.json");
    let mut config = config.clone();
    // The gateway's TLS files are not part of what a mitigation changes.
    if let Some(l) = config["static_resources"]["listeners"][0]["filter_chains"][0].as_object_mut() {
        l.remove("transport_socket");
    }
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let envoy = envoy_bin().expect("Envoy not found: run `just setup` or set ENVOY_BIN");
    let o = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn ctx(cell: &Cell) -> IstioContext {
    IstioContext {
        namespace: "ns".into(),
        client_app: "idlelab-probe".into(),
        service_host: "svc".into(),
        service_port: cell.real.service.port(),
        sidecar_pods: cell.real.sidecar_pods(),
        factor: cell.time_scale.factor,
    }
}

#[test]
fn every_mitigation_with_a_cluster_form_sets_the_same_envoy_fields() {
    let dir = tempdir();
    let mut compared = std::collections::BTreeSet::new();
    for name in idlelab::scenario::list(&repo().join("scenarios")).unwrap() {
        let s = idlelab::scenario::load(&repo().join("scenarios").join(format!("{name}.yaml"))).unwrap();
        for cell in expand(&s, &[], None).unwrap() {
            let forms = cell.mitigation.as_mitigation().istio_resources(&ctx(&cell));
            if forms.is_empty() || forms.iter().all(|f| matches!(f, IstioForm::AppSetting { .. })) {
                continue;
            }
            let mut local = render(&cell.scaled, dir.path());
            let baseline = apply_factor(&cell.baseline, cell.time_scale.factor);
            let mut istio = render(&baseline, dir.path());
            apply_istio(&mut istio, &forms);
            let (l, i) = (fields(&mut local), fields(&mut istio));
            assert_eq!(l, i, "{name} / {}: the local and the Istio form disagree", cell.label);
            for (what, config) in
                [("gateway", istio.gateway.as_ref()), ("server-sidecar", istio.server_sidecar.as_ref())]
            {
                if let Some(c) = config {
                    validate(&format!("{name} / {} / {what}", cell.label), c);
                }
            }
            compared.insert(cell.label.split('=').next().unwrap().to_string());
        }
    }
    let kinds: Vec<&str> = compared.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "dr-idle-timeout",
            "dr-tcp-keepalive",
            "envoyfilter-idle-timeout",
            "exclude-outbound-ip-ranges",
            "exclude-outbound-ports",
            "gateway-keepalive",
            "istio-idle-timeout"
        ]
    );
}

#[test]
fn the_comparison_can_fail() {
    // A gateway keepalive of another time must not compare equal.
    let s = idlelab::scenario::load(&repo().join("scenarios/https-keepalive.yaml")).unwrap();
    let cell = expand(&s, &["gateway-keepalive".into()], None).unwrap().remove(0);
    let dir = tempdir();
    let mut local = render(&cell.scaled, dir.path());
    let baseline = apply_factor(&cell.baseline, cell.time_scale.factor);
    let mut istio = render(&baseline, dir.path());
    let other = idlelab::mitigation::gateway_keepalive::GatewayKeepalive(idlelab::scenario::Keepalive {
        time: Dur::secs(3600),
        interval: Dur::secs(10),
        probes: 3,
    });
    apply_istio(&mut istio, &idlelab::mitigation::Mitigation::istio_resources(&other, &ctx(&cell)));
    let (l, i) = (fields(&mut local), fields(&mut istio));
    assert!(l["gateway_socket_options"].is_array(), "{l}");
    assert_ne!(l, i);
}

#[test]
fn the_gateways_scaled_idle_timeout_filter_sets_what_the_local_gateway_has() {
    let dir = tempdir();
    let s = idlelab::scenario::load(&repo().join("scenarios/https-keepalive.yaml")).unwrap();
    let cell = expand(&s, &["none".into()], None).unwrap().remove(0);
    let scaled_gateway = cell
        .scaled
        .path
        .iter()
        .find_map(|h| if let Hop::Gateway(g) = h { Some(g.idle_timeout) } else { None })
        .unwrap();
    let mut unset = cell.scaled.clone();
    for h in unset.path.iter_mut() {
        if let Hop::Gateway(g) = h {
            g.idle_timeout = Dur::secs(3600);
        }
    }
    let mut local = render(&cell.scaled, dir.path());
    let mut istio = render(&unset, dir.path());
    let yaml = idlelab::kube::istio::gateway_idle_timeout("ns", scaled_gateway, cell.real.service.port());
    apply_istio(&mut istio, &[IstioForm::Manifest { kind: "EnvoyFilter".into(), yaml }]);
    assert_eq!(fields(&mut local)["gateway_idle_ms"], fields(&mut istio)["gateway_idle_ms"]);
    validate("gateway idle timeout", istio.gateway.as_ref().unwrap());
}
