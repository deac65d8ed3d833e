//! Helpers for the integration tests: they run the real `idlelab` binary, as root, against
//! a real Envoy and a real redis-server.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_idlelab")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The lab needs root and the prerequisites `just setup` installs; a test that cannot run
/// the lab fails and says how to fix it (it never skips).
pub fn require_lab() {
    assert!(nix_is_root(), "the lab tests need root (network namespaces, nftables): run `sudo just test`");
    let out = Command::new(bin()).arg("doctor").output().expect("run idlelab doctor");
    assert!(out.status.success(), "prerequisites missing; run `just setup`:\n{}", String::from_utf8_lossy(&out.stdout));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn idlelab(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).current_dir(repo());
    c
}

pub fn run(args: &[&str]) -> Output {
    idlelab(args).output().expect("run idlelab")
}

pub fn text(o: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json parses")
}

pub fn cell<'a>(summary: &'a Value, prefix: &str) -> &'a Value {
    summary["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cell"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no cell {prefix} in {summary}"))
}

/// Envoy counters of a cell (every Envoy of the path) whose name ends with `suffix`, summed.
pub fn counter(cell: &Value, suffix: &str) -> u64 {
    envoys(cell)
        .iter()
        .filter_map(|e| e["counters"].as_object())
        .flat_map(|m| m.iter())
        .filter(|(k, _)| k.ends_with(suffix))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum()
}

pub fn envoys(cell: &Value) -> Vec<Value> {
    cell["evidence"]["lab"]["envoys"].as_array().cloned().unwrap_or_default()
}

/// Access log entries of every Envoy of the cell.
pub fn access_log(cell: &Value) -> Vec<Value> {
    envoys(cell).iter().flat_map(|e| e["access_log"].as_array().cloned().unwrap_or_default()).collect()
}

/// Sockets seen by `ss` in the namespace `role`, at one moment or at any (`None`).
pub fn sockets(cell: &Value, role: &str, moment: Option<&str>) -> Vec<Value> {
    cell["evidence"]["lab"]["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["netns_role"] == role && moment.is_none_or(|m| s["moment"] == m))
        .flat_map(|s| s["sockets"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The middleboxes' forgotten-segment counters after the reuse, summed.
pub fn forgotten_segments(cell: &Value) -> u64 {
    cell["evidence"]["lab"]["middleboxes"]
        .as_array()
        .map(|m| {
            m.iter().filter(|v| v["moment"] == "after-reuse").map(|v| v["forgotten_segments"].as_u64().unwrap()).sum()
        })
        .unwrap_or(0)
}

/// Everything a run with this pid may have left: namespaces, temp dirs, processes (by
/// command line, parent, or a network namespace of the run).
pub fn leftovers(pid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("idlelab-{pid}-");
    let mut left = Vec::new();
    let run_netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok().map(|m| format!("net:[{}]", m.ino())))
                .collect()
        })
        .unwrap_or_default();
    for dir in ["/run/netns", "/tmp"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    left.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ppid = std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
            s.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|x| x.parse::<u32>().ok())
        });
        let netns = std::fs::read_link(format!("/proc/{p}/ns/net")).map(|l| l.to_string_lossy().into_owned());
        let in_run_netns = netns.is_ok_and(|n| run_netns.contains(&n));
        if cmdline.contains(&prefix) || ppid == Some(pid) || in_run_netns {
            left.push(format!("process {p}: {cmdline}"));
        }
    }
    left
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("idlelab-test-").tempdir().unwrap()
}

