//! `istio-yaml`: a team's own Istio YAML, exactly as it would `kubectl apply` it, as the cell's
//! mitigation (and what `idlelab try` runs).
//!
//! ```text
//!   user's files: DestinationRule, EnvoyFilter, Sidecar, ServiceEntry, Gateway, VirtualService,
//!                 ProxyConfig; Deployment / Pod snippets (only their pod annotations are taken)
//!     ──map──▶ the lab's namespace and service host (`host_map`, or the service's short name)
//!     ──scale──▶ their idle and keepalive durations by the cell's time scale
//!     ──▶ Istio's control plane (validation first) ──▶ whichever proxies Istio applies them to
//! ```
//!
//! Istio decides what the resources do. The lab only reads the durations it knows a meaning
//! of (a DestinationRule's `idleTimeout`, `tcpKeepalive`, `http.idleTimeout`; an annotation's
//! `ISTIO_META_IDLE_TIMEOUT`; an EnvoyFilter's `idle_timeout`, `keepalive_time`,
//! `keepalive_interval`) to scale them. A DestinationRule's and an annotation's durations also
//! enter the time scale's orderings (the built-in mitigations' `apply`, reused); an
//! EnvoyFilter's do not, since whether Istio applies it at all is what is being tried:
//! `idlelab try` runs it at its baseline's factor instead.

use super::contract::{IstioContext, IstioForm, LoadError, Mitigation, to_yaml};
use crate::config::CellConfig;
use crate::hop::Hop;
use crate::model::duration::Dur;
use crate::model::service::Service;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `{istio-yaml: FILE}` or `{istio-yaml: {files: [...], host_map: {FROM: TO}, annotations: {K: V}}}`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IstioYaml {
    pub files: Vec<PathBuf>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub host_map: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The documents, once [`IstioYaml::load`] read them.
    #[serde(skip)]
    pub loaded: Option<Arc<Loaded>>,
}

impl<'de> Deserialize<'de> for IstioYaml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            File(PathBuf),
            Full {
                files: Vec<PathBuf>,
                #[serde(default)]
                host_map: BTreeMap<String, String>,
                #[serde(default)]
                annotations: BTreeMap<String, String>,
            },
        }
        Ok(match Form::deserialize(d)? {
            Form::File(f) => {
                IstioYaml { files: vec![f], host_map: BTreeMap::new(), annotations: BTreeMap::new(), loaded: None }
            }
            Form::Full { files, host_map, annotations } => IstioYaml { files, host_map, annotations, loaded: None },
        })
    }
}

/// One document of the user's files.
#[derive(Clone, Debug, PartialEq)]
pub struct UserDoc {
    pub file: PathBuf,
    /// The line its document starts on.
    pub line: usize,
    pub kind: String,
    pub name: String,
    pub value: Value,
    /// The hosts it names at the top of its `spec` (`host`, `hosts`), where they are written.
    pub hosts: Vec<HostAt>,
}

/// A host a document names, with the line and column it is written at (in its file).
#[derive(Clone, Debug, PartialEq)]
pub struct HostAt {
    pub host: String,
    pub line: usize,
    pub column: usize,
}

/// The hosts of one lab the files may run in: the host a user's host is mapped onto (the
/// client sidecar's upstream, as `map_host` does), and every host Istio knows there.
#[derive(Clone, Debug, PartialEq)]
pub struct LabHosts {
    pub namespace: String,
    /// `IstioContext::service_host`: the server's, or the gateway's when the path has one.
    pub target: String,
    pub hosts: Vec<String>,
}

impl LabHosts {
    /// The hosts of a scenario's lab: its server's Service, and the gateway's when the path
    /// has one.
    pub fn of(path: &[crate::hop::Hop], service: crate::model::service::Service, namespace: &str) -> LabHosts {
        use crate::hop::target_host;
        let target = target_host(path, service, namespace);
        let server = target_host(&[], service, namespace);
        let hosts = if target == server { vec![server] } else { vec![server, target.clone()] };
        LabHosts { namespace: namespace.into(), target, hosts }
    }
}

