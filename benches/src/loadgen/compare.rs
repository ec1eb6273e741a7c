//! The comparison table of `benches/compare.sh`: aliot against mosquitto and rumqttd, as
//! ratios from the same run.
//!
//! `compare.sh` leaves one JSON report per run in a folder (names in [`ComparisonResults::load`]);
//! [`markdown_table`] turns them into the table, with the targets of issue 7 and whether each
//! is met, followed by every run's details (so that a reader can see whether the generator or
//! the broker was the one at 100 % CPU).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::LoadError;
use super::recovery::{FillReport, RecoveryReport};
use super::report::{ConnectionsReport, RrpcReport, ThroughputReport};

/// The brokers compared, aliot first.
pub const BROKERS: [&str; 3] = ["aliot", "mosquitto", "rumqttd"];

/// The broker every ratio is taken against first.
pub const REFERENCE: &str = "mosquitto";

/// The throughput runs: file stem and the row title.
pub const THROUGHPUT_RUNS: [(&str, &str); 4] = [
    ("one-to-one-qos0", "1:1, QoS 0"),
    ("one-to-one-qos1", "1:1, QoS 1"),
    ("fan-in", "fan-in 100→1, QoS 1"),
    ("fan-out", "fan-out 1→100, QoS 0"),
];

/// Suffix of the file stem of a latency run: one at [`LATENCY_RATE_FRACTION`] of the slowest
/// broker's rate.
pub const AT_HALF_RATE: &str = "at-half-rate";

/// The share of the slowest broker's rate the latency runs go at. At its full rate the
/// slowest broker is saturated and its p99 is the queue it builds, not its latency; at half of
/// it every broker has room, and the p99s compare what each adds to a message.
pub const LATENCY_RATE_FRACTION: f64 = 0.5;

/// The publish rate (all publishers together) that reproduces the delivery rate of `report`:
/// its messages received per second divided by the subscribers each message reaches.
///
/// ```
/// use aliot_benches::loadgen::compare::publish_rate_of;
/// # use aliot_benches::loadgen::report::{Percentiles, ThroughputReport};
/// # let report = ThroughputReport {
/// #     scenario: "fan-out".into(), broker: "mosquitto".into(), qos: 0, publishers: 1,
/// #     subscribers: 100, payload_bytes: 64, inflight: 32, persistent_subscribers: false,
/// #     target_publish_rate: None,
/// #     window_secs: 5.0, msgs_per_sec: 250_000.0, published_per_sec: 2_600.0,
/// #     latency: Percentiles::default(), published: 0, expected_deliveries: 0, delivered: 0,
/// #     missing: 0, acked: 0, lost_connections: 0, first_loss: None,
/// #     generator_cpu_percent: 0.0, broker_cpu_percent: None,
/// # };
/// // 100 subscribers received 250,000 messages/s: 2,500 publishes/s.
/// assert_eq!(publish_rate_of(&report), 2_500.0);
/// ```
#[must_use]
pub fn publish_rate_of(report: &ThroughputReport) -> f64 {
    report.msgs_per_sec / report.subscribers.max(1) as f64
}

/// The publish rate of the slowest of `reports` (by [`publish_rate_of`]), `None` when there are
/// none: with [`LATENCY_RATE_FRACTION`], the rate of the latency runs.
///
/// ```
/// use aliot_benches::loadgen::compare::slowest_publish_rate;
/// # use aliot_benches::loadgen::report::{Percentiles, ThroughputReport};
/// # let report = |msgs_per_sec: f64| ThroughputReport {
/// #     scenario: "fan-in".into(), broker: "any".into(), qos: 1, publishers: 100,
/// #     subscribers: 1, payload_bytes: 64, inflight: 32, persistent_subscribers: false,
/// #     target_publish_rate: None,
/// #     window_secs: 5.0, msgs_per_sec, published_per_sec: msgs_per_sec,
/// #     latency: Percentiles::default(), published: 0, expected_deliveries: 0, delivered: 0,
/// #     missing: 0, acked: 0, lost_connections: 0, first_loss: None,
/// #     generator_cpu_percent: 0.0, broker_cpu_percent: None,
/// # };
/// let maxima = [report(90_000.0), report(40_000.0), report(120_000.0)];
/// assert_eq!(slowest_publish_rate(&maxima), Some(40_000.0));
/// assert_eq!(slowest_publish_rate(&[]), None);
/// ```
#[must_use]
pub fn slowest_publish_rate(reports: &[ThroughputReport]) -> Option<f64> {
    reports.iter().map(publish_rate_of).min_by(f64::total_cmp)
}

/// Of repeated runs, the one whose p99 is the median (the lower middle one of an even count).
///
/// ```
/// use aliot_benches::loadgen::compare::median_by_p99;
/// # use aliot_benches::loadgen::report::{Percentiles, ThroughputReport};
/// # let run = |p99_us: f64| ThroughputReport {
/// #     scenario: "fan-in".into(), broker: "aliot".into(), qos: 1, publishers: 100,
/// #     subscribers: 1, payload_bytes: 64, inflight: 32, persistent_subscribers: false,
/// #     target_publish_rate: Some(2_000.0),
/// #     window_secs: 5.0, msgs_per_sec: 2_000.0, published_per_sec: 2_000.0,
/// #     latency: Percentiles { count: 10_000, p50_us: 50.0, p99_us, p999_us: p99_us, max_us: p99_us },
/// #     published: 0, expected_deliveries: 0, delivered: 0, missing: 0, acked: 0,
/// #     lost_connections: 0, first_loss: None, generator_cpu_percent: 0.0,
/// #     broker_cpu_percent: None,
/// # };
/// let runs = [run(136.0), run(93.0), run(104.0)];
/// assert_eq!(median_by_p99(&runs).map(|r| r.latency.p99_us), Some(104.0));
/// assert!(median_by_p99(&[]).is_none());
/// ```
#[must_use]
pub fn median_by_p99(runs: &[ThroughputReport]) -> Option<&ThroughputReport> {
    let mut sorted: Vec<&ThroughputReport> = runs.iter().collect();
    sorted.sort_by(|a, b| a.latency.p99_us.total_cmp(&b.latency.p99_us));
    sorted.get(runs.len().saturating_sub(1) / 2).copied()
}

