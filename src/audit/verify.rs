//! The audit file verifier behind `rack-gateway audit verify`: reads the
//! given files as one chain (in any order), checks every hash and link,
//! and classifies the first problem ([`TamperKind`]) with its place, so an
//! operator learns what was done to the file and where, not only that it
//! no longer verifies.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use super::chain::{parse_line, sha256_hex, Chain, GENESIS_PREV, HASH_TAIL_LEN};
use crate::cli::out::outln;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub files: usize,
    pub records: u64,
    /// The first record's seq (0 without records). Greater than 1 when the
    /// earliest files were not given: accepted unless
    /// [`VerifyOptions::require_start`] is set.
    pub first_seq: u64,
    pub last_seq: u64,
}

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// A record's content no longer matches its hash, or (without a key)
    /// was changed with its hash recomputed, which its successor's `prev`
    /// reveals.
    Edited,
    /// Records are missing: a gap in seq the rest of the chain does not
    /// fill (also a rotated file missing between two given files).
    Deleted,
    /// A record that is not part of the chain: a copy of an earlier record
    /// or a forged one claiming a slot another record holds.
    Inserted,
    /// Records out of order: a seq appears before a smaller one.
    Reordered,
    /// A line that is not JSON or lacks the chain fields.
    Malformed,
    /// The last line of a file is cut off (no newline).
    Truncated,
    /// A file could not be read: an I/O error, not evidence of tampering
    /// ([`verify_command`] exits 2 for it).
    Unreadable,
}

impl TamperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Edited => "edited",
            TamperKind::Deleted => "deleted",
            TamperKind::Inserted => "inserted",
            TamperKind::Reordered => "reordered",
            TamperKind::Malformed => "malformed",
            TamperKind::Truncated => "truncated",
            TamperKind::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for TamperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem found. `line` is 1-based (0 for a file that could not
/// be opened); `seq` is the record concerned (for [`TamperKind::Deleted`],
/// the first missing one), if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub file: PathBuf,
    pub line: usize,
    pub seq: Option<u64>,
    pub kind: TamperKind,
    pub detail: String,
}

/// `<file>:<line>: record <seq> <kind>: <detail>` (without a known seq:
/// `<file>:<line>: <kind>: <detail>`).
impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "record {seq} ")?;
        }
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Tamper {}

/// Verification options beyond the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    pub key: Option<&'a [u8]>,
    /// Require the chain's beginning: the earliest given record must be
    /// seq 1, else its absence is reported as [`TamperKind::Deleted`].
    /// Off by default, so the files still kept after old ones were
    /// archived verify on their own; the summary's `first_seq` (and
    /// [`verify_command`]'s note) says where the checked chain starts.
    pub require_start: bool,
}

/// Verifies files forming one chain, given in any order (they are ordered
/// by their first seq; a path given twice counts once); reports the first
/// problem. Accepts a chain that starts after seq 1 (see
/// [`VerifyOptions::require_start`]). Records cut off the end of the chain
/// cannot be detected from the files alone.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<VerifySummary, Tamper> {
    verify_with(
        files,
        &VerifyOptions {
            key,
            require_start: false,
        },
    )
}

/// The `rack-gateway audit verify <file...>` command body: prints
/// `ok: N records in M files (seq A..B)` to stdout (plus a note when the
/// chain does not start at seq 1), or the [`Tamper`] line to stderr.
/// Exit code 0 when intact, 1 when tampered, 2 for usage or I/O errors.
pub fn verify_command(files: &[PathBuf], key: Option<&[u8]>) -> ExitCode {
    if files.is_empty() {
        eprintln!("usage: rack-gateway audit verify <file>...");
        return ExitCode::from(2);
    }
    match verify(files, key) {
        Ok(s) => {
            outln!("{}", summary_line(&s));
            if s.records > 0 && s.first_seq != 1 {
                outln!(
                    "note: the chain starts at seq {}: the files holding records 1..{} were not given and are not checked",
                    s.first_seq,
                    s.first_seq - 1
                );
            }
            ExitCode::SUCCESS
        }
        Err(t) => {
            eprintln!("{t}");
            ExitCode::from(if t.kind == TamperKind::Unreadable {
                2
            } else {
                1
            })
        }
    }
}

