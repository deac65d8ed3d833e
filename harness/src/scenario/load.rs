//! Loading a scenario file: find it, decode it strictly (an unknown key or a duration
//! without a unit is an error at its line and column, with a hint), let each cell's
//! mitigation read what it names, then validate.

use super::format::{Positions, Scenario, ScenarioError};
use std::path::{Path, PathBuf};

/// Find a scenario by name (`redis-idle` → `<dir>/redis-idle.yaml`) or by path.
pub fn resolve(name_or_path: &str, dir: &Path) -> Result<PathBuf, ScenarioError> {
    let p = Path::new(name_or_path);
    if p.extension().is_some() || name_or_path.contains('/') {
        return Ok(p.to_path_buf());
    }
    let candidate = dir.join(format!("{name_or_path}.yaml"));
    if candidate.exists() {
        return Ok(candidate);
    }
    let known = list(dir).unwrap_or_default().join(", ");
    Err(ScenarioError {
        file: candidate,
        line: None,
        column: None,
        message: format!("no scenario named `{name_or_path}`"),
        hint: Some(format!("shipped scenarios in {}: {known}", dir.display())),
    })
}

/// Names of the scenarios in a directory, sorted.
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".yaml")).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read the scenario file: {e}"),
        hint: Some("pass a scenario name from scenarios/ or a path to a .yaml file".into()),
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let mut scenario: Scenario = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let loc = e.location();
        let message = crate::model::first_line(&e.to_string());
        ScenarioError {
            file: path.to_path_buf(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            hint: hint_for(&message),
            message,
        }
    })?;
    scenario.source = path.to_path_buf();
    scenario.positions = Positions::of(text);
    // What a mitigation reads besides this file (a team's own Istio YAML) is read now,
    // relative to the scenario file, and checked against this scenario's lab.
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for cell in &mut scenario.cells {
        cell.mitigation.value.as_mitigation_mut().load(&base, &scenario.path, scenario.service).map_err(|e| {
            ScenarioError {
                file: e.file,
                line: e.line.map(|l| l as u64),
                column: e.column.map(|c| c as u64),
                message: e.message,
                hint: e.hint,
            }
        })?;
    }
    scenario.validate()?;
    Ok(scenario)
}

fn hint_for(message: &str) -> Option<String> {
    if let Some(h) = crate::model::duration::hint_for(message) {
        Some(h)
    } else if message.contains("unknown field") {
        Some("check the spelling against scenarios/README.md; unknown keys are refused so a typo cannot silently change an experiment".into())
    } else if message.contains("unknown variant") {
        Some("scenarios/README.md lists every service, hop, mitigation and verdict".into())
    } else if message.contains("missing field") {
        Some("scenarios/README.md shows a complete scenario".into())
    } else {
        Some("scenarios/README.md shows the format with a complete example".into())
    }
}
