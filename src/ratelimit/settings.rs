//! The `rate_limits:` section of gateway.yaml: rates as written, the raw
//! serde types, and their validation into [`RateSettings`] (every problem
//! at `file:line`, names checked against the policy).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;

use governor::Quota;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::error::ConfigError;
use crate::policy::Policy;

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
    pub(crate) fn quota(&self) -> Quota {
        let q = match self.per {
            Per::Second => Quota::per_second(self.amount),
            Per::Minute => Quota::per_minute(self.amount),
            Per::Hour => Quota::per_hour(self.amount),
        };
        q.allow_burst(self.burst)
    }

    /// Whether `self` lets more through than `other`: a higher sustained
    /// rate, or the same rate with a larger burst.
    pub(crate) fn more_generous_than(&self, other: &Rate) -> bool {
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
pub(crate) struct RawRateLimits {
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
pub(crate) fn validate(
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