/// A host of the files that Istio would match to no host of any lab they are tried in.
#[derive(Clone, Debug, PartialEq)]
pub struct UnmatchedHost {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub kind: String,
    pub name: String,
    pub host: String,
    /// What the host became with `host_map`, when it changed.
    pub mapped: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Loaded {
    /// The Istio resources.
    pub docs: Vec<UserDoc>,
    /// Pod annotations (from workload snippets, then `annotations`), for the client pod.
    pub annotations: Vec<(String, String)>,
}

const ISTIO_KINDS: [&str; 7] =
    ["DestinationRule", "EnvoyFilter", "Sidecar", "ServiceEntry", "Gateway", "VirtualService", "ProxyConfig"];
const WORKLOAD_KINDS: [&str; 5] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"];

/// Split a YAML text into documents with the line each starts on (`---` separators).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut start, mut cur) = (1, String::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            if !cur.trim().is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 2;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur));
    }
    out
}

impl IstioYaml {
    /// Read the files (relative to `base`), check each document's kind, and take the
    /// annotations of workload snippets. Nothing is started.
    pub fn read_files(&mut self, base: &Path) -> Result<(), LoadError> {
        let mut loaded = Loaded::default();
        for f in &mut self.files {
            if f.is_relative() {
                *f = base.join(&*f);
            }
            let err = |line: Option<usize>, message: String, hint: Option<&str>| LoadError {
                file: f.clone(),
                line,
                column: None,
                message,
                hint: hint.map(str::to_string),
            };
            let text = std::fs::read_to_string(&*f).map_err(|e| err(None, format!("cannot read: {e}"), None))?;
            for (start, doc) in documents(&text) {
                let value: Value = serde_saphyr::from_str(&doc).map_err(|e| {
                    let line = e.location().map(|l| start + l.line() as usize - 1);
                    err(
                        line,
                        crate::model::first_line(&e.to_string()),
                        Some("the file must be the YAML you would `kubectl apply`"),
                    )
                })?;
                if value.is_null() {
                    continue; // comments only
                }
                let kind = value["kind"].as_str().unwrap_or_default().to_string();
                let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let api = value["apiVersion"].as_str().unwrap_or_default();
                if ISTIO_KINDS.contains(&kind.as_str()) && api.contains("istio.io") {
                    let hosts = hosts_at(&doc, start);
                    loaded.docs.push(UserDoc { file: f.clone(), line: start, kind, name, value, hosts });
                } else if WORKLOAD_KINDS.contains(&kind.as_str()) {
                    let a = if kind == "Pod" {
                        &value["metadata"]["annotations"]
                    } else {
                        &value["spec"]["template"]["metadata"]["annotations"]
                    };
                    for (k, v) in a.as_object().into_iter().flatten() {
                        let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                        loaded.annotations.push((k.clone(), v));
                    }
                } else {
                    return Err(err(
                        Some(start),
                        format!("kind `{kind}` ({api}) is not one the lab applies"),
                        Some(
                            "Istio resources (DestinationRule, EnvoyFilter, Sidecar, ServiceEntry, Gateway, VirtualService, ProxyConfig) and Deployment/Pod snippets for their pod annotations",
                        ),
                    ));
                }
            }
        }
        loaded.annotations.extend(self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        if loaded.docs.is_empty() && loaded.annotations.is_empty() {
            return Err(LoadError {
                file: self.files.first().cloned().unwrap_or_default(),
                line: None,
                column: None,
                message: "no Istio resource and no pod annotation in the files".into(),
                hint: None,
            });
        }
        self.loaded = Some(Arc::new(loaded));
        Ok(())
    }

    fn loaded(&self) -> &Loaded {
        self.loaded.as_deref().expect("istio-yaml files are loaded when the scenario loads")
    }

    /// The user's host as the lab's: `host_map`, else a host whose first label is the lab's
    /// service name (or the gateway's) stands for it.
    fn map_host(&self, host: &str, ctx: &IstioContext) -> String {
        self.map_host_onto(host, &ctx.service_host)
    }

    fn map_host_onto(&self, host: &str, service_host: &str) -> String {
        let target = self.host_map.get(host).map(String::as_str).unwrap_or(host);
        let short = service_host.split('.').next().unwrap_or_default();
        if target.split('.').next() == Some(short) { service_host.to_string() } else { target.to_string() }
    }

    /// Whether Istio would match `host` (as the files write it) to a host of `lab`, once the
    /// lab mapped it: `host_map`, the service's short name, a short name resolved in the
    /// rule's namespace (the lab's), wildcards (`*`, `*.svc.cluster.local`), and the hosts the
    /// files' own ServiceEntries add.
    pub fn host_matches(&self, host: &str, lab: &LabHosts) -> bool {
        let mapped = self.map_host_onto(host, &lab.target);
        let fqdn = if mapped.contains('.') || mapped.contains('*') {
            mapped
        } else {
            format!("{mapped}.{}.svc.cluster.local", lab.namespace)
        };
        let entries = self
            .loaded()
            .docs
            .iter()
            .filter(|d| d.kind == "ServiceEntry")
            .flat_map(|d| d.hosts.iter().map(|h| h.host.as_str()))
            .collect::<Vec<_>>();
        lab.hosts.iter().map(String::as_str).chain(entries).any(|known| {
            fqdn == known
                || fqdn == "*"
                || fqdn.strip_prefix('*').is_some_and(|suffix| suffix.starts_with('.') && known.ends_with(suffix))
                || known.strip_prefix('*').is_some_and(|suffix| suffix.starts_with('.') && fqdn.ends_with(suffix))
        })
    }

    /// The hosts of the files that match no host of any of `labs`: a DestinationRule's
    /// `host`, and a VirtualService for the mesh none of whose `hosts` match. ServiceEntries
    /// define hosts, they are not matched; a VirtualService bound to a gateway matches the
    /// gateway's hosts, and Sidecars and Gateways name namespaces of hosts: not checked.
    pub fn unmatched_hosts(&self, labs: &[LabHosts]) -> Vec<UnmatchedHost> {
        let matches = |h: &HostAt| labs.iter().any(|lab| self.host_matches(&h.host, lab));
        let mut out = Vec::new();
        for d in &self.loaded().docs {
            let checked: Vec<&HostAt> = match d.kind.as_str() {
                "DestinationRule" => d.hosts.iter().collect(),
                "VirtualService" => {
                    let gateways = d.value["spec"]["gateways"].as_array();
                    let mesh = gateways.is_none_or(|g| g.iter().any(|x| x == "mesh"));
                    if mesh && !d.hosts.iter().any(matches) { d.hosts.iter().take(1).collect() } else { vec![] }
                }
                _ => vec![],
            };
            for h in checked.into_iter().filter(|h| !matches(h)) {
                let mapped = self.host_map.get(&h.host).cloned();
                out.push(UnmatchedHost {
                    file: d.file.clone(),
                    line: h.line,
                    column: h.column,
                    kind: d.kind.clone(),
                    name: d.name.clone(),
                    host: h.host.clone(),
                    mapped,
                });
            }
        }
        out
    }

    /// One user document as the lab applies it: namespace, hosts, durations; with what changed.
    pub fn render(&self, doc: &UserDoc, ctx: &IstioContext) -> (Value, Vec<String>) {
        let mut v = doc.value.clone();
        let mut changes = Vec::new();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        if ns != "istio-system" && ns != ctx.namespace {
            v["metadata"]["namespace"] = ctx.namespace.clone().into();
            changes.push(format!("namespace {} → {}", if ns.is_empty() { "(none)" } else { &ns }, ctx.namespace));
        }
        map_hosts(&mut v["spec"], &mut |h| {
            let m = self.map_host(h, ctx);
            if m != h {
                changes.push(format!("host {h} → {m}"));
            }
            m
        });
        scale_durations(&mut v["spec"], ctx, "", &mut changes);
        (v, changes)
    }

    /// The annotations as the lab applies them (durations scaled).
    pub fn render_annotations(&self, ctx: &IstioContext) -> Vec<(String, String, Vec<String>)> {
        self.loaded()
            .annotations
            .iter()
            .map(|(k, v)| {
                let mut changes = Vec::new();
                let v = if k == "proxy.istio.io/config" { scale_proxy_config(v, ctx, &mut changes) } else { v.clone() };
                (k.clone(), v, changes)
            })
            .collect()
    }
}

/// The hosts a document names at the top of its `spec` (`host`, `hosts`), with the line and
/// column of each in the file (`start`: the line the document starts on).
fn hosts_at(doc: &str, start: usize) -> Vec<HostAt> {
    use serde_saphyr::Spanned;
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        host: Option<Spanned<Value>>,
        #[serde(default)]
        hosts: Option<Vec<Spanned<Value>>>,
    }
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        spec: Option<Spec>,
    }
    let Ok(Doc { spec: Some(spec) }) = serde_saphyr::from_str::<Doc>(doc) else { return vec![] };
    spec.host
        .into_iter()
        .chain(spec.hosts.unwrap_or_default())
        .filter_map(|h| {
            let host = h.value.as_str()?.to_string();
            let at = h.referenced;
            Some(HostAt { host, line: start + (at.line() as usize).max(1) - 1, column: at.column() as usize })
        })
        .collect()
}

