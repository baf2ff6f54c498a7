//! What the load generator asks of the operating system: a socket option
//! socket2 does not wrap, its own CPU time, and the memory and CPU time of
//! the server process it measures (from `/proc`).
//!
//! The two libc calls are the only `unsafe` code of the crate; each is a
//! plain system call on values this module owns.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Sets `IP_BIND_ADDRESS_NO_PORT` on `socket`: a later `bind` to
/// `(address, 0)` picks the source address only, and the port is chosen at
/// `connect` for the whole 4-tuple. Without it every bound socket holds an
/// ephemeral port of its own and a few runs of 19k connections exhaust them.
pub fn set_bind_address_no_port(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `socket` is an open descriptor for the duration of the call,
    // and the option value points at a live c_int whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPU time (user + system) this process has used so far, from
/// `getrusage(RUSAGE_SELF)`.
pub fn own_cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data that getrusage fills completely; an
    // all-zero value is a valid starting point.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is valid and `usage` is a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// A `timeval` as a duration.
fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Clock ticks per second, the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The server process under measurement, read through `/proc/<pid>`.
#[derive(Debug, Clone, Copy)]
pub struct ServerProcess {
    /// The server's process id (the script starts it under `taskset`, which
    /// execs the server in place, so `$!` is the server itself).
    pub pid: u32,
}

impl ServerProcess {
    /// Its resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("VmRSS:") {
                let kib = rest.trim().trim_end_matches("kB").trim();
                return kib.parse().with_context(|| format!("VmRSS {rest:?}"));
            }
        }
        bail!("no VmRSS in {path}")
    }

    /// The CPU time (user + system, all threads) it has used so far, from
    /// fields 14 and 15 of `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        // The command name (field 2) may hold spaces; count from after it.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("malformed stat")?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // `after_name` starts at field 3, so fields 14 and 15 are 11 and 12.
        let ticks: u64 = fields
            .get(11..13)
            .context("short stat")?
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .sum();
        Ok(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second() as f64,
        ))
    }
}

/// CPU use of this process and, when known, of the server over a window
/// of wall time, as fractions of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    /// When the window opened.
    started: std::time::Instant,
    /// This process's CPU time then.
    own: Duration,
    /// The server's CPU time then, when a server is known.
    server: Option<(ServerProcess, Duration)>,
}

impl CpuWindow {
    /// Opens a window now.
    pub fn open(server: Option<ServerProcess>) -> Self {
        Self {
            started: std::time::Instant::now(),
            own: own_cpu_time(),
            server: server.and_then(|s| Some((s, s.cpu_time().ok()?))),
        }
    }

    /// CPU used since [`open`](Self::open), per second of wall time:
    /// `(client, server)`, 1.0 meaning one busy core.
    pub fn close(&self) -> (f64, Option<f64>) {
        let used = self.close_raw();
        let wall = used.wall.as_secs_f64().max(1e-9);
        (
            used.own.as_secs_f64() / wall,
            used.server.map(|s| s.as_secs_f64() / wall),
        )
    }

    /// Wall time and CPU time used since [`open`](Self::open).
    pub fn close_raw(&self) -> CpuUsed {
        CpuUsed {
            wall: self.started.elapsed(),
            own: own_cpu_time().saturating_sub(self.own),
            server: self.server.and_then(|(s, before)| {
                let now = s.cpu_time().ok()?;
                Some(now.saturating_sub(before))
            }),
        }
    }
}

/// What a [`CpuWindow`] measured.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    /// Wall time of the window.
    pub wall: Duration,
    /// This process's CPU time over it.
    pub own: Duration,
    /// The server's CPU time over it (user + system, all threads), when a
    /// server is known.
    pub server: Option<Duration>,
}
