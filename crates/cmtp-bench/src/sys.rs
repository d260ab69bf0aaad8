//! Small pieces of the operating system the tool reads: another process's RSS and CPU
//! time from /proc, our own CPU time, and the open-file limit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Resident set size of process `pid` in bytes (`VmRSS` of /proc/PID/status).
pub fn vm_rss(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kb(&s, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

/// Resident set size and its high-water mark (`VmRSS`, `VmHWM` of /proc/PID/status), bytes.
/// The kernel keeps the high-water mark (updated lazily, at its own accounting points).
pub fn vm_rss_hwm(pid: u32) -> io::Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |f: &str| {
        parse_status_kb(&s, f).map(|kb| kb * 1024).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no {f} in /proc/PID/status"),
            )
        })
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Reads the `kB` value of one field of a /proc/PID/status text.
fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// User + system CPU seconds consumed so far by process `pid` (/proc/PID/stat).
pub fn process_cpu_seconds(pid: u32) -> io::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 (index 0), utime field 14 (index 11), stime 15 (index 12).
    let parse = |i: usize| -> io::Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat"))
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Ok((parse(11)? + parse(12)?) / tck)
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit write into/read from the struct we own.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur as u64)
}

/// Load average (1, 5, 15 minutes) from /proc/loadavg, for the record of each run.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Samples a process's RSS on its own thread every `period` and keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<RssSamples>>,
}

/// What an [`RssSampler`] saw.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RssSamples {
    /// Highest VmRSS seen, bytes.
    pub peak: u64,
    /// Number of successful samples.
    pub samples: u64,
}

impl RssSampler {
    /// Starts sampling `pid` every `period` (the tool uses 10 ms).
    pub fn start(pid: u32, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = RssSamples::default();
            let mut next = Instant::now();
            loop {
                // Sample first, so even an immediate stop yields one sample.
                if let Ok(r) = vm_rss(pid) {
                    out.peak = out.peak.max(r);
                    out.samples += 1;
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // A fixed-rate sampler, not synchronisation: the stop flag ends it.
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            out
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the sampler and returns the peak.
    pub fn finish(mut self) -> RssSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A tiny xorshift generator for filler bytes. Bodies are opaque to the server, so
/// they need to be incompressible, not secret.
#[derive(Debug, Clone)]
pub struct FillRng(u64);

impl FillRng {
    /// A generator seeded from `seed` (never zero internally).
    pub fn new(seed: u64) -> Self {
        FillRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rem.copy_from_slice(&last[..rem.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_and_cpu_are_readable() {
        let pid = std::process::id();
        assert!(vm_rss(pid).unwrap() > 0);
        assert!(process_cpu_seconds(pid).unwrap() >= 0.0);
        assert!(parse_status_kb("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:") == Some(1234));
        let (rss, hwm) = vm_rss_hwm(pid).unwrap();
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }

    #[test]
    fn sampler_sees_our_rss() {
        let s = RssSampler::start(std::process::id(), Duration::from_millis(1));
        let out = s.finish();
        assert!(out.samples >= 1 && out.peak > 0, "{out:?}");
    }

    #[test]
    fn fill_is_not_constant() {
        let mut r = FillRng::new(1);
        let mut b = [0u8; 37];
        r.fill(&mut b);
        assert!(b.iter().any(|&x| x != b[0]));
    }
}
