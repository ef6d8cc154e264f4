//! Waiting for a condition by polling it, bounded by a deadline that only
//! turns a hang into a failure (conditions normally hold within
//! milliseconds).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns `Ok`, failing with its last `Err` (what
/// was observed instead) if that never happens before `deadline`.
pub async fn eventually_by<T, Fut>(
    deadline: Instant,
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: did not happen within {DEADLINE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// [`eventually_by`] with the standard [`DEADLINE`].
pub async fn eventually<T, Fut>(what: &str, probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    eventually_by(Instant::now() + DEADLINE, what, probe).await
}
