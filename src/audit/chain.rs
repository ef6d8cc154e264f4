//! The hash chain every audit file line belongs to: sealing a record into
//! a line ([`seal`]), the digest the next line links to ([`line_digest`]),
//! reading a sealed line's chain fields back, and the genesis value. The
//! file sink and the verifier share these, so what is written and what is
//! checked cannot drift apart.
//!
//! # Line format
//!
//! One JSON object per line, each line ended by `\n` (values never contain
//! a raw newline: JSON escapes it). The sink appends three fields as the
//! **last** fields of every record, in this order, with no whitespace:
//!
//! ```text
//! {<the record's own fields>,"seq":N,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! (a record without fields of its own is `{"seq":N,"prev":"…","hash":"…"}`).
//!
//! * `seq`: 1 for the first record of a chain, then +1 per record; it
//!   continues across rotated files.
//! * `prev`: lowercase hex SHA-256 of the previous record's complete line
//!   (every byte of it, without the `\n`); 64 zeros ([`GENESIS_PREV`]) for
//!   record 1.
//! * `hash`: lowercase hex of SHA-256 — or of HMAC-SHA-256 under the chain
//!   key when one is configured — over the line's bytes from its first byte
//!   (`{`) up to and including the closing quote of the `prev` value, i.e.
//!   the whole line minus its last 75 bytes (`,"hash":"` + 64 hex + `"}`).
//!   A verifier recomputes it from the line text alone, without
//!   re-serializing anything.
//!
//! The keys `seq`, `prev` and `hash` are reserved: a submitted record's own
//! fields with those names are removed before it is sealed.
//!
//! What the chain proves: without a key, it detects accidental damage and
//! naive edits (a changed, removed, inserted or reordered line breaks a
//! hash or a link), but anyone with write access to the file can rewrite
//! the chain from the edited record on, recomputing every hash. With a key
//! (HMAC), someone who can write the file but does not hold the key cannot
//! produce valid hashes, so every edit or forged record is detected.
//! Neither mode can detect records cut off the **end** of the chain (or
//! whole files removed from the end): compare the verifier's last seq with
//! an independent anchor (the gateway's `written` counter, a shipped copy).

use ring::{digest, hmac};
use serde_json::{Map, Value};

/// `prev` of record 1.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex + `"}`: what follows the hashed part of a line.
pub(super) const HASH_TAIL_LEN: usize = 9 + 64 + 2;

/// The reserved keys the sink appends.
const RESERVED: [&str; 3] = ["seq", "prev", "hash"];

/// Computes `hash` values: SHA-256, or HMAC-SHA-256 under a key.
#[derive(Clone)]
pub(super) struct Chain {
    key: Option<hmac::Key>,
}

impl Chain {
    pub(super) fn new(key: Option<&[u8]>) -> Chain {
        Chain {
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        }
    }

    pub(super) fn keyed(&self) -> bool {
        self.key.is_some()
    }

