//! Issue 21: which hop closed it, scored against the truth. Every shipped scenario's cells
//! (but the gRPC balance ones, which measure spread and fail no connection; their capture is
//! tested in capture.rs) run with `--capture`; for every connection that
//! ended badly, the hop the capture says acted first, and how, must be the hop the lab
//! configured to close or forget (`CellConfig::configured_first_acts`): N of N.

mod common;
use common::*;

/// Verdicts of a connection that failed or was closed under the app.
const FAILURES: [&str; 5] = ["idle-closed", "reset-on-reuse", "failed-on-reuse", "timed-out", "hung"];

#[test]
fn every_failed_connection_of_the_matrix_is_attributed_to_the_configured_hop() {
    require_lab();
    let mut scenarios: Vec<String> = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).ok()?;
            // gRPC balance cells measure spread and fail no connection: nothing to attribute.
            (path.extension()? == "yaml" && !text.contains("replicas:"))
                .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 20, "{scenarios:?}");
    let out = tempdir();
    let mut args = vec!["matrix"];
    args.extend(scenarios.iter().map(String::as_str));
    args.extend(["--capture", "--out", out.path().to_str().unwrap()]);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(out.path());

    let (mut attributed, mut agreeing, mut failing_cells) = (0, 0, 0);
    let mut wrong = Vec::new();
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
    eprintln!(
        "attribution: {agreeing} of {attributed} failed connections name the configured hop and act ({} cells, {failing_cells} with a failure verdict)",
        s["cells"].as_array().unwrap().len()
    );
    assert!(wrong.is_empty(), "{} of {attributed} attributions disagree:\n{}", wrong.len(), wrong.join("\n"));
    assert!(attributed >= 100 && failing_cells >= 30, "{attributed} attributions over {failing_cells} failing cells");
}
