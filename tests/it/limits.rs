//! Rate limits through a real gateway on a loopback port: per identity (with
//! role and identity overrides), the expensive-operations bucket (in-band on
//! websockets), the failed-authentication limiter per address, and the
//! metrics that count them. Every limit here is per minute with a small
//! burst, so the refused request always comes well inside the window.

use bytes::Bytes;
use rack_gateway::rack::ws::{self, Frame, EXIT_MARKER};

use crate::support::*;

const APPS: &str = "/racks/staging/apps?";
const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";
const WRONG: &str = "not-a-real-token-CCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

/// Checks a 429 refusal: `Retry-After` of at least 1 s and the JSON error
/// starting with `prefix` and ending in `retry in Ns`.
fn assert_limited(r: &Resp, prefix: &str) {
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r
        .headers
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    let e = r.error();
    assert!(e.starts_with(prefix), "{e:?} should start with {prefix:?}");
    let rest = e[prefix.len()..].to_string();
    let secs = rest
        .strip_prefix("; retry in ")
        .and_then(|s| s.strip_suffix('s'))
        .unwrap_or_else(|| panic!("{e:?}"));
    let secs: u64 = secs.parse().unwrap_or_else(|_| panic!("{e:?}"));
    assert!(secs >= 1, "{e:?}");
}

