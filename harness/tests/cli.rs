//! The small commands: doctor, list, check.

mod common;
use common::*;

#[test]
fn doctor_lists_every_prerequisite_as_found() {
    let o = run(&["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "run `just setup`:\n{out}");
    for name in ["root", "nft", "envoy", "redis-server", "mariadbd", "memcached", "conntrack", "pidfd_getfd"] {
        let line = out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("doctor lists {name}:\n{out}"));
        assert!(line.contains("found"), "{line}");
    }
    assert!(out.contains("1.40."), "the Envoy version: {out}");
}

#[test]
fn doctor_says_how_to_fix_a_missing_envoy() {
    let o = idlelab(&["doctor"]).env("ENVOY_BIN", "/nonexistent/envoy").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.contains("envoy")).unwrap();
    assert!(line.contains("MISSING") && line.contains("just setup"), "{line}");
}

#[test]
fn list_names_every_shipped_scenario() {
    let o = run(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    let names: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect();
    let files = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert_eq!(names.len(), files, "{names:?}");
    assert!(names.contains(&"redis-idle".to_string()) && names.contains(&"https-keepalive".to_string()));
}

/// `-v` shows the lab's own log on stderr: each namespace, process and rule, inside the cell's span.
#[test]
fn verbose_shows_what_the_lab_did_per_cell() {
    require_lab();
    let out = tempdir();
    let o = run(&["run", "redis-middlebox", "--mitigation", "none", "-v", "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for what in ["namespace created", "process started", "nftables rules installed", "phase=Idle", "namespace deleted"]
    {
        assert!(
            err.lines().any(|l| l.contains("cell{key=redis-middlebox::none") && l.contains(what)),
            "`{what}` inside the cell's span:\n{err}"
        );
    }
    let quiet =
        run(&["run", "redis-middlebox", "--mitigation", "none", "--out", out.path().join("q").to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("process started"), "{}", text(&quiet));
}
