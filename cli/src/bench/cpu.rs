//! The machine's CPU time over a measurement window, from `/proc/stat`: what every process on the
//! machine spent (agentq, Postgres, Redis, the benchmark itself, the kernel for them), per unit
//! of work. Beside throughput it tells a costlier step from a machine that gave the benchmark
//! less (the hypervisor's steal) or sat idle.

/// CPU time counters of the whole machine, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Spent running something: user, nice, system, irq, softirq (guest time is inside user).
    busy: u64,
    /// Taken by the hypervisor for other guests while this one wanted to run.
    steal: u64,
    /// Everything, idle and waiting included.
    total: u64,
}

impl Sample {
    /// Now; `None` where there is no `/proc/stat` (not Linux).
    pub fn now() -> Option<Self> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Milliseconds of machine CPU per unit of work (`units` done between `self` and `later`).
    pub fn ms_per(&self, later: &Sample, units: u64) -> f64 {
        let ticks = later.busy.saturating_sub(self.busy) as f64;
        ticks * 1000.0 / ticks_per_second() as f64 / units.max(1) as f64
    }

    /// The share of the machine's time the hypervisor took between `self` and `later`.
    pub fn steal_share(&self, later: &Sample) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

#[cfg(target_os = "linux")]
fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Never used for a reading (there is no `/proc/stat`); Linux's own value.
#[cfg(not(target_os = "linux"))]
fn ticks_per_second() -> u64 {
    100
}

/// The machine-wide `cpu` line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`.
fn parse(stat: &str) -> Option<Sample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    // Older kernels stop before steal: what is missing counts as none.
    let [user, nice, system, idle, iowait, irq, softirq, steal]: [u64; 8] =
        std::array::from_fn(|i| fields.get(i).copied().unwrap_or(0));
    let busy = user + nice + system + irq + softirq;
    Some(Sample {
        busy,
        steal,
        // Guest time is already inside user; counting it again would inflate the total.
        total: busy + idle + iowait + steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_waits_and_steal() {
        let stat = "cpu  100 20 30 400 50 6 7 80 9 0\n\
                    cpu0 50 10 15 200 25 3 3 40 4 0\n\
                    intr 12345\n";
        let sample = parse(stat).expect("a cpu line");
        assert_eq!(
            sample,
            Sample {
                busy: 100 + 20 + 30 + 6 + 7,
                steal: 80,
                total: 163 + 400 + 50 + 80,
            }
        );
        let later = Sample {
            busy: sample.busy + ticks_per_second(),
            steal: sample.steal + 10,
            total: sample.total + 100,
        };
        // One second of CPU over 4 steps.
        assert!((sample.ms_per(&later, 4) - 250.0).abs() < 1e-9);
        assert!((sample.steal_share(&later) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn what_is_not_a_cpu_line_is_refused() {
        assert_eq!(parse("intr 1 2 3\n"), None);
        assert_eq!(parse("cpu  1 2 x 4\n"), None);
        assert_eq!(parse("cpu  1 2\n"), None);
    }

    #[test]
    fn this_machine_reports_its_cpu_time() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let before = Sample::now().expect("/proc/stat on Linux");
        // Burn a little CPU so the busy count can move.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = Sample::now().expect("/proc/stat on Linux");
        assert!(after.busy > before.busy, "{before:?} then {after:?}");
        assert!(after.total >= after.busy);
    }
}
