//! The relay face: litd's `autopilot.address` points here, so every registration litd makes
//! goes through litgate (`docs/design.md`, "The relay face"). It serves `autopilotserverrpc.Autopilot` and
//! forwards to the real server over the shared channel, adding:
//! - `Terms` and `ListFeatures` answered from the catalogue (fresh, or stale within bounds);
//! - `RegisterSession` held to `[privacy]` and to what the public face approved, its feature
//!   configs held to its flags ([`configs`]), all before the server is contacted, and recorded
//!   in the ledger on success with what it showed the server;
//! - `ActivateSession` recorded; `RevokeSession` forwarded only for keys in the ledger (litd
//!   announces every session type's revocation, which would leak non-autopilot keys);
//! - reconciliation of the ledger with litd's `ListAutopilotSessions` ([`reconcile`]).
//!
//! The server's own errors go back to litd unchanged; litgate's own refusals and failures
//! become statuses in one place ([`Relay::finish`]). Ledger writes wait on the disk, so they
//! run off the async workers; the public face's approvals are read and consumed in memory
//! ([`Approvals`]). Never logs keys in full.

mod configs;
mod reconcile;

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use self::configs::ConfigCheck;
pub use self::reconcile::{ReconcileReport, Reconciler};
use super::{
    approvals::Approvals,
    catalogue::Catalogue,
    client::Autopilot,
    feature_config::Privacy,
    policy::APPROVAL_BOUNDS,
    privacy::{config::PrivacyConfig, FlagPolicy, FlagRefusal},
};
use crate::{
    body::{self, Request as HttpRequest, Response as HttpResponse},
    clock::SharedClock,
    error::Error,
    proto::autopilotserverrpc::{
        self as aps, autopilot_server, ActivateSessionRequest, ActivateSessionResponse,
        ListFeaturesRequest, ListFeaturesResponse, RegisterSessionRequest, RegisterSessionResponse,
        RevokeSessionRequest, RevokeSessionResponse, TermsRequest, TermsResponse,
    },
    store::{ApprovalId, ConfigSent, LedgerEntry, Store},
    telemetry::metrics::registered,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    outcome: &'static str,
}

/// The relay service.
#[derive(Debug, Clone)]
pub struct Relay {
    autopilot: Autopilot,
    catalogue: Arc<Catalogue>,
    store: Store,
    approvals: Approvals,
    clock: SharedClock,
    /// `[privacy] deny_clear`, swapped by a reload.
    flags: Arc<ArcSwap<FlagPolicy>>,
    configs: ConfigCheck,
    calls: Family<CallLabels, Counter>,
}

/// The relay's `[privacy]` rules in force: a reload swaps them for registrations that start
/// from then on.
#[derive(Debug, Clone)]
pub(crate) struct LivePrivacy {
    flags: Arc<ArcSwap<FlagPolicy>>,
    configs: Arc<ArcSwap<configs::CheckKeys>>,
}

impl LivePrivacy {
    /// Puts `privacy` (validated) in force.
    pub(crate) fn set(&self, privacy: &PrivacyConfig) {
        self.flags
            .store(Arc::new(FlagPolicy::new(&privacy.deny_clear)));
        self.configs
            .store(Arc::new(configs::CheckKeys::of(privacy)));
    }
}

/// What a registration that passed the checks is recorded with.
struct Checked {
    /// The public face's approval it matches, consumed once the server accepts it.
    approval: Option<ApprovalId>,
    /// Whether the session has the privacy mapper, when the public face approved it.
    privacy_mapper: Option<bool>,
    /// What each feature config shows the server.
    configs: BTreeMap<String, ConfigSent>,
}

impl Relay {
    /// Builds the relay and registers its metrics.
    pub fn new(
        autopilot: Autopilot,
        catalogue: Arc<Catalogue>,
        store: Store,
        approvals: Approvals,
        clock: SharedClock,
        privacy: &PrivacyConfig,
        registry: &mut Registry,
    ) -> Self {
        let calls: Family<CallLabels, Counter> = registered(
            registry,
            "calls",
            "Calls litd made to the relay, by method and outcome (forwarded, refused, answered_locally, failed)",
        );
        Relay {
            autopilot,
            catalogue,
            store,
            approvals,
            clock,
            flags: Arc::new(ArcSwap::from_pointee(FlagPolicy::new(&privacy.deny_clear))),
            configs: ConfigCheck::new(privacy, registry),
            calls,
        }
    }

    /// Its `[privacy]` rules, for a reload to swap.
    pub(crate) fn live_privacy(&self) -> LivePrivacy {
        LivePrivacy {
            flags: self.flags.clone(),
            configs: self.configs.keys(),
        }
    }

