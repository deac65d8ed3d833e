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
}