/// Every report of one `compare.sh` run, and what the script says about how it ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComparisonResults {
    /// Runs as fast as they go, by (broker, run stem).
    pub max: BTreeMap<(String, String), ThroughputReport>,
    /// Latency runs, at half the slowest broker's rate, by (broker, run stem): each is repeated
    /// (`LATENCY_RUNS` in `compare.sh`), since at a low rate one run's p99 is mostly the
    /// machine's wake-up jitter. The table takes the run with the median p99.
    pub at_half_rate: BTreeMap<(String, String), Vec<ThroughputReport>>,
    /// Idle connections, by broker.
    pub connections: BTreeMap<String, ConnectionsReport>,
    /// RRPC through aliot's Rust API.
    pub rrpc: Option<RrpcReport>,
    /// Lines printed under the table: pinning, durations, machine load, anything skipped.
    pub notes: Vec<String>,
}

impl ComparisonResults {
    /// Reads the reports `compare.sh` wrote in `dir`: `{broker}-{run}.json` and
    /// `{broker}-{run}-at-half-rate-{k}.json` (k from 1, as many as there are; or one
    /// `{broker}-{run}-at-half-rate.json`) for each run of [`THROUGHPUT_RUNS`],
    /// `{broker}-connections.json` and `rrpc.json`. A missing file is a run that did not
    /// happen (its cells read `n/a`); `notes` are kept for under the table.
    ///
    /// # Errors
    ///
    /// [`LoadError::Parameter`] when a file exists but is not a report of its kind.
    pub fn load(dir: &Path, notes: Vec<String>) -> Result<ComparisonResults, LoadError> {
        let mut results = ComparisonResults {
            notes,
            ..ComparisonResults::default()
        };
        for broker in BROKERS {
            for (run, _) in THROUGHPUT_RUNS {
                let key = (broker.to_owned(), run.to_owned());
                if let Some(report) = read_report(&dir.join(format!("{broker}-{run}.json")))? {
                    results.max.insert(key.clone(), report);
                }
                let stem = format!("{broker}-{run}-{AT_HALF_RATE}");
                let mut at_rate = Vec::new();
                if let Some(report) = read_report(&dir.join(format!("{stem}.json")))? {
                    at_rate.push(report);
                }
                for k in 1.. {
                    match read_report(&dir.join(format!("{stem}-{k}.json")))? {
                        Some(report) => at_rate.push(report),
                        None => break,
                    }
                }
                if !at_rate.is_empty() {
                    results.at_half_rate.insert(key, at_rate);
                }
            }
            if let Some(report) = read_report(&dir.join(format!("{broker}-connections.json")))? {
                results.connections.insert(broker.to_owned(), report);
            }
        }
        results.rrpc = read_report(&dir.join("rrpc.json"))?;
        Ok(results)
    }
}

/// Reads one JSON report; `None` when the file does not exist.
///
/// # Errors
///
/// [`LoadError::Parameter`] when the file cannot be read or is not a report of this kind.
pub fn read_report<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, LoadError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(LoadError::Parameter(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    serde_json::from_str(text.trim())
        .map(Some)
        .map_err(|error| {
            LoadError::Parameter(format!("{} is not a report: {error}", path.display()))
        })
}

/// One row of the ratio table.
struct Row {
    scenario: String,
    metric: String,
    /// Values by broker, in the order of [`BROKERS`].
    values: [Option<f64>; 3],
    /// How to print a value.
    format: fn(f64) -> String,
    target: String,
    met: Option<bool>,
    /// Whether aliot/other ratios mean anything for this metric.
    ratios: bool,
}

impl Row {
    fn value(&self, broker: usize) -> Option<f64> {
        self.values.get(broker).copied().flatten()
    }

    fn ratio(&self, other: usize) -> String {
        if !self.ratios {
            return String::new();
        }
        match (self.value(0), self.value(other)) {
            (Some(aliot), Some(other)) if other > 0.0 => format!("{:.2}x", aliot / other),
            _ => "n/a".to_owned(),
        }
    }

    fn cell(&self, broker: usize) -> String {
        self.value(broker)
            .map_or_else(|| "n/a".to_owned(), |value| (self.format)(value))
    }
}

fn whole(value: f64) -> String {
    let rounded = value.round();
    if rounded.abs() < 1e15 {
        group_thousands(rounded as i64)
    } else {
        format!("{value:.3e}")
    }
}

fn one_decimal(value: f64) -> String {
    format!("{value:.1}")
}

fn two_decimals(value: f64) -> String {
    format!("{value:.2}")
}

/// `1234567` as `1,234,567`.
fn group_thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        grouped.push('-');
    }
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The markdown table of ratios (aliot/mosquitto, aliot/rumqttd) with the targets of issue 7,
/// the notes, and a details table of every run.
///
/// Ratios of messages and calls per second: higher is better for aliot. Ratios of latency and
/// memory: lower is better.
#[must_use]
pub fn markdown_table(results: &ComparisonResults) -> String {
    let rows = rows(results);
    let mut out = String::new();
    // Writing to a String cannot fail; results are ignored for that reason only.
    let _ = writeln!(
        out,
        "| scenario | metric | aliot | mosquitto | rumqttd | aliot/mosquitto | aliot/rumqttd | target | met |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|");
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.metric,
            row.cell(0),
            row.cell(1),
            row.cell(2),
            row.ratio(1),
            row.ratio(2),
            row.target,
            yes_no(row.met),
        );
    }
    if !results.notes.is_empty() {
        let _ = writeln!(out);
        for note in &results.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let _ = writeln!(out);
    out.push_str(&details_table(results));
    out
}

