//! How a gRPC service's replicas shared the requests, and the balance verdict judged from it.
//!
//! ```text
//!   client 0 ─channel─┐                      ┌─▶ replica 0   counts its own requests
//!   client 1 ─channel─┼─▶ ClusterIP (DNAT, ──┼─▶ replica 1   (the servers' own counts,
//!   client 2 ─channel─┘   one pick per new   └─▶ replica 2    read every 200 ms)
//!                         connection)
//! ```
//!
//! A run is cut into segments at its scale events: within a segment the set of replicas is
//! fixed, so each segment's shares say how the balancer treated the replicas that existed.
//! The verdict is about the last segment (after the last scale event): did every replica then
//! get its share? Everything here is a function of the counts; nothing is assumed.

use serde::{Deserialize, Serialize};

/// A gRPC client's load-balancing policy, by its library's names (tonic, grpc-go).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GrpcLb {
    /// One endpoint per channel (the ClusterIP): one HTTP/2 connection, every request on it.
    PickFirst,
    /// tonic's `Channel::balance_list` over every replica (a headless Service's addresses):
    /// tower's power of two choices per request, over the list it was given.
    BalanceList,
    /// grpc-go's `round_robin` over every replica (a headless Service's addresses, as
    /// resolved at start): each call to the next ready connection in turn.
    RoundRobin,
}

impl GrpcLb {
    /// `name` as `library` calls it (tonic: `pick_first`, `balance_list`; grpc-go:
    /// `pick_first`, `round_robin`).
    pub fn parse(name: &str, library: crate::model::library::Library) -> Result<GrpcLb, String> {
        use crate::model::library::Library;
        match (name, library) {
            ("pick_first", _) => Ok(GrpcLb::PickFirst),
            ("balance_list", Library::Tonic) => Ok(GrpcLb::BalanceList),
            ("round_robin", Library::GrpcGo) => Ok(GrpcLb::RoundRobin),
            ("round_robin", Library::Tonic) => Err("tonic has no `round_robin` policy: its client-side balancing is `Channel::balance_list` (power of two choices over a fixed list)".into()),
            ("balance_list", Library::GrpcGo) => Err("`balance_list` is tonic's; grpc-go balances with `round_robin`".into()),
            (other, l) => Err(format!("{} has no load-balancing policy `{other}`", l.name())),
        }
    }

    /// The policy that balances per request over every replica, in `library`'s words.
    pub fn per_request(library: crate::model::library::Library) -> GrpcLb {
        if library == crate::model::library::Library::GrpcGo { GrpcLb::RoundRobin } else { GrpcLb::BalanceList }
    }

    /// Whether the client is given every replica's address (a headless Service) to balance over.
    pub fn over_every_replica(self) -> bool {
        matches!(self, GrpcLb::BalanceList | GrpcLb::RoundRobin)
    }
    pub fn name(self) -> &'static str {
        match self {
            GrpcLb::PickFirst => "pick_first",
            GrpcLb::BalanceList => "balance_list",
            GrpcLb::RoundRobin => "round_robin",
        }
    }
}

/// One segment of the run: the replicas that existed and what each served in it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Segment {
    /// Milliseconds since the run's start.
    pub from_ms: u64,
    pub to_ms: u64,
    /// Requests each replica served in the segment, by replica id (index).
    pub served: Vec<u64>,
}

impl Segment {
    pub fn total(&self) -> u64 {
        self.served.iter().sum()
    }

    /// The busiest replica's share of the segment's requests (0 when none were served).
    pub fn largest_share(&self) -> f64 {
        let total = self.total();
        if total == 0 { 0.0 } else { *self.served.iter().max().unwrap_or(&0) as f64 / total as f64 }
    }

    /// The coefficient of variation of the requests per replica (standard deviation / mean):
    /// 0 when every replica served the same, √(N−1) when one served everything.
    pub fn coefficient_of_variation(&self) -> f64 {
        let n = self.served.len() as f64;
        let total = self.total() as f64;
        if n == 0.0 || total == 0.0 {
            return 0.0;
        }
        let mean = total / n;
        let var = self.served.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n;
        var.sqrt() / mean
    }

    /// Replicas that served nothing in the segment.
    pub fn idle_replicas(&self) -> Vec<usize> {
        self.served.iter().enumerate().filter(|(_, s)| **s == 0).map(|(i, _)| i).collect()
    }
}

