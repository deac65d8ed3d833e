//! Issue 17: `starting idlelab-xds: Invalid argument (os error 22)`, a flake seen only when
//! other threads opened and closed descriptors while the control plane started. The child
//! used to `dup2` its inherited sockets onto 3, 4, …, closing whatever it held there; when
//! another thread had just freed a low number, that was the namespace file `setns` needed
//! next. Now the child keeps every descriptor where it is and only clears close-on-exec on
//! the inherited ones.

use idlelab::local::netns::Netns;
use idlelab::local::process::spawn_inheriting;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    });
    assert_eq!(uid.as_deref(), Some("0"), "this test creates a network namespace: run it as root (`sudo just test`)");
}

/// Spawns in a namespace, each inheriting two listening sockets, while four threads free and
/// take low descriptor numbers as fast as they can. Every child must start, be in the
/// namespace, and hold exactly its inherited sockets (at the numbers it was told) and stdio.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_inherits_exactly_its_sockets_while_other_threads_churn_descriptors() {
    require_root();
    let ns = Netns::create(format!("{}{}-spawntest", idlelab::local::netns::PREFIX, std::process::id())).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let files: Vec<_> = (0..8).filter_map(|_| std::fs::File::open("/dev/null").ok()).collect();
                    drop(files);
                }
            })
        })
        .collect();
    for round in 0..150 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        let mut cmd = tokio::process::Command::new("sh");
        // What each descriptor of the child is, and its namespace's interfaces (a new
        // namespace has only `lo`: /proc/self/net/dev is two header lines and one line for it).
        cmd.arg("-c")
            .arg("for f in /proc/self/fd/*; do printf '%s=%s ' \"${f##*/}\" \"$(readlink \"$f\")\"; done; echo; wc -l < /proc/self/net/dev")
            .stdout(std::process::Stdio::piped());
        let mut process = spawn_inheriting("fd-check", cmd, &ns.path(), None, &[a.as_fd(), b.as_fd()])
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        drop((a, b));
        let mut text = String::new();
        let mut stdout = process.child.stdout.take().expect("piped");
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text).await.unwrap();
        assert!(process.child.wait().await.unwrap().success(), "round {round}: {text}");
        let mut lines = text.lines();
        let fds: std::collections::BTreeMap<i32, String> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=').and_then(|(k, v)| Some((k.parse().ok()?, v.to_string()))))
            .collect();
        // The two sockets at the numbers the child was told; nothing of the namespace setup
        // (the namespace file `setns` used) leaked into it.
        for fd in [fa, fb] {
            assert!(
                fds.get(&fd).is_some_and(|t| t.starts_with("socket:")),
                "round {round}: fd {fd} is not the socket: {fds:?}"
            );
        }
        assert!(!fds.values().any(|t| t.contains("net:[") || t.contains("/run/netns")), "round {round}: {fds:?}");
        assert_eq!(lines.next().map(str::trim), Some("3"), "round {round}: not in the lab's namespace: {text}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
}
