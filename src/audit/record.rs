//! The audit record and its field list, defined once: `record_fields!`
//! names every field with its value and kind, and both outputs expand from
//! it, the `audit` tracing line ([`Record::log`]) and the object sealed into
//! the hash-chained file ([`Record::to_json`]), so neither can gain, lose
//! or reorder a field without the other.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::TARGET;
use crate::identity::credentials::Identity;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Authorized and forwarded to the rack.
    Allow,
    /// Authenticated (or not) and refused by policy or authentication.
    Deny,
    /// Refused before routing: malformed or ambiguous request.
    Reject,
    /// Answered by the gateway itself.
    Local,
    /// Authorized, but the rack could not be reached.
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Reject => "reject",
            Decision::Local => "local",
            Decision::Error => "error",
        }
    }
}

/// One audit record; fields are optional where the request never got that
/// far (a rejected request has no operation).
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub event: &'a str,
    pub request_id: &'a str,
    pub identity: Option<&'a Identity>,
    /// The client: the socket's peer, or the address a trusted proxy
    /// reported in `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// The socket's peer, when it differs from `client_ip` (a proxy).
    pub via: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub rack: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub pid: Option<&'a str>,
    /// The run/exec command, after the configured redactions.
    pub command: Option<&'a str>,
    pub decision: Option<Decision>,
    /// Why, including the deciding rule's file:line.
    pub reason: &'a str,
    /// Env key names a release creation added, changed or removed (never
    /// values): `add:A change:B remove:C kept:D`.
    pub env_changes: Option<&'a str>,
    /// The config version (commit) that decided the request.
    pub config_version: Option<&'a str>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Body bytes from the client to the rack, and back.
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    /// A run/exec session's exit code, on its end record.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

/// The one list of a record's output fields, in output order: `name: kind
/// = value` (the value read from the record `$r`), handed to the macro
/// `$out` after its own leading arguments.
///
/// The log line and the file leave out the same values, so a record that
/// is not a request (`config-reload`) carries no empty request fields; the
/// kind says what is left out:
/// * `kept`: nothing;
/// * `text`: an empty string;
/// * `opt_text`: `None` and an empty string;
/// * `nonzero`: 0;
/// * `opt`: `None`.
macro_rules! record_fields {
    ($r:ident => $out:ident!($($lead:tt)*)) => {
        $out!($($lead)*
            event: kept = $r.event,
            request_id: text = $r.request_id,
            identity_kind: opt_text = $r.identity.map(|i| i.kind.as_str()),
            identity: opt_text = $r.identity.map(|i| i.name.as_str()),
            client_ip: opt_text = $r.client_ip.map(|ip| ip.to_string()),
            via: opt_text = $r.via.map(|ip| ip.to_string()),
            method: text = $r.method,
            path: text = $r.path,
            rack: opt_text = $r.rack,
            operation: opt_text = $r.operation,
            app: opt_text = $r.app,
            service: opt_text = $r.service,
            pid: opt_text = $r.pid,
            command: opt_text = $r.command,
            decision: opt_text = $r.decision.map(Decision::as_str),
            reason: text = $r.reason,
            env_changes: opt_text = $r.env_changes,
            config: opt_text = $r.config_version,
            status: nonzero = $r.status,
            upstream_status: opt = $r.upstream_status,
            bytes_in: opt = $r.bytes_in,
            bytes_out: opt = $r.bytes_out,
            exit_code: opt = $r.exit_code,
            duration_ms: kept = $r.duration_ms,
        )
    };
}

/// The `audit` tracing event carrying every field.
macro_rules! log_event {
    ($($name:ident: $kind:ident = $value:expr,)*) => {
        tracing::info!(target: TARGET, $($name = log_value!($kind, $value),)*)
    };
}

/// One field's log value; a `None` is left out of the line.
macro_rules! log_value {
    (kept, $v:expr) => {
        $v
    };
    (text, $v:expr) => {
        Some($v).filter(|s| !s.is_empty())
    };
    (opt_text, $v:expr) => {
        $v.filter(|s| !s.is_empty())
    };
    (nonzero, $v:expr) => {
        Some($v).filter(|n| *n != 0)
    };
    (opt, $v:expr) => {
        $v
    };
}

/// Inserts every field the file keeps into the map `$m`.
macro_rules! insert_file_fields {
    ($m:ident; $($name:ident: $kind:ident = $value:expr,)*) => {
        $(
            if let Some(v) = file_value!($kind, $value) {
                $m.insert(stringify!($name).to_string(), v);
            }
        )*
    };
}

