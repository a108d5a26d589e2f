//! The results: one row per measured phase, the verdict per bridge, the
//! table printed at the end and the JSON file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::Options;
use crate::client::{Outcome, Pace};
use crate::verify::Verdict;
use crate::workload::Workload;

/// One measured phase.
pub struct Row {
    /// `bare hyper` or `bridge <mode>`.
    pub target: String,
    /// `closed, round 1`, `open 12000/s (50%)`, `warm-up`.
    pub load: String,
    /// How it was paced.
    pub pace: Pace,
    /// What the client saw.
    pub outcome: Outcome,
    /// The server's CPU time during the phase.
    pub server_cpu_s: f64,
    /// The client's (this process's) CPU time during the phase.
    pub client_cpu_s: f64,
    /// Share of all cores busy (anything on the machine) during the phase.
    pub machine_busy: f64,
    /// The server's peak RSS during the phase.
    pub peak_rss_kib: u64,
    /// The peak could not be reset: it is the peak since the server started.
    pub peak_since_start: bool,
    /// End-to-end latency in µs (bridges, after verification).
    pub e2e: Option<Histogram<u64>>,
    /// Instructions the server executed in this phase (`--callgrind`).
    pub instructions: Option<u64>,
}

impl Row {
    fn cpu_per_100k(&self) -> f64 {
        self.server_cpu_s * 100_000.0 / self.outcome.acked.len().max(1) as f64
    }

    fn instructions_per_request(&self) -> Option<f64> {
        Some(self.instructions? as f64 / self.outcome.acked.len().max(1) as f64)
    }

    fn failed(&self) -> u64 {
        self.outcome.errors + self.outcome.refused.values().sum::<u64>()
    }

