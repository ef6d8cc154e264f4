//! The gateway's metrics in the Prometheus text exposition format 0.0.4,
//! written by hand (the format is small; the `prometheus` crate would bring
//! a global registry we do not want).
//!
//! Each gateway owns one [`Metrics`] (no global statics: several gateways
//! run in one test process). Updates are cheap from many threads: atomics
//! for histograms and plain values, a short mutex for labelled counters.
//! Label cardinality stays bounded: rack and operation names come from the
//! config and the route table, statuses are numbers, and each family holds
//! at most [`MAX_SERIES`] series; updates beyond that are dropped and
//! counted in `rack_gateway_metrics_series_dropped_total`.
//!
//! Values only known elsewhere (rate limiter keys, token cache hits, audit
//! records dropped) are passed to [`Metrics::render`] as [`Extra`]s.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The most series one labelled family holds.
pub(crate) const MAX_SERIES: usize = 10_000;

/// Histogram bucket upper bounds in seconds, roughly exponential (1, 2.5, 5
/// per decade) from half a millisecond to 30 seconds.
pub(crate) const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A value's type in the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A value kept elsewhere, rendered as its own unlabelled family. A
/// counter's name must end in `_total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extra<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: Kind,
    pub value: f64,
}

impl<'a> Extra<'a> {
    pub fn gauge(name: &'a str, help: &'a str, value: f64) -> Extra<'a> {
        Extra {
            name,
            help,
            kind: Kind::Gauge,
            value,
        }
    }

    pub fn counter(name: &'a str, help: &'a str, value: f64) -> Extra<'a> {
        Extra {
            name,
            help,
            kind: Kind::Counter,
            value,
        }
    }
}

/// A latency histogram with the fixed [`BUCKETS`].
struct Histogram {
    bounds_ns: [u64; BUCKETS.len()],
    /// Per bucket (not cumulative), plus one above the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            bounds_ns: BUCKETS.map(|s| (s * 1e9).round() as u64),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // `le` is inclusive: the first bound at or above the value.
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                float(*bound)
            );
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {}", float(sum));
        // The count is the +Inf bucket, so the two always agree even while
        // observations race with rendering.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

struct Series {
    labels: Box<[Box<str>]>,
    value: i64,
}

/// The series of one labelled family. Looked up by `&[&str]` without
/// allocating: series are grouped by the hash of their label values.
struct Family {
    names: &'static [&'static str],
    hasher: RandomState,
    series: HashMap<u64, Vec<Series>>,
    len: usize,
}

impl Family {
    fn new(names: &'static [&'static str]) -> Family {
        Family {
            names,
            hasher: RandomState::new(),
            series: HashMap::new(),
            len: 0,
        }
    }

    /// Adds `delta` to the series; `false` when it would be a new series
    /// beyond [`MAX_SERIES`].
    fn add(&mut self, values: &[&str], delta: i64) -> bool {
        debug_assert_eq!(values.len(), self.names.len());
        let h = self.hasher.hash_one(values);
        let group = self.series.entry(h).or_default();
        if let Some(s) = group
            .iter_mut()
            .find(|s| s.labels.iter().map(|l| &**l).eq(values.iter().copied()))
        {
            s.value += delta;
            return true;
        }
        if self.len >= MAX_SERIES {
            return false;
        }
        group.push(Series {
            labels: values.iter().map(|v| Box::from(*v)).collect(),
            value: delta,
        });
        self.len += 1;
        true
    }

    fn render(&self, out: &mut String, name: &str, help: &str, kind: Kind) {
        header(out, name, help, kind.as_str());
        let mut all: Vec<&Series> = self.series.values().flatten().collect();
        all.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        for s in all {
            out.push_str(name);
            out.push('{');
            for (i, (n, v)) in self.names.iter().zip(s.labels.iter()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(n);
                out.push_str("=\"");
                escape_label_value(out, v);
                out.push('"');
            }
            let _ = writeln!(out, "}} {}", s.value);
        }
    }
}

#[derive(Debug, Clone)]
struct ConfigInfo {
    commit: String,
    source: String,
    loaded_at_unix: i64,
}

