//! Token front end (`identity::token`): the cached verifier agrees with the
//! plain one on any input; a minted token verifies to its claims, only
//! inside its lifetime, and no single-byte modification of it verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rack_gateway::identity::token::{generate_private_pem, Keys, VerifyCache};

const NOW: i64 = 1_800_000_000;

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pem = generate_private_pem();
        Keys::new(
            "https://gw.test",
            "rack-gateway",
            Some(("k1".into(), pem)),
            vec![],
        )
        .expect("a fresh Ed25519 key")
    })
}

fn agree(cache: &VerifyCache, token: &str, now: i64) {
    let plain = keys().verify(token, now);
    let cached = cache.verify(keys(), token, now);
    assert_eq!(plain, cached, "cache disagrees at {now} on {token:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let cache = VerifyCache::new(4);
    if mode & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        for now in [NOW, NOW + 3600, 0] {
            agree(&cache, &token, now);
            assert!(keys().verify(&token, now).is_err(), "forged token accepted");
        }
        return;
    }
    if rest.len() < 3 {
        return;
    }
    let (pos, byte, sub) = (rest[0], rest[1], String::from_utf8_lossy(&rest[2..]));
    let Ok((token, claims)) = keys().mint(
        &sub,
        vec!["pwd".into()],
        None,
        Duration::from_secs(600),
        NOW,
    ) else {
        return;
    };
    assert_eq!(keys().verify(&token, NOW + 1).as_ref(), Ok(&claims));
    assert!(
        keys().verify(&token, NOW + 600 + 31).is_err(),
        "expired token accepted"
    );
    agree(&cache, &token, NOW + 1);
    agree(&cache, &token, NOW + 700);
    let mut bytes = token.into_bytes();
    let i = usize::from(pos) * bytes.len() / 256;
    bytes[i] = if bytes[i] == byte { byte ^ 1 } else { byte };
    let modified = String::from_utf8_lossy(&bytes);
    assert!(
        keys().verify(&modified, NOW + 1).is_err(),
        "modified token {modified:?} accepted"
    );
    agree(&cache, &modified, NOW + 1);
});
