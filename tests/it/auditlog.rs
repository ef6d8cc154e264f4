//! The hash-chained audit file: the writer (chain, resume, rotation,
//! unwritable file), the verifier's classification of each kind of
//! tampering, `audit verify` exit codes, and the redaction helpers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rack_gateway::audit::chain::{line_digest, seal, GENESIS_PREV};
use rack_gateway::audit::file::{FileSettings, Sink};
use rack_gateway::audit::redact::{is_sensitive_field, CommandRedactor};
use rack_gateway::audit::verify::{
    verify, verify_command, verify_with, Tamper, TamperKind, VerifyOptions, VerifySummary,
};
use serde_json::{json, Map, Value};

const KEY: &[u8] = b"chain-key-for-tests";

fn settings(path: &Path) -> FileSettings {
    FileSettings {
        path: path.to_path_buf(),
        rotate_bytes: None,
        key: None,
        fail_closed: false,
        fsync: false,
    }
}

fn record(i: u64) -> Map<String, Value> {
    let v = json!({
        "time": "2026-01-01T00:00:00Z",
        "request_id": format!("req-{i}"),
        "identity": "alice",
        "operation": "apps list",
        "decision": "allow",
        "n": i,
    });
    v.as_object().unwrap().clone()
}

/// Writes records `from..=to` through a sink and closes it.
fn write_records(s: FileSettings, from: u64, to: u64) {
    let sink = Sink::open(s).unwrap();
    for i in from..=to {
        sink.submit(record(i));
    }
    sink.flush();
    assert_eq!(sink.written(), to - from + 1);
    assert!(sink.healthy());
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn field(line: &str, name: &str) -> Value {
    serde_json::from_str::<Value>(line).unwrap()[name].clone()
}

/// A 10-record chain in one file.
fn chain10(key: Option<&[u8]>) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut s = settings(&path);
    s.key = key.map(<[u8]>::to_vec);
    write_records(s, 1, 10);
    let l = lines(&path);
    (dir, path, l)
}

fn tamper(files: &[PathBuf], key: Option<&[u8]>) -> Tamper {
    verify(files, key).expect_err("tampering is detected")
}

fn assert_tamper(t: &Tamper, file: &Path, line: usize, seq: Option<u64>, kind: TamperKind) {
    assert_eq!(
        (t.file.as_path(), t.line, t.seq, t.kind),
        (file, line, seq, kind),
        "{t}"
    );
}

/// All files of a rotated chain, sorted by their first seq.
fn chain_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|f| lines(f).first().map(|l| field(l, "seq").as_u64().unwrap()));
    files
}

fn rotated_chain(records: u64) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut s = settings(&path);
    s.rotate_bytes = Some(700);
    s.fsync = true;
    write_records(s, 1, records);
    let files = chain_files(dir.path());
    (dir, path, files)
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

// --- writer ---------------------------------------------------------------

#[test]
fn sink_is_shareable() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<Sink>();
}

#[test]
fn writer_seals_records_with_seq_prev_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_records(settings(&path), 1, 5);
    let l = lines(&path);
    assert_eq!(l.len(), 5);
    let mut prev = GENESIS_PREV.to_string();
    for (i, line) in l.iter().enumerate() {
        let seq = i as u64 + 1;
        // Byte for byte what `seal` documents.
        assert_eq!(line, &seal(&record(seq), seq, &prev, None));
        assert!(line.contains(&format!(",\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"")));
        assert_eq!(field(line, "request_id"), format!("req-{seq}"));
        prev = line_digest(line);
    }
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        verify(&[path], None).unwrap(),
        VerifySummary {
            files: 1,
            records: 5,
            first_seq: 1,
            last_seq: 5
        }
    );
}

#[test]
fn keyed_writer_uses_hmac() {
    let (_dir, path, l) = chain10(Some(KEY));
    assert_eq!(l[0], seal(&record(1), 1, GENESIS_PREV, Some(KEY)));
    assert_ne!(l[0], seal(&record(1), 1, GENESIS_PREV, None));
    assert_eq!(verify(&[path], Some(KEY)).unwrap().records, 10);
}

#[test]
fn newlines_in_values_stay_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Sink::open(settings(&path)).unwrap();
    let mut r = record(1);
    r.insert("command".into(), "echo a\nb\r\nc".into());
    sink.submit(r);
    sink.flush();
    let l = lines(&path);
    assert_eq!(l.len(), 1);
    assert_eq!(field(&l[0], "command"), "echo a\nb\r\nc");
    assert_eq!(verify(&[path], None).unwrap().records, 1);
}

