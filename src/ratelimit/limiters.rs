//! The limiters of one configuration: a keyed governor limiter per
//! distinct quota, the expensive-operations bucket, the failed-
//! authentication block list, and the clock they all read.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::RateLimiter;

use super::settings::{Rate, RateSettings};
use crate::policy::{Policy, Subject};

// ---------------------------------------------------------------------------
// Clock

/// The limiters' time source: monotonic in production, and a manual clock
/// in tests so that no test sleeps. Clones share the same time.
#[derive(Debug, Clone)]
pub struct RateClock(Arc<ClockInner>);

#[derive(Debug)]
struct ClockInner {
    /// `None` for a manual clock, which only moves with `advance`.
    start: Option<Instant>,
    offset_ns: AtomicU64,
}

impl RateClock {
    /// Real (monotonic) time.
    pub(crate) fn monotonic() -> RateClock {
        RateClock(Arc::new(ClockInner {
            start: Some(Instant::now()),
            offset_ns: AtomicU64::new(0),
        }))
    }

    /// A clock that stands still until [`RateClock::advance`]d.
    #[cfg(test)]
    pub(crate) fn manual() -> RateClock {
        RateClock(Arc::new(ClockInner {
            start: None,
            offset_ns: AtomicU64::new(0),
        }))
    }

    /// Moves this clock (and its clones) forward.
    #[cfg(test)]
    pub(crate) fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.offset_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Default for RateClock {
    fn default() -> Self {
        RateClock::monotonic()
    }
}

impl Clock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let real = self
            .0
            .start
            .map(|s| u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Nanos::from(real.saturating_add(self.0.offset_ns.load(Ordering::Relaxed)))
    }
}

// ---------------------------------------------------------------------------
// Limiters

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, RateClock, NoOpMiddleware<Nanos>>;
type KeyedInfo<K> = RateLimiter<K, DashMapStateStore<K>, RateClock, StateInformationMiddleware>;

fn keyed<K: std::hash::Hash + Eq + Clone>(rate: Rate, clock: &RateClock) -> Keyed<K> {
    RateLimiter::new(rate.quota(), DashMapStateStore::default(), clock.clone())
}

/// Which bucket refused a request (the label of the
/// `rack_gateway_rate_limited_total` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Identity,
    Expensive,
    AuthFailures,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Identity => "identity",
            Bucket::Expensive => "expensive",
            Bucket::AuthFailures => "auth_failures",
        }
    }
}

/// A refusal: answer 429 with `Retry-After: retry_after.as_secs()` and
/// `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds, at least one.
    pub retry_after: Duration,
    pub message: String,
    pub bucket: Bucket,
}

/// Rounds a wait up to whole seconds, at least one.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// The identity a request is checked for.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The person's email (as authenticated) or the CI identity's name.
    pub name: &'a str,
    /// A CI identity (static token or federated), not a person.
    pub ci: bool,
    /// The names of the roles granted to the identity, on any scope
    /// ([`role_names`]).
    pub roles: &'a [&'a str],
}

