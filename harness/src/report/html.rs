//! `report.html`: one self-contained page (no network): the matrix, and per cell what was
//! measured, its timeline (SVG, see `timeline`), the scaled durations, Envoy's and the
//! middleboxes' evidence and the mitigation's cluster form.

use super::timeline;
use crate::events::{CellReport, Reporter, RunSummary};
use crate::mitigation::IstioForm;
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

const TEMPLATE: &str = include_str!("report.html");

pub struct HtmlReporter {
    pub path: PathBuf,
}

fn envoy_lines(c: &CellReport) -> Vec<String> {
    let Some(lab) = &c.evidence.lab else { return vec![] };
    lab.envoys
        .iter()
        .map(|e| {
            let timeouts: u64 = e.counters.iter().filter(|(k, _)| k.ends_with(".idle_timeout")).map(|(_, v)| v).sum();
            let flags: Vec<&str> =
                e.access_log.iter().filter_map(|l| l["flags"].as_str()).filter(|f| *f != "-").collect();
            let reasons: Vec<&str> = e.access_log.iter().filter_map(|l| l["close_reason"].as_str()).collect();
            // No counters read (a cluster's proxy, whose counters are in the notes): no count claimed.
            let timeouts = if e.counters.is_empty() { String::new() } else { format!("idle timeouts {timeouts}, ") };
            let mut line = format!(
                "{}: {timeouts}{} connections or requests logged, response flags [{}], close reasons [{}]",
                e.role,
                e.access_log.len(),
                flags.join(", "),
                reasons.join(", ")
            );
            if let Some(istio) = &e.istio_config {
                line.push_str(&format!("; from Istio: {}", istio_fields(istio)));
            }
            line
        })
        .collect()
}

/// The deciding fields a proxy received from Istio, in a few words.
fn istio_fields(v: &serde_json::Value) -> String {
    let mut parts = vec![format!("listener {}", v["listener"].as_str().unwrap_or("?"))];
    for (key, label) in [
        ("idle_timeout", "tcp_proxy idle_timeout"),
        ("http_idle_timeout", "connection manager idle_timeout"),
        ("cluster_http_idle_timeout", "upstream pool idle_timeout"),
    ] {
        if let Some(t) = v.get(key).filter(|t| !t.is_null()) {
            parts.push(format!("{label} {}", t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string())));
        }
    }
    let ka = &v["tcp_keepalive"];
    parts.push(if ka.is_null() { "no upstream tcp_keepalive".into() } else { format!("upstream tcp_keepalive {ka}") });
    if let Some(r) = v.get("retry_policy").filter(|r| !r.is_null()) {
        parts.push(format!("retry_on {} ×{}", r["retry_on"].as_str().unwrap_or("-"), r["num_retries"]));
    }
    if let Some(o) = v["socket_options"].as_array() {
        parts.push(format!("{} listener socket_options", o.len()));
    }
    parts.join(", ")
}

fn middlebox_lines(c: &CellReport) -> Vec<String> {
    let Some(lab) = &c.evidence.lab else { return vec![] };
    lab.middleboxes
        .iter()
        .map(|m| {
            format!(
                "{} {}: {} flows tracked, {} forgotten-flow segments refused so far",
                m.role,
                m.moment,
                m.conntrack.len(),
                m.forgotten_segments
            )
        })
        .collect()
}

fn istio_lines(c: &CellReport) -> Vec<String> {
    c.istio
        .iter()
        .map(|f| match f {
            IstioForm::PodAnnotation { pod, key, value } => format!("{pod} pod annotation {key}: {value}"),
            IstioForm::Manifest { yaml, .. } => yaml.clone(),
            IstioForm::AppSetting { what } => what.clone(),
        })
        .collect()
}

/// Diagrams drawn per cell; the other attributions stay in summary.json.
const MAX_SEQUENCES: usize = 2;