#[test]
fn reserved_fields_of_a_record_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Sink::open(settings(&path)).unwrap();
    let mut r = record(1);
    r.insert("seq".into(), json!(99));
    r.insert("prev".into(), json!("x"));
    sink.submit(r);
    sink.flush();
    let l = lines(&path);
    assert_eq!(field(&l[0], "seq"), 1);
    assert_eq!(field(&l[0], "prev"), GENESIS_PREV);
    assert_eq!(l[0].matches("\"seq\"").count(), 1);
}

#[test]
fn reopen_resumes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_records(settings(&path), 1, 3);
    write_records(settings(&path), 4, 5);
    let l = lines(&path);
    let seqs: Vec<Value> = l.iter().map(|l| field(l, "seq")).collect();
    assert_eq!(seqs, vec![json!(1), json!(2), json!(3), json!(4), json!(5)]);
    assert_eq!(field(&l[3], "prev"), line_digest(&l[2]));
    assert_eq!(field(&l[3], "n"), 4);
    assert_eq!(verify(&[path], None).unwrap().last_seq, 5);
}

#[test]
fn open_refuses_a_damaged_tail() {
    let (_dir, path, l) = chain10(None);
    let refused = |s: FileSettings| {
        let e = Sink::open(s).expect_err("a damaged tail is refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        e.to_string()
    };
    // Cut off.
    let full = fs::read_to_string(&path).unwrap();
    fs::write(&path, &full[..full.len() - 20]).unwrap();
    assert!(refused(settings(&path)).contains("no newline"));
    // Edited.
    let mut edited = l.clone();
    edited[9] = edited[9].replace("alice", "mallory");
    write_lines(&path, &edited);
    assert!(refused(settings(&path)).contains("hash does not match"));
    // Intact, but sealed without the key the sink now has.
    write_lines(&path, &l);
    let mut keyed = settings(&path);
    keyed.key = Some(KEY.to_vec());
    assert!(refused(keyed).contains("not a valid chain record"));
    // Garbage.
    let mut garbage = l.clone();
    garbage.push("garbage".into());
    write_lines(&path, &garbage);
    assert!(refused(settings(&path)).contains("not a JSON object"));
    // The intact file opens.
    write_lines(&path, &l);
    assert!(Sink::open(settings(&path)).is_ok());
}

#[test]
fn empty_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&dir.path().join("audit.jsonl"));
    s.key = Some(Vec::new());
    assert_eq!(
        Sink::open(s).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let (dir, path, files) = rotated_chain(20);
    assert!(files.len() >= 5, "{files:?}");
    let base = "audit.jsonl.";
    let mut seqs = Vec::new();
    let mut prev = GENESIS_PREV.to_string();
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 700, "{}", f.display());
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if f != &path {
            let stamp = &name[base.len()..base.len() + 16];
            assert!(name.starts_with(base), "{name}");
            assert_eq!(&stamp[8..9], "T", "{name}");
            assert!(stamp.ends_with('Z'), "{name}");
        }
        for line in lines(f) {
            assert_eq!(field(&line, "prev"), prev);
            prev = line_digest(&line);
            seqs.push(field(&line, "seq").as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    // The active file holds the newest records.
    assert_eq!(files.last().unwrap(), &path);
    // Any order of the files verifies.
    let mut shuffled = files.clone();
    shuffled.reverse();
    shuffled.rotate_left(2);
    assert_eq!(
        verify(&shuffled, None).unwrap(),
        VerifySummary {
            files: files.len(),
            records: 20,
            first_seq: 1,
            last_seq: 20
        }
    );
    drop(dir);
}

#[test]
fn a_crash_between_rotation_rename_and_first_write_resumes_from_the_rotated_file() {
    let (dir, path, _) = rotated_chain(6);
    // As if the rotation renamed the active file and the process died.
    let renamed = dir.path().join("audit.jsonl.20000101T000000Z");
    fs::rename(&path, &renamed).unwrap();
    let mut s = settings(&path);
    s.rotate_bytes = Some(700);
    write_records(s.clone(), 7, 8);
    assert_eq!(field(&lines(&path)[0], "seq"), 7);
    // And with an empty new file.
    let renamed2 = dir.path().join("audit.jsonl.20000101T000001Z");
    fs::rename(&path, &renamed2).unwrap();
    fs::write(&path, "").unwrap();
    write_records(s, 9, 9);
    assert_eq!(field(&lines(&path)[0], "seq"), 9);
    let files = chain_files(dir.path());
    let summary = verify(&files, None).unwrap();
    assert_eq!((summary.records, summary.last_seq), (9, 9));
}

/// The file's directory is replaced by a regular file (fails even for
/// root): the sink turns unhealthy, keeps the records, and writes them in
/// order once the directory is back.
#[test]
fn unwritable_file_turns_unhealthy_and_recovers_without_losing_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    fs::create_dir(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let mut s = settings(&path);
    s.fail_closed = true;
    let sink = Sink::open(s).unwrap();
    assert!(sink.fail_closed());
    for i in 1..=2 {
        sink.submit(record(i));
    }
    sink.flush();
    let moved = tmp.path().join("logs.moved");
    fs::rename(&dir, &moved).unwrap();
    fs::write(&dir, "a regular file").unwrap();
    for i in 3..=5 {
        sink.submit(record(i));
    }
    wait_unhealthy(&sink);
    for i in 6..=7 {
        sink.submit(record(i));
    }
    assert!(!sink.healthy());
    assert_eq!(sink.dropped(), 0);
    fs::remove_file(&dir).unwrap();
    fs::rename(&moved, &dir).unwrap();
    sink.flush();
    assert!(sink.healthy());
    assert_eq!((sink.written(), sink.dropped()), (7, 0));
    let ns: Vec<Value> = lines(&path).iter().map(|l| field(l, "n")).collect();
    assert_eq!(ns, (1..=7).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(verify(&[path], None).unwrap().records, 7);
}

/// ENOSPC: the records stay queued, nothing is counted as written or
/// dropped, and flush_timeout gives up.
#[test]
fn full_disk_turns_unhealthy() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let mut s = settings(full);
    s.fail_closed = true;
    let sink = Sink::open(s).unwrap();
    for i in 1..=3 {
        sink.submit(record(i));
    }
    wait_unhealthy(&sink);
    assert!(!sink.flush_timeout(Duration::from_millis(50)));
    assert_eq!((sink.written(), sink.dropped()), (0, 0));
    assert!(!sink.healthy());
}

#[test]
fn a_replaced_file_continues_the_chain_in_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Sink::open(settings(&path)).unwrap();
    sink.submit(record(1));
    sink.flush();
    let moved = dir.path().join("audit.jsonl.20000101T000000Z");
    fs::rename(&path, &moved).unwrap();
    sink.submit(record(2));
    sink.flush();
    assert_eq!(lines(&moved).len(), 1);
    assert_eq!(field(&lines(&path)[0], "seq"), 2);
    assert_eq!(verify(&[path, moved], None).unwrap().records, 2);
}

