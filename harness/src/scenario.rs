//! Scenario files: what to reproduce, on which path, and the cells to compare.
//!
//! Loading is strict: an unknown key, a duration without a unit or a mitigation that has
//! nothing to act on is an error that names the file, the line and the column, says what
//! was expected and gives a hint. The format is documented in `scenarios/README.md`.

use crate::hop::Hop;
use crate::mitigation::MitigationSpec;
use crate::model::duration::Dur;
use crate::model::library::Library;
use crate::model::service::{KeepaliveSetting, Service, TimeScaleSpec};
use crate::model::verdict::Verdict;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};

fn default_pool() -> usize {
    4
}
fn default_request_timeout() -> Dur {
    Dur::secs(2)
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client library (`probe::library`); default: the Rust one for the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// `library: external`: the program that speaks the probe contract (`scenarios/PROBE.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Pooled connections, each warmed, idled and reused once.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// `off`, `{time, interval, probes}`, or absent: the library's default (off for the Rust
    /// clients, Go's 15 s / 15 s / 9 for the Go ones).
    #[serde(default)]
    pub keepalive: Option<KeepaliveSetting>,
    /// How long the probe waits for an answer before calling the connection hung. Not scaled.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            library: None,
            command: None,
            pool: default_pool(),
            keepalive: None,
            request_timeout: default_request_timeout(),
        }
    }
}

/// `server: {idle_timeout: 8h}`: the server's own idle timeout (redis `timeout`, MariaDB
/// `wait_timeout`, memcached `-o idle_timeout`); `0s` = off. Default: the server's own
/// default (redis off, MariaDB 8 h, memcached off), so it never hides or causes a failure
/// by accident.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
}

/// One cell: a mitigation and the verdict it is expected to give.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    pub mitigation: Spanned<MitigationSpec>,
    pub expect: Verdict,
    /// One line on why this verdict is expected; reports show it.
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub summary: String,
    pub service: Service,
    #[serde(default)]
    pub client: ClientSpec,
    /// The server's own settings that could end an idle connection, made explicit.
    #[serde(default)]
    pub server: ServerSpec,
    /// Hops from the app to the server, in order; empty means a direct connection.
    #[serde(default)]
    pub path: Vec<Hop>,
    /// How long the pool sits idle, in real-world time.
    pub idle: Dur,
    #[serde(default)]
    pub time_scale: TimeScaleSpec,
    pub cells: Vec<CellSpec>,
    /// Where the scenario came from (set by `load`).
    #[serde(skip)]
    pub source: PathBuf,
    /// Where the values `validate` checks are written (set by `parse`).
    #[serde(skip)]
    pub positions: Positions,
}

/// Where a scenario's values are written in its file, for errors found after decoding
/// (an unknown library, a hop out of place): `file:line:column` like a syntax error.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    pub name: Option<serde_saphyr::Location>,
    pub service: Option<serde_saphyr::Location>,
    pub client: Option<serde_saphyr::Location>,
    pub library: Option<serde_saphyr::Location>,
    pub command: Option<serde_saphyr::Location>,
    pub pool: Option<serde_saphyr::Location>,
    pub server_idle_timeout: Option<serde_saphyr::Location>,
    pub path: Option<serde_saphyr::Location>,
    /// Each hop of `path`.
    pub hops: Vec<serde_saphyr::Location>,
    pub cells: Option<serde_saphyr::Location>,
}

impl Positions {
    /// A second, lenient decode of the same text that keeps only where each value is.
    fn of(text: &str) -> Positions {
        use serde::de::IgnoredAny;
        type At = Option<Spanned<IgnoredAny>>;
        #[derive(Deserialize)]
        struct Client {
            #[serde(default)]
            library: At,
            #[serde(default)]
            command: At,
            #[serde(default)]
            pool: At,
        }
        #[derive(Deserialize)]
        struct Server {
            #[serde(default)]
            idle_timeout: At,
        }
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            name: At,
            #[serde(default)]
            service: At,
            #[serde(default)]
            client: Option<Spanned<Client>>,
            #[serde(default)]
            server: Option<Server>,
            #[serde(default)]
            path: Option<Spanned<Vec<Spanned<IgnoredAny>>>>,
            #[serde(default)]
            cells: At,
        }
        let at = |a: &At| a.as_ref().map(|s| s.referenced);
        let Ok(doc) = serde_saphyr::from_str::<Doc>(text) else { return Positions::default() };
        let client = doc.client.as_ref();
        Positions {
            name: at(&doc.name),
            service: at(&doc.service),
            client: client.map(|c| c.referenced),
            library: client.and_then(|c| at(&c.value.library)),
            command: client.and_then(|c| at(&c.value.command)),
            pool: client.and_then(|c| at(&c.value.pool)),
            server_idle_timeout: doc.server.as_ref().and_then(|s| at(&s.idle_timeout)),
            path: doc.path.as_ref().map(|p| p.referenced),
            hops: doc.path.map(|p| p.value.iter().map(|h| h.referenced).collect()).unwrap_or_default(),
            cells: at(&doc.cells),
        }
    }

    fn hop(&self, i: usize) -> Option<serde_saphyr::Location> {
        self.hops.get(i).copied().or(self.path)
    }
}