fn rows(results: &ComparisonResults) -> Vec<Row> {
    let mut rows = Vec::new();
    for (run, title) in THROUGHPUT_RUNS {
        let max = |broker: &str| results.max.get(&(broker.to_owned(), run.to_owned()));
        let at_rate_runs = |broker: &str| {
            results
                .at_half_rate
                .get(&(broker.to_owned(), run.to_owned()))
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let at_rate = |broker: &str| median_by_p99(at_rate_runs(broker));
        let throughput = BROKERS.map(|broker| max(broker).map(|report| report.msgs_per_sec));
        rows.push(Row {
            scenario: title.to_owned(),
            metric: "msgs/s received, as fast as it goes".to_owned(),
            met: match (throughput[0], throughput[1]) {
                (Some(aliot), Some(reference)) => Some(aliot >= 2.0 * reference),
                _ => None,
            },
            values: throughput,
            format: whole,
            target: "≥ 2x mosquitto".to_owned(),
            ratios: true,
        });
        let p99 = BROKERS.map(|broker| at_rate(broker).map(|report| report.latency.p99_us));
        // The rate the latency runs went at, as messages received per second.
        let rate = BROKERS.iter().find_map(|broker| {
            at_rate_runs(broker).first().and_then(|report| {
                report
                    .target_publish_rate
                    .map(|rate| rate * report.subscribers.max(1) as f64)
            })
        });
        let repeats = match at_rate_runs("aliot").len() {
            0 | 1 => String::new(),
            n => format!(", median of {n} runs"),
        };
        rows.push(Row {
            scenario: title.to_owned(),
            metric: match rate {
                Some(rate) => format!(
                    "p99 µs at half the slowest rate ({} msgs/s{repeats})",
                    whole(rate)
                ),
                None => format!("p99 µs at half the slowest rate{repeats}"),
            },
            met: match (p99[0], p99[1]) {
                (Some(aliot), Some(reference)) => Some(aliot <= reference),
                _ => None,
            },
            values: p99,
            format: one_decimal,
            target: "≤ mosquitto's".to_owned(),
            ratios: true,
        });
        let qos1 = max("aliot").is_some_and(|report| report.qos == 1);
        let missing = BROKERS.map(|broker| {
            let max_missing = max(broker).map(|report| report.missing);
            let runs = at_rate_runs(broker);
            let rate_missing =
                (!runs.is_empty()).then(|| runs.iter().map(|report| report.missing).sum::<u64>());
            match (max_missing, rate_missing) {
                (None, None) => None,
                (max_missing, rate_missing) => {
                    Some((max_missing.unwrap_or(0) + rate_missing.unwrap_or(0)) as f64)
                }
            }
        });
        rows.push(Row {
            scenario: title.to_owned(),
            metric: "messages missing after the drain (all runs)".to_owned(),
            met: if qos1 {
                missing[0].map(|missing| missing == 0.0)
            } else {
                None
            },
            values: missing,
            format: whole,
            target: if qos1 {
                "0 (QoS 1 loses nothing)".to_owned()
            } else {
                "(QoS 0 may drop)".to_owned()
            },
            ratios: false,
        });
    }

    let connections = |broker: &str| results.connections.get(broker);
    let count = connections("aliot")
        .or_else(|| connections(REFERENCE))
        .map_or(0, |report| report.requested);
    let rate = BROKERS.map(|broker| connections(broker).map(|report| report.connects_per_sec));
    rows.push(Row {
        scenario: format!("{} idle connections", whole(count as f64)),
        metric: "connects/s (aliot: signatures; mosquitto: password file)".to_owned(),
        met: match (rate[0], rate[1]) {
            (Some(aliot), Some(reference)) => Some(aliot >= 2.0 * reference),
            _ => None,
        },
        values: rate,
        format: whole,
        target: "≥ 2x mosquitto".to_owned(),
        ratios: true,
    });
    let memory = BROKERS.map(|broker| {
        connections(broker)
            .and_then(|report| report.bytes_per_connection)
            .map(|bytes| bytes / 1024.0)
    });
    rows.push(Row {
        scenario: format!("{} idle connections", whole(count as f64)),
        metric: "broker RSS per connection, KiB".to_owned(),
        met: memory[0].map(|kib| kib <= 2.0),
        values: memory,
        format: two_decimals,
        target: "≤ 2 KiB".to_owned(),
        ratios: true,
    });

    let rrpc = results.rrpc.as_ref();
    let scenario = rrpc.map_or_else(
        || "RRPC, in-process aliot".to_owned(),
        |report| {
            format!(
                "RRPC, in-process aliot, {} devices, {} callers",
                report.devices, report.callers
            )
        },
    );
    let calls = rrpc.map(|report| report.calls_per_sec);
    rows.push(Row {
        scenario: scenario.clone(),
        metric: "calls/s".to_owned(),
        met: calls.map(|calls| calls >= 50_000.0),
        values: [calls, None, None],
        format: whole,
        target: "≥ 50,000".to_owned(),
        ratios: false,
    });
    let p99 = rrpc.map(|report| report.latency.p99_us);
    rows.push(Row {
        scenario,
        metric: "p99 µs".to_owned(),
        met: p99.map(|p99| p99 < 2_000.0),
        values: [p99, None, None],
        format: one_decimal,
        target: "< 2,000".to_owned(),
        ratios: false,
    });
    rows
}

/// Every run, one line each: what the ratios are made of.
fn details_table(results: &ComparisonResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| run | broker | msgs/s | published/s | p50 µs | p99 µs | p99.9 µs | missing | generator CPU | broker CPU |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cpu =
        |percent: Option<f64>| percent.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}%"));
    for (run, title) in THROUGHPUT_RUNS {
        let mut lines: Vec<(String, &str, &ThroughputReport)> = Vec::new();
        for broker in BROKERS {
            if let Some(report) = results.max.get(&(broker.to_owned(), run.to_owned())) {
                lines.push((format!("{title}, max"), broker, report));
            }
        }
        for broker in BROKERS {
            let runs = results
                .at_half_rate
                .get(&(broker.to_owned(), run.to_owned()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (k, report) in runs.iter().enumerate() {
                let how = match runs.len() {
                    1 => format!("{title}, at half rate"),
                    n => format!("{title}, at half rate, run {} of {n}", k + 1),
                };
                lines.push((how, broker, report));
            }
        }
        for (how, broker, report) in lines {
            let _ = writeln!(
                out,
                "| {how} | {broker} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                whole(report.msgs_per_sec),
                whole(report.published_per_sec),
                report.latency.p50_us,
                report.latency.p99_us,
                report.latency.p999_us,
                whole(report.missing as f64),
                cpu(Some(report.generator_cpu_percent)),
                cpu(report.broker_cpu_percent),
            );
        }
    }
    for broker in BROKERS {
        let Some(report) = results.connections.get(broker) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} idle connections ({} connected, {} failed; handshake p50/p99 µs) | {broker} | {} connects/s | | {:.1} | {:.1} | {:.1} | | {} | {} |",
            whole(report.requested as f64),
            whole(report.connected as f64),
            whole(report.failed as f64),
            whole(report.connects_per_sec),
            report.handshake.p50_us,
            report.handshake.p99_us,
            report.handshake.p999_us,
            cpu(Some(report.generator_cpu_percent)),
            cpu(report.broker_cpu_percent),
        );
    }
    if let Some(report) = &results.rrpc {
        let _ = writeln!(
            out,
            "| RRPC ({} success, {} timeout, {} other) | aliot in-process | {} calls/s | | {:.1} | {:.1} | {:.1} | | {} (whole process) | |",
            whole(report.success as f64),
            whole(report.timeout as f64),
            whole(report.other as f64),
            whole(report.calls_per_sec),
            report.latency.p50_us,
            report.latency.p99_us,
            report.latency.p999_us,
            cpu(Some(report.process_cpu_percent)),
        );
    }
    out
}

