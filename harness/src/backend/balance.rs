//! A gRPC balance run, the same on every backend: what the replicas counted and what the
//! clients saw, made into the run's [`BalanceObservation`] and its notes.
//!
//! ```text
//!   replicas' count lines (every 200 ms) ─┐
//!   clients' reports (every call)        ─┼─▶ observe() ─▶ timeline, segments at the scale
//!   scale cuts, replicas added            ─┘               events, time to share, failures, memory
//! ```
//!
//! The local lab reads the counts from its replicas' files, the kind backend from the replica
//! pods; both hand them here, so a cell's numbers mean the same whichever backend ran it.

use crate::model::balance::{BalanceObservation, BalanceThreshold, ReplicaCount, Segment, segments};
use crate::probe::grpc::GrpcProbeReport;

/// What a balance run measured, as its backend collected it.
pub struct BalanceRun {
    /// Wall clock (ms since the Unix epoch) when the clients were started: the timeline's 0.
    pub t0: u64,
    /// When the run ended (ms since `t0`).
    pub end_ms: u64,
    /// Replicas before the first scale event.
    pub initial: usize,
    /// Each scale event: when its replicas could serve (ms since `t0`) and the count from then
    /// (the replicas it added are the indices from the count before it up to this one).
    pub cuts: Vec<(u64, usize)>,
    /// Each replica's count lines, by index.
    pub counts: Vec<Vec<ReplicaCount>>,
    pub reports: Vec<GrpcProbeReport>,
    pub threshold: BalanceThreshold,
    /// Each sidecar's resident memory (pilot-agent + Envoy, KiB), where the backend reads it.
    pub sidecar_rss_kib: Vec<(String, u64)>,
}

/// The window `time_to_share` judges a replica's share over.
pub const SHARE_WINDOW_MS: u64 = 400;

