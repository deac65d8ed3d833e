//! `--capture` on the lab's kind cluster: its node is a container on this machine, so every
//! pod's network namespace is one of this kernel's, and the local lab's capture
//! ([`crate::local::capture::CellCapture`]) takes it as it takes a lab namespace.
//!
//! ```text
//!   kubectl get pod … {.metadata.uid} ─▶ $POD_UID_<node>        (plan steps, through kubectl)
//!   capture start: /proc/<pid>/cgroup names kubepods-…-pod<uid>.slice
//!        ─▶ /proc/<pid>/ns/net ─▶ one AF_PACKET socket per pod (eth0, lo), conntrack -E in
//!           each middlebox pod ─▶ the probe's `kubectl exec` runs
//!   capture finish ─▶ <out>/captures/<scenario>--<cell>.pcapng: `app eth0`, `mb1 eth0`, `srv lo`…
//!   kubectl logs -c istio-proxy ─▶ each proxy's access log (JSON) ─▶ the attribution
//! ```
//!
//! A cluster of the user's own (`--context`) takes no capture: its pods are on other machines.

use crate::local::capture::{CaptureFile, CellCapture};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The variable a pod's UID is read into: `POD_UID_<node>`.
pub fn uid_var(node: &str) -> String {
    format!("POD_UID_{}", node.replace('-', "_"))
}

/// What one pod of a cell is on the path: its node name (as the local lab names its
/// namespaces) and how kubectl finds it.
pub struct CapturedPod {
    pub node: String,
    /// `-n <namespace> get pod <name>` or `… get pod -l <selector>`: the arguments after
    /// `kubectl --context …`.
    pub get: Vec<String>,
}

impl CapturedPod {
    pub fn named(node: &str, ns: &str, pod: &str) -> Self {
        CapturedPod { node: node.into(), get: ["-n", ns, "get", "pod", pod].map(String::from).to_vec() }
    }
    pub fn labelled(node: &str, ns: &str, selector: &str) -> Self {
        CapturedPod { node: node.into(), get: ["-n", ns, "get", "pod", "-l", selector].map(String::from).to_vec() }
    }
    /// The jsonpath of its UID in what `get` prints.
    pub fn uid_path(&self) -> &'static str {
        if self.get.iter().any(|a| a == "-l") {
            "jsonpath={.items[0].metadata.uid}"
        } else {
            "jsonpath={.metadata.uid}"
        }
    }
}

/// A cell's capture on a cluster whose pods share this machine's kernel (the lab's kind
/// cluster): every packet of the listed pods' network namespaces, as the local lab takes it.
/// A plan step ([`super::plan::Step::Capture`]) carried out by the command runner.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum CaptureAction {
    /// Start capturing in each pod, named by its node on the path (`app`, `mb1`, `srv`) and
    /// its UID (`$POD_UID_<node>`, read by an earlier step); `forwarders`: the nodes whose
    /// conntrack is watched (the middleboxes).
    Start { pods: Vec<(String, String)>, forwarders: Vec<String> },
    /// Capture these pods too, from now on (the replicas a scale event added).
    Add { pods: Vec<(String, String)> },
    /// Stop, and write every packet to `file` (one pcapng, one interface block per pod
    /// interface). Runs after a failure too: a failed cell is when the capture matters.
    Finish { file: String },
}

impl CaptureAction {
    /// The same action with each pod UID and the file name passed through `fill` (`$NAME`s).
    pub fn filled(&self, fill: impl Fn(&str) -> String) -> CaptureAction {
        let pods = |pods: &[(String, String)]| pods.iter().map(|(n, uid)| (n.clone(), fill(uid))).collect();
        match self {
            CaptureAction::Start { pods: p, forwarders } => {
                CaptureAction::Start { pods: pods(p), forwarders: forwarders.clone() }
            }
            CaptureAction::Add { pods: p } => CaptureAction::Add { pods: pods(p) },
            CaptureAction::Finish { file } => CaptureAction::Finish { file: fill(file) },
        }
    }

    /// `node=uid …` of its pods, or its file: how the plan prints it.
    pub fn describe(&self) -> String {
        let pods = |pods: &[(String, String)]| {
            pods.iter().map(|(node, uid)| format!("{node}={uid}")).collect::<Vec<_>>().join(" ")
        };
        match self {
            CaptureAction::Start { pods: p, forwarders } if forwarders.is_empty() => format!("start {}", pods(p)),
            CaptureAction::Start { pods: p, forwarders } => {
                format!("start {} watching conntrack in {}", pods(p), forwarders.join(","))
            }
            CaptureAction::Add { pods: p } => format!("add {}", pods(p)),
            CaptureAction::Finish { file } => format!("finish {file}"),
        }
    }
}

