//! Issue 19: the kind backend on a real kind cluster with Istio, on this machine.
//!
//! One test, in order, because the steps share one cluster:
//! 1. `kind-images/kind-up.sh` (what `just kind-up` runs): the lab's own Docker engine in a
//!    network namespace of its own, every image built offline and cached, the cluster and Istio
//!    reused when present; a cluster whose node stopped is made anew (the scenarios run on it).
//! 2. The same scenarios on both backends; every cell's verdict on kind equals the local lab's.
//!    The evidence shows istiod configured the probe's sidecar (its tcp_proxy idle timeout, as
//!    the local lab's config dump shows it) and a middlebox counted the segments it forgot.
//!    gRPC too: balance runs (replicas behind the cluster's kube-proxy, `kubectl scale`) and
//!    keepalive PINGs that end at the client sidecar.
//!    With `--capture`, every failed connection is attributed to the hop the lab configured
//!    (issue 21), through the cluster's NATs.
//! 3. A run killed with SIGKILL mid-cell, then `idlelab reap`: nothing of the lab left on the
//!    cluster.
//! 4. `kind-up.sh --down`: no cluster, no dockerd, no namespace of the lab; the host's nft and
//!    iptables rulesets as they were before step 1.
//!
//! Where Docker cannot run, step 1 fails and says what to install; nothing is skipped.

mod common;