/// The metrics of one gateway. `Send + Sync`; share it behind an `Arc`.
pub struct Metrics {
    requests: Mutex<Family>,
    overhead: Histogram,
    upstream: Histogram,
    sessions: Mutex<Family>,
    rate_limited: Mutex<Family>,
    rejected: Mutex<Family>,
    reloads: Mutex<Family>,
    config: Mutex<Option<ConfigInfo>>,
    last_reload_failed: AtomicBool,
    series_dropped: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The label values every gateway reports from the start (at zero), so
/// that rates and alerts work before the first event.
const RATE_LIMIT_BUCKETS: &[&str] = &["identity", "expensive", "auth_failures"];
const REJECT_REASONS: &[&str] = &[
    "bad_request",
    "unauthenticated",
    "forbidden",
    "no_config",
    "audit_unavailable",
];
const RELOAD_RESULTS: &[&str] = &["ok", "failed"];

impl Metrics {
    pub fn new() -> Metrics {
        let preset = |names: &'static [&'static str], values: &[&str]| {
            let mut f = Family::new(names);
            for v in values {
                f.add(&[v], 0);
            }
            Mutex::new(f)
        };
        Metrics {
            requests: Mutex::new(Family::new(&["rack", "operation", "decision", "status"])),
            overhead: Histogram::new(),
            upstream: Histogram::new(),
            sessions: Mutex::new(Family::new(&["kind"])),
            rate_limited: preset(&["bucket"], RATE_LIMIT_BUCKETS),
            rejected: preset(&["reason"], REJECT_REASONS),
            reloads: preset(&["result"], RELOAD_RESULTS),
            config: Mutex::new(None),
            last_reload_failed: AtomicBool::new(false),
            series_dropped: AtomicU64::new(0),
        }
    }