    /// One line for the progress log.
    pub fn brief(&self) -> String {
        let h = &self.outcome.latency;
        format!(
            "{:<16} {:<22} {:>8.0}/s  p50 {}  p99 {}  p99.9 {}  cpu {:.2}s  rss {:.1} MiB  failed {}  machine busy {:.0}%",
            self.target,
            self.load,
            self.outcome.rate(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            self.server_cpu_s,
            self.peak_rss_kib as f64 / 1024.0,
            self.failed(),
            self.machine_busy * 100.0
        )
    }

    fn json(&self, ratio: Option<f64>, to_floor: Option<f64>) -> Value {
        let h = &self.outcome.latency;
        let q = |h: &Histogram<u64>| {
            json!({
                "p50_us": h.value_at_quantile(0.5),
                "p99_us": h.value_at_quantile(0.99),
                "p999_us": h.value_at_quantile(0.999),
                "max_us": h.max(),
                "count": h.len(),
            })
        };
        json!({
            "target": self.target,
            "load": self.load,
            "offered_rate": match self.pace { Pace::Closed => None, Pace::Open(r) => Some(r) },
            "ok": self.outcome.acked.len(),
            "refused": self.outcome.refused.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "errors": self.outcome.errors,
            "elapsed_s": self.outcome.elapsed.as_secs_f64(),
            "rate": self.outcome.rate(),
            "ratio_to_bare": ratio,
            "ratio_to_floor": to_floor,
            "latency": q(h),
            "e2e_latency": self.e2e.as_ref().map(q),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_s_per_100k": self.cpu_per_100k(),
            "client_cpu_s": self.client_cpu_s,
            "machine_busy": self.machine_busy,
            "peak_rss_kib": self.peak_rss_kib,
            "peak_rss_since_start": self.peak_since_start,
            "instructions_per_request": self.instructions_per_request(),
        })
    }
}

/// Everything one run measured.
pub struct Run {
    options: Options,
    body_sizes: (usize, usize, usize, usize),
    commands: usize,
    load_before: String,
    /// Warm-up phases (verified, not reported in the table).
    pub warmups: Vec<Row>,
    /// Measured phases, in the order they ran.
    pub rows: Vec<Row>,
    verdicts: Vec<(String, Verdict)>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Run {
    /// An empty run with `options`.
    pub fn new(options: Options, workload: &Workload) -> Run {
        Run {
            options,
            body_sizes: workload.sizes(),
            commands: workload.commands().len(),
            load_before: loadavg(),
            warmups: Vec::new(),
            rows: Vec::new(),
            verdicts: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// The settings in one line.
    pub fn describe(&self) -> String {
        let (min, med, mean, max) = self.body_sizes;
        format!(
            "{} run{}: {} connections, {:?} phases, {} closed-loop round(s), open loop at {:?} of each bridge's best (bare hyper and the floor: of the enqueued bridge's); \
             bodies {min}..{max} B (median {med}, mean {mean}) over {} commands; load average {}",
            if self.options.smoke { "smoke" } else { "full" },
            if self.options.pin {
                ", pinned (servers on CPU 1, client and broker on CPU 0)"
            } else {
                ""
            },
            self.options.connections,
            self.options.duration,
            self.options.rounds,
            self.options.fractions,
            self.commands,
            self.load_before
        )
    }

    /// Best closed-loop rate of `target`.
    pub fn best_rate(&self, target: &str) -> Option<f64> {
        self.best_row(target).map(|r| r.outcome.rate())
    }

    fn best_row(&self, target: &str) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| r.target == target && matches!(r.pace, Pace::Closed))
            .max_by(|a, b| a.outcome.rate().total_cmp(&b.outcome.rate()))
    }

    /// Every request number `target` answered OK (sorted), and the number
    /// ranges of its measured rows (in row order).
    pub fn acked_and_ranges(&self, target: &str) -> (Vec<u64>, Vec<std::ops::Range<u64>>) {
        let mut acked: Vec<u64> = self
            .warmups
            .iter()
            .chain(&self.rows)
            .filter(|r| r.target == target)
            .flat_map(|r| r.outcome.acked.iter().copied())
            .collect();
        acked.sort_unstable();
        let ranges = self
            .rows
            .iter()
            .filter(|r| r.target == target)
            .map(|r| r.outcome.seqs.clone())
            .collect();
        (acked, ranges)
    }

    /// Files `target`'s verdict and hands its end-to-end latencies to its rows.
    pub fn add_verdict(&mut self, target: &str, mut verdict: Verdict) {
        let mut e2e = std::mem::take(&mut verdict.e2e).into_iter();
        for row in self.rows.iter_mut().filter(|r| r.target == target) {
            row.e2e = e2e.next();
        }
        self.verdicts.push((target.to_owned(), verdict));
    }

    /// Every bridge passed verification.
    pub fn verified(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(|(_, v)| v.passed())
    }

    /// Closed-loop rate of `row` over `base`'s in the same round.
    fn ratio_to(&self, row: &Row, base: &str) -> Option<f64> {
        if !matches!(row.pace, Pace::Closed) {
            return None;
        }
        let base = self
            .rows
            .iter()
            .find(|r| r.target == base && r.load == row.load)?;
        Some(row.outcome.rate() / base.outcome.rate().max(1e-9))
    }

    fn ratio(&self, row: &Row) -> Option<f64> {
        self.ratio_to(row, "bare hyper")
    }

    /// Best closed-loop rate of `target` over the best of `base`.
    fn best_ratio(&self, target: &str, base: &str) -> Option<f64> {
        Some(self.best_rate(target)? / self.best_rate(base)?)
    }

    /// `target`'s CPU µs per OK answer over all its closed-loop rounds.
    fn cpu_us(&self, target: &str) -> Option<f64> {
        let (cpu, ok) = self
            .rows
            .iter()
            .filter(|r| r.target == target && matches!(r.pace, Pace::Closed))
            .fold((0.0, 0usize), |(c, n), r| {
                (c + r.server_cpu_s, n + r.outcome.acked.len())
            });
        (ok > 0).then(|| cpu * 1e6 / ok as f64)
    }

    /// The row of `target` at the open-loop fraction `label` (e.g. `(50%)`).
    fn open_row(&self, target: &str, label: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.target == target && r.load.contains(label))
    }