use common::{bin, repo, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// The host's own rules, which the lab must not touch.
fn host_rules() -> String {
    let nft = Command::new("nft").args(["list", "ruleset"]).output().expect("nft (Debian nftables)");
    let ipt = Command::new("iptables-save").output().map(|o| o.stdout).unwrap_or_default();
    // iptables-save stamps the time it ran; only the rules count.
    let ipt: String =
        String::from_utf8_lossy(&ipt).lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    format!("{}\n{ipt}", String::from_utf8_lossy(&nft.stdout))
}

fn kind_up() {
    let started = std::time::Instant::now();
    let status = Command::new("bash")
        .arg(repo().join("kind-images/kind-up.sh"))
        .current_dir(repo())
        // The lab image carries the binary under test, wherever cargo put it.
        .env("IDLELAB_EXE", env!("CARGO_BIN_EXE_idlelab"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "the kind backend's test needs a kind cluster, and `just kind-up` failed ({status}).\n  \
         It runs as root and installs Debian's docker.io, debootstrap and jq itself; it needs the Go \
         toolchain (Kubernetes, etcd, coredns, kind and Istio are built from Go modules), `just setup` \
         (Envoy for the proxy image) and about 10 GB of disk. Its output above says which step failed."
    );
    eprintln!("kind-up: {:.0} s", started.elapsed().as_secs_f64());
}

/// `idlelab run SCENARIO` on one backend (and `extra` arguments); its summary.json.
fn run(scenario: &str, backend: &str, out: &std::path::Path, extra: &[&str]) -> Value {
    let started = std::time::Instant::now();
    let mut args = vec!["run", scenario, "--backend", backend, "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = common::run(&args);
    assert!(
        out.join("summary.json").exists(),
        "{scenario} on {backend} wrote no summary ({}):\n{}",
        o.status,
        text(&o)
    );
    eprintln!("{scenario} on {backend}: {:.0} s", started.elapsed().as_secs_f64());
    common::summary(out)
}

/// Each cell's verdict (or its error) by cell label.
fn verdicts(summary: &Value) -> BTreeMap<String, String> {
    summary["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let v = c["verdict"].as_str().map(str::to_string);
            (c["cell"].as_str().unwrap().to_string(), v.unwrap_or_else(|| format!("error: {}", c["error"])))
        })
        .collect()
}

fn notes(cell: &Value) -> String {
    cell["evidence"]["notes"]
        .as_array()
        .map(|n| n.iter().map(|x| x.as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// When the cluster's node container was made.
fn node_created() -> String {
    let engine = idlelab::kind::engine::LabEngine::detect().expect("the lab's engine runs");
    let args = ["inspect", "-f", "{{.Created}}", "idlelab-control-plane"].map(String::from);
    let o = engine.command("docker", &args).output().expect("docker");
    assert!(o.status.success(), "docker inspect: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The lab's namespaces on the cluster, asked the way the kind backend asks (`kind::engine`).
fn lab_namespaces() -> Vec<String> {
    let engine = idlelab::kind::engine::LabEngine::detect().expect("the lab's engine runs");
    let args = ["--context", "kind-idlelab", "get", "ns", "-l", idlelab::kind::MANAGED_BY, "-o", "name"];
    let o = engine.command("kubectl", &args.map(String::from)).output().expect("kubectl");
    assert!(o.status.success(), "kubectl: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_kind_backend_agrees_with_the_local_lab_on_a_real_cluster() {
    common::require_lab();
    let before = host_rules();
    kind_up();

    // A node that stopped (an engine restored from a snapshot, as a CI machine's was) is not
    // reused: kind-up makes the cluster anew, and the scenarios below run on that one.
    let created_before = node_created();
    let engine = idlelab::kind::engine::LabEngine::detect().expect("the lab's engine runs");
    let stop = engine.command("docker", &["stop", "idlelab-control-plane"].map(String::from)).output().unwrap();
    assert!(stop.status.success(), "docker stop: {}", String::from_utf8_lossy(&stop.stderr));
    kind_up();
    assert_ne!(node_created(), created_before, "kind-up made a new node for the stopped one");

    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    let scenarios = [
        "redis-idle",
        "redis-sidecar-upstream",
        "redis-blackhole",
        "https-keepalive",
        "redis-idle-go",
        // Issue 20 on a cluster: tonic and grpc-go clients behind the cluster's own kube-proxy,
        // headless balancing, a client sidecar balancing per request; scaled by `kubectl scale`.
        "grpc-pinned",
        "grpc-pinned-go",
        // …and keepalive PINGs that end at the client sidecar, an NLB behind it.
        "grpc-keepalive-sidecar",
    ];
    for scenario in scenarios {
        let local = run(scenario, "local", &dir.path().join(format!("{scenario}-local")), &[]);
        // A balance cell's capture is passive: grpc-pinned runs captured (below).
        let extra: &[&str] = if scenario == "grpc-pinned" { &["--capture"] } else { &[] };
        let kind = run(scenario, "kind", &dir.path().join(format!("{scenario}-kind")), extra);
        assert_eq!(kind["backend"], "kind (kind-idlelab)");
        let (l, k) = (verdicts(&local), verdicts(&kind));
        assert_eq!(k, l, "{scenario}: every cell's verdict on kind equals the local lab's (kind, then local)");
        compared += k.len();

        for cell in kind["cells"].as_array().unwrap() {
            let label = cell["cell"].as_str().unwrap();
            let notes = notes(cell);
            if scenario == "redis-idle" && label == "none" {
                // istiod's config of the probe's sidecar: the scaled tcp_proxy idle timeout.
                assert!(
                    notes.contains("_6379 idle_timeout 6s"),
                    "{scenario}::{label}: istiod's config in the evidence:\n{notes}"
                );
                // …and the sidecar's own count: its tcp_proxy closed the 4 pooled connections.
                assert!(
                    notes.lines().any(|l| l.contains("tcp.outbound|6379||redis.") && l.contains(".idle_timeout: 4")),
                    "{scenario}::{label}: the sidecar's idle-timeout counter:\n{notes}"
                );
            }
            if scenario == "redis-idle" && label.starts_with("istio-idle-timeout") {
                // A 1 s idle: the evidence is still there (read after the probe, pod still up).
                assert!(notes.contains("_6379 idle_timeout 20.571s"), "{scenario}::{label}: the scaled 24h:\n{notes}");
            }
            // The middlebox forgot the flow: behind the sidecar too, the app's gRPC PINGs
            // notwithstanding (they end at its Envoy).
            if scenario == "redis-sidecar-upstream" && label == "none"
                || scenario == "redis-blackhole" && label == "none"
                || scenario == "grpc-keepalive-sidecar" && !label.starts_with("dr-tcp-keepalive")
            {
                let counted = notes
                    .lines()
                    .find(|l| l.contains("forgotten-flow segments"))
                    .and_then(|l| l.split("packets ").nth(1))
                    .and_then(|n| n.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok());
                assert!(counted.is_some_and(|n| n > 0), "{scenario}::{label}: the middlebox's counter:\n{notes}");
            }
            if scenario.starts_with("grpc-pinned") {
                let why = cell["explanation"].as_str().unwrap_or_default();
                // The replicas' own counts, read from the pods: the 2 added by `kubectl scale`
                // get nothing over per-connection balancing, their share behind a sidecar.
                let added_idle = why.contains("replica 4, replica 5 served nothing");
                assert_eq!(added_idle, label != "client-sidecar", "{scenario}::{label}: {why}\n{notes}");
                assert!(notes.contains("scaled to 6 replicas"), "{scenario}::{label}:\n{notes}");
                if scenario == "grpc-pinned" {
                    // Captured on every client and replica pod, the two `kubectl scale` added
                    // included (from when they were Ready).
                    let capture = notes.lines().find(|l| l.starts_with("capture: ")).unwrap_or_default();
                    let file = capture.strip_prefix("capture: ").and_then(|r| r.split(" (").next()).unwrap_or_default();
                    let (names, packets) = common::interface_names(std::path::Path::new(file));
                    assert!(packets > 0, "{scenario}::{label}: {capture}");
                    for pod in ["client-0", "client-2", "grpc-0", "grpc-3", "grpc-5"] {
                        assert!(names.contains(&format!("{pod} eth0")), "{scenario}::{label}: {pod}: {names:?}");
                    }
                }
                if label == "client-sidecar" {
                    // istiod configured each client's sidecar, and EDS brought the new replicas.
                    assert!(notes.contains("lb_policy LEAST_REQUEST"), "{scenario}::{label}:\n{notes}");
                    assert!(notes.contains("holds 6 endpoints (EDS)"), "{scenario}::{label}:\n{notes}");
                }
            }
        }
    }
    assert_eq!(compared, 7 + 5 + 4 + 4 + 4 + 3 + 3 + 3, "every cell compared");

    // Issue 21 on the cluster: `--capture` takes every pod of the path (the probe's with its
    // sidecar, each middlebox's, the server's) in its network namespace on this machine's
    // kernel, on one clock. Through kube-proxy's and the middlebox's NATs, every connection
    // that ended badly is attributed to the hop the lab configured, N of N, as the local lab's.
    let (mut attributed, mut failing) = (0, 0);
    for (scenario, middlebox) in
        [("redis-idle", None), ("redis-sidecar-upstream", Some("mb1")), ("redis-blackhole", Some("mb0"))]
    {
        let out = dir.path().join(format!("{scenario}-kind-capture"));
        let o = common::run(&["run", scenario, "--backend", "kind", "--capture", "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{scenario} --capture on kind: every cell matches:\n{}", text(&o));
        let s = common::summary(&out);
        let score = common::score_attributions(&s);
        assert!(score.wrong.is_empty(), "{scenario} on kind: attributions that disagree:\n{}", score.wrong.join("\n"));
        assert_eq!(score.agreeing, score.attributed);
        (attributed, failing) = (attributed + score.attributed, failing + score.failing_cells);
        for cell in s["cells"].as_array().unwrap() {
            let capture = &cell["evidence"]["lab"]["capture"];
            // A middlebox pod's conntrack names the flow by its own side of the NAT: joined, its
            // DESTROY is the flow's.
            for a in capture["attributions"].as_array().unwrap() {
                let ct = &a["first"]["conntrack"];
                if ct["watched"] == true {
                    assert!(ct["destroyed_at_idle_s"].is_number(), "{}: {}", cell["key"], a["sentence"]);
                }
            }
            let file = std::path::Path::new(capture["file"].as_str().unwrap());
            // A second library reads it: one interface block per pod interface, named after its hop.
            let (names, packets) = common::interface_names(file);
            assert_eq!(capture["interfaces"].as_array().unwrap().len(), names.len(), "{}", file.display());
            assert!(
                packets > 0 && names.contains(&"app eth0".to_string()) && names.contains(&"srv eth0".to_string()),
                "{names:?}"
            );
            if let Some(mb) = middlebox {
                assert!(names.contains(&format!("{mb} eth0")), "{}: {names:?}", cell["key"]);
            }
        }
    }
    eprintln!(
        "kind --capture: {attributed} of {attributed} failed connections name the configured hop ({failing} failing cells)"
    );
    assert!(failing >= 5 && attributed >= 4 * failing, "{attributed} attributions over {failing} failing cells");

    // A run killed mid-cell leaves its namespace; reap removes it.
    let mut child = Command::new(bin())
        .args(["run", "redis-idle", "--backend", "kind", "--mitigation", "none", "--out"])
        .arg(dir.path().join("killed"))
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lab_namespaces().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the run made no namespace within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!lab_namespaces().is_empty(), "the killed run left its namespace (what reap is for)");
    let reap = Command::new(bin()).arg("reap").current_dir(repo()).output().unwrap();
    assert!(reap.status.success(), "{}", String::from_utf8_lossy(&reap.stderr));
    assert_eq!(lab_namespaces(), Vec::<String>::new(), "reap removed the killed run's namespace");

    // kind-down: nothing of the lab's left, the host's rules untouched.
    let down = Command::new("bash").arg(repo().join("kind-images/kind-up.sh")).arg("--down").status().unwrap();
    assert!(down.success());
    assert!(!std::path::Path::new("/run/netns/idlelab-kind").exists(), "the engine's namespace is gone");
    let procs = Command::new("pgrep").args(["-f", "dockerd --data-root /var/lib/idlelab"]).output().unwrap();
    assert!(procs.stdout.is_empty(), "no dockerd left: {}", String::from_utf8_lossy(&procs.stdout));
    assert_eq!(host_rules(), before, "the host's nft and iptables rules are as they were");
}
