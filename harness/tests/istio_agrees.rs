//! Until the lab's own sidecar config is retired (issue 10), Istio 1.30's code checks it: for
//! every shipped cell with a client sidecar, the fields that decide the outcome, as the lab
//! writes them and as Istio's generators and pilot-agent give them to Envoy for the same cell
//! (the kind backend's annotations and resources, at the cell's time scale).

mod common;
use common::*;
use idlelab::hop::Route;
use idlelab::istio::{self, objects};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const APP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
/// Envoy's own tcp_proxy default, which applies where Istio leaves `idle_timeout` unset.
const ENVOY_DEFAULT_IDLE_MS: u64 = 3_600_000;

/// What decides the outcome on the client sidecar.
#[derive(Debug, PartialEq)]
struct Fields {
    /// `idle_timeout` of the tcp_proxy the app's connection goes through, in ms.
    idle_ms: u64,
    /// `upstream_connection_options.tcp_keepalive` of the cluster it goes to.
    keepalive: Option<(u64, u64, u64)>,
    excluded_ports: BTreeSet<String>,
    excluded_ranges: BTreeSet<String>,
}

/// An Envoy duration as JSON gives it ("6s", "6.500s").
fn millis(d: Option<&str>) -> u64 {
    d.map(|d| (d.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0).round() as u64)
        .unwrap_or(ENVOY_DEFAULT_IDLE_MS)
}

fn keepalive(cluster: Option<&Value>) -> Option<(u64, u64, u64)> {
    let ka = &cluster?["upstream_connection_options"]["tcp_keepalive"];
    ka.is_object().then(|| {
        let n = |k: &str| ka[k].as_u64().unwrap_or(0);
        (n("keepalive_time"), n("keepalive_interval"), n("keepalive_probes"))
    })
}

fn chain_tcp_proxy<'a>(listener: &'a Value, chain: Option<&str>) -> &'a Value {
    let chains = listener["filter_chains"].as_array().unwrap();
    let fc = chains
        .iter()
        .find(|fc| chain.is_none_or(|n| fc["name"] == n))
        .unwrap_or_else(|| panic!("no chain {chain:?} in {listener}"));
    let f = fc["filters"].as_array().unwrap().iter().find(|f| f["name"] == "envoy.filters.network.tcp_proxy").unwrap();
    &f["typed_config"]
}

/// The capture's `return` rules in istio-output: excluded ports and destination ranges.
fn capture_exclusions(ruleset: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut ports, mut ranges) = (BTreeSet::new(), BTreeSet::new());
    let output = ruleset.split("chain istio-output").nth(1).unwrap_or("");
    for line in output.lines().map(str::trim).filter(|l| l.ends_with("return")) {
        if let Some(p) = line.strip_prefix("tcp dport ") {
            ports.insert(p.split_whitespace().next().unwrap().trim_matches(|c| c == '{' || c == '}').to_string());
        } else if let Some(r) = line.strip_prefix("ip daddr ") {
            let r = r.split_whitespace().next().unwrap();
            if r != "127.0.0.1" {
                ranges.insert(r.to_string());
            }
        }
    }
    (ports, ranges)
}

fn istio_fields(inputs: &objects::SidecarInputs, run: &istio::SidecarRun, route: Route) -> Fields {
    let (listener, chain, cluster) = match route {
        Route::Service => (inputs.listener.as_str(), None, inputs.cluster.as_str()),
        Route::Passthrough => ("virtualOutbound", Some("virtualOutbound-catchall-tcp"), "PassthroughCluster"),
    };
    let l = istio::dynamic_listener(&run.dump, listener).unwrap_or_else(|| panic!("no listener {listener}"));
    let (excluded_ports, excluded_ranges) = capture_exclusions(&run.capture);
    Fields {
        idle_ms: millis(chain_tcp_proxy(l, chain)["idle_timeout"].as_str()),
        keepalive: keepalive(istio::dynamic_cluster(&run.dump, cluster)),
        excluded_ports,
        excluded_ranges,
    }
}

