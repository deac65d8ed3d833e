//! What every mitigation is: the [`Mitigation`] trait, its two renderings' types (the local
//! lab's config, a cluster's Istio forms) and the names the renderings share. Each
//! mitigation's file implements it; `mod.rs` lists them by their name in scenario files.

use crate::config::CellConfig;
use crate::hop::Hop;
use crate::model::duration::Dur;
use crate::model::service::Service;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The label every object of a cell carries on a cluster (`idlelab.dev/cell: <namespace>`),
/// so that what a cell put in istio-system can be found and removed.
pub const CELL_LABEL: &str = "idlelab.dev/cell";
/// Label `app:` of the client (probe) pod, for workload selectors.
pub const CLIENT_APP: &str = "idlelab-probe";
/// The namespace the local lab gives every cell's objects (each cell has its own control
/// plane, so they never meet).
pub const LOCAL_NAMESPACE: &str = "idlelab";

/// What a mitigation is on a cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "form")]
pub enum IstioForm {
    /// An annotation on a pod's template: `pod` is `client` or `server`.
    PodAnnotation { pod: String, key: String, value: String },
    /// A Kubernetes manifest applied to the cell's namespace.
    Manifest { kind: String, yaml: String },
    /// A setting of the application itself; Istio has nothing to do.
    AppSetting { what: String },
}

/// Where the cluster form applies.
#[derive(Clone, Debug)]
pub struct IstioContext {
    pub namespace: String,
    /// Label `app:` of the client (probe) pod, for workload selectors.
    pub client_app: String,
    /// FQDN of the service, e.g. `redis.cell-1.svc.cluster.local`.
    pub service_host: String,
    pub service_port: u16,
    /// The pods that have a sidecar on this path: `client`, `server`.
    pub sidecar_pods: Vec<String>,
    /// The cell's time scale: a compressed run on a cluster renders its durations scaled,
    /// with the same rounding as the local lab (`timescale`).
    pub factor: u32,
    /// On a cluster, the address ranges the local lab's 198.18.0.0/15 stands for (the
    /// cluster's service and pod CIDRs); `None` in the local lab.
    pub cluster_ranges: Option<Vec<String>>,
}

impl IstioContext {
    /// A duration Envoy takes in milliseconds (idle timeouts), scaled.
    pub fn millis(&self, d: Dur) -> Dur {
        crate::model::scale::scale_millis(d, self.factor)
    }
    /// A duration the kernel takes in whole seconds (keepalive), scaled, at least 1 s.
    pub fn seconds(&self, d: Dur) -> u64 {
        crate::model::scale::scale_seconds(d, self.factor)
    }
}

pub trait Mitigation {
    /// Short, unique label for reports and test names, e.g. `istio-idle-timeout=24h`.
    fn label(&self) -> String;
    /// One line: what changes on the path.
    fn describe(&self) -> String;
    /// Change the local lab's knobs; `Err` says why this path has nothing to apply it to.
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String>;
    /// The Istio resources (or app setting) that do the same on a cluster.
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm>;
    /// Read what the mitigation names besides the scenario file (relative to `base`, the
    /// scenario file's directory) and check it against the scenario's lab (`path`,
    /// `service`), before anything starts. Most mitigations have nothing to read.
    fn load(&mut self, _base: &Path, _path: &[Hop], _service: Service) -> Result<(), LoadError> {
        Ok(())
    }
    /// What the lab changed in the mitigation for a cell (a team's YAML mapped onto the lab's
    /// namespace and hosts, its durations scaled), for the cell's evidence.
    fn notes(&self, _ctx: &IstioContext) -> Vec<String> {
        vec![]
    }
}

/// What a mitigation found wrong in a file it reads besides the scenario (a team's own YAML):
/// the file, the line and column, what is wrong there, a hint.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file.display(), self.message)?,
            _ => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Render a JSON value as YAML for a manifest.
pub fn to_yaml(v: &serde_json::Value) -> String {
    serde_saphyr::to_string(v).expect("a JSON value always renders as YAML")
}

/// The gRPC balance run a mitigation acts on, or why this scenario has none.
pub(crate) fn need_balance_run<'a>(
    knobs: &'a mut CellConfig,
    what: &str,
) -> Result<&'a mut crate::config::GrpcConfig, String> {
    let service = knobs.service;
    knobs.grpc.as_mut().ok_or_else(|| {
        if service == Service::Grpc {
            format!("{what} acts on a gRPC balance run, and this scenario has no `replicas` (it is an idle cell)")
        } else {
            format!("{what} acts on a gRPC balance run; this scenario's service is {}", service.name())
        }
    })
}

pub(crate) fn need_sidecar<'a>(
    knobs: &'a mut CellConfig,
    what: &str,
) -> Result<&'a mut crate::hop::SidecarHop, String> {
    knobs.sidecar_mut().ok_or_else(|| format!("{what} changes the client sidecar, and this path has no `sidecar` hop"))
}

/// Helpers for the mitigations' unit tests: a context and a configuration to apply them to.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn test_ctx() -> IstioContext {
        IstioContext {
            namespace: "cell-1".into(),
            client_app: "idlelab-probe".into(),
            service_host: "redis.cell-1.svc.cluster.local".into(),
            service_port: 6379,
            sidecar_pods: vec!["client".into()],
            factor: 1,
            cluster_ranges: None,
        }
    }

    pub fn test_knobs() -> CellConfig {
        let s = crate::scenario::parse(
            "name: t\nsummary: s\nservice: redis\npath: [{sidecar: {idle_timeout: 1h}}]\nidle: 70m\ncells: [{mitigation: none, expect: idle-closed}]\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        s.base_knobs()
    }
}