/// The observation, and the notes that state its numbers.
pub fn observe(run: BalanceRun) -> (BalanceObservation, Vec<String>) {
    let t0 = run.t0;
    let timeline = timeline(&run.counts, t0, run.end_ms);
    let cut_ms: Vec<u64> = run.cuts.iter().map(|(c, _)| *c).collect();
    let segs = segments(&timeline, &cut_ms, |ms| {
        run.cuts.iter().rfind(|(c, _)| *c <= ms).map(|(_, n)| *n).unwrap_or(run.initial)
    });
    let mut time_to_share_ms = Vec::new();
    let mut before = run.initial;
    for (j, (_, to)) in run.cuts.iter().enumerate() {
        let added: Vec<usize> = (before..*to).collect();
        if let Some(seg) = segs.get(j + 1) {
            time_to_share_ms.extend(time_to_share(&timeline, seg, &added));
        }
        before = (*to).max(before);
    }
    let requests: u64 = run.reports.iter().map(|r| r.requests.len() as u64).sum();
    let mut failed: Vec<String> = Vec::new();
    for r in &run.reports {
        for q in r.requests.iter().filter(|q| q.code.is_some()) {
            failed.push(format!(
                "{} at {:.1} s: {} {}",
                r.client,
                q.unix_ms.saturating_sub(t0) as f64 / 1000.0,
                q.code.as_deref().unwrap_or_default(),
                q.message.as_deref().unwrap_or_default()
            ));
        }
    }
    let mut notes = Vec::new();
    // What each client's channels reached: one replica per connection, or all of them.
    for r in &run.reports {
        let mut per_channel: std::collections::BTreeMap<usize, std::collections::BTreeSet<u32>> = Default::default();
        for q in &r.requests {
            if let Some(rep) = q.replica {
                per_channel.entry(q.channel).or_default().insert(rep);
            }
        }
        let desc: Vec<String> = per_channel
            .iter()
            .map(|(ch, set)| {
                format!(
                    "channel {ch} → replica{} {}",
                    if set.len() > 1 { "s" } else { "" },
                    set.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        notes.push(format!("{}: {} requests; {}", r.client, r.requests.len(), desc.join("; ")));
    }
    for s in &segs {
        notes.push(format!(
            "{:.1}–{:.1} s: requests per replica [{}]; largest share {:.0} %, coefficient of variation {:.2}",
            s.from_ms as f64 / 1000.0,
            s.to_ms as f64 / 1000.0,
            list(&s.served),
            s.largest_share() * 100.0,
            s.coefficient_of_variation()
        ));
    }
    for (i, t) in &time_to_share_ms {
        notes.push(match t {
            Some(ms) => format!(
                "replica {i} (added by scale) first served half an even share of a {SHARE_WINDOW_MS} ms window {:.1} s after it joined",
                *ms as f64 / 1000.0
            ),
            None => format!(
                "replica {i} (added by scale) never served half an even share of a {SHARE_WINDOW_MS} ms window before the end"
            ),
        });
    }
    let rss_kib: Vec<u64> = run.counts.iter().map(|c| c.last().map(|x| x.rss_kib).unwrap_or(0)).collect();
    let client_rss_kib: Vec<u64> = run.reports.iter().map(|r| r.peak_rss_kib).collect();
    notes.push(format!("clients' peak resident memory (KiB): [{}]", list(&client_rss_kib)));
    if !run.sidecar_rss_kib.is_empty() {
        notes.push(format!(
            "sidecars' resident memory, pilot-agent + Envoy (KiB): {}",
            run.sidecar_rss_kib.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
        ));
    }
    notes.push(format!("replicas' resident memory (KiB): [{}]", list(&rss_kib)));
    let balance = BalanceObservation {
        timeline,
        segments: segs,
        requests,
        failed,
        rss_kib,
        client_rss_kib,
        sidecar_rss_kib: run.sidecar_rss_kib,
        time_to_share_ms,
        threshold: run.threshold,
    };
    (balance, notes)
}

fn list(v: &[u64]) -> String {
    v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

/// The replicas' counts as one timeline: every 200 ms from `t0`, what each had served.
fn timeline(counts: &[Vec<ReplicaCount>], t0: u64, end_ms: u64) -> Vec<(u64, Vec<u64>)> {
    (0..=end_ms / 200)
        .map(|step| {
            let at = t0 + step * 200;
            let served = counts
                .iter()
                .map(|c| c.iter().take_while(|x| x.unix_ms <= at).last().map(|x| x.served).unwrap_or(0))
                .collect();
            (step * 200, served)
        })
        .collect()
}

/// How long after a scale each added replica took to get its share: the end of the first
/// window of [`SHARE_WINDOW_MS`] in the segment (from the cut on, in steps of the timeline's
/// 200 ms) in which it served at least half of an even share of that window's requests.
/// None when that never happened before the segment ended.
fn time_to_share(timeline: &[(u64, Vec<u64>)], seg: &Segment, added: &[usize]) -> Vec<(usize, Option<u64>)> {
    let n = seg.served.len().max(1) as u64;
    let points: Vec<&(u64, Vec<u64>)> =
        timeline.iter().filter(|(t, _)| *t + 200 > seg.from_ms && *t <= seg.to_ms).collect();
    let at = |p: &(u64, Vec<u64>), i: usize| p.1.get(i).copied().unwrap_or(0);
    let steps = (SHARE_WINDOW_MS / 200) as usize;
    added
        .iter()
        .map(|&i| {
            let when = points.windows(steps + 1).find_map(|w| {
                let (first, last) = (w[0], w[steps]);
                let total: u64 = last.1.iter().sum::<u64>().saturating_sub(first.1.iter().sum());
                let mine = at(last, i).saturating_sub(at(first, i));
                (total > 0 && mine * n * 2 >= total).then(|| last.0.saturating_sub(seg.from_ms))
            });
            (i, when)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline every 200 ms: replicas 0–3 serve 10 per step each; replica 4, added at
    /// 1000 ms, from `joins_at` on.
    fn timeline(joins_at: Option<u64>) -> Vec<(u64, Vec<u64>)> {
        let mut served = vec![0u64; 5];
        (0..=20)
            .map(|step| {
                let t = step * 200;
                for (i, s) in served.iter_mut().enumerate() {
                    if i < 4 || joins_at.is_some_and(|j| t > j) {
                        *s += 10;
                    }
                }
                (t, served.clone())
            })
            .collect()
    }

    #[test]
    fn an_added_replica_gets_its_share_when_its_rate_does_not_when_the_segment_ends() {
        let seg = |tl: &[(u64, Vec<u64>)]| {
            let (a, b) = (&tl[5].1, &tl[20].1);
            Segment { from_ms: 1000, to_ms: 4000, served: a.iter().zip(b).map(|(a, b)| b - a).collect() }
        };
        // At once: the first 400 ms window after the cut.
        let tl = timeline(Some(1000));
        assert_eq!(time_to_share(&tl, &seg(&tl), &[4]), vec![(4, Some(400))]);
        // Serving from 2.2 s on: the window 2.0–2.4 s, half of it at an even rate, is enough.
        let tl = timeline(Some(2200));
        assert_eq!(time_to_share(&tl, &seg(&tl), &[4]), vec![(4, Some(1400))]);
        // Never.
        let tl = timeline(None);
        assert_eq!(time_to_share(&tl, &seg(&tl), &[4]), vec![(4, None)]);
    }

    /// The counts of two replicas, the second added by a scale at 1 s: the timeline lines
    /// them up by wall clock, the segments cut at the scale, and the notes state the numbers.
    #[test]
    fn counts_and_reports_become_segments_and_notes() {
        let t0 = 1_000_000;
        let count = |replica: u32, at: u64, served: u64| ReplicaCount { unix_ms: t0 + at, replica, served, rss_kib: 7 };
        let counts = vec![
            (0..=10).map(|s| count(0, s * 200, s * 10)).collect(),
            (6..=10).map(|s| count(1, s * 200, (s - 5) * 10)).collect(),
        ];
        let run = BalanceRun {
            t0,
            end_ms: 2000,
            initial: 1,
            cuts: vec![(1000, 2)],
            counts,
            reports: vec![],
            threshold: BalanceThreshold { max_cv: 0.3 },
            sidecar_rss_kib: vec![],
        };
        let (obs, notes) = observe(run);
        assert_eq!(obs.segments.len(), 2, "{:?}", obs.segments);
        assert_eq!(obs.segments[1].served, vec![50, 50]);
        assert_eq!(obs.time_to_share_ms, vec![(1, Some(400))]);
        assert_eq!(obs.rss_kib, vec![7, 7]);
        assert!(notes.iter().any(|n| n.starts_with("1.0–2.0 s: requests per replica [50, 50]")), "{notes:#?}");
    }
}
