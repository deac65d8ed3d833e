//! Where the lab's tools are installed, and how each is found: the one place that knows
//! the install paths (`just setup` writes them; `doctor` reports them; the backends run them).

use std::path::PathBuf;

/// Where `just setup` installs tools (Envoy's venv, the `envoy` link): `$IDLELAB_HOME`, else
/// `/var/cache/idlelab` as root (outside /root, so Envoy can run as uid 1337), else
/// `${XDG_CACHE_HOME:-~/.cache}/idlelab`.
pub fn tools_dir() -> PathBuf {
    if let Ok(p) = std::env::var("IDLELAB_HOME") {
        return PathBuf::from(p);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/idlelab");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    cache.join("idlelab")
}

/// Where the Envoy binary is: `$ENVOY_BIN`, then what `just setup` installed, then `$PATH`.
pub fn envoy_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let cached = tools_dir().join("bin/envoy");
    if cached.exists() {
        return Some(cached);
    }
    find_in_path("envoy")
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

pub fn redis_bin() -> Option<PathBuf> {
    find_in_path("redis-server").or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.exists()))
}

/// `idlelab-probe-go` (the Go client libraries), as `just setup` builds it.
pub fn go_probe_bin() -> PathBuf {
    tools_dir().join("bin/idlelab-probe-go")
}

/// `idlelab-xds`, as `just setup` builds it.
pub fn xds_bin() -> PathBuf {
    tools_dir().join("bin/idlelab-xds")
}

/// `pilot-agent`, built from the same Istio module.
pub fn agent_bin() -> PathBuf {
    tools_dir().join("bin/pilot-agent")
}

/// Istio's Envoy bootstrap template (`tools/packaging/common/envoy_bootstrap.json`).
pub fn bootstrap_template() -> PathBuf {
    tools_dir().join("share/istio/envoy_bootstrap.json")
}

/// The `idlelab` binary the lab starts its probe and HTTP server from: this very binary
/// (`/proc/self/exe`, even if the file was rebuilt since the run started), or
/// `$IDLELAB_EXE` when the runner is embedded in another program (a test binary).
pub fn idlelab_exe() -> PathBuf {
    std::env::var_os("IDLELAB_EXE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}
