//! What a scenario reports: one line for people, one JSON object for scripts.

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency the histograms hold: 60 s, in nanoseconds. Longer ones are recorded as
/// 60 s.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits, from 1 ns to [`MAX_LATENCY_NS`].
///
/// ```
/// use aliot_benches::loadgen::report::{Percentiles, latency_histogram};
///
/// let mut histogram = latency_histogram();
/// for micros in 1..=1000 {
///     histogram.saturating_record(micros * 1_000);
/// }
/// let percentiles = Percentiles::of(&histogram);
/// assert_eq!(percentiles.count, 1000);
/// assert!((percentiles.p50_us - 500.0).abs() < 1.0);
/// assert!((percentiles.p99_us - 990.0).abs() < 1.0);
/// ```
#[must_use]
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds, checked by the unit test below: this cannot fail at run time.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .expect("1 ns to 60 s at 3 significant digits is a valid histogram range")
}

/// Latency percentiles in microseconds, and how many samples they are of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds (all zero when it is empty).
    #[must_use]
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Percentiles {
            count: histogram.len(),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50={:.1}µs p99={:.1}µs p99.9={:.1}µs max={:.1}µs",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// The result of a throughput scenario (1:1, fan-in, fan-out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThroughputReport {
    /// Scenario name, e.g. `one-to-one`.
    pub scenario: String,
    /// The broker's label, as given on the command line.
    pub broker: String,
    /// QoS of the publishes and subscriptions.
    pub qos: u8,
    /// Publishing clients.
    pub publishers: usize,
    /// Subscribing clients.
    pub subscribers: usize,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// QoS 1 window per publisher.
    pub inflight: usize,
    /// Whether the subscribers connected with cleanSession=0 (`--persistent-subscribers`);
    /// publishers are always clean. Absent from reports written before the option: `false`.
    #[serde(default)]
    pub persistent_subscribers: bool,
    /// Publishes per second asked for (all publishers together); `None`: as fast as possible.
    pub target_publish_rate: Option<f64>,
    /// Length of the measurement window, after the warm-up, in seconds.
    pub window_secs: f64,
    /// Messages received by the subscribers within the window, per second: the throughput.
    pub msgs_per_sec: f64,
    /// Messages published within the window, per second.
    pub published_per_sec: f64,
    /// Send-to-receive latency of the messages received within the window.
    pub latency: Percentiles,
    /// Messages published over the whole run.
    pub published: u64,
    /// Deliveries the broker owed: published × subscribers reached by each.
    pub expected_deliveries: u64,
    /// Deliveries received over the whole run (warm-up and drain included).
    pub delivered: u64,
    /// Deliveries owed and not received by the end of the drain (QoS 0 may drop).
    pub missing: u64,
    /// QoS 1 publishes acknowledged by the broker.
    pub acked: u64,
    /// Connections lost during the run.
    pub lost_connections: u64,
    /// Why the first lost connection ended, if any did.
    pub first_loss: Option<String>,
    /// CPU of the generator during the window, percent of one core.
    pub generator_cpu_percent: f64,
    /// CPU of the broker during the window, percent of one core (with `--broker-pid`).
    pub broker_cpu_percent: Option<f64>,
}

impl fmt::Display for ThroughputReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<12} qos{} broker={} pubs={} subs={}{} msgs/s={:.0} {} published/s={:.0} \
             missing={} lost-conns={} gen-cpu={:.0}%",
            self.scenario,
            self.qos,
            self.broker,
            self.publishers,
            self.subscribers,
            if self.persistent_subscribers {
                " (persistent)"
            } else {
                ""
            },
            self.msgs_per_sec,
            self.latency,
            self.published_per_sec,
            self.missing,
            self.lost_connections,
            self.generator_cpu_percent,
        )?;
        if let Some(cpu) = self.broker_cpu_percent {
            write!(f, " broker-cpu={cpu:.0}%")?;
        }
        if let Some(rate) = self.target_publish_rate {
            write!(f, " (rate-limited to {rate:.0} publishes/s)")?;
        }
        if let Some(loss) = &self.first_loss {
            write!(f, " first-loss: {loss}")?;
        }
        Ok(())
    }
}

