//! Rate limits: per identity, per identity for expensive operations, and per
//! client address for failed authentication.
//!
//! The `rate_limits:` section of gateway.yaml is parsed into
//! [`RawRateLimits`] and validated by [`validate`] into [`RateSettings`],
//! whose values cannot be invalid. The section is optional and limits are
//! always on: every value left out takes its default (see
//! [`RateSettings::default`]).
//!
//! ```yaml
//! rate_limits:
//!   default: 20/s                # every identity, unless a rule below applies
//!   ci: 50/s                     # CI identities (static tokens and federated)
//!   roles: { deployer: 10/s, admin: {rate: 30/s, burst: 60} }
//!   identities: { "alice@example.com": 5/s, "ci:deploy-bot": 100/s }
//!   expensive: 2/s               # a second bucket for expensive operations
//!   expensive_operations: [run, exec, build, "releases promote"]
//!   auth_failures: 10/min        # failed authentications per client address
//! ```
//!
//! A rate is `<n>/s`, `<n>/min` or `<n>/h`, or the map
//! `{rate: "<n>/<unit>", burst: <m>}`, with n and m from 1 to 1000000. The
//! burst (how many requests may arrive at once, after a quiet period)
//! defaults to n, the number written: `10/min` allows 10 at once and then one
//! every 6 seconds.
//!
//! Which rate applies to an identity's normal bucket, first match wins:
//! 1. its own entry under `identities` (a person by email, case-insensitive;
//!    a CI identity as `ci:<name>`);
//! 2. among the roles granted to it (on any scope) that have an entry under
//!    `roles`, the most generous one (highest sustained rate, then highest
//!    burst), so that granting a role never lowers a limit;
//! 3. `ci`, for CI identities;
//! 4. `default`.
//!
//! Expensive operations (`expensive_operations`, default
//! [`DEFAULT_EXPENSIVE_OPERATIONS`]) also take a token from a second,
//! per-identity bucket (`expensive`), on top of the normal one.
//!
//! Memory: there is one keyed governor limiter per distinct quota, not per
//! rule, each holding one entry per identity (or address) seen recently.
//! [`Limiters::retain_recent`], called on a timer, drops every entry whose
//! bucket is full again, so memory follows the recently active keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, Reference};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::ConfigError;
use crate::policy::{Policy, Subject};

/// Operations that also take from the `expensive` bucket when
/// `expensive_operations` is not set: each starts a process or a build on
/// the rack, or creates, replaces or deletes a whole app.
pub const DEFAULT_EXPENSIVE_OPERATIONS: &[&str] = &[
    "apps create",
    "apps delete",
    "build",
    "exec",
    "releases promote",
    "run",
];

/// The largest rate amount or burst accepted.
pub const MAX_AMOUNT: u32 = 1_000_000;

// ---------------------------------------------------------------------------
// Rates

/// The period a rate is written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }

    /// The unit as written in the config: `s`, `min`, `h`.
    pub fn unit(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
            Per::Hour => "h",
        }
    }
}

/// `amount` requests per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub amount: NonZeroU32,
    pub per: Per,
    pub burst: NonZeroU32,
}

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("zero"),
    }
}

impl Rate {
    /// A rate; `None` if `amount` or `burst` is zero.
    pub fn new(amount: u32, per: Per, burst: u32) -> Option<Rate> {
        Some(Rate {
            amount: NonZeroU32::new(amount)?,
            per,
            burst: NonZeroU32::new(burst)?,
        })
    }

    const fn fixed(amount: u32, per: Per, burst: u32) -> Rate {
        Rate {
            amount: nz(amount),
            per,
            burst: nz(burst),
        }
    }

    /// Parses `<n>/s`, `<n>/min`, `<n>/h`; the burst is n.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let t = s.trim();
        let example = "e.g. 20/s, 10/min or 100/h";
        let (num, unit) = t
            .split_once('/')
            .ok_or_else(|| format!("rate `{t}` needs a unit ({example})"))?;
        let per = match unit.trim() {
            "s" => Per::Second,
            "min" => Per::Minute,
            "h" => Per::Hour,
            "m" => return Err(format!("rate `{t}`: write minutes as `min` ({example})")),
            _ => {
                return Err(format!(
                    "rate `{t}`: the unit must be s, min or h ({example})"
                ))
            }
        };
        let amount = parse_amount(num.trim(), "rate", t)?;
        Ok(Rate {
            amount,
            per,
            burst: amount,
        })
    }

    /// The governor quota: `amount` cells replenished over `per`, `burst`
    /// at once.
    pub fn quota(&self) -> Quota {
        let q = match self.per {
            Per::Second => Quota::per_second(self.amount),
            Per::Minute => Quota::per_minute(self.amount),
            Per::Hour => Quota::per_hour(self.amount),
        };
        q.allow_burst(self.burst)
    }

    /// Whether `self` lets more through than `other`: a higher sustained
    /// rate, or the same rate with a larger burst.
    pub fn more_generous_than(&self, other: &Rate) -> bool {
        let a = u64::from(self.amount.get()) * other.per.seconds();
        let b = u64::from(other.amount.get()) * self.per.seconds();
        a > b || (a == b && self.burst > other.burst)
    }

    /// `10 requests/s`, `1 request/min`.
    pub fn describe(&self) -> String {
        let n = self.amount.get();
        let noun = if n == 1 { "request" } else { "requests" };
        format!("{n} {noun}/{}", self.per.unit())
    }
}