// --- verifier ---------------------------------------------------------------

#[test]
fn edited_middle_record() {
    let (_dir, path, mut l) = chain10(None);
    l[4] = l[4].replace("\"identity\":\"alice\"", "\"identity\":\"mallory\"");
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 5, Some(5), TamperKind::Edited);
    assert_eq!(
        t.to_string(),
        format!(
            "{}:5: record 5 edited: its hash does not match the line's content (the line was \
             changed, or the chain is keyed and no key was given)",
            path.display()
        )
    );
}

#[test]
fn edited_last_record() {
    let (_dir, path, mut l) = chain10(None);
    l[9] = l[9].replace("allow", "deny");
    write_lines(&path, &l);
    assert_tamper(
        &tamper(std::slice::from_ref(&path), None),
        &path,
        10,
        Some(10),
        TamperKind::Edited,
    );
}

#[test]
fn edited_with_recomputed_hash_is_caught_by_the_next_link() {
    let (_dir, path, mut l) = chain10(None);
    let mut forged = record(5);
    forged.insert("identity".into(), "mallory".into());
    l[4] = seal(&forged, 5, &line_digest(&l[3]), None);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 5, Some(5), TamperKind::Edited);
    assert!(
        t.detail
            .contains("record 6 (line 6) links to different content"),
        "{t}"
    );
}

