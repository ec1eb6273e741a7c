//! aliot's durable store from outside: a store filled directly through its public API
//! ([`fill_store`]), and the time an `aliot serve` takes to start on it ([`measure_recovery`]).
//!
//! [`fill_store`] writes what a broker would have written for `sessions` cleanSession=0
//! sessions of open-mode clients (`fill-00000`, `fill-00001`, …), each subscribed at QoS 1 to
//! its own topic `bench/fill/{client id}` and offline since now, with `messages` QoS 1
//! messages queued on that topic: the [`StoreChange`]s the hub records, committed (synced) in
//! batches through [`RedbStore`], the broker's own store. Each payload starts with the
//! message's place in its session (8 bytes, big-endian), so that a reader can check the order.
//!
//! [`measure_recovery`] starts `aliot serve --config FILE --data-dir DIR` as a child process
//! and times it from just before the spawn to its `aliot: listening for MQTT on …` line on
//! stdout; it also reads the `store restored` log line (sessions, messages, `read_ms`,
//! `took_ms`) from stderr and the broker's resident memory once it listens. Then, optionally,
//! one client connects with cleanSession=0 and the id of a filled session and counts what the
//! broker delivers of its queue. The broker is stopped with SIGTERM at the end.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, fs, thread};

use aliot_core::client::{ClientConfig, Connection, Credentials, Event};
use aliot_core::codec::QoS;
use aliot_core::hub::durable::{SessionRecord, StoreChange, StoredMessage};
use aliot_core::{ClientFeatures, ClientKey};
use aliot_tokio::store::{RedbStore, STORE_FILE_NAME, Store};
use aliot_topic::{TopicFilter, TopicLimits, TopicName};
use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::LoadError;
use super::clock::RunClock;
use super::login::KEEP_ALIVE_SECS;
use super::procfs::{self, Process};
use super::target::Target;

/// The bytes at the start of each filled payload: the message's place in its session.
pub const PLACE_LEN: usize = 8;

/// What [`fill_store`] writes.
#[derive(Clone, Debug)]
pub struct FillSpec {
    /// The data directory (absent or empty: a new store is made in it).
    pub dir: PathBuf,
    /// cleanSession=0 sessions.
    pub sessions: usize,
    /// QoS 1 messages queued per session.
    pub messages: usize,
    /// Payload bytes per message (at least [`PLACE_LEN`]).
    pub payload_len: usize,
    /// Changes per commit (each commit synced).
    pub batch: usize,
}

impl FillSpec {
    /// 10,000 sessions × 100 messages of 100 bytes, 10,000 changes per commit.
    #[must_use]
    pub fn new(dir: PathBuf) -> FillSpec {
        FillSpec {
            dir,
            sessions: 10_000,
            messages: 100,
            payload_len: 100,
            batch: 10_000,
        }
    }
}

/// The client id of filled session `index`: `fill-00042`.
///
/// ```
/// use aliot_benches::loadgen::recovery::fill_client_id;
///
/// assert_eq!(fill_client_id(42), "fill-00042");
/// ```
#[must_use]
pub fn fill_client_id(index: usize) -> String {
    format!("fill-{index:05}")
}

/// The topic (and the filter) of filled session `index`: `bench/fill/fill-00042`.
#[must_use]
pub fn fill_topic(index: usize) -> String {
    format!("bench/fill/{}", fill_client_id(index))
}

/// What [`fill_store`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillReport {
    /// Always `fill-store`.
    pub scenario: String,
    /// The data directory.
    pub dir: String,
    /// Sessions written.
    pub sessions: usize,
    /// Messages per session.
    pub messages_per_session: usize,
    /// Messages written in all.
    pub messages: u64,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Transactions committed (each synced).
    pub commits: u64,
    /// From opening the store to the last commit, seconds.
    pub secs: f64,
    /// The size of the store's file afterwards.
    pub file_bytes: u64,
    /// The first session's client id (the others count up from it).
    pub first_client: String,
    /// The last session's client id.
    pub last_client: String,
}

