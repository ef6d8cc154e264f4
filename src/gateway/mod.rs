//! The gateway's process state: the live [`Runtime`] (swapped whole on
//! reload, each request holding its snapshot), open sessions, login
//! bookkeeping, reload status, rate limiters and metrics.

pub mod identify;
pub mod ready;
pub mod runtime;
pub mod sessions;
pub mod status;

pub use runtime::Runtime;
pub use sessions::Sessions;

use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// The gateway: the live runtime plus process-wide state.
pub struct Gateway {
    /// `None` until a valid config has been loaded: every rack request is
    /// then refused with 503 (fail closed, never "allow").
    pub(crate) runtime: ArcSwapOption<Runtime>,
    /// Open websocket sessions, and the signal that closes them.
    pub sessions: Sessions,
    /// Login bookkeeping: redeemed one-time codes, the discovered provider.
    pub login: crate::identity::login::LoginStore,
    federation: std::sync::OnceLock<crate::identity::oidc::FederationVerifier>,
    /// What is loaded, the last reload failure, and the webhook's trigger.
    pub reload: status::Control,
    /// Per-identity and per-address rate limits; rebuilt (keeping the
    /// buckets whose quota is unchanged) when a reload changes them.
    limiters: arc_swap::ArcSwap<crate::ratelimit::Limiters>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where audit records go: the log, and the audit file when `serve`
    /// opened one.
    pub audit: crate::audit::Auditor,
    /// The last readiness probe of the racks.
    pub ready: ready::ReadyCache,
}

impl Gateway {
    pub fn new(runtime: Option<Runtime>, audit: crate::audit::Auditor) -> Arc<Gateway> {
        let limits = runtime
            .as_ref()
            .map(|r| r.rate_limits.clone())
            .unwrap_or_default();
        Arc::new(Gateway {
            limiters: arc_swap::ArcSwap::from_pointee(crate::ratelimit::Limiters::new(limits)),
            metrics: Default::default(),
            audit,
            ready: Default::default(),
            runtime: ArcSwapOption::new(runtime.map(Arc::new)),
            sessions: Sessions::default(),
            login: Default::default(),
            federation: std::sync::OnceLock::new(),
            reload: Default::default(),
        })
    }

    /// Replaces the live runtime; requests in flight keep their snapshot.
    pub fn swap(&self, runtime: Runtime) {
        let limiters = self.limiters.load();
        if *limiters.settings() != runtime.rate_limits {
            self.limiters
                .store(Arc::new(limiters.reconfigured(runtime.rate_limits.clone())));
        }
        self.runtime.store(Some(Arc::new(runtime)));
    }

    pub(crate) fn limiters(&self) -> Arc<crate::ratelimit::Limiters> {
        self.limiters.load_full()
    }

    /// The live runtime, or `None` before the first valid config.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.load_full()
    }

    /// Verifier of CI systems' own OIDC tokens (JWKS cached per issuer).
    pub fn federation(&self) -> &crate::identity::oidc::FederationVerifier {
        self.federation.get_or_init(|| {
            crate::identity::oidc::FederationVerifier::new(
                crate::identity::oidc::IdpHttp::new(None)
                    .expect("an HTTP client with the bundled roots builds"),
            )
        })
    }
}
