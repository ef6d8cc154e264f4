//! Open websocket sessions: what each was allowed as, the per-identity
//! cap, closing those a reload no longer allows, and the signal that
//! closes them all at shutdown.
//!
//! A session is decided once, at open; it can then run for hours. Keeping
//! each session's [`Grant`] (the facts the policy decided on) lets every
//! reload ask the same pure policy engine again, so removing someone from
//! the config ends their exec shell too, not only their next request.
//! The grant also keeps what identifies the credential the session was
//! opened with (a static token's SHA-256, the gateway key that verified a
//! token, a federated token's issuer, audience and claims), so rotating
//! that credential out ends the session as it refuses the next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::gateway::Runtime;
use crate::identity::credentials::{self, Credential, Credentials, Identity, IdentityKind};
use crate::policy::placeholder::Owner;
use crate::policy::{tunnel, Facts, Process, Subject, SubjectKind, Verdict};
use crate::rack::tunnel::Stop;

/// Open websocket sessions. At shutdown the server first lets REST
/// requests finish, then asks every session to close (each sends close
/// frames at its next frame boundary) and waits for them.
pub struct Sessions {
    close: watch::Sender<bool>,
    live: Arc<AtomicU64>,
    ended: Arc<Notify>,
    registry: Arc<Mutex<Registry>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            close: watch::channel(false).0,
            live: Default::default(),
            ended: Default::default(),
            registry: Default::default(),
        }
    }
}

/// Every reserved or open session, by a process-unique number.
#[derive(Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    grant: Arc<Grant>,
    /// Set to the reason once a reload no longer allows the session.
    revoke: watch::Sender<Option<String>>,
}

/// What a session was allowed as: who, with which credential, and the
/// facts the policy decided on at open (for exec, the process the rack
/// reported then).
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: Identity,
    /// When the caller's gateway token was issued (people), to apply a
    /// later `tokens_valid_after`.
    pub issued_at: Option<i64>,
    pub rack: String,
    pub operation: &'static str,
    pub app: Option<String>,
    pub service: Option<String>,
    pub command: Option<String>,
    pub process: Option<Process>,
    pub run_headers: Vec<&'static str>,
    /// How the caller authenticated (step-up and claim requirements).
    pub auth: Option<Arc<crate::policy::Auth>>,
    /// The credential the session was opened with (never the token).
    pub credential: Credential,
    /// Whose placeholder the exec target is, as the rack's tag said at
    /// open; without it a reload would assume the caller's own.
    pub(crate) owner: Option<Owner>,
    /// The app whose resource a tunnel's target is: the caller must still
    /// be allowed `resources info` on it, as at open.
    pub(crate) tunnel_app: Option<String>,
    /// The exec asked the rack to prepend the build's entrypoint, which
    /// must still be allowed (`Policy::check_exec_entrypoint`).
    pub(crate) entrypoint: bool,
}

impl Grant {
    fn subject_kind(&self) -> SubjectKind {
        match self.identity.kind {
            IdentityKind::Person => SubjectKind::User,
            IdentityKind::CiToken | IdentityKind::FederatedCi => SubjectKind::Ci,
        }
    }

    fn same_identity(&self, other: &Grant) -> bool {
        self.subject_kind() == other.subject_kind() && self.identity.name == other.identity.name
    }

    /// Whether `rt` still allows this session; `Err` says why not.
    pub(crate) fn check(&self, rt: &Runtime) -> Result<(), String> {
        let subject = rt
            .policy
            .subject(self.subject_kind(), &self.identity.name)
            .ok_or("the identity is no longer in the config")?;
        self.credential_accepted(&rt.credentials, crate::clock::unix_now())?;
        if let (Some(after), Some(iat)) = (subject.valid_after, self.issued_at) {
            if iat < after {
                return Err("the token predates the identity's tokens_valid_after".into());
            }
        }
        if !rt.racks.contains_key(&self.rack) {
            return Err(format!("rack `{}` is no longer configured", self.rack));
        }
        self.decide(rt, subject)
    }