/// `ok: N records in M files (seq A..B)`.
pub(crate) fn summary_line(s: &VerifySummary) -> String {
    if s.records == 0 {
        format!("ok: 0 records in {} files", s.files)
    } else {
        format!(
            "ok: {} records in {} files (seq {}..{})",
            s.records, s.files, s.first_seq, s.last_seq
        )
    }
}

/// [`verify`] with options.
pub fn verify_with(files: &[PathBuf], opts: &VerifyOptions<'_>) -> Result<VerifySummary, Tamper> {
    let chain = Chain::new(opts.key);
    let mut unique: Vec<PathBuf> = Vec::new();
    let mut seen = Vec::new();
    for f in files {
        let canonical = fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        if !seen.contains(&canonical) {
            seen.push(canonical);
            unique.push(f.clone());
        }
    }
    // Order by first seq; empty files last.
    let mut keyed = Vec::with_capacity(unique.len());
    for (i, f) in unique.iter().enumerate() {
        let one = std::slice::from_ref(f);
        match Reader::new(one, &chain).next() {
            None => keyed.push((None, i)),
            Some(Entry::Rec(r)) => keyed.push((Some(r.seq), i)),
            Some(Entry::Bad(t)) => return Err(t),
        }
    }
    keyed.sort_by_key(|(seq, i)| (seq.is_none(), *seq, *i));
    let ordered: Vec<PathBuf> = keyed.iter().map(|(_, i)| unique[*i].clone()).collect();

    let mut reader = Reader::new(&ordered, &chain);
    let mut tip: Option<Rec> = None;
    let mut records = 0u64;
    let mut first_seq = 0u64;
    while let Some(entry) = reader.next() {
        let r = match entry {
            Entry::Bad(t) => return Err(t),
            Entry::Rec(r) => r,
        };
        let checker = Checker {
            files: &ordered,
            chain: &chain,
        };
        checker.check(&mut reader, tip.as_ref(), &r, opts)?;
        if records == 0 {
            first_seq = r.seq;
        }
        records += 1;
        tip = Some(r);
    }
    Ok(VerifySummary {
        files: ordered.len(),
        records,
        first_seq,
        last_seq: tip.map_or(0, |t| t.seq),
    })
}

/// One structurally valid record as read from a file.
#[derive(Debug, Clone)]
struct Rec {
    /// Index into the ordered files.
    file: usize,
    line: usize,
    seq: u64,
    prev: String,
    /// SHA-256 of the whole line: what the next record's prev must be.
    digest: String,
    /// The hash verifies (under the key, if any).
    hash_ok: bool,
    /// Keyed chain only: the hash is a plain SHA-256 of the content.
    plain: bool,
}

enum Entry {
    Rec(Rec),
    Bad(Tamper),
}

/// Reads lines across the ordered files, with one entry of look-ahead.
struct Reader<'a> {
    files: &'a [PathBuf],
    chain: &'a Chain,
    fi: usize,
    src: Option<BufReader<File>>,
    line: usize,
    buf: Vec<u8>,
    peeked: Option<Option<Entry>>,
}