/// Rewrite every host the spec names (`host`, `hosts`, `destination.host`).
fn map_hosts(v: &mut Value, f: &mut dyn FnMut(&str) -> String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), &mut *x) {
                    ("host", Value::String(h)) => *h = f(h),
                    ("hosts", Value::Array(a)) => {
                        for h in a.iter_mut() {
                            if let Value::String(s) = h {
                                *s = f(s);
                            }
                        }
                    }
                    _ => map_hosts(x, f),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| map_hosts(x, f)),
        _ => {}
    }
}

/// A Go or protobuf duration: `300s`, `1.5s`, `5m`, `1h`, `0h5m0s`, `100ms`.
pub fn parse_go_duration(s: &str) -> Option<Dur> {
    let mut rest = s.trim();
    let mut ms = 0f64;
    if rest == "0" {
        return Some(Dur::secs(0));
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(n);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        ms += value
            * match unit {
                "h" => 3_600_000.0,
                "m" => 60_000.0,
                "s" => 1000.0,
                "ms" => 1.0,
                _ => return None,
            };
        rest = tail;
    }
    Some(Dur(std::time::Duration::from_millis(ms.round() as u64)))
}

/// Scale the durations the lab knows a meaning of, in place.
fn scale_durations(v: &mut Value, ctx: &IstioContext, path: &str, changes: &mut Vec<String>) {
    let millis_keys =
        ["idleTimeout", "idle_timeout", "time", "interval", "max_connection_duration", "maxConnectionDuration"];
    let seconds_keys = ["keepalive_time", "keepalive_interval"];
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let in_keepalive = path.ends_with("tcpKeepalive");
                let is_duration_key =
                    ["idleTimeout", "idle_timeout", "max_connection_duration", "maxConnectionDuration"]
                        .contains(&k.as_str())
                        || (in_keepalive && (k == "time" || k == "interval"));
                match &mut *x {
                    Value::String(s) if is_duration_key && millis_keys.contains(&k.as_str()) => {
                        if let Some(d) = parse_go_duration(s).filter(|d| !d.is_zero()) {
                            let scaled = if in_keepalive { Dur::secs(ctx.seconds(d)) } else { ctx.millis(d) };
                            let text = if k.contains('_') {
                                proto_duration(scaled)
                            } else {
                                super::istio_idle_timeout::go_duration(scaled)
                            };
                            changes.push(format!("{here} {s} → {text} (×{})", ctx.factor));
                            *s = text;
                        }
                    }
                    Value::Number(n) if seconds_keys.contains(&k.as_str()) => {
                        if let Some(secs) = n.as_u64() {
                            let scaled = ctx.seconds(Dur::secs(secs));
                            changes.push(format!("{here} {secs} → {scaled} (×{})", ctx.factor));
                            *x = scaled.into();
                        }
                    }
                    _ => scale_durations(x, ctx, &here, changes),
                }
            }
            // Listener socket options: TCP_KEEPIDLE (6/4) and TCP_KEEPINTVL (6/5) in seconds.
            let level = m.get("level").and_then(value_int);
            let name = m.get("name").and_then(value_int);
            if level == Some(6)
                && matches!(name, Some(4 | 5))
                && let Some(secs) = m.get("int_value").and_then(value_int)
            {
                let scaled = ctx.seconds(Dur::secs(secs as u64));
                changes.push(format!(
                    "{path} socket option {} {secs} → {scaled} (×{})",
                    if name == Some(4) { "TCP_KEEPIDLE" } else { "TCP_KEEPINTVL" },
                    ctx.factor
                ));
                m.insert("int_value".into(), scaled.into());
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                scale_durations(x, ctx, &format!("{path}[{i}]"), changes);
            }
        }
        _ => {}
    }
}

