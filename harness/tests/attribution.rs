//! Issue 21: which hop closed it, scored against the truth. Every shipped scenario's cells
//! (but the gRPC balance ones, which measure spread and fail no connection; their capture is
//! tested in capture.rs) run with `--capture`; for every connection that
//! ended badly, the hop the capture says acted first, and how, must be the hop the lab
//! configured to close or forget (`CellConfig::configured_first_acts`): N of N.
//! (`kind_cluster.rs` scores the kind backend's captures the same way.)

mod common;
use common::*;

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

    let Score { attributed, agreeing, failing_cells, wrong } = score_attributions(&s);
    eprintln!(
        "attribution: {agreeing} of {attributed} failed connections name the configured hop and act ({} cells, {failing_cells} with a failure verdict)",
        s["cells"].as_array().unwrap().len()
    );
    assert!(wrong.is_empty(), "{} of {attributed} attributions disagree:\n{}", wrong.len(), wrong.join("\n"));
    assert!(attributed >= 100 && failing_cells >= 30, "{attributed} attributions over {failing_cells} failing cells");
}
