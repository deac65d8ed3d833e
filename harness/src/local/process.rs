//! Processes the lab starts inside its namespaces, killed when dropped.
//!
//! Each child enters its namespace with `setns` before `exec`, leads its own process group,
//! optionally drops to another uid (Envoy runs as 1337, as in a pod, so the capture rule can
//! exempt it), and gets `PR_SET_PDEATHSIG(SIGKILL)` so it dies with the harness even when the
//! harness is killed outright. Drop kills the whole group and reaps it.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use tokio::process::{Child, Command};

pub struct LabProcess {
    pub name: String,
    pub pid: i32,
    pub child: Child,
}

/// Make a child die with the harness: `PR_SET_PDEATHSIG(SIGKILL)`, and exit at once if the
/// harness already died between `fork` and the `prctl` (the signal would never come).
/// Call it last in `pre_exec`, after any change of credentials (which clears the signal).
pub(crate) fn die_with_parent(parent: i32) -> std::io::Result<()> {
    // SAFETY: async-signal-safe libc calls in the forked child.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// A helper command the lab runs outside its namespaces (`mariadb-install-db`, `cp`): it too
/// dies with the harness.
pub fn dies_with_runner(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe { cmd.pre_exec(move || die_with_parent(parent)) }
}

pub fn spawn(name: &str, cmd: Command, netns: &Path, uid: Option<u32>) -> Result<LabProcess> {
    spawn_inheriting(name, cmd, netns, uid, &[])
}

/// [`spawn`], and the child inherits `inherit` at the same descriptor numbers as here (pass
/// each one's number on its command line: `as_raw_fd()`).
///
/// Every descriptor of this process is close-on-exec. The child clears the flag on exactly
/// these, as its last step before `exec`. The numbers are not moved: an earlier version
/// `dup2`'d them onto 3, 4, … in the child, which silently closed whatever the child held
/// there, and when another thread had just freed a low number, that was the namespace file
/// `setns` needed next (`starting idlelab-xds: Invalid argument`, a flake under
/// concurrency).
pub fn spawn_inheriting(
    name: &str,
    mut cmd: Command,
    netns: &Path,
    uid: Option<u32>,
    inherit: &[std::os::fd::BorrowedFd<'_>],
) -> Result<LabProcess> {
    const MAX_INHERITED: usize = 16;
    anyhow::ensure!(inherit.len() <= MAX_INHERITED, "{name}: more than {MAX_INHERITED} inherited descriptors");
    let mut keep = [-1i32; MAX_INHERITED];
    for (slot, fd) in keep.iter_mut().zip(inherit) {
        *slot = fd.as_raw_fd();
    }
    let count = inherit.len();
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    let fd = ns.as_raw_fd();
    let parent = std::process::id() as i32;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Room for a pool of a thousand connections (Envoy holds two sockets per one).
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max.min(65536);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            if let Some(uid) = uid
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // After the uid change: changing credentials clears the parent-death signal.
            die_with_parent(parent)?;
            // Last: nothing after this needs a descriptor of ours.
            for &keep in keep.iter().take(count) {
                if libc::fcntl(keep, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    drop(ns);
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    tracing::debug!(name, pid, netns = %netns.display(), uid, program = ?cmd.as_std().get_program(), "process started");
    Ok(LabProcess { name: name.to_string(), pid, child })
}

impl LabProcess {
    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        // Already reaped: its pid may belong to someone else by now.
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if self.pid > 0 {
            // SAFETY: plain syscalls on our own child's process group.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}
