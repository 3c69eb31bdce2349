//! What both server probes do and check alike: many reviews at once, valid reviews while trickling
//! clients fight over the connection cap, the server's memory and file descriptors measured from
//! outside, and with `--check` (CI) a non-zero exit when a case or a bound fails.

use super::attack;
use super::tls::Tls;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The probe's command line: `--bin PATH` (default: the release binary), `--check`, and
/// `--max-growth-mib N` (the debug binary's buffers and stack frames are larger: CI allows more).
pub struct Args {
    pub bin: PathBuf,
    pub check: bool,
    pub max_growth_mib: Option<f64>,
}

impl Args {
    pub fn parse() -> Self {
        let mut args = std::env::args().skip(1);
        let mut parsed = Self {
            bin: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/release/gardener-extension-runtime-kata"
            )
            .into(),
            check: false,
            max_growth_mib: None,
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--check" => parsed.check = true,
                "--bin" => parsed.bin = args.next().expect("--bin needs a path").into(),
                "--max-growth-mib" => {
                    let n = args.next().and_then(|n| n.parse().ok());
                    parsed.max_growth_mib = Some(n.expect("--max-growth-mib needs a number"));
                }
                other => panic!("unknown argument {other:?} (--bin PATH, --check, --max-growth-mib N)"),
            }
        }
        parsed
    }
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Whether an answer is the one a case expects: (HTTP status, body).
pub type Expect = fn(u16, &[u8]) -> bool;

/// `n` copies of `body` sent at once, each on its own connection: how many got the expected
/// answer, and the wall time.
pub async fn concurrent(tls: &Arc<Tls>, path: &str, body: Arc<Vec<u8>>, n: usize, expect: Expect) -> (usize, Duration) {
    let t0 = Instant::now();
    let answers = futures::future::join_all((0..n).map(|_| {
        let (tls, body, path) = (tls.clone(), body.clone(), path.to_string());
        async move { tls.request("POST", &path, &body).await }
    }))
    .await;
    let ok = answers
        .into_iter()
        .filter(|a| a.as_ref().is_some_and(|(code, body)| expect(*code, body)))
        .count();
    (ok, t0.elapsed())
}

/// Valid reviews sent one after the other while trickling clients hold the connection cap.
pub struct UnderAttack {
    pub latencies: Vec<Duration>,
    pub answered: usize,
    pub fds: usize,
    pub rss_kib: u64,
}

