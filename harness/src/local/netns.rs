//! Network namespaces the lab creates, and deletes when dropped.
//!
//! Names carry the idlelab process id (`idlelab-<pid>-c<cell>-<role>`) so that a later run
//! can tell a leftover of a killed run from a namespace in use, and reap it.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const PREFIX: &str = "idlelab-";

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Netns> {
        run("ip", &["netns", "add", &name], None).with_context(|| format!("creating network namespace {name}"))?;
        tracing::debug!(netns = %name, "namespace created");
        Ok(Netns { name })
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Run `ip -n <ns> -batch -` with these lines.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        let input = lines.join("\n") + "\n";
        run("ip", &["-n", &self.name, "-batch", "-"], Some(&input))
            .with_context(|| format!("configuring links in {}", self.name))
            .map(|_| ())
    }

    /// Install an nftables ruleset in the namespace.
    pub fn nft_apply(&self, what: &str, ruleset: &str) -> Result<()> {
        self.exec("nft", &["-f", "-"], Some(ruleset))?;
        tracing::debug!(netns = %self.name, what, ruleset, "nftables rules installed");
        Ok(())
    }

    /// Run a command inside the namespace and return its stdout.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full, stdin)
    }

    /// Write a sysctl of this namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")], None).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name], None);
        tracing::debug!(netns = %self.name, "namespace deleted");
    }
}

pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{program}`; `idlelab doctor` lists what is missing"))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Delete namespaces and temp dirs left by idlelab processes that no longer exist (a run
/// killed with SIGKILL cannot clean up after itself), and kill any process still running in
/// such a namespace (its children die with it; this catches one that did not). Returns what
/// was removed.
pub fn reap_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        pid != std::process::id() as i32 && !PathBuf::from(format!("/proc/{pid}")).exists()
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            let pids = run("ip", &["netns", "pids", &name], None).unwrap_or_default();
            let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            for pid in &pids {
                // SAFETY: a plain kill of a process left in a namespace of a dead run.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if !pids.is_empty() {
                removed.push(format!("{} processes in netns {name}", pids.len()));
            }
            if run("ip", &["netns", "del", &name], None).is_ok() {
                removed.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("temp dir {}", e.path().display()));
            }
        }
    }
    removed
}

/// Run `f` on a fresh thread that enters the network namespace at `ns` and ends with `f`, so
/// no other task ever runs in that namespace by accident. No process is spawned.
pub async fn in_netns<T: Send + 'static>(ns: &std::path::Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let ns = std::fs::File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
    let thread = std::thread::spawn(move || -> Result<T> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this short-lived thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("entering the namespace: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    });
    tokio::task::spawn_blocking(move || {
        thread.join().map_err(|_| anyhow::anyhow!("a thread inside a lab namespace panicked"))?
    })
    .await?
}

/// Wait until something in namespace `ns` listens on TCP `port`, read from the namespace's own
/// socket table (`/proc/thread-self/net/tcp` and `tcp6`, from a thread inside it). Not by
/// connecting: a check that connects is a connection of its own, which a cell's capture would
/// record (a gRPC server's SETTINGS left unread make it end in an RST).
pub async fn wait_listening(ns: &std::path::Path, port: u16, within: std::time::Duration) -> Result<()> {
    in_netns(ns, move || {
        let deadline = std::time::Instant::now() + within;
        loop {
            if listening(port) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(anyhow::anyhow!("nothing listened on port {port} within {within:?}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
    .await?
}

/// Whether a socket of this thread's namespace is in LISTEN on `port`.
fn listening(port: u16) -> bool {
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .any(|table| std::fs::read_to_string(table).is_ok_and(|text| listens_on(&text, port)))
}

/// In a `/proc/net/tcp` table: a line whose local address has `port` and whose state is
/// LISTEN (`0A`).
fn listens_on(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let local = fields.next().unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        local.ends_with(&port) && state == "0A"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_in_the_namespaces_table_by_its_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:C383 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert!(listens_on(table, 6379), "0x18EB = 6379, state 0A");
        assert!(!listens_on(table, 50051), "0xC383 is an established client's port, not a listener");
        assert!(!listens_on(table, 1));
    }

    /// The table read from a thread is that thread's namespace's: here, the host's, where this
    /// test listens on a port of its own.
    #[test]
    fn a_port_this_process_listens_on_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listening(l.local_addr().unwrap().port()));
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(!listening(port));
    }
}