/// Carry out a capture step: `slot` holds the capture between its start and its finish.
pub fn carry_out(slot: &mut Option<CellCapture>, action: &CaptureAction) -> Result<Option<CaptureFile>> {
    match action {
        CaptureAction::Start { pods, forwarders } => {
            let namespaces = namespaces(pods)?;
            // Named as the lab's temp dirs are (`idlelab-<pid>-`): `idlelab reap` removes it
            // after a killed run.
            let prefix = format!("{}{}-kind-capture-", crate::local::netns::PREFIX, std::process::id());
            let dir = tempfile::Builder::new().prefix(&prefix).tempdir()?;
            let capture = on_runtime(CellCapture::start(&namespaces, forwarders, dir.path()))?;
            *slot = Some(capture.keeping(dir));
            Ok(None)
        }
        CaptureAction::Add { pods } => {
            let namespaces = namespaces(pods)?;
            let Some(capture) = slot.as_mut() else { bail!("no capture to add pods to") };
            on_runtime(capture.add(&namespaces))?;
            Ok(None)
        }
        CaptureAction::Finish { file } => match slot.take() {
            Some(capture) => Ok(Some(capture.finish(Path::new(file))?)),
            None => Ok(None),
        },
    }
}

/// Run `f` to its end from the kind backend's blocking thread, on the runtime that thread
/// belongs to (the capture's namespace threads are started through it).
fn on_runtime<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Handle::try_current().context("no runtime to run the capture on")?.block_on(f)
}

/// What `--capture` on the cluster needs of this machine, checked before anything exists:
/// root (to read every process's cgroup and enter the pods' namespaces) and `conntrack`.
pub fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("--capture on the kind backend enters each pod's network namespace on this machine: it needs root\n  hint: run it as root (sudo), or without --capture".into());
    }
    if crate::tools::find_in_path("conntrack").is_none() {
        return Err("--capture watches each middlebox pod's conntrack with `conntrack -E`: conntrack is not on PATH\n  hint: apt-get install conntrack (`just setup` installs it)".into());
    }
    Ok(())
}

/// Each `(node, pod UID)`'s network namespace.
fn namespaces(pods: &[(String, String)]) -> Result<Vec<(String, PathBuf)>> {
    pods.iter()
        .map(|(node, uid)| Ok((node.clone(), pod_netns(uid).with_context(|| format!("{node}'s pod (UID {uid})"))?)))
        .collect()
}

/// The network namespace of the pod with this UID: `/proc/<pid>/ns/net` of a container's first
/// process, found by its cgroup (kubelet names it `…pod<uid>…`, dashes or underscores). Its
/// parent (the runtime's shim) is outside the pod, in the node's namespace: a pod that shares
/// it (on the host's network) is refused, as is one in this machine's own.
pub fn pod_netns(uid: &str) -> Result<PathBuf> {
    pod_netns_in(Path::new("/proc"), uid)
}

fn pod_netns_in(proc: &Path, uid: &str) -> Result<PathBuf> {
    if uid.len() < 8 || !uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        bail!("`{uid}` is not a pod UID");
    }
    let (dashed, underscored) = (format!("pod{uid}"), format!("pod{}", uid.replace('-', "_")));
    let in_pod = |pid: &Path| {
        std::fs::read_to_string(pid.join("cgroup")).is_ok_and(|c| c.contains(&dashed) || c.contains(&underscored))
    };
    let netns = |pid: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(pid.join("ns/net")).ok().map(|m| (m.dev(), m.ino()))
    };
    let machine = netns(&proc.join("self")).with_context(|| format!("reading {}/self/ns/net", proc.display()))?;
    for entry in std::fs::read_dir(proc).with_context(|| format!("reading {}", proc.display()))?.flatten() {
        let pid = entry.path();
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) || !in_pod(&pid) {
            continue;
        }
        let status = std::fs::read_to_string(pid.join("status")).unwrap_or_default();
        let Some(parent) = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(|p| proc.join(p.trim())) else {
            continue;
        };
        if in_pod(&parent) {
            continue;
        }
        let Some(ns) = netns(&pid) else { continue };
        if ns == machine || Some(ns) == netns(&parent) {
            bail!("the pod runs on its node's network (hostNetwork): its capture would be the node's");
        }
        return Ok(pid.join("ns/net"));
    }
    bail!(
        "no process of this machine is in the pod's cgroup: --capture on the kind backend needs the lab's own kind cluster (`just kind-up`), whose node runs here"
    )
}