/// One field's file value, `None` where the file leaves it out.
macro_rules! file_value {
    (kept, $v:expr) => {
        Some(Value::from($v))
    };
    (text, $v:expr) => {
        text(Some($v))
    };
    (opt_text, $v:expr) => {
        text($v)
    };
    (nonzero, $v:expr) => {
        Some($v).filter(|n| *n != 0).map(Value::from)
    };
    (opt, $v:expr) => {
        $v.map(Value::from)
    };
}

/// Appends every field the log line carries to the buffer `$b`.
macro_rules! json_fields {
    ($b:ident; $($name:ident: $kind:ident = $value:expr,)*) => {
        $( LogValue::append(&log_value!($kind, $value), $b, stringify!($name)); )*
    };
}

impl Record<'_> {
    /// Writes the record as one `audit` log line. With the JSON log format
    /// the line is formatted here, once, straight into the bytes the log
    /// writer receives ([`Record::json_line`]): byte for byte what the
    /// tracing JSON formatter writes for the `audit` event, at a fraction
    /// of the cost (tracing's visitor, a JSON map and a UTF-8 check per
    /// write were a quarter of the gateway's CPU per request). The log
    /// filter still decides: `RACK_GATEWAY_LOG=warn` turns records off.
    pub(super) fn log(&self) {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        match crate::cli::logsink::json_direct() {
            Some(sink) => sink.send_line(self.json_line(SystemTimeUtc::now())),
            None => {
                let r = self;
                record_fields!(r => log_event!());
            }
        }
    }

    /// The JSON log line (with its newline): `timestamp`, `level`, the
    /// fields in [`record_fields!`] order, `target`, as tracing-subscriber's
    /// flattened JSON format writes an event outside any span.
    fn json_line(&self, now: SystemTimeUtc) -> Vec<u8> {
        let mut line = Vec::with_capacity(1024);
        let b = &mut line;
        b.extend_from_slice(b"{\"timestamp\":\"");
        now.write_micros(b);
        b.extend_from_slice(b"\",\"level\":\"INFO\"");
        let r = self;
        record_fields!(r => json_fields!(b;));
        b.extend_from_slice(b",\"target\":");
        json_str(b, TARGET);
        b.extend_from_slice(b"}\n");
        line
    }

    /// The record as the JSON object written to the audit file: `time`
    /// (when it was written, with milliseconds: the log line has its own
    /// timestamp) and then the record's fields.
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let r = self;
        let mut m = Map::new();
        m.insert(
            "time".to_string(),
            Value::from(crate::clock::now_rfc3339_millis()),
        );
        record_fields!(r => insert_file_fields!(m;));
        m
    }
}

/// The current time, split for the log line's timestamp.
#[derive(Debug, Clone, Copy)]
struct SystemTimeUtc {
    secs: i64,
    micros: u32,
}

impl SystemTimeUtc {
    fn now() -> SystemTimeUtc {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        SystemTimeUtc {
            secs: d.as_secs() as i64,
            micros: d.subsec_micros(),
        }
    }

    /// `2026-12-01T09:33:51.860307Z`, tracing-subscriber's default timer.
    fn write_micros(self, b: &mut Vec<u8>) {
        use std::io::Write;
        let (y, mo, d, h, mi, s) = crate::clock::civil(self.secs);
        let _ = write!(
            b,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
            self.micros
        );
    }
}

/// A field value as the tracing JSON formatter writes it: `None` leaves the
/// field out, strings are JSON strings, integers are numbers.
trait LogValue {
    fn append(&self, b: &mut Vec<u8>, key: &str);
}

/// `,"key":` (every field follows `level`, so a comma always leads).
fn json_key(b: &mut Vec<u8>, key: &str) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"\":");
}

/// A JSON string: copied as is when nothing needs escaping (the common
/// case), else escaped by serde_json like the tracing formatter does.
fn json_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else if serde_json::to_writer(&mut *b, s).is_err() {
        b.extend_from_slice(b"\"\"");
    }
}

impl LogValue for &str {
    fn append(&self, b: &mut Vec<u8>, key: &str) {
        json_key(b, key);
        json_str(b, self);
    }
}

impl LogValue for String {
    fn append(&self, b: &mut Vec<u8>, key: &str) {
        self.as_str().append(b, key);
    }
}

macro_rules! number_log_value {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn append(&self, b: &mut Vec<u8>, key: &str) {
                use std::io::Write;
                json_key(b, key);
                let _ = write!(b, "{self}");
            }
        }
    )*};
}
number_log_value!(u16, u64, i32);

impl<T: LogValue> LogValue for Option<T> {
    fn append(&self, b: &mut Vec<u8>, key: &str) {
        if let Some(v) = self {
            v.append(b, key);
        }
    }
}