/// A scenario file that cannot be used, with where and why.
#[derive(Debug)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// Find a scenario by name (`redis-idle` → `<dir>/redis-idle.yaml`) or by path.
pub fn resolve(name_or_path: &str, dir: &Path) -> Result<PathBuf, ScenarioError> {
    let p = Path::new(name_or_path);
    if p.extension().is_some() || name_or_path.contains('/') {
        return Ok(p.to_path_buf());
    }
    let candidate = dir.join(format!("{name_or_path}.yaml"));
    if candidate.exists() {
        return Ok(candidate);
    }
    let known = list(dir).unwrap_or_default().join(", ");
    Err(ScenarioError {
        file: candidate,
        line: None,
        column: None,
        message: format!("no scenario named `{name_or_path}`"),
        hint: Some(format!("shipped scenarios in {}: {known}", dir.display())),
    })
}

/// Names of the scenarios in a directory, sorted.
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".yaml")).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read the scenario file: {e}"),
        hint: Some("pass a scenario name from scenarios/ or a path to a .yaml file".into()),
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let mut scenario: Scenario = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let loc = e.location();
        let message = crate::model::first_line(&e.to_string());
        ScenarioError {
            file: path.to_path_buf(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            hint: hint_for(&message),
            message,
        }
    })?;
    scenario.source = path.to_path_buf();
    scenario.positions = Positions::of(text);
    // What a mitigation reads besides this file (a team's own Istio YAML) is read now,
    // relative to the scenario file, and checked against this scenario's lab.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for cell in &mut scenario.cells {
        cell.mitigation.value.as_mitigation_mut().load(&base, &scenario.path, scenario.service).map_err(|e| {
            ScenarioError {
                file: e.file,
                line: e.line.map(|l| l as u64),
                column: e.column.map(|c| c as u64),
                message: e.message,
                hint: e.hint,
            }
        })?;
    }
    scenario.validate()?;
    Ok(scenario)
}

fn hint_for(message: &str) -> Option<String> {
    if let Some(h) = crate::model::duration::hint_for(message) {
        Some(h)
    } else if message.contains("unknown field") {
        Some("check the spelling against scenarios/README.md; unknown keys are refused so a typo cannot silently change an experiment".into())
    } else if message.contains("unknown variant") {
        Some("scenarios/README.md lists every service, hop, mitigation and verdict".into())
    } else if message.contains("missing field") {
        Some("scenarios/README.md shows a complete scenario".into())
    } else {
        Some("scenarios/README.md shows the format with a complete example".into())
    }
}

