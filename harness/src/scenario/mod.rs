//! Scenario files: what to reproduce, on which path, and the cells to compare.
//!
//! Loading is strict: an unknown key, a duration without a unit or a mitigation that has
//! nothing to act on is an error that names the file, the line and the column, says what
//! was expected and gives a hint. The format is documented in `scenarios/README.md`.

mod format;
mod load;
mod validate;

pub use format::{CellSpec, ClientSpec, Positions, Scenario, ScenarioError, ServerSpec};
pub use load::{list, load, parse, resolve};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::Dur;
    use crate::model::service::TimeScaleSpec;
    use std::path::Path;

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
