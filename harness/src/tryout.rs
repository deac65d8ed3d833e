//! `idlelab try FILE...`: a team's own Istio YAML, before rollout, against the lab's failures.
//!
//! ```text
//!   FILE... ──load (file:line errors)──▶ Istio's validation (exit 2 with Istio's message)
//!     ──▶ per scenario the files can touch: its baseline cell and the same cell with the
//!         files (`istio-yaml`), run as any cells ──▶ verdict before → after, the field-level
//!         diff of each proxy's config as Istio generated it, the EnvoyFilters Istio applied
//! ```
//!
//! Exit 0 when the files fix every failure tried (`survived` or `recovered`), 1 when one
//! still fails, 2 for bad input.

use crate::mitigation::istio_yaml::IstioYaml;
use crate::mitigation::{Mitigation, MitigationSpec};
use crate::model::service::Service;
use crate::model::verdict::Verdict;
use crate::report::CellReport;
use crate::scenario::{self, CellSpec};
use crate::session::{BackendChoice, Exec, OutputArgs, execute};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(crate) struct TryArgs {
    pub files: Vec<PathBuf>,
    pub scenarios: Vec<String>,
    pub host_map: Vec<String>,
    pub annotate: Vec<String>,
    pub scenarios_dir: PathBuf,
    pub output: OutputArgs,
}

fn pairs(items: &[String], flag: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|s| {
            s.split_once(sep)
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| format!("{flag} {s}: expected FROM{sep}TO"))
        })
        .collect()
}

/// What the files touch: the client sidecar, the gateway, the server's sidecar.
fn touches(m: &IstioYaml) -> (bool, bool, bool) {
    let l = m.loaded.as_deref().expect("loaded");
    let (mut sidecar, mut gateway, mut server) = (!l.annotations.is_empty(), false, false);
    for d in &l.docs {
        let spec = d.value["spec"].to_string();
        match d.kind.as_str() {
            "Gateway" | "VirtualService" if spec.contains("gateways") || d.kind == "Gateway" => gateway = true,
            "EnvoyFilter" if spec.contains("GATEWAY") => gateway = true,
            "EnvoyFilter" if spec.contains("SIDECAR_INBOUND") => server = true,
            _ => sidecar = true,
        }
    }
    (sidecar, gateway, server)
}

/// The lab services the files' hosts name (after `host_map`), if any.
fn services_named(m: &IstioYaml) -> Vec<Service> {
    let l = m.loaded.as_deref().expect("loaded");
    let all = Service::ALL;
    let mut out = Vec::new();
    for d in &l.docs {
        if let Some(h) = d.value["spec"]["host"].as_str() {
            let h = m.host_map.get(h).map(String::as_str).unwrap_or(h);
            let short = h.split('.').next().unwrap_or_default();
            out.extend(all.iter().copied().filter(|s| s.name() == short));
        }
    }
    out
}

/// Every DestinationRule (and mesh VirtualService) host must match a host of one of the
/// scenarios' labs, after `--host-map`: else the error, with where the host is written, the
/// hosts the lab has and the `--host-map` that would map it.
fn check_hosts(fix: &IstioYaml, scenarios: &[scenario::Scenario]) -> Result<(), String> {
    use crate::mitigation::istio_yaml::LabHosts;
    let labs: Vec<LabHosts> =
        scenarios.iter().map(|s| LabHosts::of(&s.path, s.service, crate::mitigation::LOCAL_NAMESPACE)).collect();
    let unmatched = fix.unmatched_hosts(&labs);
    let Some(first) = unmatched.first() else { return Ok(()) };
    let mut hosts: Vec<&str> = labs.iter().flat_map(|l| l.hosts.iter().map(String::as_str)).collect();
    hosts.sort();
    hosts.dedup();
    let mut services: Vec<&str> = scenarios.iter().map(|s| s.service.name()).collect();
    services.sort();
    services.dedup();
    let mut out = String::new();
    for u in &unmatched {
        let mapped = u.mapped.as_ref().map(|m| format!(" (mapped by --host-map to `{m}`)")).unwrap_or_default();
        out.push_str(&format!(
            "error: {}:{}:{}: {} {}: host `{}`{mapped} matches none of the lab's hosts: Istio would apply it to nothing here\n",
            u.file.display(),
            u.line,
            u.column,
            u.kind,
            u.name,
            u.host
        ));
    }
    out.push_str(&format!("  the lab's hosts: {}\n", hosts.join(", ")));
    out.push_str(&format!(
        "  hint: map your host onto the lab's service with --host-map {}={} (FROM=TO; TO is a service of the lab: {}, or one of its hosts)",
        first.host,
        services.iter().find(|s| **s == "redis").or(services.first()).copied().unwrap_or("redis"),
        services.join(", ")
    ));
    Err(out)
}