/// A protobuf JSON duration, as Envoy's config writes it: `6.000s`.
fn proto_duration(d: Dur) -> String {
    format!("{}.{:03}s", d.0.as_secs(), d.0.subsec_millis())
}

fn value_int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// `proxy.istio.io/config` with `ISTIO_META_IDLE_TIMEOUT` scaled.
fn scale_proxy_config(text: &str, ctx: &IstioContext, changes: &mut Vec<String>) -> String {
    let Ok(mut v) = serde_saphyr::from_str::<Value>(text) else { return text.to_string() };
    let Some(d) = v["proxyMetadata"]["ISTIO_META_IDLE_TIMEOUT"].as_str().and_then(parse_go_duration) else {
        return text.to_string();
    };
    let scaled = super::istio_idle_timeout::go_duration(ctx.millis(d));
    changes.push(format!(
        "proxy.istio.io/config ISTIO_META_IDLE_TIMEOUT {} → {scaled} (×{})",
        v["proxyMetadata"]["ISTIO_META_IDLE_TIMEOUT"].as_str().unwrap_or_default(),
        ctx.factor
    ));
    v["proxyMetadata"]["ISTIO_META_IDLE_TIMEOUT"] = scaled.into();
    to_yaml(&v)
}

/// What the lab's knobs learn from a duration it knows, via the built-in mitigations' model.
fn keepalive_of(v: &Value) -> Option<crate::model::service::Keepalive> {
    let ka = &v["tcpKeepalive"];
    let time = ka["time"].as_str().and_then(parse_go_duration)?;
    let interval = ka["interval"].as_str().and_then(parse_go_duration).unwrap_or(Dur::secs(75));
    let probes = ka["probes"].as_u64().unwrap_or(9) as u32;
    Some(crate::model::service::Keepalive { time, interval, probes })
}

