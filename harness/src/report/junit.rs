//! `junit.xml`: one testcase per cell (`scenario::mitigation`), one suite per scenario; a
//! failure says expected vs measured and the evidence, so a CI page shows why.

use crate::events::{Reporter, RunSummary};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::path::PathBuf;
use std::time::Duration;

pub struct JunitReporter {
    pub path: PathBuf,
}

pub fn render(s: &RunSummary) -> anyhow::Result<String> {
    let mut report = Report::new("idlelab");
    for scenario in &s.scenarios {
        let mut suite = TestSuite::new(scenario.name.clone());
        for c in s.cells.iter().filter(|c| c.scenario == scenario.name) {
            let measured = c.verdict.map(|v| v.to_string()).unwrap_or_else(|| "error".into());
            let status = if c.pass {
                TestCaseStatus::success()
            } else {
                let kind = if c.error.is_some() { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                let mut st = TestCaseStatus::non_success(kind);
                let flips = if c.stable { String::new() } else { " (the verdict flipped between runs)".into() };
                st.set_message(format!("expected {}, measured {measured}{flips}", c.expected));
                st.set_description(c.error.clone().unwrap_or_else(|| c.explanation.clone()));
                st
            };
            let mut case = TestCase::new(format!("{}::{}", c.scenario, c.cell), status);
            case.set_classname(c.scenario.clone());
            case.set_time(Duration::from_millis(c.wall_ms));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    Ok(report.to_string()?)
}

impl Reporter for JunitReporter {
    fn finish(&mut self, summary: &RunSummary) -> anyhow::Result<()> {
        std::fs::write(&self.path, render(summary)?)?;
        Ok(())
    }
}