/// One line of the counts file: what a replica had served at `unix_ms`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReplicaCount {
    /// Wall clock (ms since the Unix epoch), to line up with the probe's calls.
    pub unix_ms: u64,
    pub replica: u32,
    /// `Who` calls answered so far.
    pub served: u64,
    /// The replica's resident memory (VmRSS of /proc/self/status); 0 where it cannot be read.
    pub rss_kib: u64,
}

/// The lines of a counts file (`origin` names it in errors), in the order written.
pub fn parse_counts(text: &str, origin: &str) -> anyhow::Result<Vec<ReplicaCount>> {
    use anyhow::Context;
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()).collect();
    let mut counts = Vec::with_capacity(lines.len());
    for (n, (i, line)) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(c) => counts.push(c),
            // A file read while its replica still writes may end inside its last line: that
            // line is not whole yet, and is left out.
            Err(_) if n + 1 == lines.len() && n > 0 => {}
            Err(e) => return Err(e).with_context(|| format!("{origin}:{}", i + 1)),
        }
    }
    Ok(counts)
}

/// The servers' counts over time, plus what the clients saw.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
pub struct BalanceObservation {
    /// Requests each replica had served at each moment: `(ms since start, served per replica)`,
    /// one row per sample (every 200 ms); a replica not yet started counts 0.
    pub timeline: Vec<(u64, Vec<u64>)>,
    pub segments: Vec<Segment>,
    /// Requests the clients sent, and those that failed (status code and message).
    pub requests: u64,
    pub failed: Vec<String>,
    /// Each replica's resident memory at its last sample (KiB).
    pub rss_kib: Vec<u64>,
    /// Each client's peak resident memory (the probe's VmHWM, KiB).
    #[serde(default)]
    pub client_rss_kib: Vec<u64>,
    /// Each sidecar's resident memory after the run (pilot-agent + Envoy, KiB), by pod name.
    #[serde(default)]
    pub sidecar_rss_kib: Vec<(String, u64)>,
    /// For each replica started by a scale event: how long after the scale until it first
    /// served half an even share of the requests of a 400 ms window, or `None` if it never did.
    pub time_to_share_ms: Vec<(usize, Option<u64>)>,
    /// The scenario's threshold the verdict is judged against.
    pub threshold: BalanceThreshold,
}

/// The balance verdict's threshold (`balance: {max_cv: 0.3}` in a scenario).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalanceThreshold {
    /// The largest coefficient of variation of requests per replica, in the last segment,
    /// that still counts as balanced.
    pub max_cv: f64,
}

impl Default for BalanceThreshold {
    fn default() -> Self {
        BalanceThreshold { max_cv: 0.3 }
    }
}

/// `true` when balanced, and one sentence from the numbers.
pub fn judge_balance(obs: &BalanceObservation) -> (bool, String) {
    let threshold = obs.threshold;
    let Some(last) = obs.segments.last() else {
        return (false, "no replica served a request".into());
    };
    let cv = last.coefficient_of_variation();
    let served = last.served.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let idle = last.idle_replicas();
    let mut sentence = format!(
        "{} replicas served [{served}] requests from {:.1} s to {:.1} s: largest share {:.0} %, coefficient of variation {:.2} (balanced at ≤ {:.2})",
        last.served.len(),
        last.from_ms as f64 / 1000.0,
        last.to_ms as f64 / 1000.0,
        last.largest_share() * 100.0,
        cv,
        threshold.max_cv
    );
    if !idle.is_empty() {
        let ids = idle.iter().map(|i| format!("replica {i}")).collect::<Vec<_>>().join(", ");
        sentence.push_str(&format!("; {ids} served nothing"));
    }
    if last.total() == 0 {
        return (false, sentence);
    }
    (cv <= threshold.max_cv, sentence)
}

