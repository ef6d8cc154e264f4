//! The audit-file verifier (`audit::verify`): a chain sealed by
//! `audit::chain::seal` verifies, and no single-byte modification of it
//! does (keyed or not).
//!
//! Input: flags (key or not, mutation position and byte), then
//! NUL-separated record values (one field each).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rack_gateway::audit::chain::{line_digest, seal, GENESIS_PREV};
use rack_gateway::audit::verify::verify;
use serde_json::{Map, Value};

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "rack-gateway-fuzz-audit-{}.log",
            std::process::id()
        ))
    })
}

fn check(bytes: &[u8], key: Option<&[u8]>) -> bool {
    std::fs::write(path(), bytes).expect("temp file is writable");
    verify(std::slice::from_ref(path()), key).is_ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (flags, rest) = data.split_at(4);
    let key: Option<&[u8]> = (flags[0] & 1 == 1).then_some(b"fuzz chain key");
    let mut file = String::new();
    let mut prev = GENESIS_PREV.to_owned();
    for (i, value) in rest.split(|&b| b == 0).take(8).enumerate() {
        let mut record = Map::new();
        record.insert(
            "event".into(),
            Value::String(String::from_utf8_lossy(value).into_owned()),
        );
        if flags[0] & 2 == 2 {
            record.insert("seq".into(), Value::from(99));
        }
        let line = seal(&record, i as u64 + 1, &prev, key);
        prev = line_digest(&line);
        file.push_str(&line);
        file.push('\n');
    }
    let mut bytes = file.into_bytes();
    assert!(check(&bytes, key), "a sealed chain does not verify");
    let pos = usize::from(u16::from_le_bytes([flags[1], flags[2]])) % bytes.len();
    let byte = if bytes[pos] == flags[3] {
        flags[3] ^ 1
    } else {
        flags[3]
    };
    bytes[pos] = byte;
    assert!(
        !check(&bytes, key),
        "accepted a chain modified at byte {pos} to {byte:#04x}"
    );
});
