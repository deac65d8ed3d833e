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

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