/// A string the file keeps: present and not empty.
fn text<S: AsRef<str>>(s: Option<S>) -> Option<Value> {
    s.filter(|s| !s.as_ref().is_empty())
        .map(|s| Value::from(s.as_ref()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::identity::credentials::IdentityKind;

    /// Collects what the JSON log formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The record's log line as the production JSON formatter writes it.
    fn log_line(r: &Record<'_>) -> Map<String, Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || r.log());
        let bytes = out.0.lock().unwrap().clone();
        serde_json::from_slice(&bytes).expect("one JSON log line")
    }

    #[test]
    fn log_line_and_file_object_carry_the_same_fields() {
        let identity = Identity {
            kind: IdentityKind::Person,
            name: "ada@example.com".into(),
        };
        let r = Record {
            event: "request",
            request_id: "req-1",
            identity: Some(&identity),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            via: Some("10.0.0.1".parse().unwrap()),
            method: "POST",
            path: "/apps/web/processes/p-1/exec",
            rack: Some("prod"),
            operation: Some("process.exec"),
            app: Some("web"),
            service: Some("api"),
            pid: Some("p-1"),
            command: Some("rails console"),
            decision: Some(Decision::Allow),
            reason: "rule at roles.yaml:3",
            env_changes: Some("add:A"),
            config_version: Some("abc123"),
            status: 101,
            upstream_status: Some(101),
            bytes_in: Some(12),
            bytes_out: Some(34),
            exit_code: Some(-1),
            duration_ms: 56,
        };
        let mut file = r.to_json();
        let time = file.remove("time").expect("the file record has a time");
        let time = time.as_str().unwrap();
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");
        assert_eq!(&time[10..11], "T");

        let mut log = log_line(&r);
        assert_eq!(log.remove("target"), Some(Value::from(TARGET)));
        log.remove("timestamp");
        log.remove("level");
        assert_eq!(file.len(), 24, "{file:?}");
        assert_eq!(log, file);
    }

    /// The directly formatted line is the tracing JSON formatter's line,
    /// byte for byte once the timestamps agree: every field, in order, with
    /// escapes and left-out `None`s.
    #[test]
    fn direct_json_line_is_the_tracing_line() {
        let identity = Identity {
            kind: IdentityKind::Person,
            name: "ada \"the\" lovelace\\\n\u{1}é@example.com".into(),
        };
        let full = Record {
            event: "request",
            request_id: "req-1",
            identity: Some(&identity),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            via: Some("::1".parse().unwrap()),
            method: "POST",
            path: "/apps/web/processes/p-1/exec",
            rack: Some("prod"),
            operation: Some("process.exec"),
            app: Some(""),
            service: Some("api"),
            pid: Some("p-1"),
            command: Some("rails\tconsole"),
            decision: Some(Decision::Allow),
            reason: "rule at roles.yaml:3",
            env_changes: Some("add:A"),
            config_version: Some("abc123"),
            status: 101,
            upstream_status: Some(101),
            bytes_in: Some(12),
            bytes_out: Some(u64::MAX),
            exit_code: Some(-1),
            duration_ms: 56,
        };
        let bare = Record {
            event: "request",
            ..Record::default()
        };
        for r in [full, bare] {
            let line = r.json_line(SystemTimeUtc {
                secs: 1_764_581_631,
                micros: 7,
            });
            let line = String::from_utf8(line).unwrap();
            let (head, rest) = line.split_at(line.find(",\"level\"").unwrap());
            assert_eq!(head, "{\"timestamp\":\"2025-12-01T09:33:51.000007Z\"");
            let out = Captured::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let r = &r;
                record_fields!(r => log_event!());
            });
            let traced = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            let traced_rest = &traced[traced.find(",\"level\"").unwrap()..];
            assert_eq!(rest, traced_rest);
        }
    }

    #[test]
    fn file_object_leaves_out_empty_values() {
        let r = Record {
            event: "request",
            ..Record::default()
        };
        let keys: Vec<String> = r.to_json().keys().cloned().collect();
        assert_eq!(keys, ["duration_ms", "event", "time"]);
    }

    /// A config reload is no request: neither its log line nor its file
    /// object has an empty request id, method, path or a zero status.
    #[test]
    fn a_config_reload_carries_no_empty_request_fields() {
        let r = Record {
            event: "config-reload",
            decision: Some(Decision::Error),
            reason: "gateway.yaml:1:9: listen `nonsense`",
            config_version: Some("abc123"),
            ..Record::default()
        };
        let mut log = log_line(&r);
        for k in ["target", "timestamp", "level"] {
            log.remove(k);
        }
        let mut keys: Vec<String> = log.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["config", "decision", "duration_ms", "event", "reason"]
        );
        let mut file = r.to_json();
        file.remove("time");
        assert_eq!(log, file);
    }
}