    /// Whether `creds` (the new config's) still accept the credential the
    /// session was opened with, as they would on a new request at `now`.
    fn credential_accepted(&self, creds: &Credentials, now: i64) -> Result<(), String> {
        let name = &self.identity.name;
        match &self.credential {
            Credential::CiToken { sha256 } => {
                // Every entry is compared, so timing shows no position.
                let mut found = None;
                for t in &creds.ci_tokens {
                    if credentials::static_token_is(t, sha256) && t.name == *name {
                        found = found.or(Some(t));
                    }
                }
                let t = found.ok_or(
                    "the CI token was rotated: the identity's token_sha256 no longer matches it",
                )?;
                if t.expires <= now {
                    return Err("the CI token expired".into());
                }
            }
            Credential::Gateway { voucher } => {
                let trusted = creds
                    .keys
                    .as_ref()
                    .is_some_and(|(keys, _)| keys.still_vouch(voucher));
                if !trusted {
                    return Err(format!(
                        "the key that signed the token (`{}`) is no longer trusted",
                        voucher.kid
                    ));
                }
            }
            Credential::Federated { issuer, audience } => {
                let claims: serde_json::Map<String, serde_json::Value> = self
                    .auth
                    .iter()
                    .flat_map(|a| a.claims.iter())
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect();
                let f = creds
                    .federated
                    .iter()
                    .find(|f| f.name == *name)
                    .filter(|f| f.issuer == *issuer && f.audience == *audience)
                    .filter(|f| f.matches(&claims))
                    .ok_or(
                        "the identity's federated issuer, audience or claims no longer match the token",
                    )?;
                if f.expires <= now {
                    return Err("the federated identity expired".into());
                }
            }
        }
        Ok(())
    }

    /// A tunnel's target was allowed as a resource of an app the caller
    /// may `resources info`; it still must be (the rack is not asked again).
    fn still_reaches(&self, rt: &Runtime, subject: &Subject, f: &Facts) -> Result<(), String> {
        let app = self
            .tunnel_app
            .as_ref()
            .ok_or("the tunnel's target is unknown")?;
        if tunnel::searchable_apps(&rt.policy, subject, f, std::slice::from_ref(app)).is_empty() {
            return Err(format!(
                "the tunnel's target is a resource of `{app}`, which you may no longer `resources info`"
            ));
        }
        Ok(())
    }

    fn decide(&self, rt: &Runtime, subject: &Subject) -> Result<(), String> {
        let shown = self.command.as_deref().map(|c| rt.redactor.apply(c));
        let facts = Facts {
            rack: &self.rack,
            operation: self.operation,
            app: self.app.as_deref(),
            service: self.service.as_deref(),
            command: self.command.as_deref(),
            command_shown: shown.as_deref(),
            process: self.process.as_ref(),
            run_headers: &self.run_headers,
            now: Some(crate::clock::unix_now()),
            auth: self.auth.as_deref(),
        };
        let owner = self.owner.unwrap_or(Owner::AssumedCaller);
        match rt.policy.decide_for(subject, &facts, owner) {
            Verdict::Allow(_) => {}
            Verdict::Deny(reason) => return Err(reason),
            Verdict::NeedProcess => return Err("the target process is unknown".into()),
        }
        if self.operation == "proxy" {
            self.still_reaches(rt, subject, &facts)?;
        }
        if self.entrypoint {
            rt.policy.check_exec_entrypoint(subject, &facts, owner)?;
        }
        let access = rt.policy.secret_access(
            subject,
            &Facts {
                rack: &self.rack,
                operation: self.operation,
                app: self.app.as_deref(),
                now: facts.now,
                auth: facts.auth,
                ..Default::default()
            },
        );
        match crate::rack::mask::stream_refusal(self.operation, &access) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// A session refused because its identity holds `limit` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany {
    pub limit: usize,
}

/// A session's place in the registry, taken before the rack is asked to
/// open it (so the cap counts sessions being opened too); dropping it
/// frees the place.
pub(crate) struct Slot {
    id: u64,
    registry: Arc<Mutex<Registry>>,
    revoked: watch::Receiver<Option<String>>,
}

impl Slot {
    /// Closes the session when `rt` no longer allows it: for a session
    /// opened while a reload swapped the config in.
    pub(crate) fn recheck(&self, rt: &Runtime) {
        revoke_in(&lock(&self.registry), rt, |id| id == self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.registry).entries.remove(&self.id);
    }
}

/// One open session; dropping it (however the session's task ends) marks
/// the session ended, here and in the metrics.
pub(crate) struct SessionGuard {
    slot: Slot,
    close: watch::Receiver<bool>,
    live: Arc<AtomicU64>,
    ended: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    kind: &'static str,
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Revokes the sessions `which` selects that `rt` no longer allows;
/// returns how many.
fn revoke_in(registry: &Registry, rt: &Runtime, which: impl Fn(u64) -> bool) -> usize {
    let mut n = 0;
    for (id, e) in &registry.entries {
        if !which(*id) || e.revoke.borrow().is_some() {
            continue;
        }
        if let Err(why) = e.grant.check(rt) {
            e.revoke
                .send_replace(Some(format!("revoked by config {}: {why}", rt.version)));
            n += 1;
        }
    }
    n
}

impl Sessions {
    /// Reserves a place for a session of `grant`, unless its identity
    /// already holds `limit` sessions.
    pub(crate) fn reserve(&self, grant: Grant, limit: usize) -> Result<Slot, TooMany> {
        let mut r = lock(&self.registry);
        let held = r
            .entries
            .values()
            .filter(|e| e.grant.same_identity(&grant))
            .count();
        if held >= limit {
            return Err(TooMany { limit });
        }
        r.next += 1;
        let id = r.next;
        let (revoke, revoked) = watch::channel(None);
        r.entries.insert(
            id,
            Entry {
                grant: Arc::new(grant),
                revoke,
            },
        );
        Ok(Slot {
            id,
            registry: self.registry.clone(),
            revoked,
        })
    }

