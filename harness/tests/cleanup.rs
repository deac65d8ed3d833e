//! Nothing of the lab is left behind after Ctrl-C or a panic (success and failure are
//! checked in lab.rs).

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn ctrl_c_in_the_idle_phase_removes_everything() {
    require_lab();
    let out = tempdir();
    let mut child = idlelab(&[
        "run",
        "redis-idle",
        "--mitigation",
        "none",
        "--mitigation",
        "app-keepalive",
        "-v",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let line = lines.next().expect("the run reaches the idle phase").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(": phase idle ") {
            break;
        }
    }
    // While idle: the lab exists.
    assert!(!leftovers(pid).is_empty(), "the lab should be up while idle:\n{seen}");
    nix_kill(pid, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn a_panic_in_a_cell_removes_everything() {
    require_lab();
    let out = tempdir();
    let o = idlelab(&["run", "redis-idle", "--mitigation", "none", "--out", out.path().to_str().unwrap()])
        .env("IDLELAB_FAULT", "panic-after-setup")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = o.id();
    let o = o.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = summary(out.path());
    assert!(cell(&s, "none")["error"].as_str().unwrap().contains("panicked"), "{s}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

/// Only processes: the namespaces and temp dirs of a killed run stay until the next run.
fn processes(left: Vec<String>) -> Vec<String> {
    left.into_iter().filter(|l| l.starts_with("process ")).collect()
}

/// SIGKILL leaves the runner no chance to clean up: every process it started dies with it
/// (parent-death signal; mariadb-install-db's subshells through their own PID namespace), and
/// the next run removes the namespaces and temp dirs it left, saying so.
#[test]
fn sigkill_of_the_runner_leaves_no_process_and_the_next_run_reaps_the_rest() {
    require_lab();
    let out = tempdir();
    for (scenario, at_phase) in [("mysql-idle", None), ("redis-idle", Some(": phase idle "))] {
        let mut child = idlelab(&["run", scenario, "-v", "--out", out.path().join(scenario).to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        match at_phase {
            // While mariadb-install-db initialises the run's template data directory.
            None => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while !leftovers(pid).iter().any(|l| l.contains("mariadb-install-db")) {
                    assert!(std::time::Instant::now() < deadline, "mariadb-install-db never started");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            Some(phase) => {
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                while !lines.next().expect("the run reaches the idle phase").unwrap().contains(phase) {}
            }
        }
        assert!(!processes(leftovers(pid)).is_empty(), "{scenario}: the lab runs processes");
        nix_kill(pid, libc::SIGKILL);
        child.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        assert_eq!(processes(leftovers(pid)), Vec::<String>::new(), "{scenario}: no process 2 s after SIGKILL");
        assert!(!leftovers(pid).is_empty(), "{scenario}: the namespaces and temp dirs wait for the next run");
        let o = run(&["run", "redis-idle", "--mitigation", "none", "--out", out.path().join("next").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("removed netns idlelab-{pid}-")), "the next run says what it removed: {err}");
        assert_eq!(leftovers(pid), Vec::<String>::new());
    }
}

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// `./just` on a machine without `just` fetches the pinned wheel into a temporary directory,
/// then `exec`s just, which ends the shell before its EXIT trap could run: the directory is
/// removed before the `exec`, so nothing of it is left.
#[test]
fn fetching_just_leaves_no_temporary_directory() {
    let tmp = tempdir();
    let home = tempdir();
    let o = std::process::Command::new(repo().join("just"))
        .arg("--version")
        .env("TMPDIR", tmp.path())
        .env("IDLELAB_HOME", home.path())
        // Only the system's directories: no `just` found, so the wheel is fetched.
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fetching just"), "it fetched: {}", text(&o));
    assert!(home.path().join("bin/just").is_file(), "the pinned just is installed");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