/// Run a scenario (every cell must match) into a temp dir; returns the dir and summary.json.
pub fn run_scenario_ok(name: &str) -> (tempfile::TempDir, Value) {
    require_lab();
    let out = tempdir();
    let o = run(&["run", name, "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{name}: every cell must match:\n{}", text(&o));
    let s = summary(out.path());
    (out, s)
}

/// Run `scenario` into a temp dir; returns the exit code, the output, the lab's pid and the dir.
pub fn run_with_pid(scenario: &str) -> (Option<i32>, String, u32, tempfile::TempDir) {
    let out = tempdir();
    let child = idlelab(&["run", scenario, "--out", out.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    (o.status.code(), text(&o), pid, out)
}

/// Verdicts of a connection that failed or was closed under the app.
pub const FAILURES: [&str; 5] = ["idle-closed", "reset-on-reuse", "failed-on-reuse", "timed-out", "hung"];

/// Issue 21's score of a run with `--capture` (either backend).
pub struct Score {
    /// Connections that ended badly and were attributed.
    pub attributed: usize,
    /// Of them, those that name the hop and act the lab configured.
    pub agreeing: usize,
    /// Cells with a failure verdict (each must have an attribution).
    pub failing_cells: usize,
    /// The attributions that disagree, each with its cell and sentence.
    pub wrong: Vec<String>,
}

/// Score every cell of a `--capture` run's summary: each cell has its capture file; each
/// failing cell an attribution of an app connection (or of a proxy's pool behind it); each
/// attribution's time within its connection, its sentence in the notes, its diagram drawn, and
/// the cell's own count of agreeing ones equal to the one recomputed here.
pub fn score_attributions(s: &Value) -> Score {
    let (mut attributed, mut agreeing, mut failing_cells) = (0, 0, 0);
    let mut wrong: Vec<String> = Vec::new();
    for c in s["cells"].as_array().unwrap() {
        let key = c["key"].as_str().unwrap();
        let capture = &c["evidence"]["lab"]["capture"];
        assert!(capture.is_object(), "{key}: no capture evidence");
        let file = std::path::Path::new(capture["file"].as_str().unwrap());
        assert!(file.is_file(), "{key}: {} missing", file.display());
        let attributions = capture["attributions"].as_array().unwrap();
        let verdict = c["verdict"].as_str().unwrap_or("error");
        if FAILURES.contains(&verdict) {
            failing_cells += 1;
            assert!(!attributions.is_empty(), "{key}: {verdict}, but no connection was attributed: {capture}");
            // The app's own connection failed, unless a proxy's pool failed behind it.
            assert!(
                verdict == "failed-on-reuse" || attributions.iter().any(|a| a["client"] == "app"),
                "{key}: {verdict}, but no app connection was attributed: {capture}"
            );
        }
        for a in attributions {
            attributed += 1;
            let first = &a["first"];
            let agrees = capture["configured"].as_array().unwrap().iter().any(|want| {
                let action = match want["forgets"].as_str() {
                    None => "fin",
                    Some("reset") => "reset",
                    Some(_) => "drop",
                };
                want["actor"] == first["actor"] && first["action"] == action
            });
            if agrees {
                agreeing += 1;
            } else {
                wrong.push(format!("{key}: configured {}, attributed {}", capture["configured"], a["sentence"]));
            }
            // The sentence is in the cell's notes, and its times are measured (after the idle began).
            // Within the connection: after its idle began, before its last packet.
            let at = first["at_idle_s"].as_f64().unwrap();
            let last_t = a["arrows"].as_array().unwrap().iter().map(|x| x["t"].as_f64().unwrap()).fold(0.0, f64::max);
            assert!(at >= 0.0 && at <= last_t - a["idle_from_t"].as_f64().unwrap() + 0.05, "{key}: {a}");
            // Named by the address the app dialled, not by the sidecar's redirect listener.
            assert!(!a["connection"].as_str().unwrap().ends_with(":15001"), "{key}: {}", a["connection"]);
            assert!(
                c["evidence"]["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("which hop:")),
                "{key}: the attribution is in the evidence's notes"
            );
            assert!(!a["arrows"].as_array().unwrap().is_empty(), "{key}: a diagram");
        }
        // The count the cell reports is the one recomputed here.
        let agree_here = attributions.len() - wrong.iter().filter(|w| w.starts_with(&format!("{key}:"))).count();
        assert_eq!(capture["agree"].as_u64().unwrap() as usize, agree_here, "{key}");
    }
    Score { attributed, agreeing, failing_cells, wrong }
}

/// The interface blocks' names of a pcapng, as pcap-parser (not the writer's library) reads them.
pub fn interface_names(path: &std::path::Path) -> (Vec<String>, usize) {
    use pcap_parser::traits::PcapReaderIterator;
    use pcap_parser::{Block, PcapBlockOwned, PcapError};
    let mut reader = pcap_parser::PcapNGReader::new(1 << 16, std::fs::File::open(path).unwrap()).unwrap();
    let (mut names, mut packets) = (Vec::new(), 0);
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let name = idb.options.iter().find(|o| o.code == pcap_parser::OptionCode::IfName);
                        names.push(
                            name.map(|o| String::from_utf8_lossy(&o.value).trim_end_matches('\0').to_string())
                                .unwrap_or_default(),
                        );
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(_)) => packets += 1,
                    _ => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader.refill().unwrap(),
            Err(e) => panic!("{}: {e:?}", path.display()),
        }
    }
    (names, packets)
}
