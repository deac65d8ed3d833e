//! Issue 22 (first part): the same cells on another Envoy release. `--envoy VERSION` runs
//! every proxy of the run on that release, from a cached venv of its own; each cell's evidence
//! names the release the running Envoy reported; `--envoy A,B` runs the cells on each and
//! names every cell whose verdict or reuse outcome changed.

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
    }
    let table = std::fs::read_to_string(out.path().join("versions.txt")).unwrap();
    assert!(
        table.contains("redis-sidecar-upstream::none: Envoy 1.36.4 → 1.40.0: verdict failed-on-reuse ✗ → reset-on-reuse; the app got 4 eof → 4 reset on reuse"),
        "{table}"
    );
    assert!(!cached("1.36.4").iter().any(|n| n.starts_with('.')), "no half-made venv left: {:?}", cached("1.36.4"));
}
