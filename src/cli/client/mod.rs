//! The people-facing client: `login`, `logout`, `racks`, `switch`,
//! `whoami`, `env`, `can <operation>`, and running any other command with
//! the stock convox CLI through the gateway.
//!
//! People keep using `convox`; rack-gateway only logs them in, remembers a
//! short-lived token per rack ([`store`]), picks the rack ([`select`]) and
//! hands convox a `RACK_URL` pointing at the gateway ([`convox`]). Errors
//! are typed inside and become one line saying what to do at the edge
//! ([`report`]).

pub mod convox;
pub mod gateway;
pub mod login;
pub mod select;
pub mod store;

use std::ffi::OsString;
use std::process::ExitCode;

use http::Method;
use serde::Deserialize;

use gateway::{Gateway, GatewayError, GatewayUrl};
use store::{RackLogin, Store, StoreError};

use crate::cli::out::outln;
use crate::clock::unix_now;

/// Exit code when `convox` is not on PATH (the shell's "command not found").
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when `convox` was found but couldn't be started.
const EXIT_CANNOT_RUN: u8 = 126;
/// Exit code of `can` when it couldn't ask (1 means "denied").
const EXIT_CAN_ERROR: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(
        "no rack selected: log in with `rack-gateway login <rack> <gateway-url>`, \
         or choose one with --rack or `rack-gateway switch <rack>`"
    )]
    NoRack,
    #[error(
        "{origin} names `{name}`, which is not a rack name (lower-case letters, digits and dashes)"
    )]
    BadRackName { name: String, origin: String },
    #[error("not logged in to rack `{rack}`: run `rack-gateway login {rack} {gateway}`")]
    NotLoggedIn { rack: String, gateway: String },
    #[error(
        "your login to rack `{rack}` expired {when}: run `rack-gateway login {rack} {gateway}`"
    )]
    Expired {
        rack: String,
        gateway: String,
        when: String,
    },
    #[error(
        "the gateway no longer accepts your login to rack `{rack}` ({message}): run `{relogin}`"
    )]
    TokenRefused {
        rack: String,
        message: String,
        relogin: String,
    },
    #[error(
        "the convox CLI is not on PATH: install the convox CLI: {}",
        convox::INSTALL_URL
    )]
    ConvoxMissing,
    #[error("cannot run {}: {source}", path.display())]
    Exec {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "`{flag}` after the convox command would be ignored (RACK_URL wins in convox): \
         put it first, as in `rack-gateway --rack <rack> {command} ...`"
    )]
    RackAfterCommand { flag: String, command: String },
    #[error("login failed: {0}")]
    Login(String),
}

impl ClientError {
    fn exit_code(&self) -> u8 {
        match self {
            ClientError::ConvoxMissing => EXIT_NOT_FOUND,
            ClientError::Exec { .. } => EXIT_CANNOT_RUN,
            _ => 1,
        }
    }
}