/// Cut the servers' counts into segments at the given moments (ms since start).
pub fn segments(timeline: &[(u64, Vec<u64>)], cuts: &[u64], replicas_at: impl Fn(u64) -> usize) -> Vec<Segment> {
    let Some((end, _)) = timeline.last() else { return vec![] };
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|c| *c < *end));
    bounds.push(*end);
    // The count of each replica at a moment: the last sample at or before it.
    let at = |ms: u64| -> Vec<u64> {
        timeline.iter().take_while(|(t, _)| *t <= ms).last().map(|(_, v)| v.clone()).unwrap_or_default()
    };
    bounds
        .windows(2)
        .map(|w| {
            let (a, b) = (at(w[0]), at(w[1]));
            let n = replicas_at(w[0]);
            let served =
                (0..n).map(|i| b.get(i).copied().unwrap_or(0).saturating_sub(a.get(i).copied().unwrap_or(0))).collect();
            Segment { from_ms: w[0], to_ms: w[1], served }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counts file read while its replica writes may end inside a line: that line is left
    /// out; a damaged line anywhere else fails, naming where.
    #[test]
    fn a_half_written_last_count_is_left_out_and_a_damaged_one_elsewhere_fails() {
        let line = |served: u64| format!(r#"{{"unix_ms":{served},"replica":0,"served":{served},"rss_kib":1}}"#);
        let text = format!("{}\n{}\n{{\"unix_ms\":3,\"rep", line(1), line(2));
        let counts = parse_counts(&text, "grpc-0:/tmp/counts").unwrap();
        assert_eq!(counts.iter().map(|c| c.served).collect::<Vec<_>>(), vec![1, 2]);
        let damaged = format!("{}\n{{oops\n{}", line(1), line(2));
        let err = parse_counts(&damaged, "grpc-0:/tmp/counts").unwrap_err();
        assert!(format!("{err:#}").contains("grpc-0:/tmp/counts:2"), "{err:#}");
    }

    #[test]
    fn each_library_names_its_own_policies() {
        use crate::model::library::Library::{GrpcGo, Tonic};
        assert_eq!(GrpcLb::parse("pick_first", GrpcGo), Ok(GrpcLb::PickFirst));
        assert_eq!(GrpcLb::parse("round_robin", GrpcGo), Ok(GrpcLb::RoundRobin));
        assert_eq!(GrpcLb::parse("balance_list", Tonic), Ok(GrpcLb::BalanceList));
        assert!(GrpcLb::parse("round_robin", Tonic).unwrap_err().contains("tonic has no `round_robin`"));
        assert!(GrpcLb::parse("balance_list", GrpcGo).unwrap_err().contains("tonic's"));
        assert!(GrpcLb::parse("least_request", GrpcGo).unwrap_err().contains("grpc-go has no"));
        assert_eq!(GrpcLb::per_request(GrpcGo), GrpcLb::RoundRobin);
        assert!(GrpcLb::RoundRobin.over_every_replica() && !GrpcLb::PickFirst.over_every_replica());
    }

    fn seg(served: &[u64]) -> Segment {
        Segment { from_ms: 0, to_ms: 1000, served: served.to_vec() }
    }

    #[test]
    fn the_coefficient_of_variation_is_zero_when_even_and_high_when_pinned() {
        assert_eq!(seg(&[10, 10, 10, 10]).coefficient_of_variation(), 0.0);
        let pinned = seg(&[40, 0, 0, 0]);
        assert!((pinned.coefficient_of_variation() - 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(pinned.largest_share(), 1.0);
        assert_eq!(pinned.idle_replicas(), vec![1, 2, 3]);
    }

    #[test]
    fn the_verdict_is_about_the_last_segment() {
        let obs = BalanceObservation {
            segments: vec![seg(&[10, 10, 10, 10]), seg(&[20, 20, 20, 20, 0, 0])],
            ..Default::default()
        };
        let (balanced, why) = judge_balance(&obs);
        assert!(!balanced, "{why}");
        assert!(why.contains("replica 4, replica 5 served nothing"), "{why}");
        let even = BalanceObservation { segments: vec![seg(&[21, 19, 20, 20])], ..Default::default() };
        assert!(judge_balance(&even).0);
    }

    #[test]
    fn segments_take_the_difference_of_the_counts_at_each_cut() {
        let timeline = vec![(0, vec![0, 0]), (500, vec![5, 0]), (1000, vec![10, 0, 0]), (1500, vec![12, 3, 4])];
        let s = segments(&timeline, &[1000], |ms| if ms < 1000 { 2 } else { 3 });
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].served, vec![10, 0]);
        assert_eq!(s[1].served, vec![2, 3, 4]);
        assert_eq!((s[1].from_ms, s[1].to_ms), (1000, 1500));
    }
}
