//! The terminal view.
//!
//! On a terminal: a live view (indicatif) with the cells queued / running / done and, for each
//! running cell, its phase (setup, warm, idle with a countdown, reuse), so that a real-hour run
//! (`--time-scale 1`) shows where it is. Otherwise: plain lines, one per cell as it finishes
//! (and per phase with `-v`). Then a table.

use crate::events::{Event, Phase};
use crate::events::{Reporter, RunSummary};
use comfy_table::{Table, presets};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Running {
    bar: ProgressBar,
    phase: String,
    idle_until: Option<Instant>,
}

struct Live {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Mutex<HashMap<String, Running>>,
    stop: AtomicBool,
}

impl Live {
    fn message(key: &str, r: &Running) -> String {
        match r.idle_until {
            Some(t) if r.phase == "idle" => {
                let left = t.saturating_duration_since(Instant::now());
                format!("{key}: idle, {:.1} s left", left.as_secs_f64())
            }
            _ => format!("{key}: {}", r.phase),
        }
    }
}

pub struct TerminalReporter {
    verbose: bool,
    live: Option<Arc<Live>>,
    done: usize,
    total: usize,
}

impl TerminalReporter {
    /// A live view when stdout is a terminal, plain lines otherwise.
    pub fn new(verbose: bool) -> Self {
        TerminalReporter { verbose, live: None, done: 0, total: 0 }.with_live(std::io::stdout().is_terminal())
    }

    fn with_live(mut self, on: bool) -> Self {
        if on {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} done, {msg} {elapsed}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let live =
                Arc::new(Live { multi, overall, running: Mutex::new(HashMap::new()), stop: AtomicBool::new(false) });
            // Idle countdowns move on their own: refresh them a few times a second.
            let ticker = live.clone();
            std::thread::spawn(move || {
                while !ticker.stop.load(Ordering::Relaxed) {
                    for (key, r) in ticker.running.lock().expect("running").iter() {
                        r.bar.set_message(Live::message(key, r));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            self.live = Some(live);
        }
        self
    }

    fn line(&self, text: String) {
        match &self.live {
            Some(l) => {
                let _ = l.multi.println(text);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }
}

fn phase_name(p: &Phase) -> (String, Option<Instant>) {
    match p {
        Phase::Setup => ("setup".into(), None),
        Phase::Warm => ("warm".into(), None),
        Phase::Idle { ms } => ("idle".into(), Some(Instant::now() + Duration::from_millis(*ms))),
        Phase::Reuse => ("reuse".into(), None),
        Phase::Teardown => ("teardown".into(), None),
    }
}

impl Reporter for TerminalReporter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RunStarted { title, backend, cells, out_dir } => {
                self.total = cells.len();
                self.line(format!("{title}: {} cells on the {backend} backend → {}", cells.len(), out_dir.display()));
                if let Some(l) = &self.live {
                    l.overall.set_length(cells.len() as u64);
                    l.overall.set_prefix(title.clone());
                    l.overall.set_message(format!("{} queued", cells.len()));
                }
            }
            Event::CellScaled { cell, factor, auto, values } => {
                let how = if *auto { "auto" } else { "fixed" };
                let vals: Vec<String> = values.iter().map(|v| format!("{} {}→{}", v.label, v.real, v.scaled)).collect();
                // A cell with no duration to scale (a gRPC balance run) says nothing here.
                if !vals.is_empty() {
                    self.line(format!("  {cell}: time scale ×{factor} ({how}): {}", vals.join(", ")));
                }
            }
            Event::CellPhase { cell, phase } => {
                let (name, idle_until) = phase_name(phase);
                if let Some(l) = &self.live {
                    let mut running = l.running.lock().expect("running");
                    let r = running.entry(cell.clone()).or_insert_with(|| {
                        let bar = l.multi.add(ProgressBar::new_spinner());
                        bar.set_style(ProgressStyle::with_template("  {spinner} {msg}").expect("valid template"));
                        bar.enable_steady_tick(Duration::from_millis(120));
                        Running { bar, phase: String::new(), idle_until: None }
                    });
                    r.phase = name;
                    r.idle_until = idle_until.or(r.idle_until);
                    r.bar.set_message(Live::message(cell, r));
                    let n = running.len();
                    l.overall.set_message(format!("{n} running, {} queued", self.total.saturating_sub(self.done + n)));
                } else if self.verbose {
                    let text = match phase {
                        Phase::Idle { ms } => format!("idle {:.1} s", *ms as f64 / 1000.0),
                        _ => name,
                    };
                    self.line(format!("  {cell}: phase {text}"));
                }
            }
            Event::CellFinished(c) => {
                self.done += 1;
                if let Some(l) = &self.live {
                    if let Some(r) = l.running.lock().expect("running").remove(&c.key) {
                        r.bar.finish_and_clear();
                        l.multi.remove(&r.bar);
                    }
                    l.overall.inc(1);
                }
                let mark = if c.pass { "PASS" } else { "FAIL" };
                let verdict = c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into());
                let detail = c.error.clone().unwrap_or_else(|| c.explanation.clone());
                self.line(format!(
                    "  {mark} {}: {verdict} (expected {}) in {:.1} s — {detail}",
                    c.key,
                    c.expected,
                    c.wall_ms as f64 / 1000.0
                ));
                if let Some(b) = c.evidence.observations.as_ref().and_then(|o| o.balance.as_ref()) {
                    for line in crate::report::balance_chart::sparklines(b, 48) {
                        self.line(format!("      {line}"));
                    }
                }
            }
            Event::RunFinished { .. } => {
                if let Some(l) = &self.live {
                    l.stop.store(true, Ordering::Relaxed);
                    l.overall.finish_and_clear();
                }
            }
        }
    }

    fn finish(&mut self, s: &RunSummary) -> anyhow::Result<()> {
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED);
        let many = s.scenarios.len() > 1;
        let mut header = vec!["mitigation", "verdict", "expected", "match", "scale", "wall"];
        if many {
            header.insert(0, "scenario");
        }
        if s.repeat > 1 {
            header.push("runs");
        }
        table.set_header(header);
        for c in &s.cells {
            let mut row = vec![
                c.cell.clone(),
                c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into()),
                c.expected.to_string(),
                if c.pass { "yes".into() } else { "NO".into() },
                format!("×{}", c.time_scale.factor),
                format!("{:.1} s", c.wall_ms as f64 / 1000.0),
            ];
            if many {
                row.insert(0, c.scenario.clone());
            }
            if s.repeat > 1 {
                let same = c.repeats.iter().filter(|r| r.verdict == c.verdict).count();
                row.push(format!("{same}/{} same{}", c.repeats.len(), if c.stable { "" } else { " (FLIPPED)" }));
            }
            table.add_row(row);
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n{table}");
        let passed = s.cells.iter().filter(|c| c.pass).count();
        let _ = writeln!(
            out,
            "{}: {passed} of {} cells matched their expectation in {:.1} s; results in {}",
            s.scenario,
            s.cells.len(),
            s.wall_ms as f64 / 1000.0,
            s.out_dir.display()
        );
        Ok(())
    }
}
