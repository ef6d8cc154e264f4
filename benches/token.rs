//! Benchmarks of the gateway's identity tokens: minting one at login,
//! verifying one with its signature check (a token seen for the first time),
//! and verifying one already in the cache (every later request).
//!
//! Run with `cargo bench --bench token`.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use divan::{black_box, Bencher};
use rack_gateway::identity::token::{self, Keys, VerifyCache};

fn main() {
    divan::main();
}

struct Fixture {
    keys: Keys,
    token: String,
    cache: VerifyCache,
    now: i64,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pem = token::generate_private_pem();
    let kid = token::key_id(&pem).expect("generated key");
    let keys = Keys::new(
        "https://gateway.example.com",
        "rack-gateway",
        Some((kid, pem)),
        vec![],
    )
    .expect("generated key");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let (token, _) = keys
        .mint(
            "ann@example.com",
            vec!["pwd".into(), "mfa".into()],
            Some(now),
            TTL,
            now,
        )
        .expect("mint");
    let cache = VerifyCache::new(10_000);
    cache.verify(&keys, &token, now).expect("verify");
    Fixture {
        keys,
        token,
        cache,
        now,
    }
});

const TTL: Duration = Duration::from_secs(12 * 3600);

#[divan::bench]
fn mint(bencher: Bencher) {
    let fx = &*FIXTURE;
    bencher.bench(|| {
        fx.keys
            .mint(
                black_box("ann@example.com"),
                vec![],
                None,
                TTL,
                black_box(fx.now),
            )
            .expect("mint")
    });
}

#[divan::bench]
fn verify_cold(bencher: Bencher) {
    let fx = &*FIXTURE;
    bencher.bench(|| {
        fx.keys
            .verify(black_box(&fx.token), black_box(fx.now))
            .expect("verify")
    });
}

#[divan::bench]
fn verify_cached(bencher: Bencher) {
    let fx = &*FIXTURE;
    bencher.bench(|| {
        fx.cache
            .verify(&fx.keys, black_box(&fx.token), black_box(fx.now))
            .expect("verify")
    });
}
