//! Evidence the local lab words from what it measured: Istio's accounting of the cell's
//! EnvoyFilters, and the one HTTP sentence (what the app got, what the proxy logged, what the
//! server received).

use super::control_plane::ControlPlane;
use crate::backend::evidence::{EnvoyEvidence, EnvoyFilterStatus};
use crate::model::observation::Observations;
use serde_json::Value;
use std::collections::BTreeMap;

/// The EnvoyFilters among `docs` and what Istio's accounting says it applied of each.
pub(super) async fn envoy_filter_status(cp: &ControlPlane, docs: &[String]) -> Vec<EnvoyFilterStatus> {
    let filters: Vec<String> = docs
        .iter()
        .filter_map(|d| serde_saphyr::from_str::<Value>(d).ok())
        .filter(|v| v["kind"] == "EnvoyFilter")
        .map(|v| {
            format!(
                "{}/{}",
                v["metadata"]["namespace"].as_str().unwrap_or("default"),
                v["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    if filters.is_empty() {
        return vec![];
    }
    let entries = match cp.envoy_filter_status().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("reading Istio's EnvoyFilter accounting: {e:#}");
            return vec![];
        }
    };
    let mut out: Vec<EnvoyFilterStatus> = filters
        .into_iter()
        .map(|name| {
            let applied: Vec<String> = entries
                .iter()
                .filter(|e| e["name"] == name.as_str() && e["result"] == "applied" && e["value"].as_f64() == Some(1.0))
                .filter_map(|e| e["patch"].as_str().map(str::to_string))
                .collect();
            let status = if applied.is_empty() {
                "not applied: Istio matched none of its patches on any proxy of the cell".to_string()
            } else {
                format!("applied ({})", applied.join(", "))
            };
            EnvoyFilterStatus { name, applied, status }
        })
        .collect();
    for e in entries.iter().filter(|e| e["result"] == "error" && e["value"].as_f64().unwrap_or(0.0) > 0.0) {
        out.push(EnvoyFilterStatus {
            name: "(Istio's patch errors)".into(),
            applied: vec![],
            status: format!("a {} patch failed", e["patch"].as_str().unwrap_or("?")),
        });
    }
    out
}

/// Counted distinct items, as `a ×2, b`.
fn counted(items: impl Iterator<Item = String>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for i in items {
        match counts.iter_mut().find(|(k, _)| *k == i) {
            Some((_, n)) => *n += 1,
            None => counts.push((i, 1)),
        }
    }
    let parts: Vec<String> = counts.into_iter().map(|(k, n)| if n == 1 { k } else { format!("{k} ×{n}") }).collect();
    parts.join(", ")
}

/// The HTTP sentence of [`LabEvidence::http`], from the probe's reuse requests, the first
/// proxy's access log (requests other than the warm-up) and the server's request log.
pub(super) fn http_view(o: &Observations, envoys: &[EnvoyEvidence], received: &BTreeMap<String, u64>) -> String {
    let attempts = o.connections.iter().flat_map(|c| std::iter::once(&c.reuse).chain(c.retry_after_reconnect.as_ref()));
    let app = counted(attempts.map(|a| match &a.error {
        None => "200".to_string(),
        Some(e) => e.clone(),
    }));
    let proxy = envoys.iter().find(|e| e.role == "sidecar").or_else(|| envoys.first());
    let logged = proxy.map(|e| {
        let reqs: Vec<&Value> =
            e.access_log.iter().filter(|l| l["path"].as_str().is_some_and(|p| p != "/warm")).collect();
        let max_attempts = reqs.iter().filter_map(|l| l["attempts"].as_u64()).max().unwrap_or(0);
        let lines = counted(reqs.iter().map(|l| {
            let flags = l["flags"].as_str().filter(|f| *f != "-").map(|f| format!(" {f}")).unwrap_or_default();
            format!("{}{flags}", l["code"])
        }));
        let retry = if max_attempts > 1 {
            format!("up to {max_attempts} attempts per request: Envoy retried")
        } else {
            "1 attempt each: no retry".to_string()
        };
        format!("; {}'s Envoy logged {lines} ({retry})", e.role)
    });
    let reuse: u64 = received.iter().filter(|(p, _)| p.as_str() != "/warm").map(|(_, n)| n).sum();
    format!(
        "HTTP: the app got {app}{}; the server received {reuse} reuse request(s) and {} warm-up",
        logged.unwrap_or_default(),
        received.get("/warm").copied().unwrap_or(0)
    )
}

/// A gRPC idle cell through Envoy: what the app got, and what each Envoy on the path logged
/// for the calls it answered itself (response flags and details: `UC`,
/// `upstream_reset_before_response_started{connection_termination}`), and how many upstream
/// connections it had (HTTP/2 multiplexes every app connection's calls onto them).
pub(super) fn grpc_view(o: &Observations, envoys: &[EnvoyEvidence]) -> Vec<String> {
    let attempts = o.connections.iter().flat_map(|c| std::iter::once(&c.reuse).chain(c.retry_after_reconnect.as_ref()));
    let app = counted(attempts.map(|a| a.error.clone().unwrap_or_else(|| "OK".into())));
    let mut notes = vec![format!("gRPC: the app's reuse calls and retries got {app}")];
    for e in envoys {
        let failed: Vec<&Value> =
            e.access_log.iter().filter(|l| l["flags"].as_str().is_some_and(|f| f != "-")).collect();
        let upstream: std::collections::BTreeSet<&str> =
            e.access_log.iter().filter_map(|l| l["upstream_local"].as_str()).collect();
        let answered = if failed.is_empty() {
            "no call answered by Envoy itself".to_string()
        } else {
            let lines = counted(failed.iter().map(|l| {
                format!(
                    "HTTP {} flags {} ({})",
                    l["code"],
                    l["flags"].as_str().unwrap_or("-"),
                    l["details"].as_str().unwrap_or("-")
                )
            }));
            format!("{} call(s) answered by Envoy itself: {lines}", failed.len())
        };
        notes.push(format!(
            "{}'s Envoy logged {} call(s) over {} upstream connection(s); {answered}",
            e.role,
            e.access_log.len(),
            upstream.len()
        ));
    }
    notes
}