/// The result of the idle connections scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsReport {
    /// Always `connections`.
    pub scenario: String,
    /// The broker's label.
    pub broker: String,
    /// Connections asked for.
    pub requested: usize,
    /// Whether they connected with cleanSession=0 (`connections --persistent`). Absent from
    /// reports written before the option: `false`.
    #[serde(default)]
    pub persistent_sessions: bool,
    /// Connections that got their CONNACK.
    pub connected: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Why the first failure failed, if any did.
    pub first_failure: Option<String>,
    /// Loopback source addresses used.
    pub source_addresses: usize,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// From the first TCP connect to the last CONNACK, seconds.
    pub connect_secs: f64,
    /// Connections accepted per second over that time.
    pub connects_per_sec: f64,
    /// TCP connect to CONNACK, per connection.
    pub handshake: Percentiles,
    /// Broker resident memory before the first connection, KiB (with `--broker-pid`).
    pub rss_before_kib: Option<u64>,
    /// Broker resident memory with every connection open and idle, KiB.
    pub rss_after_kib: Option<u64>,
    /// `(after − before) / connected`, bytes.
    pub bytes_per_connection: Option<f64>,
    /// Connections still open at the end of the idle hold.
    pub open_after_hold: usize,
    /// How long the connections were held idle before the memory reading, seconds.
    pub hold_secs: f64,
    /// CPU of the generator while connecting, percent of one core.
    pub generator_cpu_percent: f64,
    /// CPU of the broker while connecting, percent of one core (with `--broker-pid`).
    pub broker_cpu_percent: Option<f64>,
}

impl fmt::Display for ConnectionsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections  broker={} connected={}/{}{} connects/s={:.0} handshake {} \
             open-after-hold={} gen-cpu={:.0}%",
            self.broker,
            self.connected,
            self.requested,
            if self.persistent_sessions {
                " (persistent sessions)"
            } else {
                ""
            },
            self.connects_per_sec,
            self.handshake,
            self.open_after_hold,
            self.generator_cpu_percent,
        )?;
        if let Some(cpu) = self.broker_cpu_percent {
            write!(f, " broker-cpu={cpu:.0}%")?;
        }
        if let (Some(before), Some(after)) = (self.rss_before_kib, self.rss_after_kib) {
            write!(f, " rss={before}KiB->{after}KiB")?;
        }
        if let Some(bytes) = self.bytes_per_connection {
            write!(f, " per-conn={:.2}KiB", bytes / 1024.0)?;
        }
        if let Some(failure) = &self.first_failure {
            write!(f, " failed={} first-failure: {failure}", self.failed)?;
        }
        Ok(())
    }
}

/// The result of the RRPC scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RrpcReport {
    /// Always `rrpc`.
    pub scenario: String,
    /// Always `aliot (in-process)`.
    pub broker: String,
    /// Simulated devices answering.
    pub devices: usize,
    /// Concurrent callers.
    pub callers: usize,
    /// Payload bytes per request (and response).
    pub payload_bytes: usize,
    /// Worker threads of the broker's runtime (1: a current-thread runtime).
    pub broker_threads: usize,
    /// Length of the measurement window, seconds.
    pub window_secs: f64,
    /// `SUCCESS` calls completed within the window, per second.
    pub calls_per_sec: f64,
    /// Call latency (call to answer) of the `SUCCESS` calls within the window.
    pub latency: Percentiles,
    /// Calls completed over the whole run, by outcome.
    pub success: u64,
    /// `TIMEOUT` answers.
    pub timeout: u64,
    /// `OFFLINE`, `HALFCONN` and `UNKNOWN` answers, and calls the broker refused.
    pub other: u64,
    /// CPU of the whole process (broker and devices) during the window, percent of one core.
    pub process_cpu_percent: f64,
}

impl fmt::Display for RrpcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rrpc         broker={} devices={} callers={} calls/s={:.0} {} success={} \
             timeout={} other={} cpu={:.0}%",
            self.broker,
            self.devices,
            self.callers,
            self.calls_per_sec,
            self.latency,
            self.success,
            self.timeout,
            self.other,
            self.process_cpu_percent,
        )
    }
}