    /// The reserved session is open (the rack switched protocols).
    pub(crate) fn open(
        &self,
        slot: Slot,
        metrics: Arc<crate::metrics::Metrics>,
        kind: &'static str,
    ) -> SessionGuard {
        self.live.fetch_add(1, Ordering::SeqCst);
        metrics.session_opened(kind);
        SessionGuard {
            slot,
            close: self.close.subscribe(),
            live: self.live.clone(),
            ended: self.ended.clone(),
            metrics,
            kind,
        }
    }

    /// Asks every session `rt` (the config just swapped in) no longer
    /// allows to close; returns how many.
    pub(crate) fn revoke(&self, rt: &Runtime) -> usize {
        revoke_in(&lock(&self.registry), rt, |_| true)
    }

    /// Sessions currently open (a metric).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    /// Asks every open (and future) session to close.
    pub(crate) fn close_all(&self) {
        self.close.send_replace(true);
    }

    /// Waits until no session is open, or `limit` passes.
    pub(crate) async fn wait_closed(&self, limit: Duration) {
        let all_ended = async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.live() == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(limit, all_ended).await;
    }
}

impl SessionGuard {
    /// Resolves once the session is asked to close: at shutdown, or when
    /// a reload revoked it (the client is told why; `exit_marker` on
    /// exec-style routes, so the CLI exits non-zero).
    pub(crate) fn closing(&self, exit_marker: bool) -> impl std::future::Future<Output = Stop> {
        let mut close = self.close.clone();
        let mut revoked = self.slot.revoked.clone();
        async move {
            let revoked = async {
                let why = match revoked.wait_for(|r| r.is_some()).await {
                    Ok(why) => why.clone(),
                    Err(_) => None,
                };
                match why {
                    Some(why) => why,
                    // The registry entry outlives the guard: never here.
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = close.wait_for(|closing| *closing) => Stop::Shutdown,
                why = revoked => Stop::Revoked {
                    message: format!("gateway: session closed: {why}"),
                    exit_marker,
                },
            }
        }
    }

    /// Why the session was revoked, once it was.
    pub(crate) fn revoked(&self) -> Option<String> {
        self.slot.revoked.borrow().clone()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.metrics.session_closed(self.kind);
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token::{generate_private_pem, Keys, VerifyCache};
    use crate::policy::glob::Glob;
    use crate::policy::load::{CiToken, FederatedIdentity};

    const NOW: i64 = 1_900_000_000;
    const ISSUER: &str = "https://gw.example";

    fn grant(kind: IdentityKind, name: &str, credential: Credential) -> Grant {
        Grant {
            identity: Identity {
                kind,
                name: name.into(),
            },
            issued_at: None,
            rack: "staging".into(),
            operation: "exec",
            app: None,
            service: None,
            command: None,
            process: None,
            run_headers: Vec::new(),
            entrypoint: false,
            auth: None,
            credential,
            owner: None,
            tunnel_app: None,
        }
    }

    fn creds(
        ci_tokens: Vec<CiToken>,
        federated: Vec<FederatedIdentity>,
        keys: Option<Keys>,
    ) -> Credentials {
        Credentials {
            ci_tokens,
            federated,
            keys: keys.map(|k| (k, ISSUER.to_string())),
            cache: VerifyCache::new(8),
        }
    }

    fn ci(name: &str, token: &str, expires: i64) -> CiToken {
        CiToken {
            name: name.into(),
            sha256: credentials::token_sha256(token),
            expires,
        }
    }

    #[test]
    fn static_token_must_still_be_the_identitys_and_unexpired() {
        let g = grant(
            IdentityKind::CiToken,
            "ci-a",
            Credential::CiToken {
                sha256: credentials::token_sha256("old"),
            },
        );
        let same = creds(
            vec![ci("ci-b", "b", i64::MAX), ci("ci-a", "old", i64::MAX)],
            vec![],
            None,
        );
        assert_eq!(g.credential_accepted(&same, NOW), Ok(()));

        let rotated = creds(vec![ci("ci-a", "new", i64::MAX)], vec![], None);
        let why = g.credential_accepted(&rotated, NOW).unwrap_err();
        assert!(
            why.contains("rotated") && why.contains("token_sha256"),
            "{why}"
        );
        // The hash now names another identity: not this session's.
        let moved = creds(vec![ci("ci-b", "old", i64::MAX)], vec![], None);
        assert!(g.credential_accepted(&moved, NOW).is_err());
        let expired = creds(vec![ci("ci-a", "old", NOW)], vec![], None);
        assert_eq!(
            g.credential_accepted(&expired, NOW),
            Err("the CI token expired".into())
        );
    }

    fn keys(signing: (&str, &str), verifying: &[(&str, &str)]) -> Keys {
        let verifying = verifying
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .collect();
        let signing = Some((signing.0.to_string(), signing.1.to_string()));
        Keys::new(ISSUER, credentials::AUDIENCE, signing, verifying).unwrap()
    }

    #[test]
    fn gateway_token_key_must_still_be_trusted() {
        let (old, new) = (generate_private_pem(), generate_private_pem());
        let k1 = keys(("k1", &old), &[]);
        let ttl = Duration::from_secs(3600);
        let (token, _) = k1
            .mint("alice@example.com", vec![], None, ttl, NOW)
            .unwrap();
        let (_, voucher) = VerifyCache::new(8)
            .verify_vouched(&k1, &token, NOW)
            .unwrap();
        let g = grant(
            IdentityKind::Person,
            "alice@example.com",
            Credential::Gateway { voucher },
        );
        assert_eq!(
            g.credential_accepted(&creds(vec![], vec![], Some(k1)), NOW),
            Ok(())
        );
        // Rotation that keeps the old key for verification: still open.
        let kept = keys(("k2", &new), &[("k1", &old)]);
        assert_eq!(
            g.credential_accepted(&creds(vec![], vec![], Some(kept)), NOW),
            Ok(())
        );

        let retired = keys(("k2", &new), &[]);
        let why = g
            .credential_accepted(&creds(vec![], vec![], Some(retired)), NOW)
            .unwrap_err();
        assert_eq!(
            why,
            "the key that signed the token (`k1`) is no longer trusted"
        );
        // The same kid naming another key is not the key that verified.
        let reused = keys(("k1", &new), &[]);
        assert!(g
            .credential_accepted(&creds(vec![], vec![], Some(reused)), NOW)
            .is_err());
        assert!(g
            .credential_accepted(&creds(vec![], vec![], None), NOW)
            .is_err());
    }

    fn federated(
        issuer: &str,
        audience: &str,
        repository: &str,
        expires: i64,
    ) -> FederatedIdentity {
        FederatedIdentity {
            name: "deploy".into(),
            issuer: issuer.into(),
            audience: audience.into(),
            claims: vec![("repository".into(), Glob::new(repository))],
            expires,
        }
    }

    #[test]
    fn federated_mapping_must_still_match_the_sessions_claims() {
        let mut g = grant(
            IdentityKind::FederatedCi,
            "deploy",
            Credential::Federated {
                issuer: "https://ci".into(),
                audience: "gw".into(),
            },
        );
        g.auth = Some(Arc::new(crate::policy::Auth {
            ci: true,
            claims: vec![("repository".into(), "acme/app".into())],
            ..Default::default()
        }));
        let with = |f| creds(vec![], vec![f], None);
        let ok = with(federated("https://ci", "gw", "acme/*", i64::MAX));
        assert_eq!(g.credential_accepted(&ok, NOW), Ok(()));
        for changed in [
            federated("https://ci", "gw", "acme/other", i64::MAX),
            federated("https://ci", "other-aud", "acme/app", i64::MAX),
            federated("https://other-ci", "gw", "acme/app", i64::MAX),
        ] {
            let why = g.credential_accepted(&with(changed), NOW).unwrap_err();
            assert!(why.contains("no longer match"), "{why}");
        }
        let expired = with(federated("https://ci", "gw", "acme/app", NOW));
        assert_eq!(
            g.credential_accepted(&expired, NOW),
            Err("the federated identity expired".into())
        );
    }
}
