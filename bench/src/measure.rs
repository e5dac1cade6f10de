//! Running a child process to completion and reading what the kernel counted
//! for it (`wait4`): CPU seconds and peak resident set size.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What one child process cost.
#[derive(Debug, Clone, Copy)]
pub struct ChildCost {
    /// Wall-clock from spawn to exit.
    pub wall: Duration,
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// The system (kernel) part of `cpu_seconds`.
    pub system_seconds: f64,
    /// Peak resident set size (VmHWM polled from `/proc/<pid>/status`), in KiB.
    /// `ru_maxrss` is not used: Linux carries the parent's peak across fork and exec.
    pub peak_rss_kib: u64,
}

/// CPU seconds this process (the simulators and the proxies) used so far.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn seconds(time: libc::timeval) -> f64 {
    time.tv_sec as f64 + time.tv_usec as f64 / 1e6
}

/// Spawns `command`, waits up to `timeout` for it to exit (polling, so the
/// simulators on this process's runtime keep serving), and fails unless it
/// exited with status 0.
pub async fn run_to_exit(mut command: Command, timeout: Duration) -> anyhow::Result<ChildCost> {
    let started = Instant::now();
    let child = command.spawn().context("spawning the measured process")?;
    let pid = child.id() as libc::pid_t;
    let mut peak_rss_kib = 0;
    loop {
        // The high-water mark only grows, so the last reading before exit is the peak.
        peak_rss_kib = high_water_mark_kib(pid).unwrap_or(0).max(peak_rss_kib);
        let mut status = 0;
        // SAFETY: plain syscall on our own child; the structs are owned and zeroed.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let wall = started.elapsed();
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                bail!("{command:?} ended with wait status {status:#x}");
            }
            return Ok(ChildCost {
                wall,
                cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
                system_seconds: seconds(usage.ru_stime),
                peak_rss_kib,
            });
        }
        if reaped < 0 {
            bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
        }
        if started.elapsed() > timeout {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            bail!("{command:?} did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn high_water_mark_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
