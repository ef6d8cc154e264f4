//! Unit tests of the exposition, checked by a strict parser of the text
//! format 0.0.4 written here (tests/promparse.py runs the reference
//! parser, Python's prometheus_client, from integration tests).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::*;

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses `name{l="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest
                .find('=')
                .ok_or_else(|| format!("label without `=`: {line:?}"))?;
            let lname = &rest[..eq];
            let valid = {
                let mut b = lname.bytes();
                matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
                    && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            };
            if !valid || lname.starts_with("__") {
                return Err(format!("invalid label name {lname:?} in {line:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("label value not quoted: {line:?}"))?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value: {line:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.iter().any(|(n, _): &(String, String)| n == lname) {
                return Err(format!("label {lname:?} twice in {line:?}"));
            }
            labels.push((lname.to_string(), value));
            rest = &rest[close + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err(format!("expected `,` or `}}` in {line:?}"));
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("expected one space before the value: {line:?}"))?;
    let mut parts = rest.split(' ');
    let v = parts.next().unwrap_or_default();
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ if v.contains(['i', 'I', 'n', 'N']) => return Err(format!("bad value {v:?}")),
        _ => v
            .parse::<f64>()
            .map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?} in {line:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A strict checker of the text format: every line is a HELP, a TYPE, a
/// comment or a sample; HELP and TYPE at most once per family and before
/// its samples; every sample belongs to a declared family and each
/// family's samples are contiguous; no series twice; counters end in
/// `_total` and are not negative; histograms have cumulative buckets
/// ending in `le="+Inf"`, a `_sum`, and a `_count` equal to the +Inf
/// bucket. Returns the samples by family.
fn check_exposition(text: &str) -> Result<BTreeMap<String, Vec<Sample>>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut families: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_metric_name(name) {
                return Err(at(format!("HELP of invalid name {name:?}")));
            }
            if !helps.insert(name.to_string()) {
                return Err(at(format!("second HELP for {name}")));
            }
            if families.contains_key(name) {
                return Err(at(format!("HELP for {name} after its samples")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, kind) = (p.next().unwrap_or_default(), p.next().unwrap_or_default());
            if p.next().is_some() || !valid_metric_name(name) {
                return Err(at(format!("malformed TYPE {rest:?}")));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind:?}")));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(at(format!("second TYPE for {name}")));
            }
            if families.contains_key(name) {
                return Err(at(format!("TYPE for {name} after its samples")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at(format!("counter {name} does not end in _total")));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = parse_sample(line).map_err(at)?;
        let family = if types.contains_key(&s.name) {
            s.name.clone()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = s.name.strip_suffix(suffix)?;
                    (types.get(base).map(String::as_str) == Some("histogram"))
                        .then(|| base.to_string())
                })
                .ok_or_else(|| at(format!("sample {} of no declared family", s.name)))?
        };
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(c) = current.take() {
                closed.insert(c);
            }
            current = Some(family.clone());
        }
        let mut key_labels = s.labels.clone();
        key_labels.sort();
        if !series.insert(format!("{}{key_labels:?}", s.name)) {
            return Err(at(format!("duplicate series {line:?}")));
        }
        if types[&family] == "counter" && (s.value < 0.0 || s.value.is_nan()) {
            return Err(at(format!("negative counter {line:?}")));
        }
        families.entry(family).or_default().push(s);
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            check_histogram(name, families.get(name).map(Vec::as_slice).unwrap_or(&[]))?;
        }
    }
    Ok(families)
}

fn check_histogram(name: &str, samples: &[Sample]) -> Result<(), String> {
    // Group by the labels other than `le`.
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let mut key: Vec<_> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "le")
            .cloned()
            .collect();
        key.sort();
        groups.entry(key).or_default().push(s);
    }
    for (key, group) in groups {
        let buckets: Vec<&&Sample> = group
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .collect();
        let mut last_le = f64::NEG_INFINITY;
        let mut last_count = 0.0;
        for b in &buckets {
            let le = b
                .labels
                .iter()
                .find(|(n, _)| n == "le")
                .ok_or_else(|| format!("{name}{key:?}: bucket without le"))?;
            let le: f64 = match le.1.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("{name}: bad le {v:?}"))?,
            };
            if le <= last_le {
                return Err(format!("{name}{key:?}: le not increasing"));
            }
            if b.value < last_count {
                return Err(format!("{name}{key:?}: buckets not cumulative"));
            }
            last_le = le;
            last_count = b.value;
        }
        if last_le != f64::INFINITY {
            return Err(format!("{name}{key:?}: no le=\"+Inf\" bucket"));
        }
        let one = |suffix: &str| {
            let n = format!("{name}{suffix}");
            let found: Vec<_> = group.iter().filter(|s| s.name == n).collect();
            match found.as_slice() {
                [s] => Ok(s.value),
                _ => Err(format!("{name}{key:?}: needs exactly one {n}")),
            }
        };
        one("_sum")?;
        if one("_count")? != last_count {
            return Err(format!(
                "{name}{key:?}: _count differs from the +Inf bucket"
            ));
        }
    }
    Ok(())
}

fn value(families: &BTreeMap<String, Vec<Sample>>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families
        .values()
        .flatten()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .value
}

/// A registry with every family in use, and label values that need
/// escaping.
fn populated() -> Metrics {
    let m = Metrics::new();
    m.request("staging", "apps", "allow", 200);
    m.request("staging", "apps", "allow", 200);
    m.request("staging", "releases promote", "deny", 403);
    m.request("pro\"d\\uc\ntion", "run", "allow", 101);
    m.observe_overhead(Duration::from_micros(300));
    m.observe_overhead(Duration::from_millis(1)); // exactly on a bound
    m.observe_overhead(Duration::from_secs(60)); // above the last
    m.observe_upstream(Duration::from_millis(40));
    m.session_opened("exec");
    m.session_opened("exec");
    m.session_closed("exec");
    m.session_opened("logs");
    m.rate_limited("identity");
    m.rejected("forbidden");
    m.rejected("forbidden");
    m.reload(true);
    m.reload(false);
    m.set_config(
        "0123abcd",
        "git+https://git.example.com/\"cfg\".git",
        1_767_225_600,
    );
    m.set_last_reload_error(true);
    m
}

#[test]
fn a_populated_registry_is_valid_exposition() {
    let text = populated().render(&[
        Extra::gauge(
            "rack_gateway_ratelimit_keys",
            "Keys held by the rate limiters.",
            12.0,
        ),
        Extra::counter(
            "rack_gateway_token_cache_hits_total",
            "Token cache hits.\nSecond line with a \\ backslash.",
            7.0,
        ),
        Extra::gauge("rack_gateway_nan", "Not a number.", f64::NAN),
    ]);
    let f = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        value(
            &f,
            "rack_gateway_requests_total",
            &[
                ("rack", "staging"),
                ("operation", "apps"),
                ("decision", "allow"),
                ("status", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_requests_total",
            &[
                ("rack", "pro\"d\\uc\ntion"),
                ("operation", "run"),
                ("decision", "allow"),
                ("status", "101")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&f, "rack_gateway_websocket_sessions", &[("kind", "exec")]),
        1.0
    );
    assert_eq!(
        value(&f, "rack_gateway_websocket_sessions", &[("kind", "logs")]),
        1.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_rate_limited_total",
            &[("bucket", "identity")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_rate_limited_total",
            &[("bucket", "expensive")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_rejected_total",
            &[("reason", "forbidden")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_rejected_total",
            &[("reason", "no_config")]
        ),
        0.0
    );
    assert_eq!(
        value(&f, "rack_gateway_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_config_reloads_total",
            &[("result", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_config_info",
            &[
                ("commit", "0123abcd"),
                ("source", "git+https://git.example.com/\"cfg\".git")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(&f, "rack_gateway_config_loaded_timestamp_seconds", &[]),
        1_767_225_600.0
    );
    assert_eq!(
        value(&f, "rack_gateway_config_last_reload_failed", &[]),
        1.0
    );
    assert_eq!(value(&f, "rack_gateway_ratelimit_keys", &[]), 12.0);
    assert_eq!(value(&f, "rack_gateway_token_cache_hits_total", &[]), 7.0);
    assert!(value(&f, "rack_gateway_nan", &[]).is_nan());
    assert!(text.contains(
        "# HELP rack_gateway_token_cache_hits_total Token cache hits.\\nSecond line with a \\\\ backslash.\n"
    ));
    assert!(text.contains("rack=\"pro\\\"d\\\\uc\\ntion\""), "{text}");
}

#[test]
fn a_fresh_registry_is_valid_and_reports_known_labels_at_zero() {
    let m = Metrics::new();
    let text = m.render(&[]);
    let f = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for b in ["identity", "expensive", "auth_failures"] {
        assert_eq!(
            value(&f, "rack_gateway_rate_limited_total", &[("bucket", b)]),
            0.0
        );
    }
    for r in [
        "bad_request",
        "unauthenticated",
        "forbidden",
        "no_config",
        "audit_unavailable",
    ] {
        assert_eq!(
            value(&f, "rack_gateway_rejected_total", &[("reason", r)]),
            0.0
        );
    }
    assert_eq!(
        value(&f, "rack_gateway_config_last_reload_failed", &[]),
        0.0
    );
    assert_eq!(value(&f, "rack_gateway_overhead_seconds_count", &[]), 0.0);
    // No configuration yet: the info family is declared but empty.
    assert!(!f.contains_key("rack_gateway_config_info"));
    assert!(text.contains("# TYPE rack_gateway_config_info gauge\n"));
}

#[test]
fn histogram_buckets_are_cumulative_with_inclusive_bounds() {
    let m = Metrics::new();
    for d in [
        Duration::ZERO,
        Duration::from_micros(500), // on the first bound: counted in it
        Duration::from_micros(501), // just above
        Duration::from_millis(250),
        Duration::from_secs(30), // on the last bound
        Duration::from_secs(31), // only in +Inf
        Duration::from_secs(3600),
    ] {
        m.observe_upstream(d);
    }
    let f = check_exposition(&m.render(&[])).expect("valid");
    let bucket = |le: &str| value(&f, "rack_gateway_upstream_seconds_bucket", &[("le", le)]);
    assert_eq!(bucket("0.0005"), 2.0);
    assert_eq!(bucket("0.001"), 3.0);
    assert_eq!(bucket("0.1"), 3.0);
    assert_eq!(bucket("0.25"), 4.0);
    assert_eq!(bucket("10"), 4.0);
    assert_eq!(bucket("30"), 5.0);
    assert_eq!(bucket("+Inf"), 7.0);
    assert_eq!(value(&f, "rack_gateway_upstream_seconds_count", &[]), 7.0);
    let sum = value(&f, "rack_gateway_upstream_seconds_sum", &[]);
    assert!(
        (sum - (0.0005 + 0.000501 + 0.25 + 30.0 + 31.0 + 3600.0)).abs() < 1e-9,
        "{sum}"
    );
    // Every bound of BUCKETS is rendered, in order, then +Inf.
    let les: Vec<&str> = f["rack_gateway_upstream_seconds"]
        .iter()
        .filter_map(|s| {
            s.labels
                .first()
                .filter(|(n, _)| n == "le")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    let want: Vec<String> = BUCKETS
        .iter()
        .map(|b| format!("{b}"))
        .chain(["+Inf".to_string()])
        .collect();
    assert_eq!(les, want);
    // The overhead histogram is separate.
    assert_eq!(value(&f, "rack_gateway_overhead_seconds_count", &[]), 0.0);
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    escape_label_value(&mut out, "a\\b\"c\nd\te ü");
    assert_eq!(out, "a\\\\b\\\"c\\nd\te ü");
    let m = Metrics::new();
    m.session_opened("\\\"\n");
    let f = check_exposition(&m.render(&[])).expect("valid");
    assert_eq!(
        value(&f, "rack_gateway_websocket_sessions", &[("kind", "\\\"\n")]),
        1.0
    );
}

#[test]
fn status_numbers_render_without_allocation_quirks() {
    let mut buf = [0u8; 5];
    assert_eq!(u16_str(&mut buf, 0), "0");
    assert_eq!(u16_str(&mut buf, 101), "101");
    assert_eq!(u16_str(&mut buf, 65535), "65535");
}

#[test]
fn series_are_capped_per_family_and_the_overflow_counted() {
    let m = Metrics::new();
    for i in 0..MAX_SERIES + 5 {
        m.request("r", &format!("op{i}"), "allow", 200);
    }
    m.request("r", "op0", "allow", 200); // an existing series still counts
    let f = check_exposition(&m.render(&[])).expect("valid");
    assert_eq!(f["rack_gateway_requests_total"].len(), MAX_SERIES);
    assert_eq!(
        value(&f, "rack_gateway_metrics_series_dropped_total", &[]),
        5.0
    );
    assert_eq!(
        value(
            &f,
            "rack_gateway_requests_total",
            &[
                ("rack", "r"),
                ("operation", "op0"),
                ("decision", "allow"),
                ("status", "200")
            ]
        ),
        2.0
    );
}

#[test]
fn registries_are_independent_and_shared_across_threads() {
    let a = Arc::new(Metrics::new());
    let b = Metrics::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    a.request("staging", "apps", "allow", 200);
                    a.observe_overhead(Duration::from_micros(10));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let fa = check_exposition(&a.render(&[])).expect("valid");
    let fb = check_exposition(&b.render(&[])).expect("valid");
    let labels = [
        ("rack", "staging"),
        ("operation", "apps"),
        ("decision", "allow"),
        ("status", "200"),
    ];
    assert_eq!(value(&fa, "rack_gateway_requests_total", &labels), 4000.0);
    assert_eq!(
        value(&fa, "rack_gateway_overhead_seconds_count", &[]),
        4000.0
    );
    assert!(!fb.contains_key("rack_gateway_requests_total"));
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Metrics>();
}

#[test]
#[cfg(not(debug_assertions))]
fn invalid_extras_are_left_out() {
    let text = Metrics::new().render(&[
        Extra::counter("no_total_suffix", "x", 1.0),
        Extra::gauge("bad name", "x", 1.0),
        Extra::gauge("rack_gateway_requests_total", "taken", 1.0),
        Extra::gauge("x_count", "reserved suffix", 1.0),
    ]);
    check_exposition(&text).expect("valid");
    assert!(
        !text.contains("no_total_suffix")
            && !text.contains("bad name")
            && !text.contains("x_count")
    );
}

#[test]
#[should_panic(expected = "already taken")]
#[cfg(debug_assertions)]
fn invalid_extras_fail_debug_builds() {
    Metrics::new().render(&[Extra::gauge("rack_gateway_requests_total", "taken", 1.0)]);
}

/// The checker itself rejects what it should.
#[test]
fn the_checker_rejects_invalid_exposition() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\n";
    check_exposition(ok).expect("valid");
    for (bad, why) in [
        ("a_total 1\n", "no declared family"),
        ("# TYPE a_total counter\na_total 1", "end with a line feed"),
        ("# TYPE a counter\na 1\n", "does not end in _total"),
        ("# TYPE a_total counter\n# TYPE a_total counter\n", "second TYPE"),
        ("# TYPE a_total counter\na_total 1\n# HELP a_total late\n", "after its samples"),
        ("# TYPE a_total counter\na_total 1\na_total 2\n", "duplicate series"),
        ("# TYPE a_total counter\na_total{x=\"1\",y=\"2\"} 1\na_total{y=\"2\",x=\"1\"} 1\n", "duplicate series"),
        ("# TYPE a_total counter\na_total -1\n", "negative counter"),
        ("# TYPE a_total counter\na_total{x=\"a\\t\"} 1\n", "bad escape"),
        ("# TYPE a_total counter\na_total{x=\"a} 1\n", "unterminated"),
        ("# TYPE a_total counter\na_total{x=1} 1\n", "not quoted"),
        ("# TYPE a_total counter\na_total  1\n", "bad value"),
        ("# TYPE a_total counter\n# TYPE b gauge\na_total 1\nb 1\na_total{x=\"1\"} 1\n", "not contiguous"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "not cumulative"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "+Inf"),
        ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n", "_count differs"),
        ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", "exactly one h_sum"),
    ] {
        let e = check_exposition(bad).expect_err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}