    /// The relay as a service of litgate's request and response types, for the relay stack
    /// (`app::relay_stack`). tonic answers every call itself, so it never fails.
    pub fn service(
        self,
    ) -> impl tower::Service<
        HttpRequest,
        Response = HttpResponse,
        Error = Error,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        let grpc = autopilot_server::AutopilotServer::new(self);
        let boxed = ServiceExt::<HttpRequest>::map_response(grpc, |r| r.map(body::boxed));
        ServiceExt::<HttpRequest>::map_err(boxed, |never: Infallible| match never {})
    }

    /// The one place a relay call ends: its outcome counted, and a failure turned into litd's
    /// status. The server's own errors pass unchanged; litgate's are logged (as the rescue
    /// layer logs the public face's) and written with their code and message.
    fn finish<T>(
        &self,
        method: &'static str,
        result: Result<(T, &'static str), Failure>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok((answer, outcome)) => {
                self.count(method, outcome);
                Ok(Response::new(answer))
            }
            Err(Failure::Server(s)) => {
                self.count(method, "failed");
                Err(s)
            }
            Err(Failure::Litgate(e)) => {
                let outcome = match e {
                    Error::Client { .. } => "refused",
                    _ => "failed",
                };
                self.count(method, outcome);
                e.log("relay call refused");
                Err(Status::new(e.code(), e.public_message()))
            }
        }
    }

    fn count(&self, method: &'static str, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels { method, outcome })
            .inc();
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The policy checks of RegisterSession: its flags, what the public face approved, and
    /// what its feature configs show the server under those flags.
    async fn check_registration(&self, r: &RegisterSessionRequest) -> Result<Checked, Error> {
        if r.responder_pub_key.len() != 33 {
            return Err(Error::invalid(format!(
                "responder_pub_key: must be a 33-byte compressed public key, got {} bytes",
                r.responder_pub_key.len()
            )));
        }
        // The public face's flag checks, in its order: known bits, each feature, the session.
        let refused = |r: FlagRefusal| {
            Error::client(r.code(), format!("litgate refused the registration: {r}"))
        };
        // One set of flags for the whole call, even if a reload swaps them meanwhile.
        let flags = self.flags.load_full();
        flags.check_known(r.privacy_flags).map_err(refused)?;
        let mut features: Vec<String> = r.feature_configs.keys().cloned().collect();
        features.sort();
        let catalogue = self.catalogue.get().await?;
        let mut needed = 0u64;
        for f in &features {
            let Some(feature) = catalogue.get(f) else {
                return Err(Error::refused(format!(
                    "litgate refused the registration: {f} is not a feature provided by the Autopilot server"
                )));
            };
            let privacy_flags = feature.feature.privacy_flags;
            flags.check_feature(f, privacy_flags).map_err(refused)?;
            needed |= privacy_flags;
        }
        flags
            .check_session(r.privacy_flags, needed)
            .map_err(refused)?;
        // Hold the registration to what the public face approved for these features, if it
        // approved anything recently; sessions created around the public face have no approval
        // and are held to [privacy] only.
        let now = self.now_secs();
        let since = now.saturating_sub(APPROVAL_BOUNDS.max_age.as_secs());
        let approvals = self.approvals.approvals_for(&features, since);
        let approved = !approvals.is_empty();
        let (approval, privacy_mapper) = match approvals
            .into_iter()
            .find(|(_, a)| a.privacy_flags == r.privacy_flags)
        {
            Some((id, a)) => (Some(id), Some(a.privacy)),
            None if approved => {
                return Err(Error::refused(
                    "litgate refused the registration: its privacy flags differ from the ones litgate approved for this session",
                ))
            }
            None => (None, None),
        };
        // litd obfuscates configs only with the mapper on; RegisterSession does not say
        // whether it is, so without an approval saying otherwise the configs are held to the
        // flags the registration carries.
        let inspected_as = match privacy_mapper {
            Some(false) => Privacy::NoMapper,
            _ => Privacy::Mapper {
                flags: r.privacy_flags,
            },
        };
        let configs = self
            .configs
            .check(
                &session_id(&r.responder_pub_key),
                &r.feature_configs,
                inspected_as,
            )
            .map_err(|refusal| {
                Error::client(
                    refusal.reason.code(),
                    format!("litgate refused the registration: {refusal}"),
                )
            })?;
        Ok(Checked {
            approval,
            privacy_mapper,
            configs,
        })
    }
}

/// Why a relay call did not return an answer.
enum Failure {
    /// litgate refused it (policy) or could not serve it (catalogue, store).
    Litgate(Error),
    /// The Autopilot server's own error, for litd unchanged.
    Server(Status),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Litgate(e)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::Litgate(e.into())
    }
}

fn hex_key(k: &[u8]) -> String {
    hex::encode(k)
}

fn version(v: &Option<aps::Version>) -> String {
    v.as_ref()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.patch))
        .unwrap_or_default()
}

/// litd's session id for a key: bytes 1..5 of the compressed key.
fn session_id(key: &[u8]) -> String {
    key.get(1..5).map(hex::encode).unwrap_or_default()
}