/// The configurations of the durable-store table: file-name part and column title. The first
/// is the one the ratios and targets are about.
pub const STORE_CONFIGS: [(&str, &str); 3] = [
    ("aliot-durable", "aliot durable"),
    ("aliot-memory", "aliot in memory"),
    ("mosquitto-persistence", "mosquitto, persistence true"),
];

/// The throughput runs of the durable-store table (subscribers with cleanSession=0): file stem
/// and row title.
pub const STORE_RUNS: [(&str, &str); 2] = [
    ("one-to-one-qos1", "1:1, QoS 1, persistent subscriber"),
    ("fan-in", "fan-in 100→1, QoS 1, persistent subscriber"),
];

/// The median of some numbers (the mean of the middle two of an even count); `None` for none.
///
/// ```
/// use aliot_benches::loadgen::compare::median;
///
/// assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
/// assert_eq!(median(&[4.0, 1.0]), Some(2.5));
/// assert_eq!(median(&[]), None);
/// ```
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(middle).copied(),
        _ => Some((sorted.get(middle - 1)? + sorted.get(middle)?) / 2.0),
    }
}

/// The reports of compare.sh's durable-store runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreResults {
    /// Throughput runs, by (configuration, run stem), in the order they were repeated.
    pub runs: BTreeMap<(String, String), Vec<ThroughputReport>>,
    /// Idle connections, by configuration (`aliot-durable`, `aliot-memory`).
    pub connections: BTreeMap<String, ConnectionsReport>,
    /// Whether the in-memory idle connections are compare.sh's main aliot run.
    pub memory_connections_from_main_run: bool,
    /// The store `fill-store` wrote for the recovery run.
    pub fill: Option<FillReport>,
    /// `aliot serve` timed on that store.
    pub recovery: Option<RecoveryReport>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl StoreResults {
    /// Reads `store-{configuration}-{run}-{k}.json` (k from 1, as many as there are) for each
    /// configuration of [`STORE_CONFIGS`] and run of [`STORE_RUNS`],
    /// `store-{configuration}-connections.json` (for `aliot-memory`, compare.sh's
    /// `aliot-connections.json` when there is no such file: the same configuration, which has
    /// no `[store]`), `store-fill.json` and `store-recovery.json`. A missing file is a run that
    /// did not happen.
    ///
    /// # Errors
    ///
    /// [`LoadError::Parameter`] when a file exists but is not a report of its kind.
    pub fn load(dir: &Path, notes: Vec<String>) -> Result<StoreResults, LoadError> {
        let mut results = StoreResults {
            notes,
            ..StoreResults::default()
        };
        for (config, _) in STORE_CONFIGS {
            for (run, _) in STORE_RUNS {
                let mut reports = Vec::new();
                for k in 1.. {
                    match read_report(&dir.join(format!("store-{config}-{run}-{k}.json")))? {
                        Some(report) => reports.push(report),
                        None => break,
                    }
                }
                if !reports.is_empty() {
                    results
                        .runs
                        .insert((config.to_owned(), run.to_owned()), reports);
                }
            }
            if let Some(report) =
                read_report(&dir.join(format!("store-{config}-connections.json")))?
            {
                results.connections.insert(config.to_owned(), report);
            }
        }
        if !results.connections.contains_key("aliot-memory")
            && let Some(report) = read_report(&dir.join("aliot-connections.json"))?
        {
            results
                .connections
                .insert("aliot-memory".to_owned(), report);
            results.memory_connections_from_main_run = true;
        }
        results.fill = read_report(&dir.join("store-fill.json"))?;
        results.recovery = read_report(&dir.join("store-recovery.json"))?;
        Ok(results)
    }

    /// Whether there is anything to print.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.connections.is_empty()
            && self.fill.is_none()
            && self.recovery.is_none()
    }
}