#[test]
fn keyed_chain_detects_a_hash_recomputed_without_the_key() {
    let (_dir, path, mut l) = chain10(Some(KEY));
    let mut forged = record(5);
    forged.insert("decision".into(), "deny".into());
    l[4] = seal(&forged, 5, &line_digest(&l[3]), None);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), Some(KEY));
    assert_tamper(&t, &path, 5, Some(5), TamperKind::Edited);
    assert!(t.detail.contains("recomputed without the chain key"), "{t}");
}

#[test]
fn keyed_chain_needs_its_key() {
    let (_dir, path, _) = chain10(Some(KEY));
    let files = [path.clone()];
    assert_eq!(verify(&files, Some(KEY)).unwrap().records, 10);
    assert_tamper(&tamper(&files, None), &path, 1, Some(1), TamperKind::Edited);
    assert_tamper(
        &tamper(&files, Some(b"wrong")),
        &path,
        1,
        Some(1),
        TamperKind::Edited,
    );
}

#[test]
fn deleted_middle_record() {
    let (_dir, path, mut l) = chain10(None);
    l.remove(4);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 5, Some(5), TamperKind::Deleted);
    assert_eq!(
        t.detail,
        "record 5 is missing (the chain jumps from 4 to 6 here)"
    );
}

#[test]
fn deleted_several_records() {
    let (_dir, path, mut l) = chain10(None);
    l.drain(3..6);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 4, Some(4), TamperKind::Deleted);
    assert!(t.detail.starts_with("records 4..6 are missing"), "{t}");
}

#[test]
fn deleted_rotated_file_in_the_middle() {
    let (_dir, _path, files) = rotated_chain(20);
    let gone_first = field(&lines(&files[1])[0], "seq").as_u64().unwrap();
    let gone_last = field(lines(&files[1]).last().unwrap(), "seq")
        .as_u64()
        .unwrap();
    fs::remove_file(&files[1]).unwrap();
    let rest: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, f)| f.clone())
        .collect();
    let t = tamper(&rest, None);
    assert_tamper(&t, &files[2], 1, Some(gone_first), TamperKind::Deleted);
    let what = if gone_first == gone_last {
        format!("record {gone_first} is missing")
    } else {
        format!("records {gone_first}..{gone_last} are missing")
    };
    assert!(t.detail.starts_with(&what), "{t}");
    assert!(t.detail.ends_with("a rotated file is missing?"), "{t}");
}

#[test]
fn inserted_copy_of_an_earlier_record() {
    let (_dir, path, mut l) = chain10(None);
    let copy = l[2].clone();
    l.insert(7, copy);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 8, Some(3), TamperKind::Inserted);
    assert_eq!(t.detail, "a copy of record 3 (line 3)");
}

#[test]
fn inserted_copy_right_after_its_original() {
    let (_dir, path, mut l) = chain10(None);
    let copy = l[4].clone();
    l.insert(5, copy);
    write_lines(&path, &l);
    assert_tamper(
        &tamper(std::slice::from_ref(&path), None),
        &path,
        6,
        Some(5),
        TamperKind::Inserted,
    );
}

#[test]
fn inserted_forged_record_with_a_valid_hash() {
    let (_dir, path, mut l) = chain10(None);
    let mut forged = record(99);
    forged.insert("identity".into(), "mallory".into());
    // Claims the slot after record 5, linked and hashed correctly.
    l.insert(5, seal(&forged, 6, &line_digest(&l[4]), None));
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 6, Some(6), TamperKind::Inserted);
    assert!(t.detail.contains("line 7 has the same seq and prev"), "{t}");
}

#[test]
fn inserted_forged_record_in_a_keyed_chain() {
    let (_dir, path, mut l) = chain10(Some(KEY));
    let forged = seal(&record(99), 6, &line_digest(&l[4]), None);
    l.insert(5, forged);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), Some(KEY));
    assert_tamper(&t, &path, 6, Some(6), TamperKind::Inserted);
}

