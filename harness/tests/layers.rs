//! The layout `harness/src/lib.rs` describes is the code's: every module imports only the
//! modules declared before it in `lib.rs`, and inside a folder no file imports its `mod.rs`
//! (the folder's list of its files): so no import circle, and none runs back up. Unit tests
//! (`#[cfg(test)] mod tests`) are left out, as test helpers may reach anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `pub mod x;` lines of lib.rs, in order.
fn layers() -> Vec<String> {
    std::fs::read_to_string(src().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')).map(str::to_string))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let cut =
        ["#[cfg(test)]\nmod tests", "#[cfg(test)]\npub(crate) mod tests"].iter().filter_map(|m| text.find(m)).min();
    let without_tests = &text[..cut.unwrap_or(text.len())];
    without_tests
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The first segment of each path after a `crate::` or `super::`: `x` of `x::…`, and each of
/// `{x, y::z}`.
fn names_after(rest: &str) -> Vec<String> {
    match rest.strip_prefix('{') {
        Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').map(|n| ident(n.trim())).collect(),
        None => vec![ident(rest)],
    }
}

/// The modules of the crate a file names: `crate::x::…`, and each of `crate::{x, y::z}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        out.extend(names_after(rest).into_iter().filter(|n| !n.is_empty()));
    }
    out
}

/// The top-level module a file of src/ belongs to.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_imports_only_the_ones_declared_before_it() {
    let order = layers();
    assert!(order.len() >= 20 && order[0] == "model", "lib.rs declares its modules bottom up: {order:?}");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut upward = Vec::new();
    for f in &files {
        let m = module_of(f);
        if m == "lib" || m == "main" {
            continue;
        }
        let at = order.iter().position(|x| *x == m).unwrap_or_else(|| panic!("{m} is not declared in lib.rs"));
        for named in named_modules(&code(f)) {
            if named == m {
                continue;
            }
            let there =
                order.iter().position(|x| *x == named).unwrap_or_else(|| panic!("{}: crate::{named}?", f.display()));
            if there > at {
                upward.push(format!("{} → crate::{named}", f.strip_prefix(src()).unwrap().display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run back up (move the type down, or the code up):\n{}", upward.join("\n"));
}

/// A folder's `mod.rs` lists its files; a file may take from `mod.rs` (`super::Name`) only
/// when `mod.rs` takes nothing from it, else the two import each other.
#[test]
fn no_file_and_its_folders_mod_rs_import_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut circles = Vec::new();
    for f in files.iter().filter(|f| f.file_name().is_some_and(|n| n != "mod.rs")) {
        let dir = f.parent().unwrap();
        if !dir.join("mod.rs").exists() {
            continue;
        }
        // What mod.rs takes from its files, its list of them (`pub mod x;`) aside.
        let parent =
            code(&dir.join("mod.rs")).lines().filter(|l| !l.starts_with("pub mod ")).collect::<Vec<_>>().join("\n");
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        let c = code(f);
        // `super::x` where x is a sibling file reaches the sibling, not mod.rs.
        let is_sibling = |name: &str| dir.join(format!("{name}.rs")).exists() || dir.join(name).is_dir();
        let takes_from_parent = c.match_indices("super::").any(|(i, _)| {
            let rest = &c[i + 7..];
            names_after(rest).iter().any(|n| !n.is_empty() && !is_sibling(n))
        });
        let parent_takes_from_it = parent.contains(&format!("{stem}::"));
        if takes_from_parent && parent_takes_from_it {
            circles.push(f.strip_prefix(src()).unwrap().display().to_string());
        }
    }
    assert!(circles.is_empty(), "files that import their folder's mod.rs, which imports them:\n{}", circles.join("\n"));
}

/// Inside a folder, no two files name each other (`super::x` or `crate::<folder>::x`).
#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut circles = Vec::new();
    let named_siblings = |f: &Path| -> BTreeSet<String> {
        let dir = f.parent().unwrap();
        let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
        let c = code(f);
        let mut out = BTreeSet::new();
        for prefix in ["super::".to_string(), format!("crate::{folder}::")] {
            for (i, _) in c.match_indices(prefix.as_str()) {
                let rest = &c[i + prefix.len()..];
                out.extend(
                    names_after(rest).into_iter().filter(|n| dir.join(format!("{n}.rs")).exists() && n != "mod"),
                );
            }
        }
        out
    };
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        for other in named_siblings(f) {
            let g = f.parent().unwrap().join(format!("{other}.rs"));
            if stem < other && named_siblings(&g).contains(&stem) {
                circles.push(format!("{} ↔ {other}.rs", f.strip_prefix(src()).unwrap().display()));
            }
        }
    }
    assert!(circles.is_empty(), "files of one folder that import each other:\n{}", circles.join("\n"));
}