/// One row of the durable-store table: values by [`STORE_CONFIGS`].
struct StoreRow {
    scenario: String,
    metric: String,
    values: [Option<f64>; 3],
    format: fn(f64) -> String,
    ratios: bool,
    target: String,
    met: Option<bool>,
    /// What missed, when the target has several parts.
    missed: Option<String>,
}

impl StoreRow {
    fn ratio(&self, other: usize) -> String {
        if !self.ratios {
            return String::new();
        }
        match (self.values[0], self.values.get(other).copied().flatten()) {
            (Some(value), Some(other)) if other > 0.0 => format!("{:.2}x", value / other),
            _ => "n/a".to_owned(),
        }
    }

    fn verdict(&self) -> String {
        match (self.met, &self.missed) {
            (Some(false), Some(missed)) => format!("**no** ({missed})"),
            (met, _) => yes_no(met).to_owned(),
        }
    }
}

/// The durable-store table: the persistent-subscriber runs of aliot with its store, aliot in
/// memory and mosquitto with persistence, as medians of the repeated runs, with the targets of
/// the store's issue; idle connections with and without the store; the recovery time; then
/// the notes and every run's details.
#[must_use]
pub fn store_table(results: &StoreResults) -> String {
    let mut rows = Vec::new();
    for (run, title) in STORE_RUNS {
        let runs = |config: &str| {
            results
                .runs
                .get(&(config.to_owned(), run.to_owned()))
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let counts = STORE_CONFIGS.map(|(config, _)| runs(config).len());
        let repeats = match counts.iter().max().copied().unwrap_or(0) {
            0 | 1 => String::new(),
            n if counts.iter().all(|count| *count == n || *count == 0) => {
                format!(" (median of {n} runs)")
            }
            _ => " (median of the runs)".to_owned(),
        };
        let rates = STORE_CONFIGS.map(|(config, _)| {
            median(
                &runs(config)
                    .iter()
                    .map(|report| report.msgs_per_sec)
                    .collect::<Vec<_>>(),
            )
        });
        let (versus_mosquitto, versus_memory) = match rates {
            [Some(durable), memory, mosquitto] => (
                mosquitto.map(|mosquitto| durable >= 2.0 * mosquitto),
                memory.map(|memory| durable >= 0.5 * memory),
            ),
            _ => (None, None),
        };
        let met = match (versus_mosquitto, versus_memory) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        };
        let ratio_text = |other: Option<f64>| match (rates[0], other) {
            (Some(durable), Some(other)) if other > 0.0 => format!("{:.2}x", durable / other),
            _ => "n/a".to_owned(),
        };
        let missed = match (versus_mosquitto, versus_memory) {
            (Some(false), Some(false)) => Some(format!(
                "{} mosquitto, {} in memory",
                ratio_text(rates[2]),
                ratio_text(rates[1])
            )),
            (Some(false), _) => Some(format!("{} mosquitto", ratio_text(rates[2]))),
            (_, Some(false)) => Some(format!("{} in memory", ratio_text(rates[1]))),
            _ => None,
        };
        rows.push(StoreRow {
            scenario: title.to_owned(),
            metric: format!("msgs/s received, as fast as it goes{repeats}"),
            values: rates,
            format: whole,
            ratios: true,
            target: "≥ 2x mosquitto and ≥ 0.5x in memory".to_owned(),
            met,
            missed,
        });
        let missing = STORE_CONFIGS.map(|(config, _)| {
            let runs = runs(config);
            (!runs.is_empty()).then(|| runs.iter().map(|report| report.missing).sum::<u64>() as f64)
        });
        rows.push(StoreRow {
            scenario: title.to_owned(),
            metric: "messages missing after the drain (all runs)".to_owned(),
            values: missing,
            format: whole,
            ratios: false,
            target: "0".to_owned(),
            met: missing[0].map(|missing| missing == 0.0),
            missed: None,
        });
    }

    let connections = |config: &str| results.connections.get(config);
    if let Some(report) = connections("aliot-durable").or_else(|| connections("aliot-memory")) {
        let memory = STORE_CONFIGS.map(|(config, _)| {
            connections(config)
                .and_then(|report| report.bytes_per_connection)
                .map(|bytes| bytes / 1024.0)
        });
        let sessions = if report.persistent_sessions {
            "cleanSession=0"
        } else {
            "clean sessions"
        };
        rows.push(StoreRow {
            scenario: format!(
                "{} idle connections, {sessions}",
                whole(report.requested as f64)
            ),
            metric: "broker RSS per connection, KiB".to_owned(),
            values: memory,
            format: two_decimals,
            ratios: true,
            target: "≤ 2 KiB".to_owned(),
            met: memory[0].map(|kib| kib <= 2.0),
            missed: None,
        });
    }

    if let Some(recovery) = &results.recovery {
        let scenario = match &results.fill {
            Some(fill) => format!(
                "restart on {} sessions × {} queued messages ({} B payloads, {:.0} MiB file)",
                whole(fill.sessions as f64),
                whole(fill.messages_per_session as f64),
                fill.payload_bytes,
                recovery.file_bytes as f64 / (1024.0 * 1024.0)
            ),
            None => format!(
                "restart on a filled store ({:.0} MiB file)",
                recovery.file_bytes as f64 / (1024.0 * 1024.0)
            ),
        };
        let log = recovery.restored.clone().unwrap_or_default();
        let show = |value: Option<u64>| value.map_or_else(|| "?".to_owned(), |v| whole(v as f64));
        rows.push(StoreRow {
            scenario: scenario.clone(),
            metric: format!(
                "seconds from spawn to `listening for MQTT` (log: read_ms {}, took_ms {}, {} messages restored)",
                show(log.read_ms),
                show(log.took_ms),
                show(log.messages)
            ),
            values: [Some(recovery.listening_secs), None, None],
            format: two_decimals,
            ratios: false,
            target: "< 5 s".to_owned(),
            met: Some(recovery.listening_secs < 5.0),
            missed: None,
        });
        if let Some(check) = &recovery.check {
            rows.push(StoreRow {
                scenario,
                metric: format!(
                    "messages delivered to one resumed session ({}, session present: {})",
                    check.client_id, check.session_present
                ),
                values: [Some(check.distinct as f64), None, None],
                format: whole,
                ratios: false,
                target: whole(check.expected as f64),
                met: Some(check.session_present && check.distinct == check.expected),
                missed: None,
            });
        }
    }

    let mut out = String::new();
    let titles = STORE_CONFIGS.map(|(_, title)| title);
    let _ = writeln!(
        out,
        "| scenario | metric | {} | {} | {} | durable/mosquitto | durable/in memory | target | met |",
        titles[0], titles[1], titles[2]
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|");
    for row in &rows {
        let cell = |index: usize| {
            row.values
                .get(index)
                .copied()
                .flatten()
                .map_or_else(|| "n/a".to_owned(), row.format)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.metric,
            cell(0),
            cell(1),
            cell(2),
            row.ratio(2),
            row.ratio(1),
            row.target,
            row.verdict(),
        );
    }
    let mut notes = results.notes.clone();
    if results.memory_connections_from_main_run {
        notes.push(
            "Idle connections in memory: the main table's aliot run (its configuration has no \
             `[store]`)."
                .to_owned(),
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
    }
    for note in &notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(out);
    out.push_str(&store_details(results));
    out
}

/// Every durable-store run, one line each.
fn store_details(results: &StoreResults) -> String {
    let mut out = String::new();
    let cpu =
        |percent: Option<f64>| percent.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}%"));
    let _ = writeln!(
        out,
        "| run | configuration | msgs/s | published/s | p50 µs | p99 µs | missing | generator CPU | broker CPU |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (run, title) in STORE_RUNS {
        for (config, config_title) in STORE_CONFIGS {
            let Some(runs) = results.runs.get(&(config.to_owned(), run.to_owned())) else {
                continue;
            };
            for (k, report) in runs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "| {title}, run {} of {} | {config_title} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
                    k + 1,
                    runs.len(),
                    whole(report.msgs_per_sec),
                    whole(report.published_per_sec),
                    report.latency.p50_us,
                    report.latency.p99_us,
                    whole(report.missing as f64),
                    cpu(Some(report.generator_cpu_percent)),
                    cpu(report.broker_cpu_percent),
                );
            }
        }
    }
    for (config, config_title) in STORE_CONFIGS {
        let Some(report) = results.connections.get(config) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} idle connections ({} connected; RSS {} → {} KiB) | {config_title} | {} connects/s | | {:.1} | {:.1} | | {} | {} |",
            whole(report.requested as f64),
            whole(report.connected as f64),
            report
                .rss_before_kib
                .map_or_else(|| "?".to_owned(), |kib| whole(kib as f64)),
            report
                .rss_after_kib
                .map_or_else(|| "?".to_owned(), |kib| whole(kib as f64)),
            whole(report.connects_per_sec),
            report.handshake.p50_us,
            report.handshake.p99_us,
            cpu(Some(report.generator_cpu_percent)),
            cpu(report.broker_cpu_percent),
        );
    }
    if let Some(fill) = &results.fill {
        let _ = writeln!(
            out,
            "\nStore for the restart: `aliot-bench fill-store` wrote {} sessions and {} messages in {} synced commits, {:.1} s, {:.1} MiB.",
            whole(fill.sessions as f64),
            whole(fill.messages as f64),
            whole(fill.commits as f64),
            fill.secs,
            fill.file_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(recovery) = &results.recovery {
        let _ = writeln!(
            out,
            "Restart: listening after {:.2} s; broker RSS then {}; the resumed session's messages {}; SIGTERM to exit {:.2} s.",
            recovery.listening_secs,
            recovery.rss_kib.map_or_else(
                || "n/a".to_owned(),
                |kib| format!("{:.0} MiB", kib as f64 / 1024.0)
            ),
            recovery.check.as_ref().map_or_else(
                || "not checked".to_owned(),
                |check| format!(
                    "{} received ({} distinct, {} with DUP, in order: {}) in {:.0} ms",
                    check.received, check.distinct, check.dup, check.in_order, check.millis
                )
            ),
            recovery.stop_secs
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::report::Percentiles;

    /// A latency run of the table's test: half of mosquitto's 100,000 msgs/s there.
    fn at_half_rate(broker: &str, p99_us: f64, missing: u64) -> ThroughputReport {
        ThroughputReport {
            target_publish_rate: Some(50_000.0),
            ..throughput(broker, 50_000.0, p99_us, missing)
        }
    }

    fn throughput(broker: &str, msgs_per_sec: f64, p99_us: f64, missing: u64) -> ThroughputReport {
        ThroughputReport {
            scenario: "one-to-one".to_owned(),
            broker: broker.to_owned(),
            qos: 1,
            publishers: 1,
            subscribers: 1,
            payload_bytes: 64,
            inflight: 32,
            persistent_subscribers: false,
            target_publish_rate: None,
            window_secs: 5.0,
            msgs_per_sec,
            published_per_sec: msgs_per_sec,
            latency: Percentiles {
                count: 10,
                p50_us: p99_us / 2.0,
                p99_us,
                p999_us: p99_us,
                max_us: p99_us,
            },
            published: 0,
            expected_deliveries: 0,
            delivered: 0,
            missing,
            acked: 0,
            lost_connections: 0,
            first_loss: None,
            generator_cpu_percent: 10.0,
            broker_cpu_percent: Some(99.0),
        }
    }

    fn key(broker: &str, run: &str) -> (String, String) {
        (broker.to_owned(), run.to_owned())
    }

    #[test]
    fn ratios_and_targets_come_from_the_same_run() {
        let mut results = ComparisonResults::default();
        results.max.insert(
            key("aliot", "one-to-one-qos1"),
            throughput("aliot", 300_000.0, 900.0, 0),
        );
        results.max.insert(
            key("mosquitto", "one-to-one-qos1"),
            throughput("mosquitto", 100_000.0, 5_000.0, 0),
        );
        results.max.insert(
            key("rumqttd", "one-to-one-qos1"),
            throughput("rumqttd", 200_000.0, 2_000.0, 0),
        );
        results.at_half_rate.insert(
            key("aliot", "one-to-one-qos1"),
            vec![
                at_half_rate("aliot", 900.0, 1),
                at_half_rate("aliot", 150.0, 0),
                at_half_rate("aliot", 120.0, 2),
            ],
        );
        results.at_half_rate.insert(
            key("mosquitto", "one-to-one-qos1"),
            vec![
                at_half_rate("mosquitto", 600.0, 0),
                at_half_rate("mosquitto", 500.0, 0),
                at_half_rate("mosquitto", 700.0, 0),
            ],
        );
        results.notes.push("pinned".to_owned());
        let table = markdown_table(&results);
        assert!(
            table.contains(
                "| 1:1, QoS 1 | msgs/s received, as fast as it goes | 300,000 | 100,000 | 200,000 | 3.00x | 1.50x | ≥ 2x mosquitto | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| 1:1, QoS 1 | p99 µs at half the slowest rate (50,000 msgs/s, median of 3 runs) | 150.0 | 600.0 | n/a | 0.25x | n/a | ≤ mosquitto's | yes |"
            ),
            "{table}"
        );
        // Every repeated run is counted for losses and listed in the details.
        assert!(
            table.contains(
                "| 1:1, QoS 1 | messages missing after the drain (all runs) | 3 | 0 | 0 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| 1:1, QoS 1, at half rate, run 3 of 3 | aliot | 50,000 |"),
            "{table}"
        );
        assert!(table.contains("- pinned"), "{table}");
        // Runs that did not happen read n/a, with no verdict.
        assert!(
            table.contains("| fan-out 1→100, QoS 0 | msgs/s received, as fast as it goes | n/a | n/a | n/a | n/a | n/a | ≥ 2x mosquitto | n/a |"),
            "{table}"
        );
    }

    #[test]
    fn a_qos1_message_missing_fails_its_target() {
        let mut results = ComparisonResults::default();
        results
            .max
            .insert(key("aliot", "fan-in"), throughput("aliot", 10.0, 1.0, 7));
        let table = markdown_table(&results);
        assert!(
            table.contains("| fan-in 100→1, QoS 1 | messages missing after the drain (all runs) | 7 | n/a | n/a |  |  | 0 (QoS 1 loses nothing) | **no** |"),
            "{table}"
        );
    }

    #[test]
    fn connection_and_rrpc_targets_are_absolute() {
        let connections = |broker: &str, rate: f64, bytes: f64| ConnectionsReport {
            scenario: "connections".to_owned(),
            broker: broker.to_owned(),
            requested: 20_000,
            persistent_sessions: false,
            connected: 20_000,
            failed: 0,
            first_failure: None,
            source_addresses: 4,
            concurrency: 64,
            connect_secs: 1.0,
            connects_per_sec: rate,
            handshake: Percentiles::default(),
            rss_before_kib: Some(1),
            rss_after_kib: Some(2),
            bytes_per_connection: Some(bytes),
            open_after_hold: 20_000,
            hold_secs: 2.0,
            generator_cpu_percent: 50.0,
            broker_cpu_percent: Some(90.0),
        };
        let mut results = ComparisonResults::default();
        results
            .connections
            .insert("aliot".to_owned(), connections("aliot", 9_000.0, 4096.0));
        results.connections.insert(
            "mosquitto".to_owned(),
            connections("mosquitto", 3_000.0, 1024.0),
        );
        results.rrpc = Some(RrpcReport {
            scenario: "rrpc".to_owned(),
            broker: "aliot (in-process)".to_owned(),
            devices: 100,
            callers: 100,
            payload_bytes: 64,
            broker_threads: 1,
            window_secs: 5.0,
            calls_per_sec: 60_000.0,
            latency: Percentiles {
                count: 1,
                p50_us: 900.0,
                p99_us: 2_500.0,
                p999_us: 3_000.0,
                max_us: 3_000.0,
            },
            success: 300_000,
            timeout: 0,
            other: 0,
            process_cpu_percent: 180.0,
        });
        let table = markdown_table(&results);
        assert!(table.contains("| 20,000 idle connections | connects/s (aliot: signatures; mosquitto: password file) | 9,000 | 3,000 | n/a | 3.00x | n/a | ≥ 2x mosquitto | yes |"), "{table}");
        assert!(table.contains("| 20,000 idle connections | broker RSS per connection, KiB | 4.00 | 1.00 | n/a | 4.00x | n/a | ≤ 2 KiB | **no** |"), "{table}");
        assert!(
            table.contains("| calls/s | 60,000 | n/a | n/a |  |  | ≥ 50,000 | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| p99 µs | 2500.0 | n/a | n/a |  |  | < 2,000 | **no** |"),
            "{table}"
        );
    }

    #[test]
    fn the_store_table_gives_medians_and_says_which_target_missed() {
        let run = |config: &str, msgs_per_sec: f64, missing: u64| ThroughputReport {
            persistent_subscribers: true,
            ..throughput(config, msgs_per_sec, 100.0, missing)
        };
        let mut results = StoreResults::default();
        results.runs.insert(
            key("aliot-durable", "one-to-one-qos1"),
            vec![
                run("aliot-durable", 70_000.0, 0),
                run("aliot-durable", 90_000.0, 0),
            ],
        );
        results.runs.insert(
            key("aliot-memory", "one-to-one-qos1"),
            vec![
                run("aliot-memory", 400_000.0, 0),
                run("aliot-memory", 420_000.0, 0),
            ],
        );
        results.runs.insert(
            key("mosquitto-persistence", "one-to-one-qos1"),
            vec![
                run("mosquitto-persistence", 50_000.0, 0),
                run("mosquitto-persistence", 30_000.0, 0),
            ],
        );
        results.runs.insert(
            key("aliot-durable", "fan-in"),
            vec![run("aliot-durable", 300_000.0, 1)],
        );
        results.runs.insert(
            key("aliot-memory", "fan-in"),
            vec![run("aliot-memory", 500_000.0, 0)],
        );
        let table = store_table(&results);
        assert!(
            table.contains(
                "| 1:1, QoS 1, persistent subscriber | msgs/s received, as fast as it goes (median of 2 runs) | 80,000 | 410,000 | 40,000 | 2.00x | 0.20x | ≥ 2x mosquitto and ≥ 0.5x in memory | **no** (0.20x in memory) |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| fan-in 100→1, QoS 1, persistent subscriber | msgs/s received, as fast as it goes | 300,000 | 500,000 | n/a | n/a | 0.60x | ≥ 2x mosquitto and ≥ 0.5x in memory | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| fan-in 100→1, QoS 1, persistent subscriber | messages missing after the drain (all runs) | 1 | 0 | n/a |  |  | 0 | **no** |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| 1:1, QoS 1, persistent subscriber, run 2 of 2 | mosquitto, persistence true | 30,000 |"),
            "{table}"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn reports_written_as_json_are_read_back() {
        let dir = std::env::temp_dir().join(format!("aliot-compare-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a temporary folder");
        let report = throughput("aliot", 1.0, 1.0, 0);
        fs::write(
            dir.join("aliot-fan-in.json"),
            serde_json::to_string(&report).expect("serialises"),
        )
        .expect("written");
        fs::write(dir.join("mosquitto-fan-in.json"), "not json").expect("written");
        let error = ComparisonResults::load(&dir, Vec::new()).expect_err("a broken report");
        assert!(
            error.to_string().contains("mosquitto-fan-in.json"),
            "{error}"
        );
        fs::remove_file(dir.join("mosquitto-fan-in.json")).expect("removed");
        for k in 1..=2 {
            fs::write(
                dir.join(format!("aliot-fan-in-{AT_HALF_RATE}-{k}.json")),
                serde_json::to_string(&report).expect("serialises"),
            )
            .expect("written");
        }
        let results = ComparisonResults::load(&dir, Vec::new()).expect("readable");
        assert_eq!(results.max.get(&key("aliot", "fan-in")), Some(&report));
        assert_eq!(
            results.at_half_rate.get(&key("aliot", "fan-in")),
            Some(&vec![report.clone(), report.clone()])
        );
        assert!(results.rrpc.is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