impl fmt::Display for FillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fill-store   dir={} sessions={} ({}..{}) messages={} ({} each, {} B payloads) \
             commits={} took={:.2}s file={:.1}MiB",
            self.dir,
            self.sessions,
            self.first_client,
            self.last_client,
            self.messages,
            self.messages_per_session,
            self.payload_bytes,
            self.commits,
            self.secs,
            self.file_bytes as f64 / (1024.0 * 1024.0),
        )
    }
}

/// The wall clock now, as the store keeps it.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// aliot-services' `UnixMillis` from its number. The type is not re-exported by the crates
/// this one depends on; it is serde-transparent, so it is made from its number here rather
/// than by adding a dependency (and changing the workspace's lock file) for one constructor.
fn unix_millis<T: DeserializeOwned>(ms: u64) -> Result<T, LoadError> {
    serde_json::from_value(serde_json::Value::from(ms))
        .map_err(|error| LoadError::Parameter(format!("a wall clock of {ms} ms: {error}")))
}

/// Writes `spec.sessions` offline cleanSession=0 sessions with `spec.messages` queued QoS 1
/// messages each into a new store in `spec.dir`, through [`RedbStore`] and
/// [`Store::commit`] (synced), `spec.batch` changes per commit; sessions in order, each
/// followed by its messages, sequence numbers growing from 1 as the hub's do.
///
/// # Errors
///
/// [`LoadError::Parameter`] for a `dir` that is not empty or a payload shorter than
/// [`PLACE_LEN`]; [`LoadError::Store`] when the store cannot be opened or written.
pub fn fill_store(spec: &FillSpec) -> Result<FillReport, LoadError> {
    if spec.payload_len < PLACE_LEN {
        return Err(LoadError::Parameter(format!(
            "--payload {} is shorter than the {PLACE_LEN} bytes of each message's place",
            spec.payload_len
        )));
    }
    let occupied = fs::read_dir(&spec.dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(LoadError::Parameter(format!(
            "{} is not empty: fill-store writes a new store (remove the directory, or name \
             another)",
            spec.dir.display()
        )));
    }
    let limits = TopicLimits::default();
    let started = Instant::now();
    let mut store = RedbStore::open(&spec.dir)?;
    let now: u64 = now_millis();
    let batch = spec.batch.max(1);
    let mut changes: Vec<StoreChange> = Vec::with_capacity(batch);
    let mut commits = 0_u64;
    let mut commit = |changes: &mut Vec<StoreChange>, store: &mut RedbStore| {
        store.commit(changes, true)?;
        changes.clear();
        commits += 1;
        Ok::<(), LoadError>(())
    };
    let mut seq = 0_u64;
    for index in 0..spec.sessions {
        let key = Arc::new(ClientKey::Client(fill_client_id(index)));
        let topic_text = fill_topic(index);
        let topic = TopicName::new(&topic_text, &limits).map_err(|error| LoadError::Topic {
            topic: topic_text.clone(),
            error,
        })?;
        let filter = TopicFilter::new(&topic_text, &limits).map_err(|error| LoadError::Topic {
            topic: topic_text.clone(),
            error,
        })?;
        changes.push(StoreChange::SessionSaved(SessionRecord {
            key: Arc::clone(&key),
            subscriptions: vec![(filter, QoS::AtLeastOnce)],
            features: ClientFeatures::default(),
            suppressed: Vec::new(),
            keep_alive: Duration::from_secs(u64::from(KEEP_ALIVE_SECS)),
            offline_since: Some(unix_millis(now)?),
        }));
        if changes.len() >= batch {
            commit(&mut changes, &mut store)?;
        }
        for place in 0..spec.messages {
            seq += 1;
            let mut payload = vec![b'x'; spec.payload_len];
            if let Some(head) = payload.get_mut(..PLACE_LEN) {
                head.copy_from_slice(&(place as u64).to_be_bytes());
            }
            changes.push(StoreChange::MessageSaved {
                session: Arc::clone(&key),
                seq,
                message: StoredMessage {
                    topic: topic.clone(),
                    payload: Bytes::from(payload),
                    at: unix_millis(now)?,
                },
            });
            if changes.len() >= batch {
                commit(&mut changes, &mut store)?;
            }
        }
    }
    if !changes.is_empty() {
        commit(&mut changes, &mut store)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let file = store.path().to_path_buf();
    drop(store);
    let file_bytes = fs::metadata(&file).map_or(0, |meta| meta.len());
    Ok(FillReport {
        scenario: "fill-store".to_owned(),
        dir: spec.dir.display().to_string(),
        sessions: spec.sessions,
        messages_per_session: spec.messages,
        messages: seq,
        payload_bytes: spec.payload_len,
        commits,
        secs,
        file_bytes,
        first_client: fill_client_id(0),
        last_client: fill_client_id(spec.sessions.saturating_sub(1)),
    })
}

/// How [`measure_recovery`] starts the broker and what it checks.
#[derive(Clone, Debug)]
pub struct RecoverySpec {
    /// The `aliot` binary.
    pub aliot: PathBuf,
    /// Its configuration (`--config`): open mode, for the check's client.
    pub config: PathBuf,
    /// The data directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// A filled session to resume after the start (`None`: no check).
    pub check_client: Option<String>,
    /// Messages that session should receive.
    pub expect: usize,
    /// The most the broker may take to listen.
    pub start_timeout: Duration,
    /// The most the check may take.
    pub check_timeout: Duration,
}

/// The broker's `store restored` log line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredLog {
    /// Sessions restored.
    pub sessions: Option<u64>,
    /// Messages restored.
    pub messages: Option<u64>,
    /// Expired sessions removed.
    pub expired_sessions: Option<u64>,
    /// Messages dropped (too old, or of no session).
    pub dropped_messages: Option<u64>,
    /// Reading the store (`load`), ms.
    pub read_ms: Option<u64>,
    /// Opening, reading, restoring into the hub and committing what the restore changed, ms.
    pub took_ms: Option<u64>,
}

