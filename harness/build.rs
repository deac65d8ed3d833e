//! Lists every mitigation and every hop kind from the files of their folders, so that adding
//! one is its file alone: `src/mitigation/<name>.rs` with `impl Mitigation for <Type>`,
//! `src/hop/<kind>.rs` with `impl PathHop for <Type>`. The variant is the file's name in
//! CamelCase; its name in scenario files is the same in kebab-case.
//! It also compiles `proto/replica.proto` (the gRPC replica's service) with protox, a protoc
//! in pure Rust, so that no machine needs protoc installed.

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut hop_types: Vec<(String, String)> = Vec::new(); // (variant, type)
    for (folder, macro_name, implemented, skip) in [
        ("src/mitigation", "mitigations", "impl Mitigation for ", &["mod", "contract", "none"][..]),
        ("src/hop", "hops", "impl PathHop for ", &["mod", "contract"][..]),
    ] {
        let files = rust_files_of(folder);
        // The modules, by absolute path: an included file's `mod x;` would be looked for in OUT_DIR.
        let mut mods = String::new();
        let mut list = format!("{macro_name}! {{\n");
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if skip.contains(&stem.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let ty: String = text
                .split(implemented)
                .nth(1)
                .unwrap_or_else(|| {
                    panic!("{}: each file of {folder} implements `{}<Type>` for its type", path.display(), implemented)
                })
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let abs = std::fs::canonicalize(&path).expect("the file exists");
            mods += &format!("#[path = {:?}]\npub mod {stem};\n", abs.display().to_string());
            list += &format!("    {}({stem}::{ty}),\n", camel(&stem));
            if macro_name == "hops" {
                hop_types.push((camel(&stem), ty.clone()));
            }
        }
        list += "}\n";
        std::fs::write(Path::new(&out).join(format!("{macro_name}.rs")), mods + &list).expect("write the list");
    }
    // Each service's server in the local lab: the files `src/local/*_server.rs`.
    let servers = rust_files_of("src/local").into_iter().filter(|p| p.to_string_lossy().ends_with("_server.rs"));
    let (mut mods, mut starts, mut programs, mut prepares) =
        (String::new(), String::new(), String::new(), String::new());
    for path in servers {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for needed in ["pub const SERVES", "pub const PROGRAM", "pub async fn start_for"] {
            assert!(
                text.contains(needed),
                "{}: a server's file has `{needed}` (see src/local/servers.rs)",
                path.display()
            );
        }
        let abs = std::fs::canonicalize(&path).expect("the file exists");
        mods += &format!("#[path = {:?}]\npub mod {stem};\n", abs.display().to_string());
        starts += &format!(
            "    if {stem}::SERVES.contains(&at.service) {{\n        return {stem}::start_for(at, shared).await;\n    }}\n"
        );
        programs += &format!("    if {stem}::SERVES.contains(&service) {{\n        return {stem}::PROGRAM;\n    }}\n");
        if text.contains("pub async fn prepare_run(") {
            prepares += &format!(
                "    if {stem}::SERVES.contains(&service) {{\n        {stem}::prepare_run(shared).await?;\n    }}\n"
            );
        }
    }
    let code = format!(
        "{mods}\n/// Start the server of `at.service`; it accepts connections when this returns.\npub async fn start(at: ServerPlace<'_>, shared: &RunShared) -> anyhow::Result<LabProcess> {{\n{starts}    anyhow::bail!(\"no server of the local lab serves {{}}\", at.service.name())\n}}\n\n/// The program a service's server needs, its version flag and the fix when it is missing; None for the lab's own.\npub fn program(service: Service) -> Option<(&'static str, &'static [&'static str], &'static str)> {{\n{programs}    None\n}}\n\n/// What the run prepares once for `service`'s servers (MariaDB's template), before a cell's server starts.\npub async fn prepare(service: Service, shared: &RunShared) -> anyhow::Result<()> {{\n{prepares}    let _ = (service, shared);\n    Ok(())\n}}\n"
    );
    std::fs::write(Path::new(&out).join("servers.rs"), code).expect("write the servers");

    // What each backend builds for a hop kind, one file per kind: the files of `folder` that
    // implement `trait_name` for a hop's type, and the function that finds a hop's.
    for (folder, trait_name, function, doc) in [
        ("src/local", "LocalDevice", "local_device", "The local lab's build of a hop that is no proxy."),
        ("src/kind", "OnCluster", "on_cluster", "The kind backend's objects and steps of a hop."),
    ] {
        let files = rust_files_of(folder);
        let (mut mods, mut arms) = (String::new(), String::new());
        let implemented = format!("impl {trait_name} for ");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let Some(rest) = text.split(&implemented).nth(1) else { continue };
            let ty: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let variant = &hop_types
                .iter()
                .find(|(_, t)| *t == ty)
                .unwrap_or_else(|| panic!("{}: `{implemented}{ty}`: {ty} is no hop kind of src/hop/", path.display()))
                .0;
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let abs = std::fs::canonicalize(&path).expect("the file exists");
            mods += &format!("#[path = {:?}]\npub mod {stem};\n", abs.display().to_string());
            arms += &format!("        crate::hop::Hop::{variant}(h) => Some(h),\n");
        }
        let code = format!(
            "{mods}\n/// {doc}\npub fn {function}(hop: &crate::hop::Hop) -> Option<&dyn {trait_name}> {{\n    #[allow(unreachable_patterns)]\n    match hop {{\n{arms}        _ => None,\n    }}\n}}\n"
        );
        std::fs::write(Path::new(&out).join(format!("{function}.rs")), code).expect("write the dispatch");
    }
    compile_protos();
}

/// The gRPC replica's messages, client and server into OUT_DIR (`tonic::include_proto!`). Its
/// rerun line joins the folders' lines printed by `rust_files_of`, which stay in cargo's set.
fn compile_protos() {
    println!("cargo:rerun-if-changed=proto/replica.proto");
    let fds = protox::compile(["proto/replica.proto"], ["proto"]).unwrap_or_else(|e| panic!("{e:?}"));
    tonic_prost_build::configure().compile_fds(fds).unwrap_or_else(|e| panic!("proto/replica.proto: {e}"));
}

/// The `.rs` files of `folder`, sorted; the build reruns when the folder changes.
fn rust_files_of(folder: &str) -> Vec<std::path::PathBuf> {
    println!("cargo:rerun-if-changed={folder}");
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
}

/// `app_keepalive` → `AppKeepalive`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}
