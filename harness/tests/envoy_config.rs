//! The Envoy bootstraps the lab generates (client sidecar, server sidecar, gateway) are
//! accepted by the real Envoy (`--mode validate`).

mod common;
use idlelab::duration::Dur;
use idlelab::hop::{GatewayHop, ServerSidecarHop};
use idlelab::lab::envoy::{EnvoyFiles, envoy_bin};
use idlelab::lab::{gateway, server_sidecar, tls};
use idlelab::scenario::Keepalive;
use std::net::Ipv4Addr;
use std::path::Path;

fn assert_envoy_accepts(dir: &Path, name: &str, config: &serde_json::Value) {
    let envoy = envoy_bin().expect("Envoy not found: run `just setup` or set ENVOY_BIN");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let o = std::process::Command::new(&envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .args(["--disable-hot-restart", "--log-level", "error"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn keepalive() -> Option<Keepalive> {
    Some(Keepalive { time: Dur::secs(2), interval: Dur::secs(1), probes: 3 })
}

#[test]
fn server_sidecar_bootstrap_passes_envoy_validate() {
    let dir = common::tempdir();
    let files = EnvoyFiles { dir: dir.path().to_path_buf() };
    let config = server_sidecar::bootstrap(&ServerSidecarHop { idle_timeout: Dur::secs(6) }, 6379, &files);
    assert_envoy_accepts(dir.path(), "inbound", &config);
}

#[test]
fn gateway_bootstrap_with_tls_and_keepalive_passes_envoy_validate() {
    let dir = common::tempdir();
    let ca = tls::generate().unwrap();
    let files = EnvoyFiles { dir: dir.path().to_path_buf() };
    let tls_files = gateway::TlsFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
    std::fs::write(&tls_files.cert, &ca.cert_pem).unwrap();
    std::fs::write(&tls_files.key, &ca.key_pem).unwrap();
    let hop = GatewayHop { idle_timeout: Dur::secs(6), tls: true, keepalive: keepalive(), socket_options: vec![] };
    let ip = Ipv4Addr::new(198, 18, 0, 6);
    let config = gateway::bootstrap(&hop, "https", ip, Ipv4Addr::new(198, 18, 0, 10), 8443, &files, Some(&tls_files));
    assert_envoy_accepts(dir.path(), "gateway", &config);
}