impl RestoredLog {
    /// The fields of a `store restored` line (`key=value` words; others ignored).
    ///
    /// ```
    /// use aliot_benches::loadgen::recovery::RestoredLog;
    ///
    /// let line = "2026-12-05T10:00:00Z  INFO aliot_io::broker: store restored \
    ///             location=/tmp/d durability=immediate sessions=3 messages=300 devices=0 \
    ///             expired_sessions=0 dropped_messages=0 read_ms=12 took_ms=20";
    /// let log = RestoredLog::parse(line);
    /// assert_eq!((log.sessions, log.messages), (Some(3), Some(300)));
    /// assert_eq!((log.read_ms, log.took_ms), (Some(12), Some(20)));
    /// ```
    #[must_use]
    pub fn parse(line: &str) -> RestoredLog {
        let mut log = RestoredLog::default();
        for word in line.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.parse().ok();
            match key {
                "sessions" => log.sessions = value,
                "messages" => log.messages = value,
                "expired_sessions" => log.expired_sessions = value,
                "dropped_messages" => log.dropped_messages = value,
                "read_ms" => log.read_ms = value,
                "took_ms" => log.took_ms = value,
                _ => {}
            }
        }
        log
    }
}

/// What the resumed session received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionCheck {
    /// Its client id.
    pub client_id: String,
    /// The CONNACK's session present flag.
    pub session_present: bool,
    /// Messages expected.
    pub expected: usize,
    /// Messages received (duplicates included).
    pub received: usize,
    /// Of them, with DUP set.
    pub dup: usize,
    /// Distinct places (the first 8 payload bytes) received.
    pub distinct: usize,
    /// Whether the places came in order (each after the one before).
    pub in_order: bool,
    /// From the TCP connect to the last message expected (or the timeout), ms.
    pub millis: f64,
}