impl fmt::Display for Rate {
    /// As written in the config: `20/s`, or `{rate: 20/s, burst: 40}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.burst == self.amount {
            write!(f, "{}/{}", self.amount, self.per.unit())
        } else {
            write!(
                f,
                "{{rate: {}/{}, burst: {}}}",
                self.amount,
                self.per.unit(),
                self.burst
            )
        }
    }
}

fn parse_amount(num: &str, what: &str, whole: &str) -> Result<NonZeroU32, String> {
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} `{whole}`: `{num}` is not a whole number (e.g. 20/s, 10/min or 100/h)"
        ));
    }
    let n: u64 = num.parse().unwrap_or(u64::MAX);
    if n == 0 {
        return Err(format!("{what} `{whole}` must be at least 1"));
    }
    if n > u64::from(MAX_AMOUNT) {
        return Err(format!("{what} `{whole}` must be at most {MAX_AMOUNT}"));
    }
    Ok(nz(n as u32))
}

// ---------------------------------------------------------------------------
// Raw file format

/// The `rate_limits:` section of gateway.yaml as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    default: Option<Spanned<RawRate>>,
    ci: Option<Spanned<RawRate>>,
    roles: Option<BTreeMap<String, Spanned<RawRate>>>,
    identities: Option<BTreeMap<String, Spanned<RawRate>>>,
    expensive: Option<Spanned<RawRate>>,
    expensive_operations: Option<Vec<Spanned<String>>>,
    auth_failures: Option<Spanned<RawRate>>,
}