fn lab_fields(cell: &idlelab::cells::Cell, dir: &std::path::Path) -> Fields {
    let hop = cell.scaled.sidecar().unwrap();
    let service = cell.scaled.service;
    let files = idlelab::lab::envoy::EnvoyFiles { dir: dir.to_path_buf() };
    let b = idlelab::lab::sidecar::bootstrap(hop, service.name(), SERVER, service.port(), &files);
    let names = idlelab::lab::sidecar::names(hop, service.name(), service.port());
    let listeners = b["static_resources"]["listeners"].as_array().unwrap();
    let clusters = b["static_resources"]["clusters"].as_array().unwrap();
    let (listener, chain, cluster) = match hop.route {
        Route::Service => (format!("{SERVER}_{}", service.port()), None, names.service_cluster.clone()),
        Route::Passthrough => {
            ("virtualOutbound".to_string(), Some("PassthroughFilterChain"), "PassthroughCluster".to_string())
        }
    };
    let l = listeners.iter().find(|l| l["name"] == listener.as_str()).unwrap();
    Fields {
        idle_ms: millis(chain_tcp_proxy(l, chain)["idle_timeout"].as_str()),
        keepalive: keepalive(clusters.iter().find(|c| c["name"] == cluster.as_str())),
        excluded_ports: hop.exclude_outbound_ports.iter().map(u16::to_string).collect(),
        excluded_ranges: hop.exclude_outbound_ip_ranges.iter().cloned().collect(),
    }
}

#[test]
fn the_labs_client_sidecar_agrees_with_istio_on_every_shipped_cell() {
    require_lab();
    assert!(istio::xds_bin().is_file() && istio::agent_bin().is_file(), "run `just setup`: it builds istio/");
    let dir = tempdir();
    let mut cells = Vec::new();
    for name in idlelab::scenario::list(&repo().join("scenarios")).unwrap() {
        let s = idlelab::scenario::load(&repo().join(format!("scenarios/{name}.yaml"))).unwrap();
        cells.extend(idlelab::cells::expand(&s, &[], None).unwrap().into_iter().filter(|c| c.real.sidecar().is_some()));
    }
    assert!(cells.len() >= 40, "{} cells with a client sidecar", cells.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results: Vec<_> = rt.block_on(async {
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        let tasks: Vec<_> = cells
            .iter()
            .map(|cell| {
                let inputs = objects::for_cell(cell, "lab", APP, SERVER).unwrap();
                let limit = limit.clone();
                tokio::spawn(async move {
                    let _p = limit.acquire_owned().await.unwrap();
                    let run = istio::sidecar_config(&inputs).await;
                    (inputs, run)
                })
            })
            .collect();
        futures_util::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect()
    });
    let mut disagree = Vec::new();
    for (cell, (inputs, run)) in cells.iter().zip(results) {
        let run = run.unwrap_or_else(|e| panic!("{}::{}: {e:#}", cell.scenario, cell.label));
        let istio = istio_fields(&inputs, &run, cell.real.sidecar().unwrap().route);
        let lab = lab_fields(cell, dir.path());
        if istio != lab {
            disagree.push(format!("{}::{}:\n  lab   {lab:?}\n  istio {istio:?}", cell.scenario, cell.label));
        }
    }
    assert!(disagree.is_empty(), "{} cells disagree:\n{}", disagree.len(), disagree.join("\n"));
}

/// The comparison can fail: Istio's config for a cell with `ISTIO_META_IDLE_TIMEOUT: 24h` is
/// not the lab's config for the baseline of the same scenario.
#[test]
fn the_comparison_tells_two_cells_apart() {
    require_lab();
    let s = idlelab::scenario::load(&repo().join("scenarios/redis-idle.yaml")).unwrap();
    let cells = idlelab::cells::expand(&s, &["none".into(), "istio-idle-timeout".into()], None).unwrap();
    let (none, raised) = (&cells[0], &cells[1]);
    let inputs = objects::for_cell(raised, "lab", APP, SERVER).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = rt.block_on(istio::sidecar_config(&inputs)).unwrap();
    let dir = tempdir();
    assert_ne!(istio_fields(&inputs, &run, Route::Service), lab_fields(none, dir.path()));
    assert_eq!(istio_fields(&inputs, &run, Route::Service), lab_fields(raised, dir.path()));
}