    fn add(&self, family: &Mutex<Family>, values: &[&str], delta: i64) {
        if !lock(family).add(values, delta) {
            self.series_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request answered: `rack_gateway_requests_total`.
    pub fn request(&self, rack: &str, operation: &str, decision: &str, status: u16) {
        let mut buf = [0u8; 5];
        let status = u16_str(&mut buf, status);
        self.add(&self.requests, &[rack, operation, decision, status], 1);
    }

    /// Time spent in the gateway before forwarding:
    /// `rack_gateway_overhead_seconds`.
    pub(crate) fn observe_overhead(&self, d: Duration) {
        self.overhead.observe(d);
    }

    /// Time from forwarding to the rack's response headers:
    /// `rack_gateway_upstream_seconds`.
    pub(crate) fn observe_upstream(&self, d: Duration) {
        self.upstream.observe(d);
    }

    /// A websocket session of `kind` opened:
    /// `rack_gateway_websocket_sessions`.
    pub(crate) fn session_opened(&self, kind: &str) {
        self.add(&self.sessions, &[kind], 1);
    }

    pub(crate) fn session_closed(&self, kind: &str) {
        self.add(&self.sessions, &[kind], -1);
    }

    /// A request refused by a rate limit: `rack_gateway_rate_limited_total`,
    /// `bucket` one of `identity`, `expensive`, `auth_failures`
    /// ([`crate::ratelimit::Bucket::as_str`]).
    pub(crate) fn rate_limited(&self, bucket: &str) {
        self.add(&self.rate_limited, &[bucket], 1);
    }

    /// A request refused before forwarding: `rack_gateway_rejected_total`,
    /// `reason` one of `bad_request`, `unauthenticated`, `forbidden`,
    /// `no_config`, `audit_unavailable`.
    pub fn rejected(&self, reason: &str) {
        self.add(&self.rejected, &[reason], 1);
    }

    /// A configuration reload: `rack_gateway_config_reloads_total`.
    pub fn reload(&self, ok: bool) {
        self.add(&self.reloads, &[if ok { "ok" } else { "failed" }], 1);
    }

    /// The configuration in use: `rack_gateway_config_info{commit,source}`
    /// and `rack_gateway_config_loaded_timestamp_seconds`.
    pub(crate) fn set_config(&self, commit: &str, source: &str, loaded_at_unix: i64) {
        *lock(&self.config) = Some(ConfigInfo {
            commit: commit.to_string(),
            source: source.to_string(),
            loaded_at_unix,
        });
    }

    /// Whether the last reload failed (the previous configuration is still
    /// in use): `rack_gateway_config_last_reload_failed`.
    pub(crate) fn set_last_reload_error(&self, failing: bool) {
        self.last_reload_failed.store(failing, Ordering::Relaxed);
    }

    /// The exposition, with `extra` families appended. An extra whose name
    /// is invalid, taken, or (for a counter) does not end in `_total` is
    /// left out (and fails debug builds).
    pub fn render(&self, extra: &[Extra<'_>]) -> String {
        let mut out = String::with_capacity(4096);
        lock(&self.requests).render(
            &mut out,
            "rack_gateway_requests_total",
            "Requests answered, by rack, operation, decision and HTTP status.",
            Kind::Counter,
        );
        self.overhead.render(
            &mut out,
            "rack_gateway_overhead_seconds",
            "Time spent in the gateway before forwarding a request to the rack.",
        );
        self.upstream.render(
            &mut out,
            "rack_gateway_upstream_seconds",
            "Time from forwarding a request to the rack's response headers.",
        );
        lock(&self.sessions).render(
            &mut out,
            "rack_gateway_websocket_sessions",
            "Websocket sessions open, by kind.",
            Kind::Gauge,
        );
        lock(&self.rate_limited).render(
            &mut out,
            "rack_gateway_rate_limited_total",
            "Requests refused by a rate limit, by bucket.",
            Kind::Counter,
        );
        lock(&self.rejected).render(
            &mut out,
            "rack_gateway_rejected_total",
            "Requests refused before forwarding, by reason.",
            Kind::Counter,
        );
        lock(&self.reloads).render(
            &mut out,
            "rack_gateway_config_reloads_total",
            "Configuration reloads, by result.",
            Kind::Counter,
        );
        let config = lock(&self.config).clone();
        header(
            &mut out,
            "rack_gateway_config_info",
            "The configuration in use: its commit (empty for a directory) and source.",
            "gauge",
        );
        if let Some(c) = &config {
            out.push_str("rack_gateway_config_info{commit=\"");
            escape_label_value(&mut out, &c.commit);
            out.push_str("\",source=\"");
            escape_label_value(&mut out, &c.source);
            out.push_str("\"} 1\n");
        }
        header(
            &mut out,
            "rack_gateway_config_loaded_timestamp_seconds",
            "When the configuration in use was loaded, in seconds since the Unix epoch.",
            "gauge",
        );
        if let Some(c) = &config {
            let _ = writeln!(
                out,
                "rack_gateway_config_loaded_timestamp_seconds {}",
                c.loaded_at_unix
            );
        }
        header(
            &mut out,
            "rack_gateway_config_last_reload_failed",
            "1 if the last configuration reload failed and the previous configuration is still in use.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "rack_gateway_config_last_reload_failed {}",
            u8::from(self.last_reload_failed.load(Ordering::Relaxed))
        );
        header(
            &mut out,
            "rack_gateway_metrics_series_dropped_total",
            "Metric updates dropped because their family already held the maximum number of series.",
            "counter",
        );
        let _ = writeln!(
            out,
            "rack_gateway_metrics_series_dropped_total {}",
            self.series_dropped.load(Ordering::Relaxed)
        );

        let mut taken: HashSet<&str> = BUILTIN_FAMILIES.iter().copied().collect();
        for e in extra {
            let ok = valid_metric_name(e.name)
                && !reserved_suffix(e.name)
                && (e.kind != Kind::Counter || e.name.ends_with("_total"))
                && taken.insert(e.name);
            debug_assert!(ok, "metric {:?} is invalid or already taken", e.name);
            if !ok {
                continue;
            }
            header(&mut out, e.name, e.help, e.kind.as_str());
            let _ = writeln!(out, "{} {}", e.name, float(e.value));
        }
        out
    }
}

const BUILTIN_FAMILIES: &[&str] = &[
    "rack_gateway_requests_total",
    "rack_gateway_overhead_seconds",
    "rack_gateway_upstream_seconds",
    "rack_gateway_websocket_sessions",
    "rack_gateway_rate_limited_total",
    "rack_gateway_rejected_total",
    "rack_gateway_config_reloads_total",
    "rack_gateway_config_info",
    "rack_gateway_config_loaded_timestamp_seconds",
    "rack_gateway_config_last_reload_failed",
    "rack_gateway_metrics_series_dropped_total",
];

/// Names a histogram's samples use; an extra named like one of them could
/// be read as part of another family.
fn reserved_suffix(name: &str) -> bool {
    ["_bucket", "_sum", "_count"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\n');
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and line feed.
pub(crate) fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub(crate) fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// A sample value as the format spells it (`+Inf`, `-Inf`, `NaN`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn u16_str(buf: &mut [u8; 5], mut n: u16) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests;