/// The edge: one line on stderr for an error.
fn report(r: Result<ExitCode, ClientError>) -> ExitCode {
    r.unwrap_or_else(|e| {
        eprintln!("rack-gateway: {e}");
        ExitCode::from(e.exit_code())
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
        .block_on(f)
}

/// `2026-11-22 13:05 UTC`.
pub(crate) fn utc(ts: i64) -> String {
    let (y, mo, d, h, mi, _) = crate::clock::civil(ts);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// `in 2 days 3 hours (2026-11-24 16:05 UTC)` or `5 minutes ago (...)`.
pub(crate) fn describe_expiry(exp: i64) -> String {
    let left = exp - unix_now();
    let span = |s: i64| {
        let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
        match (d, h) {
            (0, 0) => plural(m.max(1), "minute"),
            (0, h) => plural(h, "hour"),
            (d, 0) => plural(d, "day"),
            (d, h) => format!("{} {}", plural(d, "day"), plural(h, "hour")),
        }
    };
    if left > 0 {
        format!("in {} ({})", span(left), utc(exp))
    } else {
        format!("{} ago ({})", span(-left), utc(exp))
    }
}

/// `rack-gateway login <rack> <gateway-url> [--no-browser]`.
pub fn login(rack: &str, gateway: &str, no_browser: bool) -> ExitCode {
    report(do_login(rack, gateway, no_browser))
}

fn do_login(rack: &str, gateway: &str, no_browser: bool) -> Result<ExitCode, ClientError> {
    if !crate::config::valid_rack_name(rack) {
        return Err(ClientError::BadRackName {
            name: rack.to_string(),
            origin: "the login command".into(),
        });
    }
    let url = GatewayUrl::parse(gateway)?;
    // A corrupt file stops the login before the browser opens; the file
    // is read again afterwards, as other logins may have finished since.
    Store::load()?;
    let issued = block_on(async {
        let issued = login::login(rack, &url, no_browser).await?;
        warn_if_no_grant(&url, rack, &issued.token).await;
        Ok::<_, ClientError>(issued)
    })?;
    let mut store = Store::load()?;
    store.logins.racks.insert(
        rack.to_string(),
        RackLogin {
            gateway: url.base(),
            token: Some(issued.token),
            email: Some(issued.email.clone()),
            expires_at: Some(issued.expires_at),
        },
    );
    store.logins.current = Some(rack.to_string());
    store.save()?;
    outln!(
        "Logged in to rack `{rack}` as {} (until {}); `{rack}` is now the current rack.",
        issued.email,
        utc(issued.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// A typo in the rack name would otherwise only show at the first command.
async fn warn_if_no_grant(url: &GatewayUrl, rack: &str, token: &str) {
    let Ok(gateway) = Gateway::new(url.clone()) else {
        return;
    };
    let Ok(me) = gateway
        .call::<Whoami>(Method::GET, "/_gateway/whoami", Some(token), None)
        .await
    else {
        return;
    };
    if !me.grants.iter().any(|g| g.racks.iter().any(|r| r == rack)) {
        let mut racks: Vec<&str> = me
            .grants
            .iter()
            .flat_map(|g| g.racks.iter().map(String::as_str))
            .collect();
        racks.sort_unstable();
        racks.dedup();
        eprintln!(
            "rack-gateway: note: {} has no grant on a rack named `{rack}` at this gateway (racks you can use: {})",
            me.identity,
            if racks.is_empty() { "none".to_string() } else { racks.join(", ") }
        );
    }
}

/// `rack-gateway logout [<rack>]`: forgets the token. Gateway tokens are
/// stateless, so the gateway keeps accepting a copy until it expires.
pub fn logout(flag: Option<&str>, rack: Option<&str>) -> ExitCode {
    report(do_logout(flag, rack))
}

fn do_logout(flag: Option<&str>, rack: Option<&str>) -> Result<ExitCode, ClientError> {
    let mut store = Store::load()?;
    let rack = match rack {
        Some(r) => r.to_string(),
        None => select::rack(flag, &store)?.0,
    };
    let Some(login) = store
        .logins
        .racks
        .get_mut(&rack)
        .filter(|l| l.token.is_some())
    else {
        eprintln!("rack-gateway: not logged in to rack `{rack}`");
        return Ok(ExitCode::SUCCESS);
    };
    login.token = None;
    let expired = login.expires_at.take();
    store.save()?;
    match expired.filter(|e| *e > unix_now()) {
        Some(exp) => outln!(
            "Logged out of rack `{rack}`: the token is removed from this machine (a copy \
             elsewhere would keep working until {}).",
            utc(exp)
        ),
        None => outln!("Logged out of rack `{rack}`."),
    }
    Ok(ExitCode::SUCCESS)
}

/// `rack-gateway racks`: the racks in the config file, `*` for the current.
pub fn racks() -> ExitCode {
    report(do_racks())
}

fn do_racks() -> Result<ExitCode, ClientError> {
    let store = Store::load()?;
    let racks = &store.logins.racks;
    if racks.is_empty() {
        eprintln!("No racks yet: log in with `rack-gateway login <rack> <gateway-url>`.");
        return Ok(ExitCode::SUCCESS);
    }
    let width = |f: &dyn Fn(&RackLogin) -> usize| racks.values().map(f).max().unwrap_or(0);
    let name_w = racks.keys().map(String::len).max().unwrap_or(0);
    let email_w = width(&|l| l.email.as_deref().unwrap_or("-").len());
    let gw_w = width(&|l| l.gateway.len());
    for (name, l) in racks {
        let marker = if store.logins.current.as_deref() == Some(name) {
            '*'
        } else {
            ' '
        };
        let status = match (&l.token, l.expires_at) {
            (None, _) => "logged out".to_string(),
            (Some(_), Some(exp)) if exp <= unix_now() => format!("expired {}", utc(exp)),
            (Some(_), Some(exp)) => format!("expires {}", utc(exp)),
            (Some(_), None) => "logged in".to_string(),
        };
        outln!(
            "{marker} {name:<name_w$}  {:<email_w$}  {:<gw_w$}  {status}",
            l.email.as_deref().unwrap_or("-"),
            l.gateway
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `rack-gateway switch <rack>`.
pub fn switch(rack: &str) -> ExitCode {
    report(do_switch(rack))
}

fn do_switch(rack: &str) -> Result<ExitCode, ClientError> {
    let mut store = Store::load()?;
    let Some(login) = store.logins.racks.get(rack) else {
        return Err(ClientError::NotLoggedIn {
            rack: rack.to_string(),
            gateway: "<gateway-url>".into(),
        });
    };
    let logged_out = login.token.is_none();
    store.logins.current = Some(rack.to_string());
    store.save()?;
    outln!("Current rack: {rack}");
    if logged_out {
        eprintln!(
            "rack-gateway: not logged in to rack `{rack}`: run `rack-gateway login {rack} {}`",
            store.logins.racks[rack].gateway
        );
    }
    if let Ok((other, origin)) = select::rack(None, &store) {
        if other != rack {
            eprintln!("rack-gateway: note: {origin} still selects rack `{other}` here");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
struct Whoami {
    identity: String,
    kind: String,
    expires_at: Option<i64>,
    #[serde(default)]
    access_expires: Option<String>,
    #[serde(default)]
    access_reason: Option<String>,
    #[serde(default)]
    grants: Vec<Grant>,
}

#[derive(Deserialize)]
struct Grant {
    role: String,
    scope: String,
    #[serde(default)]
    racks: Vec<String>,
    defined_at: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// Calls a gateway endpoint as the session's identity; a 401 means the
/// login is no longer good (revoked, person removed, signing key rotated).
async fn call_as<T: serde::de::DeserializeOwned>(
    session: &select::Session,
    method: Method,
    path: &str,
    json: Option<&serde_json::Value>,
) -> Result<T, ClientError> {
    let gateway = Gateway::new(session.gateway.clone())?;
    match gateway.call(method, path, Some(&session.token), json).await {
        Err(GatewayError::Refused {
            status: 401,
            message,
        }) => Err(ClientError::TokenRefused {
            rack: session.rack.clone(),
            message,
            relogin: session.relogin(),
        }),
        other => Ok(other?),
    }
}

/// `rack-gateway whoami`: asks the gateway, so it shows what the gateway
/// thinks now (grants change without a new login).
pub fn whoami(flag: Option<&str>) -> ExitCode {
    report(do_whoami(flag))
}

fn do_whoami(flag: Option<&str>) -> Result<ExitCode, ClientError> {
    let store = Store::load()?;
    let (rack, _) = select::rack(flag, &store)?;
    let session = select::session(&store, &rack)?;
    session.remind();
    let me: Whoami = block_on(call_as(&session, Method::GET, "/_gateway/whoami", None))?;
    outln!("{} ({})", me.identity, me.kind);
    outln!("rack:    {} via {}", session.rack, session.gateway.base());
    if let Some(exp) = me.expires_at {
        outln!("expires: {}", describe_expiry(exp));
    }
    if let Some(exp) = &me.access_expires {
        let why = me
            .access_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        outln!("access:  until {exp}{why}");
    }
    if me.grants.is_empty() {
        outln!("grants:  none");
    } else {
        outln!("grants:");
        for g in &me.grants {
            let racks = if g.racks.is_empty() {
                "no rack".to_string()
            } else {
                g.racks.join(", ")
            };
            let until = match (&g.expires, g.expired) {
                (Some(e), true) => format!("; EXPIRED at {e}, counts for nothing"),
                (Some(e), false) => format!("; until {e}"),
                (None, _) => String::new(),
            };
            let why = g
                .reason
                .as_deref()
                .map(|r| format!("; reason: {r}"))
                .unwrap_or_default();
            outln!(
                "  {} on {} (racks: {racks}; {}{until}{why})",
                g.role,
                g.scope,
                g.defined_at
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the client form of `can` asks.
pub struct CanQuery {
    pub operation: String,
    pub app: Option<String>,
    pub service: Option<String>,
    pub command: Option<String>,
    pub process_command: Option<String>,
}

#[derive(Deserialize)]
struct CanAnswer {
    allowed: bool,
    reason: String,
}

/// `rack-gateway can <operation>`: the gateway decides for the logged-in
/// identity; exit 0 allow, 1 deny, 2 could not ask.
pub fn can(flag: Option<&str>, q: CanQuery) -> ExitCode {
    match ask(flag, q) {
        Ok(a) if a.allowed => {
            outln!("allow: {}", a.reason);
            ExitCode::SUCCESS
        }
        Ok(a) => {
            outln!("deny: {}", a.reason);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rack-gateway: {e}");
            ExitCode::from(EXIT_CAN_ERROR)
        }
    }
}

fn ask(flag: Option<&str>, q: CanQuery) -> Result<CanAnswer, ClientError> {
    let store = Store::load()?;
    let (rack, _) = select::rack(flag, &store)?;
    let session = select::session(&store, &rack)?;
    let body = serde_json::json!({
        "operation": q.operation,
        "rack": session.rack,
        "app": q.app,
        "service": q.service,
        "command": q.command,
        "process_command": q.process_command,
    });
    block_on(call_as::<CanAnswer>(
        &session,
        Method::POST,
        "/_gateway/can",
        Some(&body),
    ))
}

/// `rack-gateway env`.
pub fn env(flag: Option<&str>) -> ExitCode {
    report(convox::env(flag))
}

/// Any other command: the stock convox CLI through the gateway.
pub fn passthrough(flag: Option<&str>, args: Vec<OsString>) -> ExitCode {
    report(convox::passthrough(flag, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn expiry_in_words() {
        let t = unix_now();
        assert!(describe_expiry(t + 2 * 86_400 + 3 * 3600 + 60).starts_with("in 2 days 3 hours ("));
        assert!(describe_expiry(t + 86_400 + 30).starts_with("in 1 day ("));
        assert!(describe_expiry(t + 5 * 3600 + 60).starts_with("in 5 hours ("));
        assert!(describe_expiry(t + 10).starts_with("in 1 minute ("));
        assert!(describe_expiry(t - 7200).starts_with("2 hours ago ("));
    }
}