    /// Every server measured, in the order they first ran.
    fn server_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !names.contains(&r.target.as_str()) {
                names.push(&r.target);
            }
        }
        names
    }

    /// Prints the table, the targets and the verdicts.
    pub fn print(&self) {
        println!("\n{}\n", self.describe());
        println!(
            "{:<16} {:<20} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>6} {:>5}",
            "server",
            "load",
            "req/s",
            "×bare",
            "×floor",
            "p50",
            "p99",
            "p99.9",
            "max",
            "CPU s/100k",
            "RSS MiB",
            "e2e p50",
            "e2e p99",
            "failed",
            "busy"
        );
        for row in &self.rows {
            let h = &row.outcome.latency;
            let e2e = |q: f64| {
                row.e2e
                    .as_ref()
                    .map_or("-".into(), |h| ms(h.value_at_quantile(q)))
            };
            println!(
                "{:<16} {:<20} {:>8.0} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10.2} {:>8.1} {:>8} {:>8} {:>6} {:>4.0}%",
                row.target,
                row.load,
                row.outcome.rate(),
                self.ratio(row).map_or("-".into(), |r| format!("{r:.2}")),
                self.ratio_to(row, "floor")
                    .map_or("-".into(), |r| format!("{r:.2}")),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                row.cpu_per_100k(),
                row.peak_rss_kib as f64 / 1024.0,
                e2e(0.5),
                e2e(0.99),
                row.failed(),
                row.machine_busy * 100.0
            );
        }
        let ir_of = |name: &str| {
            self.rows
                .iter()
                .find(|r| r.target == name)
                .and_then(Row::instructions_per_request)
        };
        let (bare_ir, floor_ir) = (ir_of("bare hyper"), ir_of("floor"));
        for row in &self.rows {
            if let Some(ir) = row.instructions_per_request() {
                println!(
                    "{:<16} instructions per request (callgrind, user space, all threads): {ir:>9.0}  ×bare {}  ×floor {}",
                    row.target,
                    bare_ir.map_or("-".into(), |b| format!("{:.2}", ir / b)),
                    floor_ir.map_or("-".into(), |b| format!("{:.2}", ir / b))
                );
            }
        }
        println!(
            "\nClosed loop, against bare hyper and the floor (best round's rate; CPU over all rounds):"
        );
        println!(
            "  {:<16} {:>9} {:>6} {:>6} {:>12} {:>6} {:>6}",
            "server", "req/s", "×bare", "×floor", "CPU µs/cb", "×bare", "×floor"
        );
        let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
        for name in self.server_names() {
            let cpu = self.cpu_us(name);
            let cpu_ratio = |base: &str| Some(cpu? / self.cpu_us(base)?);
            println!(
                "  {:<16} {:>9.0} {:>6} {:>6} {:>12} {:>6} {:>6}",
                name,
                self.best_rate(name).unwrap_or(0.0),
                fmt(self.best_ratio(name, "bare hyper")),
                fmt(self.best_ratio(name, "floor")),
                cpu.map_or("-".into(), |c| format!("{c:.1}")),
                fmt(cpu_ratio("bare hyper")),
                fmt(cpu_ratio("floor"))
            );
        }
        if self.options.smoke {
            println!("\nTargets: not judged in a smoke run (test profile, short phases).");
        } else {
            println!("\nTargets (ratios from this run; best closed-loop rate of each server):");
            for (line, met) in self.targets() {
                println!("  {} {line}", if met { "PASS" } else { "FAIL" });
            }
            for line in self.floor_tail() {
                println!("  {line}");
            }
        }
        println!(
            "\nVerification (every callback answered OK is in Kafka exactly once, by event id):"
        );
        for (name, v) in &self.verdicts {
            println!(
                "  {name}: answered OK {}, in Kafka {} ({} distinct ids), lost {}, duplicates {}, wrong id {}, \
                 dead letters {}, discarded {}, in Kafka but unanswered {}, sampled not a v1 event {}, mean value {:.0} B: {}",
                v.acked,
                v.records,
                v.distinct,
                v.lost,
                v.duplicates,
                v.wrong_id,
                v.dead_letters,
                v.discarded,
                v.unanswered,
                v.not_event,
                v.mean_bytes,
                if v.passed() { "PASSED" } else { "FAILED" }
            );
        }
        println!(
            "\nWall time {:.0} s; load average now {}.",
            self.elapsed.as_secs_f64(),
            loadavg()
        );
    }

    /// The targets of issue 15: (text, met).
    fn targets(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let floor_rate = self.best_rate("floor").unwrap_or(0.0);
        for (mode, want) in [("enqueued", 0.9), ("spooled", 0.6)] {
            let name = format!("bridge {mode}");
            if let Some(r) = self.best_ratio(&name, "floor") {
                out.push((
                    format!(
                        "{name} throughput ≥ {want:.2} × floor: {r:.2} ({:.0} vs {floor_rate:.0} req/s)",
                        self.best_rate(&name).unwrap_or(0.0),
                    ),
                    r >= want,
                ));
            }
        }
        if let (Some(b), Some(f)) = (self.cpu_us("bridge enqueued"), self.cpu_us("floor")) {
            out.push((
                format!(
                    "bridge enqueued CPU per callback ≤ 1.15 × floor's: {:.2} ({b:.1} vs {f:.1} µs)",
                    b / f
                ),
                b / f <= 1.15,
            ));
        }
        for t in self.tail_at_half_rate("bridge enqueued") {
            out.push((
                format!(
                    "bridge enqueued at half its max rate: {} {} ≤ bare hyper's {} + {:.1} ms",
                    t.label,
                    ms(t.mine),
                    ms(t.bare),
                    t.margin_us as f64 / 1000.0
                ),
                t.met(),
            ));
        }
        for name in self
            .server_names()
            .into_iter()
            .filter(|n| n.starts_with("bridge "))
        {
            let peak = self
                .rows
                .iter()
                .filter(|r| r.target == name && matches!(r.pace, Pace::Closed))
                .map(|r| r.peak_rss_kib)
                .max()
                .unwrap_or(0);
            let mib = peak as f64 / 1024.0;
            out.push((
                format!("{name} peak RSS at max rate: {mib:.1} MiB ≤ 64 MiB"),
                mib <= 64.0,
            ));
        }
        let acked: usize = self.verdicts.iter().map(|(_, v)| v.acked).sum();
        out.push((
            format!(
                "every acknowledged callback in Kafka exactly once: {} servers, {acked} callbacks",
                self.verdicts.len()
            ),
            self.verified(),
        ));
        out
    }

    /// The floor's own tail at the rate of the latency targets, judged by
    /// the same bounds: not a target (the floor is the yardstick), but what
    /// tells the job's tail on this machine from the bridge's.
    fn floor_tail(&self) -> Vec<String> {
        self.tail_at_half_rate("floor")
            .into_iter()
            .map(|t| {
                format!(
                    "(the floor at that rate, for reference: {} {}, {} the same bound)",
                    t.label,
                    ms(t.mine),
                    if t.met() { "within" } else { "outside" }
                )
            })
            .collect()
    }

    /// `target`'s p99 and p99.9 in the open-loop phase at half the rate,
    /// beside bare hyper's in the same phase and the latency targets' margins.
    fn tail_at_half_rate(&self, target: &str) -> Vec<Tail> {
        let (Some(row), Some(bare)) = (
            self.open_row(target, "(50%)"),
            self.open_row("bare hyper", "(50%)"),
        ) else {
            return Vec::new();
        };
        let q = |r: &Row, q: f64| r.outcome.latency.value_at_quantile(q);
        [(0.99, "p99", 500), (0.999, "p99.9", 2000)]
            .into_iter()
            .map(|(quantile, label, margin_us)| Tail {
                label,
                mine: q(row, quantile),
                bare: q(bare, quantile),
                margin_us,
            })
            .collect()
    }

    /// Writes the run as JSON to `dir/<unix time>.json` and `dir/latest.json`.
    pub fn write_json(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let o = &self.options;
        let (min, med, mean, max) = self.body_sizes;
        let doc = json!({
            "smoke": o.smoke,
            "settings": {
                "connections": o.connections,
                "phase_s": o.duration.as_secs_f64(),
                "warmup_s": o.warmup.as_secs_f64(),
                "rounds": o.rounds,
                "open_loop_fractions": o.fractions,
                "modes": o.modes,
                "client_threads": o.client_threads,
                "pin": o.pin,
            },
            "machine": {
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "cpu_model": cpu_model(),
                "load_average_before": self.load_before,
                "load_average_after": loadavg(),
            },
            "bodies": { "min": min, "median": med, "mean": mean, "max": max, "commands": self.commands },
            "rows": self.rows.iter().map(|r| r.json(self.ratio(r), self.ratio_to(r, "floor"))).collect::<Vec<_>>(),
            "closed_loop": self.server_names().into_iter().map(|name| json!({
                "server": name,
                "best_rate": self.best_rate(name),
                "rate_to_bare": self.best_ratio(name, "bare hyper"),
                "rate_to_floor": self.best_ratio(name, "floor"),
                "cpu_us_per_callback": self.cpu_us(name),
                "cpu_to_bare": self.cpu_us(name).zip(self.cpu_us("bare hyper")).map(|(a, b)| a / b),
                "cpu_to_floor": self.cpu_us(name).zip(self.cpu_us("floor")).map(|(a, b)| a / b),
            })).collect::<Vec<_>>(),
            "targets": self.targets().into_iter().map(|(t, met)| json!({"target": t, "met": met})).collect::<Vec<_>>(),
            "floor_tail": self.floor_tail(),
            "verification": self.verdicts.iter().map(|(name, v)| json!({
                "server": name,
                "acked": v.acked,
                "records": v.records,
                "distinct_ids": v.distinct,
                "lost": v.lost,
                "duplicates": v.duplicates,
                "wrong_id": v.wrong_id,
                "dead_letters": v.dead_letters,
                "discarded": v.discarded,
                "unanswered": v.unanswered,
                "sampled_not_event": v.not_event,
                "mean_value_bytes": v.mean_bytes,
                "passed": v.passed(),
            })).collect::<Vec<_>>(),
            "passed": self.verified(),
            "wall_s": self.elapsed.as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&doc).expect("JSON serializes");
        let secs = crate::client::unix_us() / 1_000_000;
        let path = dir.join(format!("{secs}.json"));
        std::fs::write(&path, &text)?;
        std::fs::write(dir.join("latest.json"), &text)?;
        Ok(path)
    }
}

/// µs as milliseconds, e.g. `0.42ms`.
fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default()
}

/// One quantile of a server's latency against bare hyper's (µs).
struct Tail {
    label: &'static str,
    mine: u64,
    bare: u64,
    margin_us: u64,
}

impl Tail {
    /// Within bare hyper's latency plus the margin.
    fn met(&self) -> bool {
        self.mine <= self.bare + self.margin_us
    }
}