/// What [`measure_recovery`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Always `recovery`.
    pub scenario: String,
    /// The data directory.
    pub data_dir: String,
    /// The store's file size at the start.
    pub file_bytes: u64,
    /// From just before the spawn to the `listening for MQTT` line, seconds.
    pub listening_secs: f64,
    /// The `store restored` log line, if the broker wrote one.
    pub restored: Option<RestoredLog>,
    /// The broker's resident memory once listening, KiB.
    pub rss_kib: Option<u64>,
    /// The resumed session, if checked.
    pub check: Option<SessionCheck>,
    /// From SIGTERM to the broker's exit, seconds.
    pub stop_secs: f64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovery     file={:.1}MiB listening after {:.3}s",
            self.file_bytes as f64 / (1024.0 * 1024.0),
            self.listening_secs
        )?;
        if let Some(log) = &self.restored {
            let show = |value: Option<u64>| value.map_or_else(|| "?".to_owned(), |v| v.to_string());
            write!(
                f,
                " (store restored: sessions={} messages={} read_ms={} took_ms={})",
                show(log.sessions),
                show(log.messages),
                show(log.read_ms),
                show(log.took_ms)
            )?;
        }
        if let Some(rss) = self.rss_kib {
            write!(f, " rss={:.1}MiB", rss as f64 / 1024.0)?;
        }
        if let Some(check) = &self.check {
            write!(
                f,
                " {}: session-present={} received={}/{} (dup {}, distinct {}, in order {}) in {:.1}ms",
                check.client_id,
                check.session_present,
                check.received,
                check.expected,
                check.dup,
                check.distinct,
                check.in_order,
                check.millis
            )?;
        }
        write!(f, " stop={:.2}s", self.stop_secs)
    }
}

/// A line from the broker's stdout or stderr, and when it was read.
enum Line {
    Out(String, Instant),
    Err(String),
}

/// Reads `from` line by line into `to` until its end (sends that fail are ignored: the pipe is
/// drained to the end whatever happens, so that the broker never blocks on it).
fn forward(from: impl Read + Send + 'static, to: mpsc::Sender<Line>, stdout: bool) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let line = if stdout {
                Line::Out(line, Instant::now())
            } else {
                Line::Err(line)
            };
            let _ = to.send(line);
        }
    });
}

/// The broker process: stopped with SIGTERM (then killed after 30 s) when dropped unstopped.
struct Broker {
    child: Child,
    stopped: bool,
}

impl Broker {
    /// SIGTERM, then waits; kills it after 30 s. How long it took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if !self.stopped {
            self.stopped = true;
            terminate(&mut self.child);
            let deadline = started + Duration::from_secs(30);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        started.elapsed()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(target_os = "linux")]