pub(crate) fn main(args: TryArgs) -> i32 {
    let host_map = match pairs(&args.host_map, "--host-map", '=') {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}\n  hint: --host-map reviews.prod.svc.cluster.local=redis");
            return 2;
        }
    };
    let annotations = match pairs(&args.annotate, "--annotate", '=') {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "error: {e}\n  hint: --annotate proxy.istio.io/config='{{proxyMetadata: {{ISTIO_META_IDLE_TIMEOUT: 24h}}}}'"
            );
            return 2;
        }
    };
    if args.files.is_empty() && annotations.is_empty() {
        eprintln!("error: nothing to try: give the YAML files you would `kubectl apply` (or --annotate)");
        return 2;
    }
    let mut fix = IstioYaml { files: args.files.clone(), host_map, annotations, loaded: None };
    if let Err(e) = fix.read_files(&std::env::current_dir().unwrap_or_default()) {
        eprintln!("error: {e}");
        return 2;
    }

    // The scenarios to try (every shipped one, or those named), loaded before anything runs.
    let names = if args.scenarios.is_empty() {
        scenario::list(&args.scenarios_dir).unwrap_or_default()
    } else {
        args.scenarios.clone()
    };
    let mut candidates = Vec::new();
    for name in &names {
        match scenario::resolve(name, &args.scenarios_dir).and_then(|p| scenario::load(&p)) {
            Ok(s) => candidates.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    }

    // A host that matches nothing in the lab would make every cell a run of the baseline.
    if let Err(message) = check_hosts(&fix, &candidates) {
        eprintln!("{message}");
        return 2;
    }

    // Istio's own judgement first, on the files as the lab will apply them.
    let ctx = crate::mitigation::IstioContext {
        namespace: crate::mitigation::LOCAL_NAMESPACE.into(),
        client_app: crate::mitigation::CLIENT_APP.into(),
        service_host: format!("redis.{}.svc.cluster.local", crate::mitigation::LOCAL_NAMESPACE),
        service_port: 6379,
        sidecar_pods: vec!["client".into()],
        factor: 1,
        cluster_ranges: None,
    };
    let loaded = fix.loaded.clone().expect("loaded");
    let docs: Vec<String> = loaded.docs.iter().map(|d| crate::mitigation::to_yaml(&fix.render(d, &ctx).0)).collect();
    // Judged by the Istio release the cells will run: the command line's here; a scenario's
    // `versions:` is judged again below once the scenarios are known.
    let judge = |istio: Option<&str>| -> Result<(), i32> {
        let root = match istio.map(crate::tools::istio_release).transpose() {
            Ok(root) => root.flatten(),
            Err(e) => {
                eprintln!("error: {e}");
                return Err(2);
            }
        };
        let _istio = crate::tools::IstioChoice::new(root);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        match rt.block_on(crate::local::control_plane::validate(&docs)) {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("warning (Istio): {w}");
                }
                Ok(())
            }
            Err(e) => {
                match e.downcast_ref::<crate::local::control_plane::Rejected>() {
                    Some(r) => {
                        let at = r.index.and_then(|i| loaded.docs.get(i));
                        let place = at.map(|d| format!("{}:{}: ", d.file.display(), d.line)).unwrap_or_default();
                        eprintln!("error: {place}Istio rejected {} {}: {}", r.kind, r.name, r.message);
                    }
                    None => eprintln!("error: {e:#}"),
                }
                Err(2)
            }
        }
    };
    let judged_by = args.output.istio.clone();
    if let Err(code) = judge(judged_by.as_deref()) {
        return code;
    }

    // The scenarios the files can touch, each as its baseline cell and the cell with the files.
    let (sidecar, gateway, server) = touches(&fix);
    let services = services_named(&fix);
    let explicit = !args.scenarios.is_empty();
    let mut loaded_scenarios = Vec::new();
    let mut all_cells = Vec::new();
    for s in candidates {
        let has = |f: fn(&crate::hop::Hop) -> bool| s.path.iter().any(f);
        let reachable = (sidecar && has(|h| matches!(h, crate::hop::Hop::Sidecar(_))))
            || (gateway && has(|h| matches!(h, crate::hop::Hop::Gateway(_))))
            || (server && has(|h| matches!(h, crate::hop::Hop::ServerSidecar(_))));
        if !explicit && (!reachable || (!services.is_empty() && !services.contains(&s.service))) {
            continue;
        }
        let Some(baseline) = s
            .cells
            .iter()
            .find(|c| matches!(c.mitigation.value, MitigationSpec::NoMitigation))
            .or(s.cells.first())
            .cloned()
        else {
            continue;
        };
        let unknown = serde_saphyr::Location::UNKNOWN;
        let try_cell = CellSpec {
            mitigation: serde_saphyr::Spanned::new(MitigationSpec::IstioYaml(fix.clone()), unknown, unknown),
            expect: Verdict::Survived,
            why: Some("the team's own fix, tried before rollout".into()),
        };
        let mut knobs = s.base_knobs();
        if let Err(why) = fix.apply(&mut knobs) {
            if explicit {
                eprintln!("error: {}: the files cannot apply here: {why}", s.name);
                return 2;
            }
            continue;
        }
        // Both cells at the baseline's factor: the diff then compares like with like, and the
        // baseline's orderings hold for the try cell whatever the files turn out to do.
        let mut s = s;
        s.cells = vec![baseline];
        let factor = match crate::cells::expand(&s, &[], None) {
            Ok(c) => c[0].time_scale.factor,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        s.cells.push(try_cell);
        let fixed = crate::cells::expand(&s, &[], Some(crate::model::service::TimeScaleSpec::Factor(factor)));
        match fixed.or_else(|_| crate::cells::expand(&s, &[], None)) {
            Ok(c) => all_cells.extend(c),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
        loaded_scenarios.push(s);
    }
    if loaded_scenarios.is_empty() {
        eprintln!(
            "error: no shipped scenario has a proxy these files act on\n  hint: name one with --scenario, or map a host with --host-map"
        );
        return 2;
    }
    // The scenarios' `versions:`, per release kind unless the command line names it; the
    // scenarios must agree on it.
    let mut args = args;
    for (flag, chosen, pinned) in [
        (
            "envoy",
            &mut args.output.envoy,
            loaded_scenarios.iter().map(|s| s.versions.envoy.clone()).collect::<Vec<_>>(),
        ),
        ("istio", &mut args.output.istio, loaded_scenarios.iter().map(|s| s.versions.istio.clone()).collect()),
    ] {
        if chosen.is_some() {
            continue;
        }
        if pinned.windows(2).any(|w| w[0] != w[1]) {
            eprintln!(
                "error: the scenarios this fix acts on name different `versions.{flag}`\n  hint: pick one with --scenario, or name the release with --{flag}"
            );
            return 2;
        }
        *chosen = pinned.into_iter().next().flatten();
    }
    for (flag, releases) in [("envoy", &args.output.envoy), ("istio", &args.output.istio)] {
        if crate::session::several(releases) {
            eprintln!(
                "error: try takes one {flag} release (it judges the fix against the baseline on that release), and --{flag} or the scenario's `versions.{flag}` names several\n  hint: run `idlelab try` once per release, with --{flag}"
            );
            return 2;
        }
    }
    if args.output.istio != judged_by
        && let Err(code) = judge(args.output.istio.as_deref())
    {
        return code;
    }
    let names: Vec<String> = loaded_scenarios.iter().map(|s| s.name.clone()).collect();
    eprintln!("try: {} against {}", fix.label(), names.join(", "));
    let exec = Exec {
        title: "try".into(),
        output: args.output,
        jobs: None,
        quiet: false,
        time_scale_label: "per scenario".into(),
    };
    let mut summary = match execute(loaded_scenarios, all_cells, exec, BackendChoice::Local) {
        Ok(s) => s,
        Err(code) => return code,
    };

    // Before → after, per scenario, with the diff of what Istio generated; the diff also goes
    // into the try cell's notes, and the reports are written again with it.
    let mut still_failing = false;
    let mut text = String::new();
    let mut notes: Vec<(usize, Vec<String>)> = Vec::new();
    for name in &names {
        let is_try = |c: &CellReport| &c.scenario == name && matches!(c.mitigation, MitigationSpec::IstioYaml(_));
        let (Some(before), Some(after_index)) =
            (summary.cells.iter().find(|c| &c.scenario == name && !is_try(c)), summary.cells.iter().position(is_try))
        else {
            continue;
        };
        let after = &summary.cells[after_index];
        let v = |c: &CellReport| c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into());
        let ok = |c: &CellReport| matches!(c.verdict, Some(Verdict::Survived | Verdict::Recovered));
        let fixed = ok(after);
        still_failing |= !fixed;
        let judgement = match (ok(before), fixed) {
            (false, true) => "the fix works here",
            (true, true) => "no failure here to fix, and the fix breaks nothing",
            (true, false) => "the fix makes it fail",
            (false, false) => "still fails: this fix does not fix it",
        };
        let changed = diff(before, after);
        text.push_str(&format!("{name}: {} → {}   ({judgement})\n", v(before), v(after)));
        for line in render_lines(after).iter().chain(&changed) {
            text.push_str(&format!("  {line}\n"));
        }
        if let Some(e) = &after.error {
            text.push_str(&format!("  error: {e}\n"));
        }
        notes.push((after_index, changed.into_iter().map(|l| format!("diff against the baseline: {l}")).collect()));
    }
    print!("{text}");
    let _ = std::fs::write(summary.out_dir.join("try.txt"), &text);
    for (i, lines) in notes {
        summary.cells[i].evidence.notes.extend(lines);
    }
    if let Err(e) = crate::report::write_files(&summary) {
        eprintln!("error: writing reports: {e:#}");
        return 1;
    }
    if still_failing { 1 } else { 0 }
}