impl Mitigation for IstioYaml {
    fn label(&self) -> String {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        format!("istio-yaml={}", names.join("+"))
    }
    fn describe(&self) -> String {
        match &self.loaded {
            Some(l) => {
                let mut what: Vec<String> = l.docs.iter().map(|d| format!("{} {}", d.kind, d.name)).collect();
                what.extend(l.annotations.iter().map(|(k, _)| format!("pod annotation {k}")));
                format!("the team's own Istio YAML: {}", what.join(", "))
            }
            None => "the team's own Istio YAML".into(),
        }
    }
    /// Read the files and refuse a host that matches none of the scenario's lab's: a
    /// DestinationRule for a host this lab does not have would apply to nothing.
    fn load(&mut self, base: &Path, path: &[Hop], service: Service) -> Result<(), LoadError> {
        self.read_files(base)?;
        let lab = LabHosts::of(path, service, super::contract::LOCAL_NAMESPACE);
        match self.unmatched_hosts(std::slice::from_ref(&lab)).first() {
            None => Ok(()),
            Some(u) => Err(LoadError {
                file: u.file.clone(),
                line: Some(u.line),
                column: Some(u.column),
                message: format!(
                    "{} {}: host `{}` matches none of this scenario's hosts ({}): Istio would apply it to nothing",
                    u.kind,
                    u.name,
                    u.host,
                    lab.hosts.join(", ")
                ),
                hint: Some(format!(
                    "map it onto the lab's service: `{{istio-yaml: {{files: [...], host_map: {{{}: {}}}}}}}`",
                    u.host,
                    service.name()
                )),
            }),
        }
    }
    /// What the lab changed in the team's YAML for this cell (namespace, hosts, the durations
    /// it scaled), document by document.
    fn notes(&self, ctx: &IstioContext) -> Vec<String> {
        let Some(loaded) = &self.loaded else { return vec![] };
        let what = |changes: Vec<String>| {
            if changes.is_empty() { "as written".to_string() } else { changes.join("; ") }
        };
        let mut out: Vec<String> = loaded
            .docs
            .iter()
            .map(|d| {
                let (_, changes) = self.render(d, ctx);
                format!("istio-yaml: {} {} ({}:{}): {}", d.kind, d.name, d.file.display(), d.line, what(changes))
            })
            .collect();
        out.extend(
            self.render_annotations(ctx)
                .into_iter()
                .map(|(k, _, changes)| format!("istio-yaml: client pod annotation {k}: {}", what(changes))),
        );
        out
    }
    fn apply(&self, knobs: &mut CellConfig) -> Result<(), String> {
        use super::{dr_http_idle_timeout, dr_idle_timeout, dr_tcp_keepalive, istio_idle_timeout};
        let l = self.loaded();
        for d in l.docs.iter().filter(|d| d.kind == "DestinationRule") {
            let pool = &d.value["spec"]["trafficPolicy"]["connectionPool"];
            if let Some(t) = pool["tcp"]["idleTimeout"].as_str().and_then(parse_go_duration) {
                dr_idle_timeout::DrIdleTimeout(t).apply(knobs)?;
            }
            if let Some(ka) = keepalive_of(&pool["tcp"]) {
                dr_tcp_keepalive::DrTcpKeepalive(ka).apply(knobs)?;
            }
            if let Some(t) = pool["http"]["idleTimeout"].as_str().and_then(parse_go_duration) {
                dr_http_idle_timeout::DrHttpIdleTimeout(t).apply(knobs)?;
            }
        }
        for (k, v) in &l.annotations {
            if k == "proxy.istio.io/config"
                && let Ok(pc) = serde_saphyr::from_str::<Value>(v)
                && let Some(t) = pc["proxyMetadata"]["ISTIO_META_IDLE_TIMEOUT"].as_str().and_then(parse_go_duration)
            {
                istio_idle_timeout::IstioIdleTimeout(t).apply(knobs)?;
            }
        }
        Ok(())
    }
    fn istio_resources(&self, ctx: &IstioContext) -> Vec<IstioForm> {
        let mut out: Vec<IstioForm> = self
            .loaded()
            .docs
            .iter()
            .map(|d| IstioForm::Manifest { kind: d.kind.clone(), yaml: to_yaml(&self.render(d, ctx).0) })
            .collect();
        out.extend(self.render_annotations(ctx).into_iter().map(|(key, value, _)| IstioForm::PodAnnotation {
            pod: "client".into(),
            key,
            value,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_and_protobuf_write_them() {
        assert_eq!(parse_go_duration("300s"), Some(Dur::secs(300)));
        assert_eq!(parse_go_duration("0h5m0s"), Some(Dur::secs(300)));
        assert_eq!(parse_go_duration("1.5s"), Some(Dur(std::time::Duration::from_millis(1500))));
        assert_eq!(parse_go_duration("0s"), Some(Dur::secs(0)));
        assert_eq!(parse_go_duration("5 minutes"), None);
    }

    #[test]
    fn loads_maps_hosts_and_scales_what_it_knows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fix.yaml");
        std::fs::write(
            &f,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: prod}\nspec:\n  host: redis.prod.svc.cluster.local\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        tcpKeepalive: {time: 300s, interval: 75s, probes: 9}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n    metadata:\n      annotations:\n        proxy.istio.io/config: '{\"proxyMetadata\": {\"ISTIO_META_IDLE_TIMEOUT\": \"24h\"}}'\n",
        )
        .unwrap();
        let mut m = IstioYaml {
            files: vec!["fix.yaml".into()],
            host_map: BTreeMap::new(),
            annotations: BTreeMap::new(),
            loaded: None,
        };
        m.read_files(dir.path()).unwrap();
        let ctx = IstioContext { factor: 150, ..super::super::contract::tests::test_ctx() };
        let (v, changes) = m.render(&m.loaded().docs[0], &ctx);
        assert_eq!(v["spec"]["host"], "redis.cell-1.svc.cluster.local");
        assert_eq!(v["metadata"]["namespace"], "cell-1");
        assert_eq!(v["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["tcpKeepalive"]["time"], "0h0m2s");
        assert!(changes.iter().any(|c| c.contains("tcpKeepalive.time 300s → 0h0m2s")), "{changes:?}");
        let a = m.render_annotations(&ctx);
        assert!(a[0].1.contains("ISTIO_META_IDLE_TIMEOUT: 0h9m36s"), "{a:?}");
        let mut k = super::super::contract::tests::test_knobs();
        m.apply(&mut k).unwrap();
        assert_eq!(k.sidecar().unwrap().service_upstream_keepalive.unwrap().time, Dur::secs(300));
        assert_eq!(k.sidecar().unwrap().idle_timeout, Dur::secs(86400));
    }

    /// Istio's host matching, after the lab's mapping: which hosts of a user's files reach a
    /// lab, and where an unmatched one is written.
    #[test]
    fn hosts_match_the_lab_after_mapping_wildcards_and_short_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts.yaml");
        std::fs::write(
            &f,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: [cache.example.org]\n  resolution: NONE\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  # the team's service\n    host: ledger.bank.svc.cluster.local\n",
        )
        .unwrap();
        let mut m =
            IstioYaml { files: vec![f.clone()], host_map: BTreeMap::new(), annotations: BTreeMap::new(), loaded: None };
        m.read_files(dir.path()).unwrap();
        let memcached = LabHosts::of(&[], crate::model::service::Service::Memcached, "lab");
        assert_eq!(memcached.hosts, vec!["memcached.lab.svc.cluster.local".to_string()]);
        let gateway =
            LabHosts::of(&[crate::hop::Hop::Gateway(Default::default())], crate::model::service::Service::Http, "lab");
        assert_eq!(gateway.hosts.len(), 2, "{gateway:?}");
        for (host, matches) in [
            ("memcached", true),                         // a short name: the service's first label
            ("memcached.payments", true),                // first label again
            ("memcached.lab.svc.cluster.local", true),   // the lab's own host
            ("*", true),                                 // every host
            ("*.svc.cluster.local", true),               // a wildcard suffix
            ("*.lab.svc.cluster.local", true),           //
            ("*.bank.svc.cluster.local", false),         // the team's namespace, not the lab's
            ("ledger", false),                           // resolves to ledger.lab.svc.cluster.local
            ("ledger.bank.svc.cluster.local", false),    //
            ("cache.example.org", true),                 // the files' own ServiceEntry adds it
            ("svc.cluster.local", false),                // not a wildcard
            ("*memcached.lab.svc.cluster.local", false), // `*` only as a whole first label
        ] {
            assert_eq!(m.host_matches(host, &memcached), matches, "{host}");
        }
        let u = m.unmatched_hosts(std::slice::from_ref(&memcached));
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!((u[0].line, u[0].column, u[0].host.as_str()), (13, 11, "ledger.bank.svc.cluster.local"));
        // Mapped onto the service (a short name or a full host), it matches.
        m.host_map.insert("ledger.bank.svc.cluster.local".into(), "memcached".into());
        assert!(m.unmatched_hosts(std::slice::from_ref(&memcached)).is_empty());
        m.host_map.insert("ledger.bank.svc.cluster.local".into(), "*.svc.cluster.local".into());
        assert!(m.unmatched_hosts(std::slice::from_ref(&memcached)).is_empty());
        m.host_map.insert("ledger.bank.svc.cluster.local".into(), "ledger".into());
        assert_eq!(m.unmatched_hosts(&[memcached, gateway])[0].mapped.as_deref(), Some("ledger"));
    }

    #[test]
    fn an_unknown_kind_and_bad_yaml_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.yaml");
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap();
        let mut m =
            IstioYaml { files: vec![f.clone()], host_map: BTreeMap::new(), annotations: BTreeMap::new(), loaded: None };
        let e = m.read_files(dir.path()).unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("kind `Service`"), "{e}");
        std::fs::write(&f, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n---\nspec: [unclosed\n")
            .unwrap();
        let e = m.read_files(dir.path()).unwrap_err();
        assert_eq!(e.file, f);
        assert!(e.line.is_some_and(|l| l >= 4), "{e}");
    }
}