fn terminate(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    match i32::try_from(child.id()) {
        Ok(pid) if kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok() => {}
        _ => {
            let _ = child.kill();
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn terminate(child: &mut Child) {
    let _ = child.kill();
}

/// Starts `aliot serve --config … --data-dir …` (with `RUST_LOG=info`, for the `store
/// restored` line), times it to its `listening for MQTT` line, reads its resident memory,
/// optionally resumes one filled session and counts its messages, and stops it.
///
/// # Errors
///
/// [`LoadError::BrokerProcess`] when the broker cannot be started, ends before it listens or
/// does not listen within `spec.start_timeout` (with the end of its stderr);
/// [`LoadError::NotLoopback`] when it listens elsewhere; the check's connection errors.
pub async fn measure_recovery(spec: &RecoverySpec) -> Result<RecoveryReport, LoadError> {
    let file_bytes = store_file_bytes(&spec.data_dir).unwrap_or(0);
    let (to_main, lines) = mpsc::channel();
    let started = Instant::now();
    let child = Command::new(&spec.aliot)
        .arg("serve")
        .arg("--config")
        .arg(&spec.config)
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            LoadError::BrokerProcess(format!("cannot start {}: {error}", spec.aliot.display()))
        })?;
    let mut broker = Broker {
        child,
        stopped: false,
    };
    if let Some(stdout) = broker.child.stdout.take() {
        forward(stdout, to_main.clone(), true);
    }
    if let Some(stderr) = broker.child.stderr.take() {
        forward(stderr, to_main, false);
    }
    let start_timeout = spec.start_timeout;
    let (listening, restored, lines) =
        tokio::task::spawn_blocking(move || wait_for_listening(lines, started, start_timeout))
            .await
            .map_err(|error| LoadError::BrokerProcess(format!("the waiting thread: {error}")))??;
    let (addr, listening_at) = listening;
    let rss_kib = procfs::resident_kib(Process::Pid(broker.child.id())).ok();
    let target = Target::from_addr(addr)?;
    let check = match &spec.check_client {
        Some(client_id) => {
            Some(check_session(target, client_id, spec.expect, spec.check_timeout).await?)
        }
        None => None,
    };
    let stop = tokio::task::spawn_blocking(move || {
        let took = broker.stop();
        drop(lines);
        took
    })
    .await
    .unwrap_or_default();
    Ok(RecoveryReport {
        scenario: "recovery".to_owned(),
        data_dir: spec.data_dir.display().to_string(),
        file_bytes,
        listening_secs: listening_at.duration_since(started).as_secs_f64(),
        restored,
        rss_kib,
        check,
        stop_secs: stop.as_secs_f64(),
    })
}

/// The prefix of the line `aliot serve` prints on stdout for each listener.
const LISTENING: &str = "aliot: listening for MQTT on ";

type Listening = (
    (SocketAddr, Instant),
    Option<RestoredLog>,
    mpsc::Receiver<Line>,
);

/// Reads the broker's lines until it listens (and, a little longer, until the `store
/// restored` line, which comes on the other pipe).
fn wait_for_listening(
    lines: mpsc::Receiver<Line>,
    started: Instant,
    timeout: Duration,
) -> Result<Listening, LoadError> {
    let deadline = started + timeout;
    let mut listening = None;
    let mut restored = None;
    let mut tail: Vec<String> = Vec::new();
    loop {
        if let Some(listening) = listening
            && restored.is_some()
        {
            return Ok((listening, restored, lines));
        }
        // Once listening, the log line is given a moment to arrive through its own pipe.
        let wait_until = match listening {
            Some((_, at)) => deadline.min(at + Duration::from_secs(1)),
            None => deadline,
        };
        let wait = wait_until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(Line::Out(line, at)) => {
                if listening.is_none()
                    && let Some(rest) = line.strip_prefix(LISTENING)
                {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let addr = addr.parse::<SocketAddr>().map_err(|error| {
                        LoadError::BrokerProcess(format!(
                            "cannot read the address in {line:?}: {error}"
                        ))
                    })?;
                    listening = Some((addr, at));
                }
            }
            Ok(Line::Err(line)) => {
                if line.contains("store restored") {
                    restored = Some(RestoredLog::parse(&line));
                }
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(listening) = listening {
                    return Ok((listening, restored, lines));
                }
                return Err(LoadError::BrokerProcess(format!(
                    "not listening after {} s; the end of its stderr:\n{}",
                    timeout.as_secs_f64(),
                    tail.join("\n")
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(LoadError::BrokerProcess(format!(
                    "it ended before listening; the end of its stderr:\n{}",
                    tail.join("\n")
                )));
            }
        }
    }
}

/// Connects `client_id` with cleanSession=0 (open login, no SUBSCRIBE: the session has its
/// subscription) and counts the messages the broker delivers, acknowledging each, until
/// `expect` have come and 200 ms more passed without another, or until `timeout`.
///
/// # Errors
///
/// The connection's errors: TCP, I/O, a refused CONNECT, credentials.
pub async fn check_session(
    target: Target,
    client_id: &str,
    expect: usize,
    timeout: Duration,
) -> Result<SessionCheck, LoadError> {
    const SETTLE: Duration = Duration::from_millis(200);
    let io_error = |error| LoadError::Io {
        client_id: client_id.to_owned(),
        error,
    };
    let clock = RunClock::start();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut config = ClientConfig::new(Credentials::anonymous(client_id)?);
    config.clean_session = false;
    config.keep_alive_secs = KEEP_ALIVE_SECS;
    let mut conn = Connection::new(config);
    let addr = target.addr();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|error| LoadError::Connect {
            addr,
            source_addr: SocketAddr::new(addr.ip(), 0),
            error,
        })?;
    stream.set_nodelay(true).map_err(io_error)?;
    conn.connect(clock.core_now());
    let mut check = SessionCheck {
        client_id: client_id.to_owned(),
        expected: expect,
        in_order: true,
        ..SessionCheck::default()
    };
    let mut last_place: Option<u64> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut last_message = started;
    let mut out = BytesMut::new();
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Connected { session_present } => check.session_present = session_present,
                Event::ConnectRefused(code) => {
                    return Err(LoadError::Refused {
                        client_id: client_id.to_owned(),
                        code,
                    });
                }
                Event::Message { message, dup } => {
                    check.received += 1;
                    check.dup += usize::from(dup);
                    last_message = Instant::now();
                    let place = message
                        .payload
                        .get(..PLACE_LEN)
                        .and_then(|head| <[u8; PLACE_LEN]>::try_from(head).ok())
                        .map(u64::from_be_bytes);
                    if let Some(place) = place {
                        if last_place.is_some_and(|last| place <= last) {
                            check.in_order = false;
                        }
                        last_place = Some(place);
                        seen.insert(place);
                    }
                    if check.received == expect {
                        check.millis = started.elapsed().as_secs_f64() * 1e3;
                    }
                }
                _ => {}
            }
        }
        while conn.poll_transmit(&mut out) {
            stream.write_all(&out).await.map_err(io_error)?;
            out.clear();
        }
        let now = Instant::now();
        let settled = check.received >= expect && now >= last_message + SETTLE;
        if settled || now >= deadline {
            break;
        }
        let wait_until = if check.received >= expect {
            (last_message + SETTLE).min(deadline)
        } else {
            deadline
        };
        let read = tokio::time::timeout_at(wait_until.into(), stream.read(&mut buf)).await;
        match read {
            Err(_) => {}
            Ok(Ok(0)) => break,
            Ok(Ok(read)) => {
                if let Some(bytes) = buf.get(..read) {
                    conn.handle_input(clock.core_now(), bytes);
                }
            }
            Ok(Err(error)) => return Err(io_error(error)),
        }
    }
    if check.received < expect {
        check.millis = started.elapsed().as_secs_f64() * 1e3;
    }
    check.distinct = seen.len();
    conn.disconnect(clock.core_now());
    while conn.poll_transmit(&mut out) {
        let _ = stream.write_all(&out).await;
        out.clear();
    }
    let _ = stream.shutdown().await;
    Ok(check)
}

/// The size of the store's file in `dir`, if there is one.
#[must_use]
pub fn store_file_bytes(dir: &Path) -> Option<u64> {
    fs::metadata(dir.join(STORE_FILE_NAME))
        .ok()
        .map(|meta| meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_goes_into_the_stores_type() {
        let at: aliot_core::hub::durable::StoredMessage = StoredMessage {
            topic: TopicName::new("a/b", &TopicLimits::default()).expect("valid"),
            payload: Bytes::new(),
            at: unix_millis(1_234).expect("a number"),
        };
        assert_eq!(serde_json::to_string(&at.at).expect("serialises"), "1234");
    }

    #[test]
    fn a_restored_line_without_fields_reads_as_empty() {
        assert_eq!(RestoredLog::parse("store restored"), RestoredLog::default());
    }
}
