//! Issue 22: the same cells on other Envoy and Istio releases. `--envoy VERSION` runs every
//! proxy of the run on that release, from a cached venv of its own; `--istio NAME` configures
//! them with that Istio release's control plane and pilot-agent, built on first use from the
//! module istio/versions/NAME pins. Each cell's evidence names the releases the running
//! binaries reported; `--envoy A,B` / `--istio A,B` run the cells on each and name every cell
//! whose verdict or reuse outcome changed, and `idlelab compare` does the same for two runs.

mod common;
use common::*;

/// The cache's entries for `version` (its venv, or a half-made one).
fn cached(version: &str) -> Vec<String> {
    let root = idlelab::tools::tools_dir().join("envoy");
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.trim_start_matches('.').starts_with(version))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_envoy_release_that_is_not_served_exits_2_and_leaves_nothing_behind() {
    require_lab();
    let out = tempdir();
    let dir = out.path().join("run");
    let o =
        run(&["run", "redis-middlebox", "--mitigation", "none", "--envoy", "1.99.0", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("Envoy 1.99.0 is not served here") && said.contains("hint:"), "{said}");
    assert!(!dir.exists(), "no run directory for a run that never started");
    assert!(cached("1.99.0").is_empty(), "nothing half-installed: {:?}", cached("1.99.0"));

    let o = run(&["run", "redis-middlebox", "--envoy", "latest", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected an Envoy release such as 1.36.4"), "{}", text(&o));
    // Several releases are all checked before any cell runs.
    let o = run(&["run", "redis-middlebox", "--envoy", "1.40.0,1.99.0", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Envoy 1.99.0 is not served here"), "{}", text(&o));
    assert!(!dir.exists(), "no cell ran on 1.40.0 first");
    let o = run(&["run", "redis-middlebox", "--envoy", "1.40.0,1.40.0", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1.40.0 twice"), "{}", text(&o));
}

/// The middlebox behind the sidecar resets Envoy's idle upstream connection. Measured here:
/// Envoy 1.36.4 passes it to the app as a FIN (the app reads EOF on reuse), Envoy 1.40.0 as
/// an RST (ECONNRESET). The verdict follows the release; each cell names the release its
/// running Envoy reported, not the flag.
#[test]
fn the_same_middlebox_cell_on_envoy_1_36_and_1_40_gets_eof_then_reset() {
    require_lab();
    let out = tempdir();
    let o = run(&[
        "run",
        "redis-sidecar-upstream",
        "--mitigation",
        "none",
        "--envoy",
        "1.36.4,1.40.0",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    // 1.36.4 does not give the cell its (1.40-era) expectation: the run fails, and says why.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for (version, outcome, verdict) in [("1.36.4", "eof", "failed-on-reuse"), ("1.40.0", "reset", "reset-on-reuse")] {
        let s = summary(&out.path().join(format!("envoy-{version}")));
        let c = cell(&s, "none");
        assert_eq!(c["verdict"], verdict, "Envoy {version}: {c}");
        let envoys = envoys(c);
        assert!(!envoys.is_empty() && envoys.iter().all(|e| e["version"] == version), "Envoy {version}: {envoys:?}");
        let reuse: Vec<&str> = c["evidence"]["observations"]["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["reuse"]["outcome"].as_str().unwrap())
            .collect();
        assert!(!reuse.is_empty() && reuse.iter().all(|r| *r == outcome), "Envoy {version}: {reuse:?}");
        // Scaled for the facts measured from the Envoy that ran it.
        let timing = &c["time_scale"]["envoy"];
        assert_eq!(timing["release"], version, "{timing}");
        assert_eq!(timing["source"], "measured", "{timing}");
        assert_eq!(timing["http_upstream_idle_timer_while_connecting"], version == "1.36.4", "{timing}");
    }
    let table = std::fs::read_to_string(out.path().join("versions.txt")).unwrap();
    assert!(
        table.contains("redis-sidecar-upstream::none: Envoy 1.36.4 → 1.40.0: verdict failed-on-reuse ✗ → reset-on-reuse; the app got 4 eof → 4 reset on reuse"),
        "{table}"
    );
    assert!(!cached("1.36.4").iter().any(|n| n.starts_with('.')), "no half-made venv left: {:?}", cached("1.36.4"));

    // `compare` across the two runs names the releases and what the app now gets.
    let (old, new) = (out.path().join("envoy-1.36.4"), out.path().join("envoy-1.40.0"));
    let o = run(&["compare", old.to_str().unwrap(), new.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "1.40.0 matches where 1.36.4 did not: fixed, not a regression\n{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("old ran Envoy 1.36.4, Istio 1.30-dev") && said.contains("new ran Envoy 1.40.0"), "{said}");
    assert!(said.contains("redis-sidecar-upstream::none: the app got 4 eof → 4 reset on reuse"), "{said}");
    let o = run(&["compare", new.to_str().unwrap(), old.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "back to 1.36.4 regresses the cell\n{}", text(&o));
}

/// The time scale's Envoy facts are measured from each release's binary, not assumed. Measured
/// here: the connection manager closes an idle HTTP/1.1 connection 6 s after its idle timeout
/// on both releases (its drain, then its delayed close); an upstream HTTP connection's idle
/// timer runs while the connect hangs on 1.36.4 and no longer on 1.40.0 (Envoy 1.38's change);
/// tcp_proxy's idle timer runs while connecting on both.
#[test]
fn each_envoy_releases_timing_facts_are_measured_from_its_binary_and_cached() {
    require_lab();
    let o = run(&["envoy-timing", "--envoy", "1.36.4,1.40.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    for (version, http_upstream) in [("1.36.4", "yes"), ("1.40.0", "no")] {
        let line = format!(
            "Envoy {version} (measured): an idle HTTP/1.1 connection closes 6 s after the connection manager's idle timeout; idle timers run while connecting: tcp_proxy yes, HTTP upstream {http_upstream}"
        );
        assert!(said.lines().any(|l| l == line), "expected {line:?} in:\n{said}");
    }
    let cache = idlelab::tools::tools_dir().join("envoy-timing");
    let names: Vec<String> =
        std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    for version in ["1.36.4", "1.40.0"] {
        let file = names.iter().find(|n| n.starts_with(&format!("{version}-"))).expect("a cached record");
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cache.join(file)).unwrap()).unwrap();
        assert_eq!(record["release"], version, "{record}");
        assert_eq!(record["http_close_delay_ms"], 6000, "{record}");
    }
    assert!(!names.iter().any(|n| n.starts_with(".tmp-")), "no half-written record: {names:?}");

    let o = run(&["envoy-timing", "--envoy", "1.99.0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Envoy 1.99.0 is not served here"), "{}", text(&o));
}

/// The builds of pinned Istio releases under `home` (`<home>/istio`), finished or partial.
fn istio_builds(home: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(home.join("istio"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn an_istio_release_not_pinned_or_that_does_not_build_exits_2_and_leaves_nothing_behind() {
    require_lab();
    let out = tempdir();
    let dir = out.path().join("run");
    for name in ["1.99", "../1.31-dev.20260827", ""] {
        let o =
            run(&["run", "redis-middlebox", "--mitigation", "none", "--istio", name, "--out", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "--istio {name:?}: {}", text(&o));
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(
            said.contains("no such Istio release is pinned here (pinned: 1.30, 1.31-dev.20260423, 1.31-dev.20260827)")
                && said.contains("scripts/pin-istio.sh"),
            "{said}"
        );
        assert!(!dir.exists(), "no run directory for a run that never started");
    }
    // A release whose pins do not build (its istio.io/istio is not served): exit 2 naming it,
    // and neither a build nor a partial directory in the cache.
    let pins = out.path().join("pins/1.29-broken");
    std::fs::create_dir_all(&pins).unwrap();
    std::fs::write(
        pins.join("go.mod"),
        "module idlelab.dev/istio\n\ngo 1.26\n\nrequire istio.io/istio v0.0.0-20990101000000-0123456789ab\n",
    )
    .unwrap();
    std::fs::write(pins.join("go.sum"), "").unwrap();
    let home = out.path().join("home");
    let o = idlelab(&[
        "run",
        "redis-middlebox",
        "--mitigation",
        "none",
        "--istio",
        "1.29-broken",
        "--out",
        dir.to_str().unwrap(),
    ])
    .env("IDLELAB_ISTIO_VERSIONS", out.path().join("pins"))
    .env("IDLELAB_HOME", &home)
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("Istio 1.29-broken does not build here (nothing was installed)") && said.contains("hint:"),
        "{said}"
    );
    assert!(said.contains("istio.io/istio"), "the Go error is quoted: {said}");
    assert!(istio_builds(&home).is_empty(), "nothing half-built: {:?}", istio_builds(&home));
    assert!(!dir.exists());
    // One axis at a time.
    let o = run(&["run", "redis-middlebox", "--envoy", "1.36.4,1.40.0", "--istio", "1.30,1.31-dev.20260827"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("both name several releases"), "{}", text(&o));
}

/// The same cells configured by Istio 1.30 (the release-1.30 branch istio/go.mod pins) and by
/// Istio 1.31 (a pre-release of 1.31, pinned in istio/versions): each cell names the release
/// its control plane and its proxies' pilot-agent reported, read from the running binaries.
/// Measured here: the shipped cells' verdicts and reuse outcomes do not change.
#[test]
fn the_same_cells_on_istio_1_30_and_1_31_name_the_releases_their_binaries_report() {
    require_lab();
    let out = tempdir();
    let o = run(&[
        "run",
        "redis-sidecar-upstream",
        "--istio",
        "1.30,1.31-dev.20260827",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for (name, reported, agent) in
        [("1.30", "1.30-dev (9739e10eb9d7)", "1.30-dev"), ("1.31-dev.20260827", "1.31-dev (eed52ebb66ad)", "1.31-dev")]
    {
        let s = summary(&out.path().join(format!("istio-{name}")));
        for c in s["cells"].as_array().unwrap() {
            assert_eq!(c["evidence"]["lab"]["istio_release"], reported, "Istio {name}: {}", c["cell"]);
            let envoys = envoys(c);
            assert!(
                !envoys.is_empty() && envoys.iter().all(|e| e["istio_agent"] == agent && e["version"] == "1.40.0"),
                "Istio {name}: {envoys:?}"
            );
        }
    }
    let builds = istio_builds(&idlelab::tools::tools_dir());
    assert!(builds.contains(&"1.31-dev.20260827".to_string()), "{builds:?}");
    assert!(!builds.iter().any(|b| b.contains(".partial-")), "no partial build left: {builds:?}");
    let table = std::fs::read_to_string(out.path().join("versions.txt")).unwrap();
    assert!(table.contains("Istio 1.30") && table.contains("Istio 1.31-dev.20260827"), "{table}");
    assert!(table.contains("no cell's verdict or reuse outcome changed between the releases"), "{table}");
}

/// `versions:` in a scenario pins the releases its cluster runs: `run` uses them unless the
/// command line names others; a malformed or unpinned one is refused at its line.
#[test]
fn a_scenarios_versions_pin_the_releases_unless_the_command_line_names_others() {
    require_lab();
    let out = tempdir();
    let shipped = std::fs::read_to_string(repo().join("scenarios/redis-sidecar-upstream.yaml")).unwrap();
    let lines = shipped.lines().count();
    let pinned = out.path().join("pinned.yaml");
    // Unquoted: YAML would read 1.30 as a number; the lab reads the release as written.
    std::fs::write(&pinned, format!("{shipped}versions:\n  envoy: 1.36.4\n  istio: 1.30\n")).unwrap();
    for (extra, want) in [(None, "1.36.4"), (Some("1.40.0"), "1.40.0")] {
        let dir = out.path().join(format!("run-{want}"));
        let mut args = vec!["run", pinned.to_str().unwrap(), "--mitigation", "none", "--out", dir.to_str().unwrap()];
        if let Some(e) = extra {
            args.extend(["--envoy", e]);
        }
        let o = run(&args);
        assert!(o.status.code() == Some(0) || o.status.code() == Some(1), "{}", text(&o));
        let s = summary(&dir);
        let c = cell(&s, "none");
        let envoys = envoys(c);
        assert!(!envoys.is_empty() && envoys.iter().all(|e| e["version"] == want), "{want}: {envoys:?}");
        assert_eq!(c["evidence"]["lab"]["istio_release"], "1.30-dev (9739e10eb9d7)");
    }
    for (versions, line, said) in [
        (
            "versions:\n  envoy: latest\n",
            lines + 2,
            "versions.envoy `latest`: expected an Envoy release such as 1.36.4",
        ),
        ("versions:\n  istio: \"1.29\"\n", lines + 2, "versions.istio `1.29`: no such Istio release is pinned here"),
    ] {
        let bad = out.path().join("bad.yaml");
        std::fs::write(&bad, format!("{shipped}{versions}")).unwrap();
        let o = run(&["run", bad.to_str().unwrap(), "--out", out.path().join("bad").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{}:{line}:", bad.display())) && err.contains(said) && err.contains("hint:"),
            "{err}"
        );
        assert!(!out.path().join("bad").exists());
    }
}