/// The JSON lines of a proxy's `kubectl logs` (the access log; pilot-agent's own lines are
/// text, and left out).
pub fn access_log_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        // pilot-agent prints the mesh config at its start, the format (unfilled) on a line.
        .filter(|v| v["start"].as_str().is_some_and(|t| !t.contains('%')) && v.get("downstream").is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc of a node: a shim (pid 50, the node's namespace) and a container's first
    /// process (pid 100) in the pod's cgroup, kubelet's systemd naming (underscores).
    fn fake_proc(host_network: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("self/ns/net", "");
        write("50/cgroup", "0::/docker/948b/system.slice/containerd.service\n");
        write("50/status", "Name:\tcontainerd-shim\nPPid:\t1\n");
        write("50/ns/net", "");
        write(
            "100/cgroup",
            "0::/docker/948b/kubelet.slice/kubelet-kubepods-besteffort-podb7471f0a_179e_4b0c_b1ef_13adcfb65114.slice/cri-containerd-c5.scope\n",
        );
        write("100/status", "Name:\ttini\nPPid:\t50\n");
        if host_network {
            std::fs::create_dir_all(dir.path().join("100/ns")).unwrap();
            std::fs::hard_link(dir.path().join("50/ns/net"), dir.path().join("100/ns/net")).unwrap();
        } else {
            write("100/ns/net", "");
        }
        // A process of the container (its parent is in the pod): not the one asked.
        write(
            "101/cgroup",
            "0::/docker/948b/kubelet.slice/kubelet-kubepods-besteffort-podb7471f0a_179e_4b0c_b1ef_13adcfb65114.slice/cri-containerd-c5.scope\n",
        );
        write("101/status", "PPid:\t100\n");
        dir
    }

    #[test]
    fn a_pods_namespace_is_its_first_processs_and_a_host_network_pod_is_refused() {
        let uid = "b7471f0a-179e-4b0c-b1ef-13adcfb65114";
        let proc = fake_proc(false);
        assert_eq!(pod_netns_in(proc.path(), uid).unwrap(), proc.path().join("100/ns/net"));
        let e = pod_netns_in(fake_proc(true).path(), uid).unwrap_err().to_string();
        assert!(e.contains("hostNetwork"), "{e}");
        let e = pod_netns_in(proc.path(), "b7471f0a-179e-4b0c-b1ef-000000000000").unwrap_err().to_string();
        assert!(e.contains("just kind-up"), "{e}");
    }

    #[test]
    fn a_pods_namespace_is_found_by_its_cgroup_and_nothing_else_is() {
        // This test's own process is in no pod: a UID no process carries is an error that
        // says what to do; a malformed one is refused before /proc is read.
        let e = pod_netns("b7471f0a-179e-4b0c-b1ef-000000000000").unwrap_err().to_string();
        assert!(e.contains("just kind-up"), "{e}");
        assert!(pod_netns("$POD_UID_app").unwrap_err().to_string().contains("not a pod UID"));
    }

    /// The cluster's proxies log what the local lab's do: the attribution reads both alike.
    #[test]
    fn the_clusters_access_log_format_is_the_local_labs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let profile = std::fs::read_to_string(root.join("istio-profiles/minimal.yaml")).unwrap();
        let profile: serde_json::Value = serde_saphyr::from_str(&profile).unwrap();
        let mesh = &profile["spec"]["meshConfig"];
        assert_eq!(mesh["accessLogEncoding"], "JSON");
        let format: serde_json::Value = serde_json::from_str(mesh["accessLogFormat"].as_str().unwrap()).unwrap();
        // The proxy image's Envoy is the one `just setup` installs.
        let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).unwrap();
        let pinned = setup.split("ENVOY_VERSION:-").nth(1).and_then(|r| r.split('}').next()).unwrap();
        let envoy = crate::tools::parse_release(pinned).unwrap();
        assert_eq!(format, crate::local::envoy::access_log_fields("%UPSTREAM_CLUSTER%", envoy));
    }

    #[test]
    fn only_the_access_logs_json_lines_are_kept() {
        let out = "2026-12-05T04:00:00Z info agent started\n      {\"start\": \"%START_TIME%\", \"downstream\": \"%DOWNSTREAM_REMOTE_ADDRESS%\"}\n{\"start\":\"2026-12-05T04:00:01.000Z\",\"downstream\":\"10.244.0.5:4000\",\"flags\":\"-\"}\n{\"level\":\"info\"}\n";
        let lines = access_log_lines(out);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["downstream"], "10.244.0.5:4000");
    }
}