#[test]
fn forged_record_appended_to_a_keyed_chain() {
    let (_dir, path, mut l) = chain10(Some(KEY));
    let forged = seal(&record(11), 11, &line_digest(&l[9]), None);
    l.push(forged);
    write_lines(&path, &l);
    assert_tamper(
        &tamper(std::slice::from_ref(&path), Some(KEY)),
        &path,
        11,
        Some(11),
        TamperKind::Edited,
    );
}

#[test]
fn swapped_records() {
    let (_dir, path, mut l) = chain10(None);
    l.swap(3, 4);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 4, Some(5), TamperKind::Reordered);
    assert_eq!(t.detail, "record 5 comes before record 4 (line 5)");
}

#[test]
fn swapped_distant_records() {
    let (_dir, path, mut l) = chain10(None);
    l.swap(2, 7);
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 3, Some(8), TamperKind::Reordered);
    assert_eq!(t.detail, "record 8 comes before record 4 (line 4)");
}

#[test]
fn cut_last_line() {
    let (_dir, path, _) = chain10(None);
    let full = fs::read_to_string(&path).unwrap();
    fs::write(&path, &full[..full.len() - 40]).unwrap();
    assert_tamper(
        &tamper(std::slice::from_ref(&path), None),
        &path,
        10,
        None,
        TamperKind::Truncated,
    );
}

#[test]
fn missing_final_newline() {
    let (_dir, path, _) = chain10(None);
    let full = fs::read_to_string(&path).unwrap();
    fs::write(&path, full.trim_end()).unwrap();
    assert_tamper(
        &tamper(std::slice::from_ref(&path), None),
        &path,
        10,
        Some(10),
        TamperKind::Truncated,
    );
}

#[test]
fn garbage_line() {
    let (_dir, path, mut l) = chain10(None);
    l.insert(3, "garbage".into());
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 4, None, TamperKind::Malformed);
    assert!(t.detail.starts_with("not a JSON object"), "{t}");
    assert!(t
        .to_string()
        .starts_with(&format!("{}:4: malformed: ", path.display())));
}