impl<'a> Reader<'a> {
    fn new(files: &'a [PathBuf], chain: &'a Chain) -> Reader<'a> {
        Reader {
            files,
            chain,
            fi: 0,
            src: None,
            line: 0,
            buf: Vec::new(),
            peeked: None,
        }
    }

    /// Starts at the beginning of the ordered file `fi`.
    fn at_file(files: &'a [PathBuf], chain: &'a Chain, fi: usize) -> Reader<'a> {
        let mut r = Reader::new(files, chain);
        r.fi = fi;
        r
    }

    fn next(&mut self) -> Option<Entry> {
        match self.peeked.take() {
            Some(e) => e,
            None => self.read(),
        }
    }

    fn peek(&mut self) -> Option<&Entry> {
        if self.peeked.is_none() {
            let e = self.read();
            self.peeked = Some(e);
        }
        self.peeked.as_ref().and_then(Option::as_ref)
    }

    fn bad(&self, line: usize, seq: Option<u64>, kind: TamperKind, detail: String) -> Entry {
        Entry::Bad(Tamper {
            file: self.files[self.fi].clone(),
            line,
            seq,
            kind,
            detail,
        })
    }

    fn read(&mut self) -> Option<Entry> {
        loop {
            if self.fi >= self.files.len() {
                return None;
            }
            let src = match &mut self.src {
                Some(s) => s,
                None => match File::open(&self.files[self.fi]) {
                    Ok(f) => {
                        self.line = 0;
                        self.src.insert(BufReader::with_capacity(64 * 1024, f))
                    }
                    Err(e) => {
                        let bad = self.bad(0, None, TamperKind::Unreadable, e.to_string());
                        self.fi += 1;
                        return Some(bad);
                    }
                },
            };
            self.buf.clear();
            match src.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.src = None;
                    self.fi += 1;
                }
                Ok(_) => {
                    self.line += 1;
                    let entry = self.entry();
                    return Some(entry);
                }
                Err(e) => {
                    let bad = self.bad(self.line + 1, None, TamperKind::Unreadable, e.to_string());
                    self.src = None;
                    self.fi += 1;
                    return Some(bad);
                }
            }
        }
    }

    fn entry(&self) -> Entry {
        let Some(line) = self.buf.strip_suffix(b"\n") else {
            let seq = parse_line(&self.buf).ok().map(|s| s.seq);
            return self.bad(
                self.line,
                seq,
                TamperKind::Truncated,
                "the last line has no newline: the file was cut off here \
                 (or the line was still being written)"
                    .into(),
            );
        };
        let sealed = match parse_line(line) {
            Ok(s) => s,
            Err(why) => return self.bad(self.line, None, TamperKind::Malformed, why),
        };
        let hashed = &line[..line.len() - HASH_TAIL_LEN];
        let hash_ok = self.chain.tag(hashed) == sealed.hash;
        Entry::Rec(Rec {
            file: self.fi,
            line: self.line,
            seq: sealed.seq,
            prev: sealed.prev,
            digest: sha256_hex(line),
            hash_ok,
            plain: !hash_ok && self.chain.keyed() && sha256_hex(hashed) == sealed.hash,
        })
    }
}

/// Classifies the first anomaly; rescans the files when the look-ahead is
/// not enough (only once, since verification stops there).
struct Checker<'a> {
    files: &'a [PathBuf],
    chain: &'a Chain,
}

