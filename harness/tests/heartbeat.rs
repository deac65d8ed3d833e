//! Heartbeats (`app-heartbeat`): the k-th is due k × interval after the idle began, and is
//! sent only when due at least 250 ms before the idle ends. One due at the very end (an idle
//! that is an exact multiple of the interval) would coincide with the reuse: it is never
//! sent, so the count is the same on every run.

mod common;
use common::*;
use serde_json::Value;

/// A scaled duration as reports print it (`6.007s`, `250ms`), in milliseconds.
fn millis(text: &str) -> u64 {
    let (num, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).expect("a unit"));
    let n: f64 = num.parse().unwrap();
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => panic!("unexpected unit {other} in {text}"),
    };
    ms.round() as u64
}

fn scaled(cell: &Value, label: &str) -> u64 {
    let values = cell["time_scale"]["values"].as_array().unwrap();
    let v = values.iter().find(|v| v["label"] == label).unwrap_or_else(|| panic!("no {label} in {cell}"));
    millis(v["scaled"].as_str().unwrap())
}

/// The rule, written out: heartbeats k = 1, 2, … while k × interval + 250 ms ≤ idle.
fn predicted(idle_ms: u64, every_ms: u64) -> u64 {
    (1..).take_while(|k| k * every_ms + 250 <= idle_ms).count() as u64
}

#[test]
fn a_heartbeat_due_at_the_end_of_the_idle_is_never_sent() {
    require_lab();
    let scenario = fixture("heartbeat-exact-multiple.yaml");
    let mut counts: Vec<(String, Vec<u64>)> = Vec::new();
    for run_no in 0..4 {
        let out = tempdir();
        let o = run(&["run", scenario.to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "run {run_no}: every cell survives:\n{}", text(&o));
        let s = summary(out.path());
        for (label, interval, want) in [("app-heartbeat=30m", 1800_u64, 2_u64), ("app-heartbeat=45m", 2700, 1)] {
            let c = cell(&s, label);
            let (idle, every) = (scaled(c, "idle"), scaled(c, "client.heartbeat"));
            // The factor puts the last heartbeat 1 ms before the end in lab time: the case
            // that used to race with the reuse.
            let real_count = 5400 / interval;
            assert_eq!((real_count * every) as i64 - idle as i64, -1, "{label}: the fixture's premise: {c}");
            assert_eq!(predicted(idle, every), want, "{label}: idle {idle} ms, every {every} ms");
            let conns = c["evidence"]["observations"]["connections"].as_array().unwrap();
            assert_eq!(conns.len(), 6, "{c}");
            let beats: Vec<u64> = conns.iter().map(|x| x["heartbeats"].as_u64().unwrap()).collect();
            assert!(
                beats.iter().all(|b| *b == want),
                "run {run_no}, {label}: {want} heartbeats per connection, got {beats:?}"
            );
            match counts.iter_mut().find(|(l, _)| l == label) {
                Some((_, v)) => v.push(beats.iter().sum()),
                None => counts.push((label.to_string(), vec![beats.iter().sum()])),
            }
        }
    }
    for (label, v) in &counts {
        assert!(v.windows(2).all(|w| w[0] == w[1]), "{label}: the same count on every run: {v:?}");
    }
}