#[test]
fn json_line_without_chain_fields() {
    let (_dir, path, mut l) = chain10(None);
    l.insert(6, r#"{"identity":"mallory","decision":"allow"}"#.into());
    write_lines(&path, &l);
    let t = tamper(std::slice::from_ref(&path), None);
    assert_tamper(&t, &path, 7, None, TamperKind::Malformed);
    assert_eq!(t.detail, "no seq field");
}

#[test]
fn empty_line() {
    let (_dir, path, mut l) = chain10(None);
    l.insert(2, String::new());
    write_lines(&path, &l);
    assert_tamper(
        &tamper(std::slice::from_ref(&path), None),
        &path,
        3,
        None,
        TamperKind::Malformed,
    );
}

#[test]
fn a_later_starting_point_is_accepted_unless_the_start_is_required() {
    let (_dir, _path, files) = rotated_chain(20);
    let tail = files[2..].to_vec();
    let first = field(&lines(&tail[0])[0], "seq").as_u64().unwrap();
    assert!(first > 1);
    let s = verify(&tail, None).unwrap();
    assert_eq!((s.first_seq, s.last_seq, s.files), (first, 20, tail.len()));
    let strict = VerifyOptions {
        key: None,
        require_start: true,
    };
    let t = verify_with(&tail, &strict).unwrap_err();
    assert_tamper(&t, &tail[0], 1, Some(1), TamperKind::Deleted);
    assert_eq!(
        t.detail,
        format!(
            "records 1..{} are missing: the chain's beginning was not given",
            first - 1
        )
    );
    assert_eq!(verify_with(&files, &strict).unwrap().records, 20);
}

#[test]
fn a_file_given_twice_counts_once() {
    let (_dir, path, _) = chain10(None);
    let s = verify(&[path.clone(), path], None).unwrap();
    assert_eq!((s.files, s.records), (1, 10));
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let t = tamper(std::slice::from_ref(&missing), None);
    assert_tamper(&t, &missing, 0, None, TamperKind::Unreadable);
}

#[test]
fn verify_command_exit_codes() {
    let (_dir, path, mut l) = chain10(None);
    assert_eq!(
        verify_command(std::slice::from_ref(&path), None),
        ExitCode::SUCCESS
    );
    assert_eq!(verify_command(&[], None), ExitCode::from(2));
    assert_eq!(
        verify_command(&[path.with_extension("missing")], None),
        ExitCode::from(2)
    );
    l.swap(1, 2);
    write_lines(&path, &l);
    assert_eq!(
        verify_command(std::slice::from_ref(&path), None),
        ExitCode::from(1)
    );
}

// --- redaction ---------------------------------------------------------------

#[test]
fn command_patterns_redact_whole_commands() {
    let r = CommandRedactor::new(&["psql*".into(), "*--dump-secrets*".into()]).unwrap();
    assert_eq!(r.apply("psql -h db -U app"), "[redacted: matches 0]");
    assert_eq!(
        r.apply("bin/tool --dump-secrets now"),
        "[redacted: matches 1]"
    );
    assert_eq!(r.apply("bin/psql-wrapper"), "bin/psql-wrapper");
    assert_eq!(r.apply("rails console"), "rails console");
    assert_eq!(
        CommandRedactor::new(&["ok".into(), String::new()]).unwrap_err(),
        "audit.redact_commands[1]: empty pattern"
    );
}

#[test]
fn built_in_rules_mask_values_in_commands() {
    let r = CommandRedactor::new(&[]).unwrap();
    let cases = [
        (
            "bin/migrate --password=hunter2 --verbose",
            "bin/migrate --password=[redacted] --verbose",
        ),
        ("bin/cli --token abc123 list", "bin/cli --token [redacted] list"),
        ("bin/cli --api-key=\"a b\" x", "bin/cli --api-key=[redacted] x"),
        ("tool -db-password s3 run", "tool -db-password [redacted] run"),
        ("tool --password -v", "tool --password -v"),
        (
            "PASSWORD=x DB_PASSWORD='a b' rake db:migrate",
            "PASSWORD=[redacted] DB_PASSWORD=[redacted] rake db:migrate",
        ),
        (
            "GITHUB_TOKEN=ghp_1 AWS_SECRET_ACCESS_KEY=zz API_KEY=k MYSQL_PWD=p ./deploy",
            "GITHUB_TOKEN=[redacted] AWS_SECRET_ACCESS_KEY=[redacted] API_KEY=[redacted] MYSQL_PWD=[redacted] ./deploy",
        ),
        (
            "sh -c \"PGPASSWORD=pw psql -c 'select 1'\"",
            "sh -c \"PGPASSWORD=[redacted] psql -c 'select 1'\"",
        ),
        (
            "export SECRET_KEY_BASE=abc; rails s",
            "export SECRET_KEY_BASE=[redacted]; rails s",
        ),
        (
            "psql postgres://app:s3cret@db:5432/app",
            "psql postgres://app:[redacted]@db:5432/app",
        ),
        (
            "curl -H 'Authorization: Bearer eyJabc' https://api/x",
            "curl -H 'Authorization: Bearer [redacted]' https://api/x",
        ),
        // Left alone.
        (
            "bin/run --keys-file /etc/k PATH=/usr/bin PWD=/app https://host/p",
            "bin/run --keys-file /etc/k PATH=/usr/bin PWD=/app https://host/p",
        ),
        ("echo héllo wörld", "echo héllo wörld"),
    ];
    for (input, want) in cases {
        assert_eq!(r.apply(input), want, "{input}");
    }
}

#[test]
fn sensitive_field_names() {
    for name in [
        "password",
        "Password",
        "src-creds-pass",
        "src_creds_pass",
        "key",
        "value",
        "env",
        "token",
        "secret",
        "Private-Key",
        "private_key",
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "accessToken",
        "client_secret",
        "params",
    ] {
        assert!(is_sensitive_field(name), "{name}");
    }
    for name in [
        "app",
        "service",
        "command",
        "Content-Type",
        "User-Agent",
        "pid",
        "manifest",
        "description",
        "count",
        "name",
        "keys",
        "passenger",
    ] {
        assert!(!is_sensitive_field(name), "{name}");
    }
}