#[tokio::test]
async fn per_identity_limit_refuses_with_429_and_spares_others() {
    let gw = Gw::start_with(
        "rate_limits: {default: 2/s, ci: {rate: 3/min, burst: 3}, expensive: 1000/s, auth_failures: 1000/s}\n",
    )
    .await;
    for i in 0..3 {
        let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(gw.staging.requests().len(), 3);
    let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
    assert_limited(&r, "gateway: rate limit: 3 requests/min for CI identities");
    assert_eq!(
        gw.staging.requests().len(),
        3,
        "the rack saw the refused one"
    );
    // Another identity has its own bucket.
    for _ in 0..3 {
        let r = get(&gw.url(APPS), Some(CI_ALL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(gw.staging.requests().len(), 6);
}

#[tokio::test]
async fn role_and_identity_entries_take_precedence() {
    // Both tokens hold `admin`; ci-staging also has its own entry, which
    // wins over the role, which wins over `ci`.
    let gw = Gw::start_with(
        "rate_limits:\n  default: 1000/s\n  ci: 1000/s\n  expensive: 1000/s\n  auth_failures: 1000/s\n  roles: {admin: {rate: 2/min, burst: 2}}\n  identities: {\"ci:ci-staging\": {rate: 1/min, burst: 1}}\n",
    )
    .await;
    let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
    assert_limited(
        &r,
        "gateway: rate limit: 1 request/min for identity ci:ci-staging",
    );

    for _ in 0..2 {
        let r = get(&gw.url(APPS), Some(CI_ALL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get(&gw.url(APPS), Some(CI_ALL)).await;
    assert_limited(&r, "gateway: rate limit: 2 requests/min for role admin");
    assert_eq!(gw.forwarded_count(), 3);
}

async fn exec_frames(gw: &Gw, token: &str) -> Vec<Frame> {
    let auth = basic(token);
    let mut c = ws::client_connect(
        gw.addr(),
        EXEC,
        &[("Authorization", auth.as_str()), ("Command", "echo hi")],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    read_until_eof(&mut c).await
}

#[tokio::test]
async fn expensive_bucket_refuses_exec_and_run_in_band_but_not_reads() {
    let gw = Gw::start_with(
        "rate_limits: {default: 1000/s, ci: 1000/s, expensive: {rate: 1/min, burst: 1}, auth_failures: 1000/s}\n",
    )
    .await;
    let first = exec_frames(&gw, CI_STAGING).await;
    assert!(
        first.contains(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{first:?}"
    );
    let seen = gw.staging.requests().len();
    assert!(
        gw.staging.requests().iter().any(|r| r.websocket),
        "the first exec reached the rack"
    );

    let second = exec_frames(&gw, CI_STAGING).await;
    let line = String::from_utf8(second[0].payload.clone()).unwrap();
    assert!(
        line.starts_with(
            "ERROR: gateway: rate limit: 1 request/min for expensive operations (exec)"
        ),
        "{line:?}"
    );
    assert!(
        second.contains(&Frame::text(format!("{EXIT_MARKER}:1\n"))),
        "{second:?}"
    );
    assert_eq!(gw.staging.requests().len(), seen, "refused exec forwarded");

    // `run` takes from the same bucket.
    let r = send(
        "POST",
        &gw.url("/racks/staging/apps/myapp/services/web/processes"),
        Some(CI_STAGING),
        &[("Command", "sleep 10")],
        "",
    )
    .await;
    assert_limited(
        &r,
        "gateway: rate limit: 1 request/min for expensive operations (run)",
    );
    assert_eq!(gw.staging.requests().len(), seen);

    // Cheap reads still pass, and another identity can still exec.
    for _ in 0..5 {
        let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let other = exec_frames(&gw, CI_ALL).await;
    assert!(
        other.contains(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{other:?}"
    );
}

#[tokio::test]
async fn failed_authentications_slow_only_failing_credentials() {
    let gw = Gw::start_with(
        "rate_limits: {default: 1000/s, ci: 1000/s, expensive: 1000/s, auth_failures: {rate: 3/min, burst: 3}}\n",
    )
    .await;
    // A valid request before any failure passes.
    assert_eq!(get(&gw.url(APPS), Some(CI_STAGING)).await.status, 200);
    for i in 0..3 {
        let r = get(&gw.url(APPS), Some(WRONG)).await;
        assert_eq!(r.status, 401, "failure {i}: {}", r.text());
    }
    let before = gw.forwarded_count();
    assert_eq!(before, 1);
    // The address is blocked for failing credentials...
    let r = get(&gw.url(APPS), Some(WRONG)).await;
    assert_limited(
        &r,
        "gateway: too many failed authentication attempts from this address",
    );
    let r = get(&gw.url(APPS), None).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        gw.forwarded_count(),
        before,
        "the rack saw a refused request"
    );
    // ...but a valid credential from the same address (a NAT, a CI runner
    // pool) is still served.
    let r = get(&gw.url(APPS), Some(CI_STAGING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.forwarded_count(), before + 1);
}

/// Extracts one sample's value from a Prometheus exposition: `name` with
/// every label pair in `labels` (others may be present).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<&str> = l.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            *total.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    total
}

#[tokio::test]
async fn limiter_keys_and_refusals_show_in_metrics() {
    init();
    let rack = mock().await;
    let tokens: Vec<String> = (0..20)
        .map(|i| format!("ci-metrics-token-{i:02}-DDDDDDDDDDDDDDDDDDDDDDDDDD"))
        .collect();
    let names: Vec<String> = (0..20).map(|i| format!("bot-{i:02}")).collect();
    let ci: Vec<(&str, &str, &str, &str)> = names
        .iter()
        .zip(&tokens)
        .map(|(n, t)| (n.as_str(), t.as_str(), "admin", "*"))
        .collect();
    let (gw, _dir) = ConfigDir::new()
        .rack("staging", &rack.url())
        .extra("rate_limits: {default: 1000/s, ci: {rate: 2/min, burst: 2}, expensive: 1000/s, auth_failures: 1000/s}\n")
        .ci(&ci)
        .start()
        .await;
    let base = format!("http://{}", gw.addr);
    let metrics = || async {
        let r = get(&format!("{base}/_gateway/metrics"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    };
    let keys = |t: &str| sample(t, "rack_gateway_ratelimit_keys", &[]).expect("keys gauge");
    let before = keys(&metrics().await);

    for t in &tokens[..10] {
        assert_eq!(get(&format!("{base}/apps?"), Some(t)).await.status, 200);
    }
    let mid = keys(&metrics().await);
    assert!(mid >= before + 10.0, "{before} -> {mid}");
    for t in &tokens[10..] {
        assert_eq!(get(&format!("{base}/apps?"), Some(t)).await.status, 200);
    }
    let text = metrics().await;
    let after = keys(&text);
    assert!(after >= mid + 10.0, "{mid} -> {after}");
    assert_eq!(
        sample(
            &text,
            "rack_gateway_rate_limited_total",
            &[("bucket", "identity")]
        )
        .unwrap_or(0.0),
        0.0
    );

    // Each of 3 identities: 2 pass (burst), then 2 are refused.
    let mut refused = 0;
    for t in &tokens[..3] {
        for i in 0..4 {
            let r = get(&format!("{base}/apps?"), Some(t)).await;
            if i == 0 {
                // The first request above already used one token.
                assert_eq!(r.status, 200, "{}", r.text());
            } else {
                assert_eq!(r.status, 429, "{}", r.text());
                refused += 1;
            }
        }
    }
    let text = metrics().await;
    assert_eq!(
        sample(
            &text,
            "rack_gateway_rate_limited_total",
            &[("bucket", "identity")]
        ),
        Some(f64::from(refused)),
        "{text}"
    );
    assert_eq!(rack.requests().len(), 23);
}

/// A refused request spends no rate-limit tokens, and its reason reaches
/// the user even when the identity's buckets are empty: a viewer's exec
/// says "may not", never "rate limit".
#[tokio::test]
async fn a_denial_wins_over_the_rate_limit_and_spends_nothing() {
    init();
    let rack = mock().await;
    const VIEWER: &str = "ci-viewer-token-EEEEEEEEEEEEEEEEEEEEEEEEEEEEEE";
    let (gw, _dir) = ConfigDir::new()
        .rack("staging", &rack.url())
        .extra("rate_limits: {default: 1000/s, ci: {rate: 1/min, burst: 1}, expensive: {rate: 1/min, burst: 1}, auth_failures: 1000/s}\n")
        .ci(&[("viewer-bot", VIEWER, "viewer", "*"), ("admin-bot", CI_ALL, "admin", "*")])
        .start()
        .await;
    let base = format!("http://{}", gw.addr);
    // Denied requests first: they must not spend the viewer's one token.
    for _ in 0..3 {
        let r = release(&base, VIEWER).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("may not"), "{}", r.text());
    }
    // Control: the token is still there for an allowed request...
    let r = get(&format!("{base}/apps?"), Some(VIEWER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and once it is spent, an allowed request is limited while a
    // denied one still says why it is denied.
    let r = get(&format!("{base}/apps?"), Some(VIEWER)).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let r = release(&base, VIEWER).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!r.text().contains("rate limit"), "{}", r.text());
    assert_eq!(
        rack.requests()
            .iter()
            .filter(|q| q.target.contains("releases"))
            .count(),
        0,
        "a denied release reached the rack"
    );
}

async fn release(base: &str, token: &str) -> Resp {
    send(
        "POST",
        &format!("{base}/apps/myapp/releases"),
        Some(token),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Bytes::from_static(b"env=A%3D1"),
    )
    .await
}

/// A viewer's `convox exec` is told it may not exec — in band, in the
/// words of the command typed — even with every bucket of the identity
/// empty; the control, an admin's exec, is limited by the same settings.
#[tokio::test]
async fn a_viewers_exec_says_may_not_exec_never_rate_limit() {
    init();
    let rack = mock().await;
    const VIEWER: &str = "ci-viewer-token-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";
    let (gw, _dir) = ConfigDir::new()
        .rack("staging", &rack.url())
        .extra("rate_limits: {default: 1000/s, ci: {rate: 1/min, burst: 1}, expensive: {rate: 1/min, burst: 1}, auth_failures: 1000/s}\n")
        .ci(&[("viewer-bot", VIEWER, "viewer", "*"), ("admin-bot", CI_ALL, "admin", "*")])
        .start()
        .await;
    // Spend the viewer's one token on an allowed read.
    let r = get(&format!("http://{}{APPS}", gw.addr), Some(VIEWER)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let exec = |token: &'static str| async move {
        let auth = basic(token);
        let mut c = ws::client_connect(
            gw.addr,
            EXEC,
            &[("Authorization", auth.as_str()), ("Command", "echo hi")],
        )
        .await
        .unwrap();
        assert_eq!(c.status, 101);
        c.send(&Frame::binary(Vec::new())).await.unwrap();
        let frames = read_until_eof(&mut c).await;
        String::from_utf8(frames[0].payload.clone()).unwrap()
    };
    for _ in 0..2 {
        let line = exec(VIEWER).await;
        assert!(
            line.starts_with("ERROR: gateway: denied: viewer-bot may not \"exec\" (convox exec, run, test) on staging/myapp"),
            "{line:?}"
        );
        assert!(!line.contains("rate limit"), "{line:?}");
    }
    // Control: the admin's first exec runs, its second is limited.
    let first = exec(CI_ALL).await;
    assert!(!first.starts_with("ERROR:"), "{first:?}");
    let second = exec(CI_ALL).await;
    assert!(second.contains("rate limit"), "{second:?}");
}
