//! Interleaved rounds, process CPU time, paired medians.

use std::time::Duration;

/// CPU time (user + system) of this whole process, every thread included.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One contender's block in one round.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub wall: Duration,
    pub cpu: Duration,
    pub commands: usize,
}

impl Sample {
    pub fn us_per_command(&self) -> f64 {
        self.wall.as_secs_f64() * 1e6 / self.commands as f64
    }

    pub fn cpu_us_per_command(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.commands as f64
    }
}

/// Runs `work` (which returns the wall time it measured, or `None` when unsupported) and takes
/// the process's CPU time around it.
pub fn sample(commands: usize, work: impl FnOnce() -> Option<Duration>) -> Option<Sample> {
    let cpu = process_cpu();
    let wall = work()?;
    Some(Sample {
        wall,
        cpu: process_cpu().saturating_sub(cpu),
        commands,
    })
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A contender's rate relative to a baseline: the median of paired per-round ratios.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Rounds of samples: `rounds[r][c]` is contender `c`'s block in round `r`.
#[derive(Debug, Default)]
pub struct Rounds {
    pub rounds: Vec<Vec<Option<Sample>>>,
}

impl Rounds {
    /// Per round, `base`'s time per command (in `base_rounds`, the same rounds) over `c`'s: `c`'s
    /// rate relative to `base` (above 1: faster).
    fn ratios(&self, c: usize, base_rounds: &Rounds, base: usize) -> Vec<f64> {
        self.rounds
            .iter()
            .zip(&base_rounds.rounds)
            .filter_map(|(r, b)| Some(b[base]?.us_per_command() / r[c]?.us_per_command()))
            .collect()
    }

    /// The median of the paired per-round ratios, with their lowest and highest.
    pub fn ratio_to(&self, c: usize, base_rounds: &Rounds, base: usize) -> Option<Ratio> {
        let v = self.ratios(c, base_rounds, base);
        Some(Ratio {
            lo: v.iter().copied().reduce(f64::min)?,
            hi: v.iter().copied().reduce(f64::max)?,
            median: median(v)?,
        })
    }

    /// [`Rounds::ratio_to`] with the baseline in the same rounds.
    pub fn ratio(&self, c: usize, base: usize) -> Option<Ratio> {
        self.ratio_to(c, self, base)
    }

    pub fn us(&self, c: usize) -> Option<f64> {
        median(
            self.rounds
                .iter()
                .filter_map(|r| Some(r[c]?.us_per_command()))
                .collect(),
        )
    }

    /// CPU per command: the lower quartile over rounds. Interference only ever adds CPU time
    /// (caches refilled after a preemption, and in a VM time stolen by the host is charged to
    /// the running thread: on a loaded machine even the raw loop's blocks cost up to 10× their
    /// quiet CPU), so the low end, not the middle, estimates the client's own cost.
    pub fn cpu_us(&self, c: usize) -> Option<f64> {
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| Some(r[c]?.cpu_us_per_command()))
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 4).copied()
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// This process's resident set, KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
