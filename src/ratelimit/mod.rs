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
//!
//! Layout: [`settings`] parses and validates the section; [`limiters`]
//! holds the buckets (and their clock) one configuration runs with.

mod limiters;
mod settings;

pub use limiters::{role_names, Bucket, Limited, Limiters, RateClock, Who};
pub(crate) use settings::{validate, RawRateLimits};
pub use settings::{Per, Rate, RateSettings, DEFAULT_EXPENSIVE_OPERATIONS, MAX_AMOUNT};

#[cfg(test)]
mod tests;