/// What the lab did with the files for this cell: mapping and scaling, and the EnvoyFilters
/// as Istio applied them.
fn render_lines(cell: &CellReport) -> Vec<String> {
    let mut out: Vec<String> = cell.evidence.notes.iter().filter(|n| n.starts_with("istio-yaml")).cloned().collect();
    if let Some(lab) = &cell.evidence.lab {
        for ef in &lab.envoy_filters {
            out.push(format!("EnvoyFilter {}: {}", ef.name, ef.status));
        }
    }
    out
}

/// The fields that differ between the two cells' proxies, as Istio generated them.
pub fn diff(before: &CellReport, after: &CellReport) -> Vec<String> {
    let proxies = |c: &CellReport| -> BTreeMap<String, Value> {
        c.evidence
            .lab
            .as_ref()
            .map(|l| l.envoys.iter().filter_map(|e| e.istio_config.clone().map(|v| (e.role.clone(), v))).collect())
            .unwrap_or_default()
    };
    let (b, a) = (proxies(before), proxies(after));
    let (before_factor, after_factor) = (before.time_scale.factor, after.time_scale.factor);
    let mut out = Vec::new();
    for (role, after) in &a {
        let Some(before) = b.get(role) else { continue };
        let listener = after["listener"].as_str().unwrap_or("?");
        let cluster = after["cluster"].as_str().unwrap_or("?");
        for (key, what) in [
            ("idle_timeout", format!("listener {listener} tcp_proxy idle_timeout")),
            ("http_idle_timeout", format!("listener {listener} HTTP connection manager idle_timeout")),
            ("tcp_keepalive", format!("cluster {cluster} upstream_connection_options.tcp_keepalive")),
            ("cluster_http_idle_timeout", format!("cluster {cluster} HTTP pool idle_timeout")),
            ("retry_policy", format!("routes of {cluster} retry_policy")),
            ("socket_options", format!("listener {listener} socket_options")),
        ] {
            let (x, y) = (&before[key], &after[key]);
            if x != y {
                let scale = if before_factor == after_factor {
                    format!(" (lab time, ×{after_factor})")
                } else {
                    format!(" (lab time, ×{before_factor} → ×{after_factor})")
                };
                out.push(format!("{role}: {what}: {} → {}{scale}", show(x), show(y)));
            }
        }
    }
    if out.is_empty() {
        out.push("no field that decides these failures changed in any proxy's config".into());
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.contains_key("keepalive_time") => format!(
            "{}/{}/{}",
            m["keepalive_time"].as_u64().map(|x| x.to_string()).unwrap_or_else(|| m["keepalive_time"].to_string()),
            m.get("keepalive_interval").map(|x| x.to_string()).unwrap_or_default(),
            m.get("keepalive_probes").map(|x| x.to_string()).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}
