//! How the kind backend's commands reach the cluster.
//!
//! ```text
//!   host ── nsenter --net=/run/netns/idlelab-kind ──▶ kubectl / istioctl / kind ──▶ 127.0.0.1:<port>
//!           (the lab's own Docker engine runs there;            kind's API server,
//!            its kubeconfig: $IDLELAB_HOME/kind/kubeconfig)       published in that namespace
//! ```
//!
//! `kind-images/kind-up.sh` starts the lab's own engine (Debian's dockerd in a network namespace
//! of its own, so the host's network configuration is untouched) when no other Docker engine
//! answers. Then anything that talks to the API server must run in that namespace. With a
//! laptop's own engine, commands run as they are, with the user's kubeconfig.

use std::path::PathBuf;

/// What `kind-images/versions.env` pins, read at compile time: one place names the versions.
pub fn pinned(key: &str) -> &'static str {
    const VERSIONS: &str = include_str!("../../../kind-images/versions.env");
    VERSIONS
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("kind-images/versions.env has no {key}"))
}

/// Where kind-up.sh keeps the cluster's tools and kubeconfig: `$IDLELAB_HOME/kind`.
pub fn kind_home() -> PathBuf {
    crate::tools::tools_dir().join("kind")
}

/// This process's PATH with `tools` first: where kind-up puts kind, kubectl and istioctl.
pub fn path_with(tools: &std::path::Path) -> String {
    format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default())
}

/// The lab's own engine, when it is running: commands then run in its namespace, with its
/// socket, kubeconfig and tools.
#[derive(Clone, Debug)]
pub struct LabEngine {
    pub netns: String,
    pub kubeconfig: PathBuf,
    pub docker_host: String,
    pub tools: PathBuf,
}

impl LabEngine {
    /// The lab's engine if its socket exists; `None` means a Docker engine of the user's own.
    pub fn detect() -> Option<LabEngine> {
        // Its namespace and socket: kind-images/versions.env, which engine.sh reads too.
        let socket = pinned("LAB_ENGINE_SOCKET");
        std::path::Path::new(socket).exists().then(|| LabEngine {
            netns: pinned("LAB_ENGINE_NETNS").into(),
            kubeconfig: kind_home().join("kubeconfig"),
            docker_host: format!("unix://{socket}"),
            tools: kind_home().join("bin"),
        })
    }

    /// `program args` as it runs against the lab's engine: with its environment (kind-up's
    /// tools first on PATH), and in its namespace if it talks to the API server.
    pub fn command(&self, program: &str, args: &[String]) -> std::process::Command {
        // Only what talks to the API server needs the namespace; a build (docker, build.sh) may
        // need the host's network for Debian's packages.
        let mut c = if ["kubectl", "istioctl", "kind"].contains(&program) {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", self.netns)).arg("--").arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        c.args(args);
        c.env("PATH", path_with(&self.tools)).env("KUBECONFIG", &self.kubeconfig).env("DOCKER_HOST", &self.docker_host);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_versions_are_read_from_versions_env() {
        assert_eq!(pinned("KUBE_VERSION"), "v1.34.4");
        assert!(pinned("ISTIO_TAG").starts_with("1.30"));
    }

    #[test]
    fn commands_against_the_lab_engine_run_in_its_namespace_with_its_kubeconfig() {
        let e = LabEngine {
            netns: "ns-x".into(),
            kubeconfig: "/k/kubeconfig".into(),
            docker_host: "unix:///s".into(),
            tools: "/k/bin".into(),
        };
        let c = e.command("kubectl", &["get".into(), "pods".into()]);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(c.get_program(), "nsenter");
        assert_eq!(args, ["--net=/run/netns/ns-x", "--", "kubectl", "get", "pods"]);
        let env: Vec<(String, String)> = c
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.unwrap().to_string_lossy().into_owned()))
            .collect();
        assert!(env.contains(&("KUBECONFIG".into(), "/k/kubeconfig".into())), "{env:?}");
        assert!(env.iter().any(|(k, v)| k == "PATH" && v.starts_with("/k/bin:")), "{env:?}");
        assert_eq!(e.command("bash", &["build.sh".into()]).get_program(), "bash", "a build keeps the host's network");
    }
}