/// The result of the gateway scenario: one gateway logging in its sub-devices, then posting
/// for them, against as many devices connected directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayReport {
    /// Always `gateway`.
    pub scenario: String,
    /// The broker's label.
    pub broker: String,
    /// Sub-devices of the gateway, and direct devices beside them.
    pub sub_devices: usize,
    /// `thing/topo/add` requests that put them in the gateway's topology (not timed with the
    /// logins).
    pub topology_requests: usize,
    /// From the first of them to the last reply, seconds.
    pub topology_secs: f64,
    /// Sub-devices per `combine/batch_login`.
    pub login_batch: usize,
    /// `batch_login` requests, sent one at a time (each after the reply to the one before).
    pub login_batches: usize,
    /// From the first `batch_login` to the last reply, seconds.
    pub login_secs: f64,
    /// Sub-devices logged in per second over that time.
    pub logins_per_sec: f64,
    /// Each `batch_login`'s round trip, request to reply.
    pub login_batch_latency: Percentiles,
    /// Posts waiting for their reply, at most, on each side: the gateway's window, and the sum
    /// of the direct devices' (`inflight_total / sub_devices` each).
    pub inflight_total: usize,
    /// QoS 1 posts awaiting their PUBACK on the gateway's connection, at most (its MQTT
    /// window; the other posts waiting for their reply wait in its client's queue).
    pub gateway_window: usize,
    /// Which side posted first: `gateway-first` or `direct-first`.
    pub order: String,
    /// The gateway's posts for its sub-devices (one publisher: the gateway; `inflight` its
    /// window).
    pub through_gateway: ThroughputReport,
    /// The direct devices' posts (`property-post`; `inflight` each device's window).
    pub direct: ThroughputReport,
    /// Replies per second through the gateway ÷ replies per second of the direct devices.
    pub ratio: f64,
}

impl fmt::Display for GatewayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gateway      broker={} subs={} topology={:.1}ms ({} requests) logins: {:.1}ms \
             logins/s={:.0} (batches of {}, one at a time, round trip p50={:.1}µs \
             p99={:.1}µs) posts waiting={} (gateway MQTT window {}) {}: through the gateway msgs/s={:.0} p50={:.1}µs \
             p99={:.1}µs gen-cpu={:.0}%{}; direct msgs/s={:.0} p50={:.1}µs p99={:.1}µs \
             gen-cpu={:.0}%{}; ratio={:.3}",
            self.broker,
            self.sub_devices,
            self.topology_secs * 1e3,
            self.topology_requests,
            self.login_secs * 1e3,
            self.logins_per_sec,
            self.login_batch,
            self.login_batch_latency.p50_us,
            self.login_batch_latency.p99_us,
            self.inflight_total,
            self.gateway_window,
            self.order,
            self.through_gateway.msgs_per_sec,
            self.through_gateway.latency.p50_us,
            self.through_gateway.latency.p99_us,
            self.through_gateway.generator_cpu_percent,
            broker_cpu(self.through_gateway.broker_cpu_percent),
            self.direct.msgs_per_sec,
            self.direct.latency.p50_us,
            self.direct.latency.p99_us,
            self.direct.generator_cpu_percent,
            broker_cpu(self.direct.broker_cpu_percent),
            self.ratio,
        )
    }
}

/// ` broker-cpu=N%`, or nothing when the broker's CPU was not read.
fn broker_cpu(percent: Option<f64>) -> String {
    percent.map_or_else(String::new, |cpu| format!(" broker-cpu={cpu:.0}%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_holds_a_minute_and_saturates_beyond() {
        let mut histogram = latency_histogram();
        histogram.saturating_record(MAX_LATENCY_NS * 2);
        histogram.saturating_record(1);
        assert_eq!(histogram.len(), 2);
        assert!(histogram.max() >= MAX_LATENCY_NS);
    }

    #[test]
    fn an_empty_histogram_has_zero_percentiles() {
        assert_eq!(
            Percentiles::of(&latency_histogram()),
            Percentiles::default()
        );
    }
}