impl Relay {
    async fn register(
        &self,
        r: RegisterSessionRequest,
    ) -> Result<(RegisterSessionResponse, &'static str), Failure> {
        let checked = self.check_registration(&r).await.inspect_err(|e| {
            tracing::warn!(session = %session_id(&r.responder_pub_key), reason = %e, "registration refused");
        })?;
        let resp = self
            .autopilot
            .client()
            .register_session(r.clone())
            .await
            .map_err(Failure::Server)?
            .into_inner();
        let mut features: Vec<String> = r.feature_configs.keys().cloned().collect();
        features.sort();
        let group_id = if r.group_responder_key.is_empty() {
            session_id(&r.responder_pub_key)
        } else {
            session_id(&r.group_responder_key)
        };
        let entry = LedgerEntry {
            responder_key: hex_key(&r.responder_pub_key),
            session_id: session_id(&r.responder_pub_key),
            group_id,
            features,
            privacy_flags: r.privacy_flags,
            lit_version: version(&r.lit_version),
            lnd_version: version(&r.lnd_version),
            registered_at: self.now_secs(),
            initiator_key: hex_key(&resp.initiator_pub_key),
            last_activation: None,
            last_activation_outcome: None,
            revoked_at: None,
            revoked_by: None,
            privacy_mapper: checked.privacy_mapper,
            configs: checked.configs,
            server_sees: Vec::new(),
        };
        let entry = LedgerEntry {
            server_sees: entry.disclosed(),
            ..entry
        };
        let session = entry.session_id.clone();
        let key = r.responder_pub_key;
        if let Err(e) = self
            .store
            .off_worker(move |s| s.ledger_put(&key, &entry))
            .await
        {
            // The server has the registration; reconciliation cannot see it without the
            // ledger, so make the failure loud.
            tracing::error!(error = %e, %session, "could not record a registration in the ledger");
        }
        if let Some(id) = checked.approval {
            self.approvals.remove(&id);
        }
        Ok((resp, "forwarded"))
    }

    async fn activate(
        &self,
        req: ActivateSessionRequest,
    ) -> Result<(ActivateSessionResponse, &'static str), Failure> {
        let key = req.responder_pub_key.clone();
        let res = self.autopilot.client().activate_session(req).await;
        let lookup = key.clone();
        let found = self.store.off_worker(move |s| s.ledger_get(&lookup)).await;
        if let Ok(Some(mut entry)) = found {
            entry.last_activation = Some(self.now_secs());
            entry.last_activation_outcome = Some(match &res {
                Ok(_) => "ok".into(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            });
            if let Err(e) = self
                .store
                .off_worker(move |s| s.ledger_put(&key, &entry))
                .await
            {
                tracing::warn!(error = %e, "could not record an activation");
            }
        }
        Ok((res.map_err(Failure::Server)?.into_inner(), "forwarded"))
    }

    async fn revoke(
        &self,
        req: RevokeSessionRequest,
    ) -> Result<(RevokeSessionResponse, &'static str), Failure> {
        let key = req.responder_pub_key.clone();
        let lookup = key.clone();
        let Some(mut entry) = self
            .store
            .off_worker(move |s| s.ledger_get(&lookup))
            .await?
            .filter(|e| e.revoked_at.is_none())
        else {
            // Not an autopilot registration we relayed (or already revoked): telling the
            // server would only leak the key. litd only logs this call's errors anyway.
            return Ok((RevokeSessionResponse {}, "answered_locally"));
        };
        let resp = self
            .autopilot
            .client()
            .revoke_session(req)
            .await
            .map_err(Failure::Server)?
            .into_inner();
        entry.revoked_at = Some(self.now_secs());
        entry.revoked_by = Some("litd".into());
        if let Err(e) = self
            .store
            .off_worker(move |s| s.ledger_put(&key, &entry))
            .await
        {
            tracing::warn!(error = %e, "could not record a revocation");
        }
        Ok((resp, "forwarded"))
    }
}

#[tonic::async_trait]
impl autopilot_server::Autopilot for Relay {
    async fn terms(&self, _req: Request<TermsRequest>) -> Result<Response<TermsResponse>, Status> {
        let res = self.catalogue.terms().await;
        self.finish(
            "Terms",
            res.map(|t| (t, "answered_locally")).map_err(Failure::from),
        )
    }

    async fn list_features(
        &self,
        _req: Request<ListFeaturesRequest>,
    ) -> Result<Response<ListFeaturesResponse>, Status> {
        let res = self.catalogue.get().await.map(|features| {
            let features = features.to_proto();
            (ListFeaturesResponse { features }, "answered_locally")
        });
        self.finish("ListFeatures", res.map_err(Failure::from))
    }

    async fn register_session(
        &self,
        req: Request<RegisterSessionRequest>,
    ) -> Result<Response<RegisterSessionResponse>, Status> {
        let res = self.register(req.into_inner()).await;
        self.finish("RegisterSession", res)
    }

    async fn activate_session(
        &self,
        req: Request<ActivateSessionRequest>,
    ) -> Result<Response<ActivateSessionResponse>, Status> {
        let res = self.activate(req.into_inner()).await;
        self.finish("ActivateSession", res)
    }

    async fn revoke_session(
        &self,
        req: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let res = self.revoke(req.into_inner()).await;
        self.finish("RevokeSession", res)
    }
}