impl Checker<'_> {
    fn at(&self, r: &Rec, seq: Option<u64>, kind: TamperKind, detail: String) -> Tamper {
        Tamper {
            file: self.files[r.file].clone(),
            line: r.line,
            seq,
            kind,
            detail,
        }
    }

    /// `line 7` in the same file as `from`, else `<file>:7`.
    fn place(&self, r: &Rec, from: &Rec) -> String {
        if r.file == from.file {
            format!("line {}", r.line)
        } else {
            format!("{}:{}", self.files[r.file].display(), r.line)
        }
    }

    fn check(
        &self,
        reader: &mut Reader<'_>,
        tip: Option<&Rec>,
        r: &Rec,
        opts: &VerifyOptions<'_>,
    ) -> Result<(), Tamper> {
        use TamperKind::*;
        let mut peek_next = || match reader.peek() {
            Some(Entry::Rec(n)) => Some(n.clone()),
            _ => None,
        };
        if !r.hash_ok {
            // Not part of the chain if the chain goes on around it.
            if let (Some(t), Some(n)) = (tip, &peek_next()) {
                if n.seq == t.seq + 1 && n.prev == t.digest {
                    return Err(self.at(
                        r,
                        Some(r.seq),
                        Inserted,
                        format!(
                            "not part of the chain: its hash does not verify and the next \
                             record (seq {}, {}) links to the record before it",
                            n.seq,
                            self.place(n, r)
                        ),
                    ));
                }
            }
            let why = if r.plain {
                "its hash is a plain SHA-256 of the content: the line was changed and \
                 its hash recomputed without the chain key"
            } else if self.chain.keyed() {
                "its hash does not match the line's content under the given key \
                 (the line was changed, or the key is not the chain's)"
            } else {
                "its hash does not match the line's content (the line was changed, \
                 or the chain is keyed and no key was given)"
            };
            return Err(self.at(r, Some(r.seq), Edited, why.into()));
        }
        let Some(t) = tip else {
            if r.seq == 1 && r.prev != GENESIS_PREV {
                return Err(self.at(
                    r,
                    Some(1),
                    Edited,
                    "record 1 must link to 64 zeros (the chain's start)".into(),
                ));
            }
            if r.seq != 1 && r.prev == GENESIS_PREV {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Edited,
                    "only record 1 may link to 64 zeros".into(),
                ));
            }
            if opts.require_start && r.seq != 1 {
                return Err(self.at(
                    r,
                    Some(1),
                    Deleted,
                    format!(
                        "{} missing: the chain's beginning was not given",
                        range(1, r.seq - 1)
                    ),
                ));
            }
            return Ok(());
        };
        if r.seq == t.seq + 1 {
            if r.prev == t.digest {
                return Ok(());
            }
            if let Some(n) = &peek_next() {
                if n.seq == r.seq && n.prev == t.digest {
                    return Err(self.at(
                        r,
                        Some(r.seq),
                        Inserted,
                        format!(
                            "not part of the chain: the next record ({}) has the same seq \
                             and links to the record before this one",
                            self.place(n, r)
                        ),
                    ));
                }
            }
            return Err(self.at(
                t,
                Some(t.seq),
                Edited,
                format!(
                    "record {} ({}) links to different content: this record was changed \
                     and its hash recomputed",
                    r.seq,
                    self.place(r, t)
                ),
            ));
        }
        if r.seq > t.seq + 1 {
            let (a, b) = (t.seq + 1, r.seq - 1);
            if let Some(later) = self.find_after(r, |s| (a..=b).contains(&s)) {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Reordered,
                    format!(
                        "record {} comes before record {} ({})",
                        r.seq,
                        later.seq,
                        self.place(&later, r)
                    ),
                ));
            }
            if r.prev == t.digest {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Edited,
                    format!(
                        "seq jumps from {} to {} but the record links to record {}: its seq \
                         was changed and its hash recomputed",
                        t.seq, r.seq, t.seq
                    ),
                ));
            }
            let detail = if r.file != t.file && r.line == 1 {
                format!(
                    "{} missing between {} (ends at seq {}) and this file: a rotated file is missing?",
                    range(a, b),
                    self.files[t.file].display(),
                    t.seq
                )
            } else {
                format!(
                    "{} missing (the chain jumps from {} to {} here)",
                    range(a, b),
                    t.seq,
                    r.seq
                )
            };
            return Err(self.at(r, Some(a), Deleted, detail));
        }
        // r.seq <= t.seq: the seq repeats or goes back.
        let earlier = self.find_before(r, r.seq);
        if let Some(e) = earlier.as_ref().filter(|e| e.digest == r.digest) {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!("a copy of record {} ({})", e.seq, self.place(e, r)),
            ));
        }
        if r.seq == t.seq && r.prev == t.prev {
            // Two records for one slot: the chain goes on from the genuine one.
            if let Some(n) = &peek_next() {
                if n.seq == r.seq + 1 && n.prev == r.digest {
                    return Err(self.at(
                        t,
                        Some(t.seq),
                        Inserted,
                        format!(
                            "not part of the chain: {} has the same seq and prev, and the \
                             chain continues from it",
                            self.place(r, t)
                        ),
                    ));
                }
            }
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!(
                    "not part of the chain: {} already holds seq {} with the same prev",
                    self.place(t, r),
                    r.seq
                ),
            ));
        }
        if let Some(e) = earlier.as_ref().filter(|e| e.prev == r.prev) {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!(
                    "not part of the chain: claims seq {}, which {} already holds",
                    r.seq,
                    self.place(e, r)
                ),
            ));
        }
        if r.seq == t.seq {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!("repeats seq {} ({})", r.seq, self.place(t, r)),
            ));
        }
        Err(self.at(
            r,
            Some(r.seq),
            Reordered,
            format!("seq goes back from {} to {}", t.seq, r.seq),
        ))
    }

    /// The first record after `r` whose seq satisfies `want`.
    fn find_after(&self, r: &Rec, want: impl Fn(u64) -> bool) -> Option<Rec> {
        let mut reader = Reader::at_file(self.files, self.chain, r.file);
        while let Some(e) = reader.next() {
            if let Entry::Rec(x) = e {
                if (x.file, x.line) > (r.file, r.line) && want(x.seq) {
                    return Some(x);
                }
            }
        }
        None
    }

    /// The (accepted) record with `seq` before `r`.
    fn find_before(&self, r: &Rec, seq: u64) -> Option<Rec> {
        let mut reader = Reader::new(self.files, self.chain);
        while let Some(e) = reader.next() {
            if let Entry::Rec(x) = e {
                if (x.file, x.line) >= (r.file, r.line) {
                    return None;
                }
                if x.seq == seq {
                    return Some(x);
                }
            }
        }
        None
    }
}

/// `record 5` or `records 5..7`.
fn range(a: u64, b: u64) -> String {
    if a == b {
        format!("record {a} is")
    } else {
        format!("records {a}..{b} are")
    }
}
