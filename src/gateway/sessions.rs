//! Open websocket sessions: what each was allowed as, the per-identity
//! cap, closing those a reload no longer allows, and the signal that
//! closes them all at shutdown.
//!
//! A session is decided once, at open; it can then run for hours. Keeping
//! each session's [`Grant`] (the facts the policy decided on) lets every
//! reload ask the same pure policy engine again, so removing someone from
//! the config ends their exec shell too, not only their next request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::gateway::Runtime;
use crate::identity::credentials::{Identity, IdentityKind};
use crate::policy::{Facts, Process, Subject, SubjectKind, Verdict};
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
        match rt.policy.decide(subject, &facts) {
            Verdict::Allow(_) => {}
            Verdict::Deny(reason) => return Err(reason),
            Verdict::NeedProcess => return Err("the target process is unknown".into()),
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