/// The names of the roles `subject` is granted on any scope, without
/// duplicates, for [`Who::roles`].
pub fn role_names<'p>(policy: &'p Policy, subject: &Subject) -> Vec<&'p str> {
    let mut names: Vec<&str> = subject
        .grants
        .iter()
        .filter_map(|g| policy.roles.get(g.role).map(|r| r.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Where an identity's normal rate comes from, for the message.
enum Source<'a> {
    Identity(&'a str),
    CiIdentity(&'a str),
    Role(&'a str),
    Ci,
    Default,
}

/// One keyed limiter per distinct quota.
struct Class {
    rate: Rate,
    limiter: Arc<Keyed<String>>,
}

/// The failed-authentication limiter. governor cannot test a bucket without
/// taking from it, so an address whose failure emptied its bucket is
/// recorded in `blocked` until the bucket has a token again; the check
/// before authenticating only reads that map (and skips even the lock while
/// it is empty, the normal case).
struct AuthFailures {
    rate: Rate,
    limiter: KeyedInfo<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Nanos>>,
    blocked_len: AtomicUsize,
}

/// The rate limiters of one gateway configuration. `Send + Sync`; share it
/// behind an `Arc`.
pub struct Limiters {
    settings: RateSettings,
    clock: RateClock,
    classes: Vec<Class>,
    default_class: usize,
    ci_class: usize,
    roles: HashMap<String, usize>,
    persons: HashMap<String, usize>,
    ci_identities: HashMap<String, usize>,
    expensive: Arc<Keyed<String>>,
    auth: Arc<AuthFailures>,
}

impl fmt::Debug for Limiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiters")
            .field("settings", &self.settings)
            .field("keys", &self.key_count())
            .finish()
    }
}

impl Limiters {
    pub fn new(settings: RateSettings) -> Limiters {
        Limiters::with_clock(settings, RateClock::monotonic())
    }

    pub(crate) fn with_clock(settings: RateSettings, clock: RateClock) -> Limiters {
        Limiters::build(settings, clock, None)
    }

    /// The limiters for a reloaded configuration: every bucket whose quota
    /// did not change keeps its state (a reload must not reset everyone's
    /// counts); the others start full.
    pub(crate) fn reconfigured(&self, settings: RateSettings) -> Limiters {
        Limiters::build(settings, self.clock.clone(), Some(self))
    }

    fn build(settings: RateSettings, clock: RateClock, old: Option<&Limiters>) -> Limiters {
        let mut classes: Vec<Class> = Vec::new();
        let mut class_of = |rate: Rate| -> usize {
            if let Some(i) = classes.iter().position(|c| c.rate == rate) {
                return i;
            }
            let limiter = old
                .and_then(|o| o.classes.iter().find(|c| c.rate == rate))
                .map(|c| c.limiter.clone())
                .unwrap_or_else(|| Arc::new(keyed(rate, &clock)));
            classes.push(Class { rate, limiter });
            classes.len() - 1
        };
        let default_class = class_of(settings.default);
        let ci_class = class_of(settings.ci);
        let roles = settings
            .roles
            .iter()
            .map(|(k, r)| (k.clone(), class_of(*r)))
            .collect();
        let persons = settings
            .persons
            .iter()
            .map(|(k, r)| (k.clone(), class_of(*r)))
            .collect();
        let ci_identities = settings
            .ci_identities
            .iter()
            .map(|(k, r)| (k.clone(), class_of(*r)))
            .collect();
        let expensive = match old {
            Some(o) if o.settings.expensive == settings.expensive => o.expensive.clone(),
            _ => Arc::new(keyed(settings.expensive, &clock)),
        };
        let auth = match old {
            Some(o) if o.auth.rate == settings.auth_failures => o.auth.clone(),
            _ => Arc::new(AuthFailures {
                rate: settings.auth_failures,
                limiter: keyed::<IpAddr>(settings.auth_failures, &clock)
                    .with_middleware::<StateInformationMiddleware>(),
                blocked: Mutex::new(HashMap::new()),
                blocked_len: AtomicUsize::new(0),
            }),
        };
        Limiters {
            settings,
            clock,
            classes,
            default_class,
            ci_class,
            roles,
            persons,
            ci_identities,
            expensive,
            auth,
        }
    }

    pub fn settings(&self) -> &RateSettings {
        &self.settings
    }

    /// The identity's normal bucket and where its rate comes from (see the
    /// module docs for the order).
    fn resolve<'w>(&self, who: &Who<'w>, lower: &'w str) -> (usize, Source<'w>) {
        let own = if who.ci {
            self.ci_identities
                .get(who.name)
                .map(|&c| (c, Source::CiIdentity(who.name)))
        } else {
            self.persons
                .get(lower)
                .map(|&c| (c, Source::Identity(lower)))
        };
        if let Some(found) = own {
            return found;
        }
        let mut best: Option<(usize, &'w str)> = None;
        for &role in who.roles {
            if let Some(&c) = self.roles.get(role) {
                let better = match best {
                    None => true,
                    Some((b, _)) => self.classes[c]
                        .rate
                        .more_generous_than(&self.classes[b].rate),
                };
                if better {
                    best = Some((c, role));
                }
            }
        }
        if let Some((c, role)) = best {
            return (c, Source::Role(role));
        }
        if who.ci {
            (self.ci_class, Source::Ci)
        } else {
            (self.default_class, Source::Default)
        }
    }

    fn wait(&self, earliest: Nanos) -> Duration {
        whole_seconds(earliest.duration_since(self.clock.now()).into())
    }

    /// Takes a token from the identity's bucket and, for an expensive
    /// operation, also from its expensive bucket.
    pub fn check(&self, who: &Who<'_>, operation: &str) -> Result<(), Limited> {
        let lowered;
        let lower = if !who.ci && who.name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = who.name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            who.name
        };
        let key = format!("{}:{lower}", if who.ci { "ci" } else { "person" });
        let (class, source) = self.resolve(who, lower);
        let class = &self.classes[class];
        if let Err(not_until) = class.limiter.check_key(&key) {
            let retry_after = self.wait(not_until.earliest_possible());
            let rate = class.rate.describe();
            let scope = match source {
                Source::Identity(e) => format!("for identity {e}"),
                Source::CiIdentity(n) => format!("for identity ci:{n}"),
                Source::Role(r) => format!("for role {r}"),
                Source::Ci => "for CI identities".to_string(),
                Source::Default => "per identity".to_string(),
            };
            return Err(Limited {
                message: format!(
                    "rate limit: {rate} {scope}; retry in {}s",
                    retry_after.as_secs()
                ),
                retry_after,
                bucket: Bucket::Identity,
            });
        }
        if self.settings.expensive_operations.contains(operation) {
            if let Err(not_until) = self.expensive.check_key(&key) {
                let retry_after = self.wait(not_until.earliest_possible());
                return Err(Limited {
                    message: format!(
                        "rate limit: {} for expensive operations ({operation}); retry in {}s",
                        self.settings.expensive.describe(),
                        retry_after.as_secs()
                    ),
                    retry_after,
                    bucket: Bucket::Expensive,
                });
            }
        }
        Ok(())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Nanos>> {
        self.auth
            .blocked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Before authenticating: a refusal while `ip` has used up its budget
    /// of failed authentications. Takes nothing from any bucket.
    pub(crate) fn auth_blocked(&self, ip: IpAddr) -> Option<Limited> {
        if self.auth.blocked_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = self.clock.now();
        let mut blocked = self.blocked();
        let until = *blocked.get(&ip)?;
        if until <= now {
            blocked.remove(&ip);
            self.auth
                .blocked_len
                .store(blocked.len(), Ordering::Relaxed);
            return None;
        }
        let retry_after = whole_seconds(until.duration_since(now).into());
        Some(Limited {
            message: format!(
                "too many failed authentication attempts from this address; retry in {}s",
                retry_after.as_secs()
            ),
            retry_after,
            bucket: Bucket::AuthFailures,
        })
    }

    /// After a failed authentication from `ip`: takes a token from its
    /// bucket, and blocks the address once the bucket is empty.
    pub(crate) fn auth_failed(&self, ip: IpAddr) {
        let now = self.clock.now();
        let until = match self.auth.limiter.check_key(&ip) {
            Ok(state) if state.remaining_burst_capacity() > 0 => return,
            // This failure took the last token: the next one arrives
            // within one replenish interval (at most that much early is
            // refused; never too late).
            Ok(state) => now + Nanos::from(state.quota().replenish_interval()),
            // Failures racing past the block.
            Err(not_until) => not_until.earliest_possible(),
        };
        let mut blocked = self.blocked();
        let entry = blocked.entry(ip).or_insert(until);
        if *entry < until {
            *entry = until;
        }
        self.auth
            .blocked_len
            .store(blocked.len(), Ordering::Relaxed);
    }

    /// Drops the keys whose buckets are full again (and addresses no
    /// longer blocked), and releases the memory. The gateway calls this
    /// every 60 s.
    pub(crate) fn retain_recent(&self) {
        for c in &self.classes {
            c.limiter.retain_recent();
            c.limiter.shrink_to_fit();
        }
        self.expensive.retain_recent();
        self.expensive.shrink_to_fit();
        self.auth.limiter.retain_recent();
        self.auth.limiter.shrink_to_fit();
        let now = self.clock.now();
        let mut blocked = self.blocked();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
        self.auth
            .blocked_len
            .store(blocked.len(), Ordering::Relaxed);
    }

    /// Keys currently held across all limiters.
    pub(crate) fn key_count(&self) -> usize {
        self.classes.iter().map(|c| c.limiter.len()).sum::<usize>()
            + self.expensive.len()
            + self.auth.limiter.len()
            + self.auth.blocked_len.load(Ordering::Relaxed)
    }
}