/// `reviews` copies of `body`, one after the other, while `tricklers` slow clients from a pod's
/// address fight over the server's slots.
pub async fn under_attack(
    tls: &Tls,
    pid: u32,
    path: &str,
    body: &[u8],
    (tricklers, reviews): (usize, usize),
    expect: Expect,
) -> UnderAttack {
    let stop = Arc::new(AtomicBool::new(false));
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], tls.port));
    let crowd = attack::tricklers(tricklers, to, stop.clone(), Arc::new(AtomicUsize::new(0)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fds = fds(pid);
    let (mut latencies, mut answered) = (Vec::new(), 0);
    for _ in 0..reviews {
        let t = Instant::now();
        let a = tls.request("POST", path, body).await;
        latencies.push(t.elapsed());
        answered += usize::from(a.is_some_and(|(code, body)| expect(code, &body)));
    }
    let rss_kib = testenv_status(pid, "VmRSS:");
    stop.store(true, Ordering::Relaxed);
    for t in crowd {
        let _ = t.await;
    }
    latencies.sort();
    UnderAttack {
        latencies,
        answered,
        fds,
        rss_kib,
    }
}

fn testenv_status(pid: u32, field: &str) -> u64 {
    gardener_extension_runtime_kata::testenv::status_kib(pid, field)
}

/// The goals for either server under its probe (peak RSS under 64 MiB, answers well within the
/// webhook timeout), as `--check` asserts them for the release and the debug binary alike.
pub const BOUNDS: Bounds = Bounds {
    peak_growth_mib: 46.0,
    fds: 2 * 512 + 64,
    p99: Duration::from_secs(2),
    burst_answered: 0.5,
};

/// The bounds a server must keep under the probe (asserted with `--check`).
pub struct Bounds {
    /// Peak RSS over the whole probe above the idle RSS after start: the goal is a peak under
    /// 64 MiB for the release binary, which idles at about 17 MiB; as growth it holds for the
    /// debug binary (larger code, same heap) in CI too.
    pub peak_growth_mib: f64,
    /// Open file descriptors while the cap is attacked: the slots, as many waiting, and a few.
    pub fds: usize,
    /// p99 of valid reviews while the cap is attacked: well under the webhook timeouts (5 and 10 s).
    pub p99: Duration,
    /// Share of a burst of concurrent connections that is answered (the rest wait for a slot up to
    /// 5 s and are then closed; an apiserver multiplexes its reviews over a few connections).
    pub burst_answered: f64,
}

/// The figures the bounds apply to.
pub struct Outcome {
    pub cases: usize,
    pub as_expected: usize,
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    /// (answered, sent, wall time) of the concurrent burst.
    pub burst: (usize, usize, Duration),
    pub attack: UnderAttack,
    pub alive: bool,
}

impl Bounds {
    /// Every broken bound, in words.
    pub fn broken(&self, o: &Outcome) -> Vec<String> {
        let mut broken = Vec::new();
        if o.as_expected != o.cases {
            broken.push(format!("{} of {} cases answered as expected", o.as_expected, o.cases));
        }
        if o.attack.answered != o.attack.latencies.len() {
            broken.push(format!(
                "{} of {} valid reviews answered under attack",
                o.attack.answered,
                o.attack.latencies.len()
            ));
        }
        let growth = mib(o.peak_rss_kib.saturating_sub(o.idle_rss_kib));
        if growth > self.peak_growth_mib {
            broken.push(format!(
                "peak RSS {:.1} MiB, {growth:.1} MiB above idle: more than {:.0} MiB",
                mib(o.peak_rss_kib),
                self.peak_growth_mib
            ));
        }
        if o.attack.fds > self.fds {
            broken.push(format!("{} open fds under attack, above {}", o.attack.fds, self.fds));
        }
        let p99 = percentile(&o.attack.latencies, 0.99);
        if p99 > self.p99 {
            broken.push(format!("p99 under attack {p99:?}, above {:?}", self.p99));
        }
        let (answered, sent, _) = o.burst;
        if (answered as f64) < self.burst_answered * sent as f64 {
            broken.push(format!("{answered} of {sent} concurrent reviews answered"));
        }
        if !o.alive {
            broken.push("the process died".into());
        }
        broken
    }

    /// Prints what broke; with `--check` exits 1 if anything did.
    fn enforce(mut self, args: &Args, o: &Outcome) {
        if let Some(mib) = args.max_growth_mib {
            self.peak_growth_mib = mib;
        }
        let check = args.check;
        let broken = self.broken(o);
        for b in &broken {
            eprintln!("bound broken: {b}");
        }
        if check && !broken.is_empty() {
            std::process::exit(1);
        }
    }
}

impl Outcome {
    /// The last rows of a probe's table (burst, attack, totals), then the bounds: what broke is
    /// printed, and with `--check` the probe exits 1.
    pub fn report(&self, args: &Args) {
        let (answered, sent, wall) = self.burst;
        println!(
            "| {sent} concurrent small reviews | {answered} answered in {:.1} s |",
            wall.as_secs_f64()
        );
        let a = &self.attack;
        println!(
            "| {} valid reviews while 600 trickling clients fight over 512 slots | {} answered; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} open fds, RSS {:.1} MiB |",
            a.latencies.len(),
            a.answered,
            percentile(&a.latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&a.latencies, 0.99).as_secs_f64() * 1000.0,
            a.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            a.fds,
            mib(a.rss_kib)
        );
        println!(
            "| probe cases answered as expected | {} of {} |",
            self.as_expected, self.cases
        );
        println!("| peak RSS over the whole probe | {:.1} MiB |", mib(self.peak_rss_kib));
        println!("| process alive at the end | {} |", self.alive);
        BOUNDS.enforce(args, self);
    }
}
