//! The sidecar bootstraps the lab generates are accepted by the real Envoy (`--mode validate`).

mod common;
use idlelab::duration::Dur;
use idlelab::hop::{Route, SidecarHop};
use idlelab::lab::envoy::{EnvoyFiles, envoy_bin};
use idlelab::lab::{server_sidecar, sidecar};
use std::net::Ipv4Addr;

#[test]
fn generated_sidecar_bootstraps_pass_envoy_validate() {
    let envoy = envoy_bin().expect("Envoy not found: run `just setup` or set ENVOY_BIN");
    let dir = common::tempdir();
    for (route, timeout, excluded) in [(Route::Service, 6, vec![]), (Route::Passthrough, 0, vec![6379])] {
        let hop = SidecarHop {
            idle_timeout: Dur::secs(timeout),
            route,
            exclude_outbound_ports: excluded,
            exclude_outbound_ip_ranges: vec!["198.18.0.0/15".into()],
            upstream_keepalive: Some(idlelab::scenario::Keepalive {
                time: Dur::secs(2),
                interval: Dur::secs(1),
                probes: 3,
            }),
            service_idle_timeout: Some(Dur::secs(3)),
        };
        let files = EnvoyFiles { dir: dir.path().to_path_buf() };
        let config = sidecar::bootstrap(&hop, "redis", Ipv4Addr::new(198, 18, 0, 2), 6379, &files);
        let path = dir.path().join(format!("{route:?}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let o = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .args(["--disable-hot-restart", "--log-level", "error"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{route:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn generated_server_sidecar_bootstrap_passes_envoy_validate() {
    let envoy = envoy_bin().expect("Envoy not found: run `just setup` or set ENVOY_BIN");
    let dir = common::tempdir();
    let files = EnvoyFiles { dir: dir.path().to_path_buf() };
    let config =
        server_sidecar::bootstrap(&idlelab::hop::ServerSidecarHop { idle_timeout: Dur::secs(6) }, 6379, &files);
    let path = dir.path().join("inbound.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let o = std::process::Command::new(&envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .args(["--disable-hot-restart", "--log-level", "error"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}
