//! Process metrics (`process_resident_memory_bytes`, CPU, open fds, start time) read from /proc.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

struct ProcessMetrics {
    resident: Gauge<f64, AtomicU64>,
    virtual_mem: Gauge<f64, AtomicU64>,
    cpu: Gauge<f64, AtomicU64>,
    fds: Gauge<f64, AtomicU64>,
}

static METRICS: OnceLock<ProcessMetrics> = OnceLock::new();

/// Registers the process metrics; call once per registry.
pub fn register(registry: &mut Registry) {
    let m = METRICS.get_or_init(|| ProcessMetrics {
        resident: Gauge::default(),
        virtual_mem: Gauge::default(),
        cpu: Gauge::default(),
        fds: Gauge::default(),
    });
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        m.resident.clone(),
    );
    registry.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        m.virtual_mem.clone(),
    );
    registry.register(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds",
        m.cpu.clone(),
    );
    registry.register("process_open_fds", "Number of open file descriptors", m.fds.clone());
    let start = start_time_seconds().unwrap_or(0.0);
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        ConstCounter::new(start),
    );
    refresh();
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as f64
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Fields of /proc/self/stat after the command name.
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_time_seconds() -> Option<f64> {
    let fields = stat_fields()?;
    let start_ticks: f64 = fields.get(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))?;
    Some(btime + start_ticks / clock_ticks())
}

/// Reads current values; called on every scrape.
pub fn refresh() {
    let Some(m) = METRICS.get() else { return };
    if let Some(f) = stat_fields() {
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // after ')': state=0 … utime=11 stime=12 … vsize=20 rss=21
        m.cpu.set((num(11) + num(12)) / clock_ticks());
        m.virtual_mem.set(num(20));
        m.resident.set(num(21) * page_size());
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        m.fds.set(dir.count() as f64);
    }
}