/// A rate as written: `20/s` or `{rate: 20/s, burst: 40}`.
#[derive(Debug)]
enum RawRate {
    Short(String),
    Full(RawRateMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateMap {
    rate: String,
    burst: Option<u64>,
}

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate like 20/s, 10/min or 100/h, or {rate: 20/s, burst: 40}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRate, E> {
                Ok(RawRate::Short(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRate, E> {
                Err(E::custom(format!(
                    "rate `{v}` needs a unit (e.g. {v}/s, {v}/min or {v}/h)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRate, E> {
                Err(E::custom(format!(
                    "rate `{v}` needs a unit (e.g. 20/s, 10/min or 100/h)"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRate, A::Error> {
                RawRateMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRate::Full)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Validated settings

/// The validated rate limits. `Default` is what applies when gateway.yaml
/// has no `rate_limits:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSettings {
    /// Every identity without a more specific rule. Default 20/s, burst 40.
    pub default: Rate,
    /// CI identities without a more specific rule. Default 50/s, burst 100.
    pub ci: Rate,
    /// By role name.
    pub roles: BTreeMap<String, Rate>,
    /// Persons by lower-case email.
    pub persons: BTreeMap<String, Rate>,
    /// CI identities by name (written `ci:<name>` in the config).
    pub ci_identities: BTreeMap<String, Rate>,
    /// The extra bucket of expensive operations. Default 2/s, burst 5.
    pub expensive: Rate,
    /// Operation names (as in `rack-gateway routes`).
    pub expensive_operations: BTreeSet<String>,
    /// Failed authentications per client address. Default 10/min, burst 10.
    pub auth_failures: Rate,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            default: Rate::fixed(20, Per::Second, 40),
            ci: Rate::fixed(50, Per::Second, 100),
            roles: BTreeMap::new(),
            persons: BTreeMap::new(),
            ci_identities: BTreeMap::new(),
            expensive: Rate::fixed(2, Per::Second, 5),
            expensive_operations: DEFAULT_EXPENSIVE_OPERATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            auth_failures: Rate::fixed(10, Per::Minute, 10),
        }
    }
}

struct Check<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn err(&mut self, loc: serde_saphyr::Location, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: Some(loc.line()),
            column: Some(loc.column()),
            message: message.into(),
        });
    }

    fn rate(&mut self, key: &str, raw: &Spanned<RawRate>) -> Option<Rate> {
        let parsed = match &raw.value {
            RawRate::Short(s) => Rate::parse(s),
            RawRate::Full(m) => Rate::parse(&m.rate).and_then(|r| match m.burst {
                None => Ok(r),
                Some(b) => {
                    let burst = parse_amount(&b.to_string(), "burst", &b.to_string())?;
                    Ok(Rate { burst, ..r })
                }
            }),
        };
        match parsed {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(raw.referenced, format!("rate_limits.{key}: {e}"));
                None
            }
        }
    }

    fn rate_or(&mut self, key: &str, raw: &Option<Spanned<RawRate>>, default: Rate) -> Rate {
        raw.as_ref()
            .and_then(|r| self.rate(key, r))
            .unwrap_or(default)
    }
}

/// Validates the `rate_limits:` section (`None` when absent: all defaults).
/// `file` is how errors name gateway.yaml. With the policy, role and
/// identity names are checked against it: a rule for a role or identity
/// that does not exist is most likely a typo, and would silently not apply.
pub fn validate(
    raw: Option<RawRateLimits>,
    file: &str,
    policy: Option<&Policy>,
) -> Result<RateSettings, Vec<ConfigError>> {
    let d = RateSettings::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let mut c = Check {
        file,
        errors: Vec::new(),
    };
    let mut s = RateSettings {
        default: c.rate_or("default", &raw.default, d.default),
        ci: c.rate_or("ci", &raw.ci, d.ci),
        expensive: c.rate_or("expensive", &raw.expensive, d.expensive),
        auth_failures: c.rate_or("auth_failures", &raw.auth_failures, d.auth_failures),
        roles: BTreeMap::new(),
        persons: BTreeMap::new(),
        ci_identities: BTreeMap::new(),
        expensive_operations: d.expensive_operations,
    };

    for (name, r) in in_file_order(&raw.roles) {
        let Some(rate) = c.rate(&format!("roles.{name}"), r) else {
            continue;
        };
        if let Some(p) = policy {
            if !p.role_index.contains_key(name) {
                c.err(
                    r.referenced,
                    format!("rate_limits.roles: there is no role `{name}` (roles/*.yaml)"),
                );
                continue;
            }
        }
        s.roles.insert(name.clone(), rate);
    }

    for (key, r) in in_file_order(&raw.identities) {
        let Some(rate) = c.rate(&format!("identities.{key}"), r) else {
            continue;
        };
        if let Some(name) = key.strip_prefix("ci:") {
            if name.is_empty() {
                c.err(
                    r.referenced,
                    "rate_limits.identities: `ci:` needs a CI identity name",
                );
            } else if policy.is_some_and(|p| !p.ci.contains_key(name)) {
                c.err(
                    r.referenced,
                    format!("rate_limits.identities: there is no CI identity `{name}` in ci.yaml"),
                );
            } else {
                s.ci_identities.insert(name.to_string(), rate);
            }
        } else if key.contains('@') {
            let email = key.to_ascii_lowercase();
            if policy.is_some_and(|p| p.person(&email).is_none()) {
                c.err(
                    r.referenced,
                    format!(
                        "rate_limits.identities: `{key}` is neither in users.yaml nor in a domain listed there"
                    ),
                );
            } else if s.persons.insert(email, rate).is_some() {
                c.err(
                    r.referenced,
                    format!("rate_limits.identities: `{key}` is listed twice (emails are case-insensitive)"),
                );
            }
        } else {
            c.err(
                r.referenced,
                format!(
                    "rate_limits.identities: `{key}` must be a person's email or `ci:<name>` for a CI identity"
                ),
            );
        }
    }

    if let Some(list) = &raw.expensive_operations {
        s.expensive_operations.clear();
        for op in list {
            let matched = crate::policy::ops_matching(op.value.trim());
            if matched.is_empty() {
                c.err(
                    op.referenced,
                    format!(
                        "rate_limits.expensive_operations: `{}` matches no operation (see `rack-gateway routes`)",
                        op.value
                    ),
                );
            }
            s.expensive_operations
                .extend(matched.iter().map(str::to_string));
        }
    }

    if c.errors.is_empty() {
        Ok(s)
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(c.errors)
    }
}

/// A map's entries in the order they are written, so that errors (and the
/// entry called a duplicate) follow the file.
fn in_file_order(
    map: &Option<BTreeMap<String, Spanned<RawRate>>>,
) -> Vec<(&String, &Spanned<RawRate>)> {
    let mut v: Vec<_> = map.iter().flatten().collect();
    v.sort_by_key(|(_, r)| (r.referenced.line(), r.referenced.column()));
    v
}

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
    pub fn monotonic() -> RateClock {
        RateClock(Arc::new(ClockInner {
            start: Some(Instant::now()),
            offset_ns: AtomicU64::new(0),
        }))
    }

    /// A clock that stands still until [`RateClock::advance`]d.
    pub fn manual() -> RateClock {
        RateClock(Arc::new(ClockInner {
            start: None,
            offset_ns: AtomicU64::new(0),
        }))
    }

    /// Moves this clock (and its clones) forward.
    pub fn advance(&self, by: Duration) {
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

    pub fn with_clock(settings: RateSettings, clock: RateClock) -> Limiters {
        Limiters::build(settings, clock, None)
    }

    /// The limiters for a reloaded configuration: every bucket whose quota
    /// did not change keeps its state (a reload must not reset everyone's
    /// counts); the others start full.
    pub fn reconfigured(&self, settings: RateSettings) -> Limiters {
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
    pub fn auth_blocked(&self, ip: IpAddr) -> Option<Limited> {
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
    pub fn auth_failed(&self, ip: IpAddr) {
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
    pub fn retain_recent(&self) {
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
    pub fn key_count(&self) -> usize {
        self.classes.iter().map(|c| c.limiter.len()).sum::<usize>()
            + self.expensive.len()
            + self.auth.limiter.len()
            + self.auth.blocked_len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