    pub(super) fn tag(&self, hashed: &[u8]) -> String {
        match &self.key {
            Some(k) => crate::hex::encode(hmac::sign(k, hashed).as_ref()),
            None => sha256_hex(hashed),
        }
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// The `prev` value a record following `line` must carry: hex SHA-256 of
/// the line's bytes (pass it without its `\n`).
pub fn line_digest(line: &str) -> String {
    sha256_hex(line.as_bytes())
}

/// Seals one record into a chain line (without the trailing `\n`): the
/// record's fields, minus any reserved `seq`/`prev`/`hash`, then `seq`,
/// `prev` and `hash` as described in the module documentation. This is
/// exactly what the sink writes; exposed for tools and tests.
pub fn seal(record: &Map<String, Value>, seq: u64, prev: &str, key: Option<&[u8]>) -> String {
    let line = seal_line(&Chain::new(key), record, seq, prev);
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

pub(super) fn seal_line(
    chain: &Chain,
    record: &Map<String, Value>,
    seq: u64,
    prev: &str,
) -> Vec<u8> {
    let mut line = if RESERVED.iter().any(|k| record.contains_key(*k)) {
        let mut own = record.clone();
        for k in RESERVED {
            own.remove(k);
        }
        body(&own)
    } else {
        body(record)
    };
    // `{…}` minus the closing brace; a comma unless there are no fields.
    line.pop();
    if line.len() > 1 {
        line.push(b',');
    }
    line.extend_from_slice(format!("\"seq\":{seq},\"prev\":\"{prev}\"").as_bytes());
    let hash = chain.tag(&line);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
    line
}

fn body(record: &Map<String, Value>) -> Vec<u8> {
    // Serializing a map of JSON values cannot fail (no non-string keys, no
    // non-finite numbers); keep the writer thread panic-free regardless.
    serde_json::to_vec(record)
        .ok()
        .filter(|b| b.first() == Some(&b'{') && b.last() == Some(&b'}'))
        .unwrap_or_else(|| b"{\"event\":\"audit_record_unserializable\"}".to_vec())
}

/// The chain fields of one line, read from its text.
pub(super) struct Sealed {
    pub(super) seq: u64,
    pub(super) prev: String,
    pub(super) hash: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a line's structure (not its hash): a JSON object whose last
/// fields are exactly `"seq":N,"prev":"…","hash":"…"}`.
pub(super) fn parse_line(line: &[u8]) -> Result<Sealed, String> {
    let obj: Map<String, Value> = match serde_json::from_slice(line) {
        Ok(o) => o,
        Err(e) => return Err(format!("not a JSON object ({e})")),
    };
    let seq = match obj.get("seq") {
        None => return Err("no seq field".into()),
        Some(v) => v
            .as_u64()
            .filter(|s| *s > 0)
            .ok_or("seq is not a positive integer")?,
    };
    let text = |k: &str| -> Result<String, String> {
        match obj.get(k) {
            None => Err(format!("no {k} field")),
            Some(Value::String(s)) if is_hex64(s) => Ok(s.clone()),
            Some(_) => Err(format!("{k} is not 64 lowercase hex digits")),
        }
    };
    let prev = text("prev")?;
    let hash = text("hash")?;
    let tail = format!("\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}");
    let structured = line.ends_with(tail.as_bytes()) && {
        let before = line.len() - tail.len();
        (before == 1 && line[0] == b'{') || (before > 1 && line[before - 1] == b',')
    };
    if !structured {
        return Err("seq, prev and hash are not the line's last fields, in that order".into());
    }
    Ok(Sealed { seq, prev, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event".into(), "request".into());
        m.insert("n".into(), i.into());
        m
    }

    #[test]
    fn seal_layout_and_hash_construction() {
        let line = seal(&rec(7), 3, GENESIS_PREV, None);
        assert_eq!(
            &line[..line.len() - HASH_TAIL_LEN],
            format!("{{\"event\":\"request\",\"n\":7,\"seq\":3,\"prev\":\"{GENESIS_PREV}\"")
        );
        let hashed = &line.as_bytes()[..line.len() - HASH_TAIL_LEN];
        assert_eq!(
            line,
            format!(
                "{}{},\"hash\":\"{}\"}}",
                "",
                std::str::from_utf8(hashed).unwrap(),
                sha256_hex(hashed)
            )
        );
        let parsed = parse_line(line.as_bytes()).unwrap();
        assert_eq!((parsed.seq, parsed.prev.as_str()), (3, GENESIS_PREV));
        // Keyed: HMAC-SHA-256 over the same bytes.
        let keyed = seal(&rec(7), 3, GENESIS_PREV, Some(b"k"));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"k"), hashed);
        assert!(keyed.ends_with(&format!(
            ",\"hash\":\"{}\"}}",
            crate::hex::encode(tag.as_ref())
        )));
        assert_ne!(keyed, line);
    }

    #[test]
    fn seal_empty_record_and_reserved_keys() {
        let line = seal(&Map::new(), 1, GENESIS_PREV, None);
        assert!(line.starts_with("{\"seq\":1,\"prev\":\""));
        assert!(parse_line(line.as_bytes()).is_ok());
        let mut m = rec(1);
        m.insert("seq".into(), "mine".into());
        m.insert("hash".into(), 5.into());
        let line = seal(&m, 9, GENESIS_PREV, None);
        assert_eq!(line.matches("\"seq\"").count(), 1);
        assert_eq!(line.matches("\"hash\"").count(), 1);
        assert!(line.starts_with("{\"event\":\"request\",\"n\":1,\"seq\":9,"));
    }

    #[test]
    fn parse_line_rejects_misplaced_chain_fields() {
        let good = seal(&rec(1), 1, GENESIS_PREV, None);
        // Whitespace after a colon: valid JSON, not the sealed layout.
        let spaced = good.replacen("\"seq\":1", "\"seq\": 1", 1);
        assert_eq!(
            parse_line(spaced.as_bytes()).err().unwrap(),
            "seq, prev and hash are not the line's last fields, in that order"
        );
        assert_eq!(parse_line(b"{\"a\":1}").err().unwrap(), "no seq field");
        assert!(parse_line(b"nope")
            .err()
            .unwrap()
            .starts_with("not a JSON object"));
        let upper = good.replace(GENESIS_PREV, &"A".repeat(64));
        assert_eq!(
            parse_line(upper.as_bytes()).err().unwrap(),
            "prev is not 64 lowercase hex digits"
        );
    }
}
