use super::*;
use crate::audit::verify::verify;

fn rec(i: u64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), "request".into());
    m.insert("n".into(), i.into());
    m
}

#[test]
fn rotation_stamps_are_rotated_names() {
    assert_eq!(compact_utc(0), "19700101T000000Z");
    let stamped = format!("audit.jsonl.{}", compact_utc(1_767_225_600 + 3661));
    assert_eq!(stamped, "audit.jsonl.20260101T010101Z");
    assert!(is_rotated_name(&stamped, "audit.jsonl"));
}

#[test]
fn rotated_names() {
    assert!(is_rotated_name(
        "audit.jsonl.20260101T010101Z",
        "audit.jsonl"
    ));
    assert!(is_rotated_name(
        "audit.jsonl.20260101T010101Z.12",
        "audit.jsonl"
    ));
    assert!(!is_rotated_name(
        "audit.jsonl.20260101T010101Z.",
        "audit.jsonl"
    ));
    assert!(!is_rotated_name("audit.jsonl.2026-01-01", "audit.jsonl"));
    assert!(!is_rotated_name("audit.jsonl", "audit.jsonl"));
    assert!(!is_rotated_name("other.20260101T010101Z", "audit.jsonl"));
}

fn wait_unhealthy(sink: &Sink) {
    // A liveness guard, not a timing assertion.
    for _ in 0..6000 {
        if !sink.healthy() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the sink never noticed the unwritable file");
}

/// Overflow while the file is unwritable: the overflowed records are
/// counted, a marker takes their place in the chain, fail-closed turns
/// unhealthy, and everything accepted is written after recovery.
#[test]
fn overflow_marker_and_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sub");
    fs::create_dir(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let sink = Sink::open_with_capacity(
        FileSettings {
            path: path.clone(),
            rotate_bytes: None,
            key: None,
            fail_closed: true,
            fsync: false,
        },
        4,
    )
    .unwrap();
    sink.submit(rec(1));
    sink.flush();
    break_path(tmp.path(), &dir);
    sink.submit(rec(2));
    wait_unhealthy(&sink);
    for i in 3..=6 {
        sink.submit(rec(i));
    }
    for i in 7..=9 {
        sink.submit(rec(i));
    }
    assert_eq!(sink.dropped(), 3);
    assert!(!sink.healthy());
    restore_path(tmp.path(), &dir);
    sink.flush();
    assert!(sink.healthy());
    assert_eq!(sink.written(), 6);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    let ns: Vec<Option<u64>> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["n"].as_u64())
        .collect();
    assert_eq!(
        ns,
        vec![Some(1), Some(2), Some(3), Some(4), Some(5), Some(6), None]
    );
    let marker: Value = serde_json::from_str(lines[6]).unwrap();
    assert_eq!(marker["event"], "audit_records_dropped");
    assert_eq!(marker["count"], 3);
    assert_eq!(marker["seq"], 7);
    let summary = verify(&[path], None).unwrap();
    assert_eq!(
        (summary.records, summary.first_seq, summary.last_seq),
        (7, 1, 7)
    );
}

/// A sink on `<tmp>/sub/audit.jsonl`, with fsync.
fn synced_sink(tmp: &Path, fail_closed: bool) -> (Sink, PathBuf, PathBuf) {
    let dir = tmp.join("sub");
    fs::create_dir(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let sink = Sink::open(FileSettings {
        path: path.clone(),
        rotate_bytes: None,
        key: None,
        fail_closed,
        fsync: true,
    })
    .unwrap();
    (sink, dir, path)
}

/// Makes the sink's path stop resolving (its directory becomes a regular
/// file, which fails even for root); returns where the file is now.
fn break_path(tmp: &Path, dir: &Path) -> PathBuf {
    let moved = tmp.join("sub.moved");
    fs::rename(dir, &moved).unwrap();
    fs::write(dir, b"not a directory").unwrap();
    moved.join("audit.jsonl")
}

fn restore_path(tmp: &Path, dir: &Path) {
    fs::remove_file(dir).unwrap();
    fs::rename(tmp.join("sub.moved"), dir).unwrap();
}

fn ns_in(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["n"].as_u64())
        .collect()
}

/// `durable(n)` gives true only with record n (and all before it) in the
/// file; while the file cannot be written it gives false at once (no
/// waiting on the retries) with the line not in the file, and true once
/// the retry wrote it.
#[tokio::test]
async fn durable_resolves_once_the_line_is_in_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (sink, dir, path) = synced_sink(tmp.path(), true);
    let waits: Vec<_> = (1..=20)
        .map(|i| sink.durable(sink.submit(rec(i)).unwrap()))
        .collect();
    let last = waits.into_iter().last().unwrap();
    assert!(last.await);
    assert_eq!(ns_in(&path), (1..=20).collect::<Vec<_>>());

    let moved = break_path(tmp.path(), &dir);
    let n = sink.submit(rec(21)).unwrap();
    assert_eq!(n, 21);
    assert!(!sink.durable(n).await, "claimed durable while failing");
    assert!(!ns_in(&moved).contains(&21));
    restore_path(tmp.path(), &dir);
    sink.flush();
    assert!(sink.durable(n).await);
    assert_eq!(ns_in(&path).last(), Some(&21));
}

fn request<'a>(id: &'a str) -> crate::audit::Record<'a> {
    crate::audit::Record {
        event: "request",
        request_id: id,
        reason: "test",
        status: 200,
        ..Default::default()
    }
}

/// The auditor's wait: fail-closed refuses an answer whose record cannot
/// be made durable; fail-open lets it go and counts it; a healthy file
/// (the control) confirms it; without fsync nothing is waited for.
#[tokio::test]
async fn auditor_waits_fail_closed_or_counts_fail_open() {
    use crate::audit::{Auditor, Ticket, Unrecorded};
    for fail_closed in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let (sink, dir, path) = synced_sink(tmp.path(), fail_closed);
        let auditor = Auditor::new(Some(sink));
        assert!(auditor.waits());
        let t = auditor.emit(&request("ok-one"));
        assert_eq!(t, Ticket::Queued(1));
        assert_eq!(auditor.durable(t).await, Ok(()));
        assert!(fs::read_to_string(&path).unwrap().contains("ok-one"));
        assert_eq!(auditor.unconfirmed(), Some(0));

        break_path(tmp.path(), &dir);
        let t = auditor.emit(&request("lost-one"));
        let expected = if fail_closed { Err(Unrecorded) } else { Ok(()) };
        assert_eq!(auditor.durable(t).await, expected);
        let counted = if fail_closed { 0 } else { 1 };
        assert_eq!(auditor.unconfirmed(), Some(counted));
        restore_path(tmp.path(), &dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let plain = Sink::open(FileSettings {
        path: tmp.path().join("audit.jsonl"),
        rotate_bytes: None,
        key: None,
        fail_closed: true,
        fsync: false,
    })
    .unwrap();
    let auditor = Auditor::new(Some(plain));
    assert!(!auditor.waits());
    assert_eq!(auditor.emit(&request("plain")), Ticket::Now);
    assert_eq!(Auditor::default().emit(&request("none")), Ticket::Now);
}