/// A cell's capture: the link to its pcapng (beside report.html, under `captures/`), the hop
/// configured to act first, and a sequence diagram per failed connection.
fn capture_section(capture: &crate::backend::evidence::CaptureEvidence, factor: u32) -> Value {
    let name =
        std::path::Path::new(&capture.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sequences: Vec<BTreeMap<String, Value>> = capture
        .attributions
        .iter()
        .take(MAX_SEQUENCES)
        .map(|a| {
            BTreeMap::from([
                ("connection".to_string(), Value::from(a.connection.clone())),
                ("sentence".to_string(), Value::from(a.sentence.clone())),
                ("svg".to_string(), Value::from_safe_string(super::sequence::svg(a, factor))),
            ])
        })
        .collect();
    let configured: Vec<String> = capture
        .configured
        .iter()
        .map(|c| {
            let how = match c.forgets {
                None => "closes with a FIN".to_string(),
                Some(o) => format!("forgets the flow, then {}", format!("{o:?}").to_lowercase()),
            };
            format!("{} after {} idle ({how})", c.actor, c.after)
        })
        .collect();
    let configured =
        if configured.is_empty() { "no hop acts while the connection idles".into() } else { configured.join(" or ") };
    Value::from(BTreeMap::from([
        ("link".to_string(), Value::from(format!("captures/{name}"))),
        ("configured".to_string(), Value::from(configured)),
        ("agree".to_string(), Value::from(capture.agree)),
        ("count".to_string(), Value::from(capture.attributions.len())),
        ("more".to_string(), Value::from(capture.attributions.len().saturating_sub(MAX_SEQUENCES))),
        ("sequences".to_string(), Value::from(sequences)),
    ]))
}

pub fn render(s: &RunSummary) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.add_template("report.html", TEMPLATE)?;
    let cells: Vec<Value> = s
        .cells
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut notes = c.evidence.notes.clone();
            if let Some(o) = &c.evidence.observations {
                notes.extend(o.notes.iter().cloned());
            }
            // A balance cell draws its replicas' request rates; every other cell its connections.
            let timeline = c.evidence.observations.as_ref().map(|o| {
                Value::from_safe_string(match &o.balance {
                    Some(b) => super::balance_chart::svg(b),
                    None => timeline::svg(o, &c.time_scale),
                })
            });
            let repeats: Vec<String> = c
                .repeats
                .iter()
                .map(|r| format!("#{} {}", r.run, r.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into())))
                .collect();
            let fields = json!({
                "index": index,
                "scenario": c.scenario,
                "cell": c.cell,
                "key": c.key,
                "verdict": c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into()),
                "expected": c.expected.to_string(),
                "pass": c.pass,
                "factor": c.time_scale.factor,
                "describe": c.describe,
                "why": c.why_expected,
                "evidence": c.error.clone().unwrap_or_else(|| c.explanation.clone()),
                "repeats": repeats.join(", "),
                "notes": notes,
                "values": c.time_scale.values,
                "envoy": envoy_lines(c),
                "middleboxes": middlebox_lines(c),
                "istio": istio_lines(c),
            });
            let mut map: BTreeMap<String, Value> = fields
                .as_object()
                .expect("an object")
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
                .collect();
            if let Some(t) = timeline {
                map.insert("timeline".into(), t);
            }
            if let Some(capture) = c.evidence.lab.as_ref().and_then(|l| l.capture.as_ref()) {
                map.insert("capture".into(), capture_section(capture, c.time_scale.factor));
            }
            Value::from(map)
        })
        .collect();
    let tmpl = env.get_template("report.html")?;
    let run = json!({
        "scenario": s.scenario,
        "backend": s.backend,
        "time_scale": s.time_scale,
        "repeat": s.repeat,
        "started_at": s.started_at,
        "wall_ms": s.wall_ms,
        "pass": s.pass,
    });
    Ok(tmpl.render(
        context! { run => Value::from(Serde(&run)), scenarios => Value::from(Serde(&s.scenarios)), cells => cells },
    )?)
}

impl Reporter for HtmlReporter {
    fn finish(&mut self, summary: &RunSummary) -> anyhow::Result<()> {
        std::fs::write(&self.path, render(summary)?)?;
        Ok(())
    }
}
