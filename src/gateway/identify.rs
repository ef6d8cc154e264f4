//! The one identification step, shared by rack traffic and the gateway's
//! own endpoints: the client address (through `trusted_proxies`), the
//! failed-authentication limiter, the Basic credential, token / CI /
//! federation verification, and the identity's entry in the policy.
//!
//! Having exactly one keeps the two paths from drifting: a login record and
//! a rack request from the same client carry the same address, and a
//! credential refused here is refused everywhere for the same reason.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::clock::unix_now;
use crate::gateway::{Gateway, Runtime};
use crate::http::clientip;
use crate::http::respond::Refusal;
use crate::identity::credentials::{self, AuthError, Credential, Identity, IdentityKind};
use crate::policy::{Auth, Subject, SubjectKind};

/// Where a request comes from, as audit records and per-address limits see
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The socket's peer, or the nearest untrusted `X-Forwarded-For` hop
    /// when the peer is a trusted proxy.
    pub ip: IpAddr,
    /// The peer, when it differs from `ip` (a trusted proxy).
    pub via: Option<IpAddr>,
}

impl Client {
    /// The client address of a request. Before any config is loaded no
    /// proxy is trusted.
    pub fn of(peer: SocketAddr, headers: &HeaderMap, rt: Option<&Runtime>) -> Client {
        let trusted = rt.map(|r| r.trusted_proxies.as_slice()).unwrap_or(&[]);
        let (ip, via) = clientip::resolve(peer.ip(), headers, trusted);
        Client { ip, via }
    }
}

/// An identified caller: who, until when, and their policy entry.
pub struct Caller<'r> {
    pub identity: Identity,
    /// When the credential expires (Unix seconds), if it does.
    pub expires: Option<i64>,
    /// When its gateway token was issued (people), for sessions a later
    /// `tokens_valid_after` revokes.
    pub issued_at: Option<i64>,
    pub subject: &'r Subject,
    /// How the credential authenticated (`amr`, `auth_time`, a federated
    /// token's claims), for the policy's step-up and claim requirements.
    pub auth: std::sync::Arc<Auth>,
    /// What a session keeps of the credential, for reloads to re-check.
    pub credential: Credential,
}

/// Identifies the caller of a request from its `Authorization` header.
///
/// Refusals: 401 for a missing, invalid, expired or revoked credential or
/// an identity the policy no longer admits, each of which counts as a
/// failed authentication for the client's address; 429 instead once the
/// address is blocked for too many of them. Only failing credentials are
/// slowed down: a valid one from a blocked address (a NAT, a CI runner
/// pool) still gets through, since the limiter exists to slow guessing,
/// not to deny service to everyone behind the guesser's address.
pub async fn identify<'r>(
    gw: &Gateway,
    rt: &'r Runtime,
    headers: &HeaderMap,
    client: Client,
) -> Result<Caller<'r>, Refusal> {
    let limiters = gw.limiters();
    let failed = |why: AuthError| {
        if let Some(l) = limiters.auth_blocked(client.ip) {
            return Refusal::rate_limited(&l);
        }
        limiters.auth_failed(client.ip);
        Refusal::unauthenticated(why)
    };
    let who = match credentials::basic_token(headers) {
        Ok(token) => {
            rt.credentials
                .authenticate(&rt.policy, gw.federation(), &token, unix_now())
                .await
        }
        Err(e) => Err(e),
    };
    let who = who.map_err(failed)?;
    let subject = match who.identity.kind {
        IdentityKind::Person => rt.policy.person(&who.identity.name),
        IdentityKind::CiToken | IdentityKind::FederatedCi => {
            rt.policy.subject(SubjectKind::Ci, &who.identity.name)
        }
    };
    let Some(subject) = subject else {
        return Err(failed(AuthError::NotAuthorized));
    };
    let mut auth = who.auth;
    auth.login_url = rt.identity.as_ref().map(|i| i.url.clone());
    Ok(Caller {
        identity: who.identity,
        expires: who.expires,
        issued_at: who.issued_at,
        subject,
        auth: std::sync::Arc::new(auth),
        credential: who.credential,
    })
}
