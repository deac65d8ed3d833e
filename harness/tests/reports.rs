//! Reports a person and a CI job read: junit.xml parses, report.html renders in a real
//! headless Chromium with no console errors (the screenshot is kept in the run dir), compare
//! flags a regression, and the matrix with --repeat reports stability.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// A real run whose reports are kept under results/ (git-ignored) as CI artifacts.
fn run_kept(name: &str, extra: &[&str]) -> std::path::PathBuf {
    require_lab();
    let dir = repo().join("results").join(format!("test-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = vec!["run", name, "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    dir
}

#[test]
fn junit_xml_parses_with_one_testcase_per_cell() {
    let dir = run_kept("redis-middlebox", &[]);
    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is well-formed XML");
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(names, ["redis-middlebox::none", "redis-middlebox::app-keepalive=1m/10s/3"]);
    assert!(cases.iter().all(|c| c.attribute("time").is_some() && !c.has_children()), "all passed: {xml}");
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!(suite.attribute("name"), Some("redis-middlebox"));
    assert_eq!(suite.attribute("failures"), Some("0"));
}

#[test]
fn a_failing_cell_is_a_junit_failure_with_expected_and_measured() {
    require_lab();
    let out = tempdir();
    let o = run(&["run", fixture("wrong-expectation.yaml").to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let xml = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failure = doc.descendants().find(|n| n.has_tag_name("failure")).expect("a <failure>");
    let message = failure.attribute("message").unwrap();
    assert_eq!(message, "expected survived, measured idle-closed");
    assert!(failure.text().unwrap_or_default().contains("FIN"), "the evidence is in the body: {xml}");
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    panic!("no Chromium found: run `just setup` (it installs Debian's chromium)");
}

fn render(html: &Path, png: &Path, profile: &Path) -> String {
    let o = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--enable-logging=stderr", "--v=0", "--window-size=1100,2400"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}#cell-0", html.display()))
        .output()
        .expect("run chromium");
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn report_html_renders_in_chromium_without_console_errors() {
    let dir = run_kept("redis-sidecar-upstream", &[]);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(!html.contains("https://"), "self-contained: nothing fetched from the network");
    assert!(!html.contains("<link") && !html.contains("src=\""), "no external resources");
    assert_eq!(html.matches("<svg").count(), cells_of("redis-sidecar-upstream"), "a timeline per cell");
    let profile = tempdir();
    let png = dir.join("report.png");
    let log = render(&dir.join("report.html").canonicalize().unwrap(), &png, profile.path());
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    let ready = format!("idlelab report ready: {} cells", cells_of("redis-sidecar-upstream"));
    assert!(console.iter().any(|l| l.contains(&ready)), "the page's script ran: {log}");
    let others: Vec<&&str> = console.iter().filter(|l| !l.contains("idlelab report ready")).collect();
    assert!(others.is_empty(), "console messages besides the ready line: {others:?}");
    let size = std::fs::metadata(&png).expect("screenshot kept in the run dir").len();
    assert!(size > 20_000, "a real screenshot, {size} bytes");
}

#[test]
fn compare_flags_a_regression_and_nothing_else() {
    let dir = run_kept("redis-blackhole", &["--mitigation", "none"]);
    let same = run(&["compare", dir.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert!(String::from_utf8_lossy(&same.stdout).contains("no verdict changed"));

    let worse = tempdir();
    let mut s = summary(&dir);
    s["cells"][0]["verdict"] = "survived".into();
    s["cells"][0]["pass"] = false.into();
    std::fs::write(worse.path().join("summary.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    let o = run(&["compare", dir.to_str().unwrap(), worse.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("redis-blackhole::none") && out.contains("REGRESSED"), "{out}");
    let back = run(&["compare", worse.path().to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(back.status.code(), Some(0), "a fix is not a regression: {}", text(&back));
    let bad = run(&["compare", "/nonexistent", dir.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn matrix_with_repeat_reports_stability_per_cell() {
    require_lab();
    let out = tempdir();
    let o = run(&[
        "matrix",
        "redis-middlebox",
        "redis-sidecar-upstream",
        "--repeat",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = summary(out.path());
    assert_eq!(s["scenario"], "matrix");
    assert_eq!(s["repeat"], 2);
    assert_eq!(s["scenarios"].as_array().unwrap().len(), 2);
    let cells = s["cells"].as_array().unwrap();
    assert_eq!(cells.len(), cells_of("redis-middlebox") + cells_of("redis-sidecar-upstream"));
    assert!(cells.iter().all(|c| c["repeats"].as_array().unwrap().len() == 2 && c["stable"] == true), "{s}");
    let xml = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("testsuite")).count(), 2);
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("testcase")).count(), cells.len());
}

/// How many cells a shipped scenario has.
fn cells_of(name: &str) -> usize {
    idlelab::scenario::load(&repo().join("scenarios").join(format!("{name}.yaml"))).unwrap().cells.len()
}

/// The pixels of a PNG close to `rgb`.
fn pixels_like(png_path: &Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p.len() >= 3 && (0..3).all(|i| (p[i] as i32 - rgb[i] as i32).abs() <= 24))
        .count()
}

/// Issue 21: with `--capture`, report.html draws a sequence diagram per failed connection
/// (the hops as lifelines, each packet an arrow) and links the cell's pcapng. The diagram is
/// rendered by a real headless Chromium: the page has no console error, and the diagram's
/// own screenshot shows the middlebox's RST (red) and the app's data (blue) as drawn arrows.
#[test]
fn the_sequence_diagram_of_a_failed_connection_renders_in_chromium() {
    let dir = run_kept("redis-sidecar-upstream", &["--mitigation", "none", "--capture"]);
    // minijinja escapes `/` in attributes.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap().replace("&#x2f;", "/");
    let link = "captures/redis-sidecar-upstream--none.pcapng";
    assert!(html.contains(&format!("href=\"{link}\"")), "the report links the capture");
    assert!(dir.join(link).is_file(), "the link resolves beside report.html");
    let start = html.find("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sequence\"").expect("a sequence diagram");
    let svg = &html[start..start + html[start..].find("</svg>").unwrap() + "</svg>".len()];
    for lifeline in [">app<", ">sidecar<", ">mb1<", ">server<"] {
        assert!(svg.contains(lifeline), "lifeline {lifeline}: {svg}");
    }
    assert!(svg.contains("RST from mb1 to sidecar"), "the middlebox's RST is an arrow: {svg}");
    assert!(svg.contains("≈"), "the idle gap is drawn as a break: {svg}");

    let profile = tempdir();
    let log = render(&dir.join("report.html").canonicalize().unwrap(), &dir.join("report.png"), profile.path());
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("CONSOLE") && !l.contains("idlelab report ready")).collect();
    assert!(errors.is_empty(), "console messages besides the ready line: {errors:?}");

    let page = dir.join("sequence.html");
    std::fs::write(&page, format!("<!doctype html><meta charset=utf-8><body style=\"margin:0\">{svg}</body>")).unwrap();
    let png_path = dir.join("sequence.png");
    let profile = tempdir();
    render(&page.canonicalize().unwrap(), &png_path, profile.path());
    let red = pixels_like(&png_path, [0xcf, 0x22, 0x2e]);
    let blue = pixels_like(&png_path, [0x09, 0x69, 0xda]);
    assert!(red > 40, "the RST arrows are drawn: {red} red pixels in {}", png_path.display());
    assert!(blue > 40, "the data arrows are drawn: {blue} blue pixels in {}", png_path.display());
}