impl Scenario {
    fn error_at(&self, loc: Option<serde_saphyr::Location>, message: String, hint: Option<String>) -> ScenarioError {
        let loc = loc.filter(|l| l.line() > 0);
        ScenarioError {
            file: self.source.clone(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message,
            hint,
        }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let at = &self.positions;
        if self.name.trim().is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.error_at(
                at.name,
                format!("name `{}` must be letters, digits, `-` or `_`", self.name),
                Some("e.g. `name: redis-idle`; it is also the default results directory".into()),
            ));
        }
        if self.client.pool == 0 || self.client.pool > 2000 {
            return Err(self.error_at(
                at.pool,
                format!("client.pool is {}, expected 1 to 2000 connections", self.client.pool),
                Some("the lab warms, idles and reuses each pooled connection once; 4 shows a failure".into()),
            ));
        }
        // A library the lab does not know, or one that does not speak the service: at the
        // `library:` value (else at `client`, for the default library).
        let library = self.library().map_err(|(msg, hint)| self.error_at(at.library.or(at.client), msg, hint))?;
        match (library, &self.client.command) {
            (Library::External, None) => {
                return Err(self.error_at(
                    at.library.or(at.client),
                    "client.library `external` needs `client.command`: the program that speaks the probe contract".into(),
                    Some("e.g. `command: [python3, my_probe.py]` (run in the scenario's directory; see scenarios/PROBE.md)".into()),
                ));
            }
            (Library::External, Some(c)) if c.is_empty() => {
                return Err(self.error_at(
                    at.command,
                    "client.command is empty".into(),
                    Some("give the program and its arguments, e.g. `command: [python3, my_probe.py]`".into()),
                ));
            }
            (l, Some(_)) if l != Library::External => {
                return Err(self.error_at(
                    at.command,
                    format!("client.command is only for `library: external`, not {}", l.name()),
                    Some("remove `command`, or set `library: external`".into()),
                ));
            }
            _ => {}
        }
        if self.cells.is_empty() {
            return Err(self.error_at(
                at.cells,
                "cells is empty: a scenario compares at least one mitigation".into(),
                Some("start with `- {mitigation: none, expect: idle-closed}`".into()),
            ));
        }
        let gateways: Vec<(usize, &crate::hop::GatewayHop)> = self
            .path
            .iter()
            .enumerate()
            .filter_map(|(i, h)| if let Hop::Gateway(g) = h { Some((i, g)) } else { None })
            .collect();
        if let Some((i, _)) = gateways.get(1) {
            return Err(self.error_at(
                at.hop(*i),
                format!("path[{i}] is a second gateway: a path has at most one"),
                Some("the lab models one ingress gateway per path".into()),
            ));
        }
        if self.service == Service::Http && !self.server.idle_timeout.unwrap_or_default().is_zero() {
            return Err(self.error_at(
                at.server_idle_timeout,
                "the lab's HTTP server has no idle timeout of its own; remove `server.idle_timeout`".into(),
                Some("model a timeout on the way with a hop (sidecar, middlebox) instead".into()),
            ));
        }
        if self.service == Service::Https && !gateways.iter().any(|(_, g)| g.tls) {
            return Err(self.error_at(
                gateways.first().map(|(i, _)| at.hop(*i)).unwrap_or(at.service),
                "service https needs a `gateway` hop with `tls: true`: the lab terminates TLS at the gateway".into(),
                Some("add `- gateway: {tls: true}` to the path, or use `service: http`".into()),
            ));
        }
        if let Some((i, _)) = gateways.iter().find(|(_, g)| g.tls).filter(|_| self.service != Service::Https) {
            return Err(self.error_at(
                at.hop(*i),
                format!("a gateway with `tls: true` needs `service: https`, not {}", self.service.name()),
                Some("set `service: https`, or remove `tls: true`".into()),
            ));
        }
        let last = self.path.len().saturating_sub(1);
        for (i, hop) in self.path.iter().enumerate() {
            let misplaced = match hop {
                Hop::Sidecar(_) if i != 0 => Some("the client sidecar sits in the app's pod: it must be the first hop"),
                Hop::ServerSidecar(_) if i != last => {
                    Some("the server sidecar sits in the server's pod: it must be the last hop")
                }
                _ => None,
            };
            if let Some(why) = misplaced {
                return Err(self.error_at(
                    at.hop(i),
                    format!("path[{i}] ({}): {why}", hop.kind()),
                    Some("list the hops from the app to the server, in order".into()),
                ));
            }
        }
        let mut seen: Vec<(String, u64)> = Vec::new();
        for (i, cell) in self.cells.iter().enumerate() {
            let label = cell.mitigation.value.label();
            let loc = Some(cell.mitigation.referenced);
            if let Some((_, line)) = seen.iter().find(|(l, _)| *l == label) {
                return Err(self.error_at(
                    loc,
                    format!("cells[{i}] repeats mitigation `{label}` (first on line {line})"),
                    Some("each cell is one experiment; give it other parameters or remove it".into()),
                ));
            }
            seen.push((label.clone(), cell.mitigation.referenced.line()));
            let mut knobs = self.base_knobs();
            if let Err(why) = cell.mitigation.value.as_mitigation().apply(&mut knobs) {
                return Err(self.error_at(
                    loc,
                    format!("cells[{i}]: mitigation `{label}` cannot apply: {why}"),
                    Some("give the path the hop this mitigation acts on, or remove the cell".into()),
                ));
            }
        }
        Ok(())
    }

    /// The client library: the named one (which must speak the service), else the service's
    /// default; `client.command` alone means `external`. Err: (message, hint).
    pub fn library(&self) -> Result<Library, (String, Option<String>)> {
        let names = || crate::model::library::ALL.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
        let library = match (&self.client.library, &self.client.command) {
            (None, Some(_)) => Library::External,
            (None, None) => Library::default_for(self.service),
            (Some(name), _) => Library::parse(name).ok_or_else(|| {
                (format!("client.library `{name}` is not one the lab knows"), Some(format!("one of: {}", names())))
            })?,
        };
        if !library.speaks(self.service) {
            let fitting: Vec<&str> =
                crate::model::library::ALL.iter().filter(|l| l.speaks(self.service)).map(|l| l.name()).collect();
            return Err((
                format!("client.library `{}` does not speak {}", library.name(), self.service.name()),
                Some(format!("for {}: {}", self.service.name(), fitting.join(", "))),
            ));
        }
        Ok(library)
    }

    /// The knobs every cell starts from, before its mitigation.
    pub fn base_knobs(&self) -> crate::config::CellConfig {
        let library = self.library().unwrap_or(Library::default_for(self.service));
        crate::config::CellConfig {
            service: self.service,
            client: crate::config::ClientConfig {
                library,
                command: self.client.command.clone(),
                command_dir: self.source.parent().map(std::path::Path::to_path_buf),
                pool: self.client.pool,
                keepalive: match &self.client.keepalive {
                    Some(k) => k.0,
                    None => library.default_keepalive(),
                },
                pool_max_idle: library.default_pool_max_idle(),
                heartbeat: None,
                tcp_user_timeout: None,
                test_on_borrow: false,
                pool_max_lifetime: None,
                request_timeout: self.client.request_timeout,
            },
            server_idle_timeout: self.server.idle_timeout.unwrap_or(self.service.default_server_idle_timeout()),
            path: self.path.clone(),
            idle: self.idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: t\nsummary: s\nservice: redis\nclient: {pool: 2, keepalive: off}\npath:\n  - sidecar: {idle_timeout: 1h, route: passthrough}\nidle: 70m\ncells:\n  - {mitigation: none, expect: idle-closed}\n  - {mitigation: {app-keepalive: {time: 600s, interval: 75s, probes: 9}}, expect: idle-closed}\n  - {mitigation: {istio-idle-timeout: 24h}, expect: survived}\n";

    fn parse_str(s: &str) -> Result<Scenario, ScenarioError> {
        parse(s, Path::new("t.yaml"))
    }

    #[test]
    fn parses_a_complete_scenario() {
        let s = parse_str(GOOD).unwrap();
        assert_eq!(s.cells.len(), 3);
        assert_eq!(s.idle, Dur::secs(4200));
        assert_eq!(s.path[0].kind(), "sidecar");
        assert_eq!(s.time_scale, TimeScaleSpec::Auto);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = parse_str(&GOOD.replace("idle: 70m", "idle: 70m\nidel_period: 3m")).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("idel_period"), "{e}");
        assert!(e.hint.is_some());
    }

    #[test]
    fn bad_duration_is_refused_with_its_line() {
        let e = parse_str(&GOOD.replace("idle: 70m", "idle: 70")).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.to_string().contains("70s"), "{e}");
    }

    #[test]
    fn unknown_mitigation_and_duplicate_cells() {
        let e = parse_str(&GOOD.replace("istio-idle-timeout", "istio-idle-timout")).unwrap_err();
        assert!(e.message.contains("istio-idle-timout"), "{e}");
        let dup = format!("{GOOD}  - {{mitigation: none, expect: survived}}\n");
        let e = parse_str(&dup).unwrap_err();
        assert_eq!(e.line, Some(12), "{e}");
        assert!(e.message.contains("repeats"), "{e}");
    }

    #[test]
    fn errors_found_after_decoding_name_line_and_column() {
        let at = |text: &str| {
            let e = parse_str(text).unwrap_err();
            assert!(e.hint.is_some(), "{e}");
            (e.line, e.column, e.message)
        };
        let (l, c, m) = at(&GOOD.replace("keepalive: off}", "keepalive: off, library: lettuce}"));
        assert_eq!((l, c), (Some(4), Some(44)), "{m}");
        assert!(m.contains("`lettuce` is not one the lab knows"), "{m}");
        let (l, c, m) = at(&GOOD.replace("client: {pool: 2, keepalive: off}", "client:\n  library: gomemcache"));
        assert_eq!((l, c), (Some(5), Some(12)), "{m}");
        assert!(m.contains("does not speak redis"), "{m}");
        let (l, c, m) = at(&GOOD.replace("keepalive: off}", "keepalive: off, library: redis-rs, command: [x]}"));
        assert_eq!((l, c), (Some(4), Some(63)), "{m}");
        assert!(m.contains("only for `library: external`"), "{m}");
        let (l, c, m) = at(&GOOD.replace("keepalive: off}", "keepalive: off, library: external}"));
        assert_eq!((l, c), (Some(4), Some(44)), "{m}");
        assert!(m.contains("needs `client.command`"), "{m}");
        let (l, c, m) = at(&GOOD.replace("pool: 2", "pool: 0"));
        assert_eq!((l, c), (Some(4), Some(16)), "{m}");
        let (l, c, m) = at(&GOOD.replace("name: t", "name: a b"));
        assert_eq!((l, c), (Some(1), Some(7)), "{m}");
        let extra_hop = "  - sidecar: {idle_timeout: 1h, route: passthrough}\n";
        let (l, c, m) = at(&GOOD.replace(extra_hop, &format!("  - middlebox: {{preset: nlb}}\n{extra_hop}")));
        assert_eq!((l, c), (Some(7), Some(5)), "{m}");
        assert!(m.contains("path[1] (sidecar)"), "{m}");
        let https = GOOD.replace("service: redis", "service: https").replace(
            "path:\n  - sidecar: {idle_timeout: 1h, route: passthrough}\n",
            "path:\n  - gateway: {idle_timeout: 1h}\n",
        );
        let only_none =
            |t: &str| format!("{}  - {{mitigation: none, expect: idle-closed}}\n", &t[..t.find("cells:").unwrap() + 7]);
        let (l, c, m) = at(&only_none(&https));
        assert_eq!((l, c), (Some(6), Some(5)), "the gateway without `tls: true`: {m}");
        let (l, c, m) = at(&only_none(&GOOD.replace("service: redis", "service: https")));
        assert_eq!((l, c), (Some(3), Some(10)), "no gateway at all: at the service: {m}");
        let cells = GOOD.find("cells:").unwrap();
        let (l, c, m) = at(&format!("{}cells: []\n", &GOOD[..cells]));
        assert_eq!((l, c), (Some(8), Some(8)), "{m}");
    }

    /// An `istio-yaml` cell whose DestinationRule names a host this scenario's lab lacks.
    #[test]
    fn an_istio_yaml_host_of_no_lab_service_is_refused_at_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let dr = dir.path().join("dr.yaml");
        std::fs::write(
            &dr,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: sessions}\nspec: {host: sessions.web.svc.cluster.local, trafficPolicy: {connectionPool: {tcp: {idleTimeout: 2h}}}}\n",
        )
        .unwrap();
        let scenario = dir.path().join("s.yaml");
        let cell = "  - {mitigation: {istio-yaml: dr.yaml}, expect: survived}\n";
        let e = parse(&format!("{GOOD}{cell}"), &scenario).unwrap_err();
        assert_eq!(e.file, dr, "{e}");
        assert_eq!((e.line, e.column), (Some(4), Some(14)), "{e}");
        assert!(e.message.contains("`sessions.web.svc.cluster.local` matches none of this scenario's hosts"), "{e}");
        assert!(e.message.contains("redis.idlelab.svc.cluster.local"), "{e}");
        assert!(e.hint.unwrap().contains("host_map: {sessions.web.svc.cluster.local: redis}"));
        let mapped = "  - {mitigation: {istio-yaml: {files: [dr.yaml], host_map: {sessions.web.svc.cluster.local: redis}}}, expect: survived}\n";
        parse(&format!("{GOOD}{mapped}"), &scenario).unwrap();
    }

    #[test]
    fn a_negative_duration_is_not_told_to_take_a_unit() {
        let e = parse_str(&GOOD.replace("idle: 70m", "idle: -70m")).unwrap_err();
        assert_eq!((e.line, e.column), (Some(7), Some(7)), "{e}");
        assert!(e.message.contains("cannot be negative"), "{e}");
        let hint = e.hint.unwrap();
        assert!(hint.contains("drop the sign") && !hint.contains("take a unit"), "{hint}");
        let e = parse_str(&GOOD.replace("idle_timeout: 1h", "idle_timeout: 0x")).unwrap_err();
        assert!(e.message.contains("`x` in `0x` is not a duration unit"), "{e}");
        assert!(e.hint.unwrap().contains("case-sensitive"));
        // `5 m` is five minutes.
        assert_eq!(parse_str(&GOOD.replace("idle: 70m", "idle: 70 m")).unwrap().idle, Dur::secs(4200));
    }

    #[test]
    fn sidecar_mitigation_without_sidecar_is_refused() {
        let no_sidecar = GOOD.replace("path:\n  - sidecar: {idle_timeout: 1h, route: passthrough}\n", "");
        let e = parse_str(&no_sidecar).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
        assert!(e.message.contains("sidecar"), "{e}");
    }
}
